"""torchwatch: watch a plain PyTorch training loop with one-line changes.

``@tw.watch_epoch`` on the epoch function, ``with tw.phase("val"):`` around validation,
``tw.steps(loader)`` around the loader: train/eval modes switched and restored, epochs and steps
timed, the losses the loop already computes written to the console and to TensorBoard, with no
host-device synchronisation per step. TensorBoard itself is imported only when a writer is needed.
"""

from .decorators import watch_epoch, watch_step
from .phase import PhaseRecord
from .run import Run, close, current_run, init, log
from .steps import steps
from .values import NonFiniteError, TorchwatchWarning

__version__ = "0.1.0"


def phase(name, model=None, *, train=None, grad=None, epoch=None, reduce=True):
    """``with tw.phase("val"):`` a phase of the default run: modes, grad, timing, metrics.

    ``train`` defaults to whether ``name`` starts with ``"train"``; ``grad`` to ``train``.
    After the block ``p.metrics`` holds the phase's metrics as floats, ``p.record`` its record.
    """
    return current_run().phase(name, model, train=train, grad=grad, epoch=epoch, reduce=reduce)


__all__ = [
    "NonFiniteError",
    "PhaseRecord",
    "Run",
    "TorchwatchWarning",
    "close",
    "current_run",
    "init",
    "log",
    "phase",
    "steps",
    "watch_epoch",
    "watch_step",
]
