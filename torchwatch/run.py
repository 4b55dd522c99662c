"""Run: options, sinks, epoch and step counters, the phase stack and the history.

The module-level verbs (``tw.init``, ``tw.phase``, ...) act on a default run; ``tw.Run`` objects
can also live side by side, each with its own logdir.
"""

from __future__ import annotations

import atexit
import datetime
import importlib.util
import math
import os
import socket
import sys
import tempfile
import weakref
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import torch

from . import distributed, signals
from .accumulate import FOLD_AT, Accumulator
from .clocks import host_clock
from .compiled import speedups
from .dynamo import is_compiling, log_outside_graph
from .phase import ACTIVE, IntervalInfo, Phase, PhaseRecord
from .sinks.console import ConsoleSink, epoch_label, phase_line
from .values import NonFiniteError, describe, reporter, warn

__all__ = ["Run", "close", "current_run", "init"]

_PROGRESS = ("auto", True, False)
_ON_NAN = ("warn", "raise", "ignore")
# torch.amp.GradScaler from torch 2.3; before, torch.cuda.amp's (a subclass of it after)
_SCALERS = tuple(c for c in (getattr(torch.amp, "GradScaler", None),
                             torch.cuda.amp.GradScaler) if isinstance(c, type))
_OUTSIDE_WARNED: set = set()


def _default_logdir() -> str:
    stamp = datetime.datetime.now().strftime("%b%d_%H-%M-%S")
    return os.path.join("runs", f"{stamp}_{socket.gethostname()}")


def _disabled_by_environment() -> bool:
    return os.environ.get("TORCHWATCH_DISABLE", "") in ("1", "true", "True", "yes")


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def _as_models(value: Any, option: str) -> List[torch.nn.Module]:
    """A module, or a list/tuple/dict of modules, as a list; anything else is a TypeError."""
    if value is None:
        return []
    if isinstance(value, torch.nn.Module):
        return [value]
    items = list(value.values()) if isinstance(value, Mapping) else value
    if isinstance(items, (list, tuple)) and items and all(
        isinstance(m, torch.nn.Module) for m in items
    ):
        return list(items)
    raise TypeError(
        f"{option} must be an nn.Module, or a list or dict of nn.Modules, got {value!r:.80}"
    )


def _as_optimizers(value: Any) -> Dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        items = dict(value)
    else:
        items = {"": value}
    for name, opt in items.items():
        if not isinstance(name, str) or not hasattr(opt, "param_groups"):
            raise TypeError(
                "optimizer must be a torch.optim.Optimizer or a dict of name -> Optimizer, "
                f"got {value!r:.80}"
            )
    return items


def _check_hparams(hparams: Any) -> Dict[str, Any]:
    """``hparams`` as a dict of str -> bool, int, float, str or None (skipped when written):
    numpy scalars and one-element tensors become the Python value, read once here."""
    if hparams is None:
        return {}
    if not isinstance(hparams, Mapping):
        raise TypeError(f"hparams must be a dict of name -> value, got {hparams!r:.80}")
    numpy = sys.modules.get("numpy")  # a numpy value means numpy is imported already
    checked: Dict[str, Any] = {}
    for name, value in hparams.items():
        if not isinstance(name, str):
            raise TypeError(
                f"hparams names must be str, got the key {name!r:.40} ({type(name).__name__})"
            )
        if isinstance(value, torch.Tensor):
            if value.numel() == 1 and not value.dtype.is_complex:
                value = value.item()
        elif numpy is not None and isinstance(value, (numpy.generic, numpy.ndarray)):
            if value.size == 1:
                value = value.item()
        if value is not None and not isinstance(value, (bool, int, float, str)):
            raise ValueError(
                f"hparams['{name}'] must be a bool, int, float, str or None (or a numpy scalar "
                f"or one-element tensor of those), got {describe(value)}"
            )
        checked[name] = value
    return checked


def _check_logdir(path: str) -> None:
    """Create ``path`` and prove it is writable, naming it if not."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise ValueError(
            f"logdir {path!r} cannot be created or written ({error.strerror or error}); "
            "pass a writable logdir= to tw.init"
        ) from None


def _in_kernel() -> bool:
    """Whether the code runs in a Jupyter kernel (notebook, JupyterLab, VS Code, Colab)."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


def _in_notebook() -> bool:
    """Whether ``tqdm.auto`` draws its notebook widget here: a kernel with ipywidgets. Without
    ipywidgets it would fall back to the text bar with a TqdmWarning; ``tw.steps`` then takes
    the text bar from ``tqdm`` itself, without the warning."""
    return _in_kernel() and importlib.util.find_spec("ipywidgets") is not None


class Run:
    """A watched training run: its options, sinks, counters and ``history`` of ``PhaseRecord``s.

    Writers, console lines and the progress bar exist on rank 0 only; ``run.writer(phase)`` is
    ``None`` elsewhere.
    """

    # global_step is a slot, which _speedups.c bumps by offset each train step; the rest lives in
    # the instance dict as usual
    __slots__ = ("global_step", "__dict__", "__weakref__")

    def __init__(
        self,
        logdir: Optional[str] = None,
        *,
        model: Any = None,
        optimizer: Any = None,
        total_epochs: Optional[int] = None,
        console: bool = True,
        tensorboard: bool = True,
        progress: Any = "auto",
        log_every: int = 50,
        hparams: Optional[Mapping[str, Any]] = None,
        strict: bool = False,
        on_nan: str = "warn",
        enabled: bool = True,
        scaler: Any = None,
        histograms: Optional[int] = None,
        graph: Any = None,
        clock: Optional[Callable[[], float]] = None,
    ) -> None:
        self.models = _as_models(model, "model")
        self.model_names = {id(m): str(k) for k, m in model.items()} if isinstance(
            model, Mapping) else {}
        self.optimizers = _as_optimizers(optimizer)
        if total_epochs is not None and (
            isinstance(total_epochs, bool) or not isinstance(total_epochs, int) or total_epochs < 1
        ):
            raise ValueError(f"total_epochs must be a positive int or None, got {total_epochs!r}")
        if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
            raise ValueError(f"log_every must be a positive int, got {log_every!r}")
        if not any(progress is p or (isinstance(p, str) and progress == p) for p in _PROGRESS):
            raise ValueError(f"progress must be 'auto', True or False, got {progress!r}")
        if on_nan not in _ON_NAN:
            raise ValueError(f"on_nan must be one of 'warn', 'raise', 'ignore', got {on_nan!r}")
        if logdir is not None and not isinstance(logdir, (str, os.PathLike)):
            raise TypeError(f"logdir must be a str or path, got {logdir!r}")
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, got {clock!r}")
        if scaler is not None and not isinstance(scaler, _SCALERS):
            raise TypeError(f"scaler must be a torch.amp.GradScaler or None, got {scaler!r:.80}")
        if histograms is not None and (
            isinstance(histograms, bool) or not isinstance(histograms, int) or histograms < 1
        ):
            raise ValueError(
                f"histograms must be a positive int (every N epochs) or None, got {histograms!r}"
            )
        self.scaler = scaler
        self.histograms = histograms
        if graph is not None and not (
            isinstance(graph, torch.Tensor)
            or (isinstance(graph, (tuple, list)) and graph
                and all(isinstance(t, torch.Tensor) for t in graph))
        ):
            raise TypeError(
                f"graph must be an example input for the model (a tensor or a tuple of tensors) "
                f"or None, got {graph!r:.80}"
            )
        self.graph = tuple(graph) if isinstance(graph, list) else graph
        self.total_epochs = total_epochs
        self.log_every = log_every
        self.progress = progress
        self.strict = _check_bool("strict", strict)
        self.on_nan = on_nan
        self.hparams = _check_hparams(hparams)
        self.enabled = _check_bool("enabled", enabled) and not _disabled_by_environment()
        self.clock = clock or host_clock
        self.rank = distributed.rank()
        # launched without RANK and before init_process_group (mp.spawn): settled at a phase
        self.rank_settled = distributed.rank_is_known()
        # None or "" (any falsy log_dir, as SummaryWriter): runs/<date-time>_<host>
        self.logdir = (os.fspath(logdir) if logdir is not None else "") or _default_logdir()
        self.console = ConsoleSink() if (_check_bool("console", console) and self.rank == 0
                                         and self.enabled) else None
        self.tensorboard = None
        if _check_bool("tensorboard", tensorboard) and self.rank == 0 and self.enabled:
            _check_logdir(self.logdir)
            from .sinks.tensorboard import TensorBoardSink

            self.tensorboard = TensorBoardSink(self.logdir, hparams=bool(self.hparams))
        self.history: List[PhaseRecord] = []
        self.stack: List[Phase] = []
        self.epoch: Optional[int] = None
        self.global_step = 0
        self._epoch_offset: Optional[int] = None
        self._had_train = False
        self._seen: set = set()
        self._warned: set = set()
        self.report = reporter(self.strict, self._warned)
        self.closed = False
        self._hparams_written = False  # once, at the first close (a run may be reopened)
        ref = weakref.ref(self)
        atexit.register(lambda: ref() is not None and ref().close())
        if self.enabled:
            signals.install(self)  # SIGTERM / Ctrl-C flush the writers first

    # -- context manager -----------------------------------------------------------------------
    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Run(logdir={self.logdir!r}, epoch={self.epoch}, global_step={self.global_step})"

    # -- verbs ---------------------------------------------------------------------------------
    def phase(self, name: str, model: Any = None, *, train: Optional[bool] = None,
              grad: Optional[bool] = None, epoch: Optional[int] = None,
              reduce: bool = True) -> Phase:
        """A phase block: ``with run.phase("val"):`` (see ``tw.phase``)."""
        return Phase(self, name, model, train=train, grad=grad, epoch=epoch, reduce=reduce)

    def watch_epoch(self, wrapped: Any = None, phase: Any = "train", **options: Any) -> Any:
        from .decorators import watch_epoch

        return watch_epoch(wrapped, phase, run=self, **options)

    def watch_step(self, wrapped: Any = None, **options: Any) -> Any:
        from .decorators import watch_step

        return watch_step(wrapped, run=self, **options)

    def steps(self, iterable: Iterable, **options: Any) -> Iterable:
        from .steps import steps

        spec = steps(iterable, **options)
        spec.run = self  # outside any phase, it warns (or not, disabled) for this run
        return spec

    def log(self, value: Any = None, /, *, n: Any = None, **metrics: Any) -> None:
        if ACTIVE or self.enabled:
            log(value, n=n, **metrics)  # n=None is no weight, in the compiled tw.log too

    def writer(self, phase: str) -> Any:
        """The ``SummaryWriter`` of ``phase`` (for images, text, ...); ``None`` off rank 0."""
        self.settle_rank()  # init may have come before the process group (mp.spawn)
        self.reopen()
        return self.tensorboard.writer(phase) if self.tensorboard is not None else None

    def state_dict(self) -> Dict[str, Any]:
        """The epoch and step counters, for a checkpoint (see ``torchwatch.resume``)."""
        from .resume import state_dict

        return state_dict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a checkpoint: counters restored, TensorBoard points past it purged."""
        from .resume import load_state_dict

        load_state_dict(self, state)

    def close(self) -> None:
        """Flush and close every writer; safe to call twice."""
        if self.closed:
            return
        self.closed = True
        signals.uninstall(self)
        self.settle_rank()  # no phase may have run since the group came up: no hparams file
        self.read_closed()
        if self.tensorboard is not None:
            if not self._hparams_written:
                self._hparams_written = True
                self.tensorboard.hparams(self.hparams)
            self.tensorboard.flush()
            self.tensorboard.close()
        if self.console is not None:
            self.console.close()

    def reopen(self) -> None:
        """A closed run used again (a phase, ``writer()``) is open again, as a closed
        ``SummaryWriter`` reopens when written to: ``close()``, ``atexit`` and the signal
        handlers then flush and close what it writes from now on."""
        if self.closed:
            self.closed = False
            if self.enabled:
                signals.install(self)

    def read_closed(self) -> None:
        """Read the closed intervals of the phases still running: their step scalars reach the
        sinks (a close or a signal mid-phase)."""
        for phase in list(self.stack):
            phase.read_ready()

    # -- what phases call ----------------------------------------------------------------------
    def models_for(self, model: Any, source: str,
                   found: Optional[Dict[str, torch.nn.Module]] = None) -> list:
        """The modules a phase toggles: ``model=``, else the run's, else those ``found`` among
        the call's arguments (by argument name)."""
        if model is not None:
            return _as_models(model, f"model of {source}")
        if self.models:
            return self.models
        first: Dict[int, Tuple[str, torch.nn.Module]] = {}  # id -> (its first name, module)
        for name, module in (found or {}).items():
            first.setdefault(id(module), (name, module))
        unique = [module for _, module in first.values()]
        if len(unique) > 1:
            listed = ", ".join(f"{name} ({type(m).__name__})" for name, m in first.values())
            self.once(
                ("several", source),
                f"torchwatch: {source} found {len(unique)} modules among its arguments "
                f"({listed}) and switches all of them; pass model= to choose (a distillation "
                "teacher should not be put in train mode)",
            )
        elif not unique:
            self.once(
                ("none", source),
                f"torchwatch: {source} has no model to switch between train() and eval(); "
                "pass model= to tw.init or to the decorator/phase",
            )
        return unique

    def once(self, key: Any, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warn(message)

    def begin_epoch(self, phase: Phase) -> Optional[int]:
        """The epoch a phase belongs to: a train phase (or, before any, an eval-only phase) whose
        name already ran in the current epoch starts the next one; other phases join it."""
        self.settle_rank()
        self.reopen()
        if phase.nested:
            return self.epoch
        explicit = phase.explicit_epoch
        if explicit is not None:
            epoch = explicit
        elif phase.is_train:
            # train, train, ... or train_D, train_G, train_D, ...: a train phase starts the next
            # epoch when its name already ran in this one; the first joins epoch 0
            if not self._had_train:
                epoch = self.epoch or 0
            elif phase.name in self._seen:
                epoch = self.epoch + 1
            else:
                epoch = self.epoch
        elif self.epoch is None:
            epoch = 0
        elif not self._had_train and phase.name in self._seen:
            epoch = self.epoch + 1
        else:
            epoch = self.epoch
        if self._epoch_offset is None:
            self._epoch_offset = 0 if explicit == 1 else 1
        if epoch != self.epoch:
            self._seen = set()
        self._seen.add(phase.name)
        self._had_train = self._had_train or phase.is_train
        self.epoch = epoch
        return epoch

    def settle_rank(self) -> None:
        """Once a process group exists, ranks other than 0 drop their console and writers (once:
        a run started with its rank known, or settled before, returns at once)."""
        if self.rank_settled or not distributed.rank_is_known():
            return
        self.rank_settled = True
        self.rank = distributed.rank()
        if self.rank != 0:
            self.console = None
            if self.tensorboard is not None:
                self.tensorboard.close()
                self.tensorboard = None

    def display_epoch(self, epoch: Optional[int]) -> Optional[int]:
        return None if epoch is None else epoch + (self._epoch_offset or 0)

    def lr_tags(self) -> List[Tuple[Any, Tuple[str, ...]]]:
        """Each optimizer and the tags of its param groups' lrs: ``lr``, ``lr_<i>`` per param
        group, ``lr_<name>[_<i>]`` per optimizer of a dict."""
        found = []
        for name, optimizer in self.optimizers.items():
            base = f"lr_{name}" if name else "lr"
            count = len(optimizer.param_groups)
            found.append((optimizer, (base,) if count == 1
                          else tuple(f"{base}_{i}" for i in range(count))))
        return found

    def learning_rates(self) -> Dict[str, float]:
        """The current learning rates under their tags (see ``lr_tags``)."""
        rates: Dict[str, float] = {}
        for optimizer, tags in self.lr_tags():
            for tag, group in zip(tags, optimizer.param_groups):
                lr = group.get("lr")
                if isinstance(lr, torch.Tensor):
                    if lr.device.type != "cpu":
                        continue  # reading it would sync
                    lr = lr.detach().numpy().item()
                if isinstance(lr, (int, float)):
                    rates[tag] = float(lr)
        return rates

    def loss_scale(self) -> Optional[torch.Tensor]:
        """The ``scaler``'s scale as the tensor it keeps on its device (reading it would sync)."""
        scaler = self.scaler
        if scaler is None or not scaler.is_enabled():
            return None
        scale = getattr(scaler, "_scale", None)  # None until the first scaler.scale(loss)
        if not isinstance(scale, torch.Tensor) or scale.numel() != 1:
            return None
        return scale.detach().reshape(())  # older torch keeps it with shape (1,)

    def write_interval(self, phase: Phase, means: Dict[str, float], info: IntervalInfo,
                       loss_scale: Optional[float] = None) -> None:
        """The ``step/*`` scalars of one interval of a train phase, and ``amp/scale``."""
        if self.tensorboard is None:
            return
        seconds = info.end.seconds_since(info.start)
        scalars = {f"step/{k}": v for k, v in info.lrs.items()}
        if seconds > 0:
            scalars["step/time_ms"] = 1000.0 * seconds / info.steps
            if info.samples:
                scalars["step/samples_per_s"] = info.samples / seconds
            if phase.wait_known:
                scalars["step/data_wait_frac"] = min(info.data_wait_s / seconds, 1.0)
        if phase.cuda:
            scalars["step/memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
            torch.cuda.reset_peak_memory_stats()
        if loss_scale is not None:
            scalars["amp/scale"] = loss_scale
        scalars.update({f"step/{k}": v for k, v in means.items()})  # yours replace ours
        self.tensorboard.log(phase.name, scalars, info.last_step, every=seconds,
                             wall_time=info.wall_time)

    def phase_done(self, phase: Phase, time_s: float, data_wait_s: float) -> None:
        """Write a finished phase: TensorBoard, flushed to the OS, then the console line."""
        record = phase.record
        self.history.append(record)
        metrics = dict(record.metrics)
        if phase.is_train:  # a user metric named like an automatic one replaces it
            metrics.update({k: v for k, v in self.learning_rates().items() if k not in metrics})
        per_s = record.samples / time_s if record.samples and time_s > 0 else None
        known = record.steps and phase.wait_known and time_s > 0
        wait = min(data_wait_s / time_s, 1.0) if known else None
        if self.tensorboard is not None:
            if phase.nested:
                tags = {f"step/{k}": v for k, v in metrics.items()}
                step = record.global_step
            else:
                tags = {"epoch/time_s": time_s}
                if per_s is not None:
                    tags["epoch/samples_per_s"] = per_s
                if wait is not None:
                    tags["epoch/data_wait_frac"] = wait
                tags.update({f"epoch/{k}": v for k, v in metrics.items()})  # yours replace ours
                step = record.epoch
            self.tensorboard.log(phase.name, tags, step, final=not phase.nested)
            if self.histograms is not None and phase.is_train and not phase.nested:
                from .histograms import write_histograms

                write_histograms(self, phase)
            if self.graph is not None and phase.is_train and not phase.nested:
                from .histograms import write_graph

                write_graph(self, phase)
            self.tensorboard.flush()  # on disk before the line that reports it
        if self.console is not None:
            label = epoch_label(self.display_epoch(record.epoch), self.total_epochs)
            self.console.log(phase_line(label, phase.name, metrics, time_s, per_s, wait))

    def phase_interrupted(self, phase: Phase, exc_type: Any) -> None:
        if self.tensorboard is not None:
            self.tensorboard.flush()
        if self.console is not None:
            label = epoch_label(self.display_epoch(phase.epoch), self.total_epochs)
            self.console.log(
                f"{label} {phase.name} interrupted after {phase.steps} steps "
                f"({getattr(exc_type, '__name__', exc_type)})"
            )

    def nonfinite(self, phase: Phase, metric: str, where: Optional[str]) -> None:
        """A NaN or Inf reached the host: warn once per metric, or raise, as ``on_nan`` says."""
        if self.on_nan == "ignore":
            return
        label = epoch_label(self.display_epoch(phase.epoch), self.total_epochs)
        message = (
            f"torchwatch: metric '{metric}' of {phase.source} was NaN or Inf"
            f"{' first in ' + where if where else ''} ({label}); it is recorded as it is. "
            "Check the learning rate, the inputs and the loss for that range"
        )
        if self.on_nan == "raise":
            raise NonFiniteError(message)
        self.once(("nan", metric), message)

    def bar_wanted(self) -> bool:
        """Whether ``tw.steps`` shows a tqdm bar: rank 0, a terminal or a notebook, not in CI."""
        if not self.enabled or self.rank != 0 or self.progress is False:
            return False
        if self.progress is True:
            return True
        if "CI" in os.environ:  # set at all, even empty
            return False
        if _in_kernel():  # the widget with ipywidgets, else the text bar (see _in_notebook)
            return True
        return is_terminal(sys.stderr)


# -- the default run ---------------------------------------------------------------------------
_default: Optional[Run] = None


def init(logdir: Optional[str] = None, **options: Any) -> Run:
    """Start the default run, closing an earlier one. Usable as ``with tw.init(...) as run:``."""
    global _default
    if _default is not None:
        _default.close()
    _default = None
    _OUTSIDE_WARNED.clear()
    _default = Run(logdir, **options)
    return _default


def current_run() -> Run:
    """The default run; one with default options is started if ``tw.init`` was not called."""
    if _default is None or _default.closed:
        return init()
    return _default


def close() -> None:
    """Flush and close the default run; safe to call twice."""
    if _default is not None:
        _default.close()


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is a terminal (False for anything without ``isatty``)."""
    return bool(getattr(stream, "isatty", lambda: False)())


def outside(verb: str, run: Optional[Run] = None) -> None:
    """Warn once that ``verb`` ran outside a phase; a disabled run (``run``, else the default
    one, or ``TORCHWATCH_DISABLE``) passes through silently."""
    run = run if run is not None else _default
    if (run is not None and not run.enabled) or _disabled_by_environment():
        return
    if verb not in _OUTSIDE_WARNED:
        _OUTSIDE_WARNED.add(verb)
        warn(
            f"torchwatch: {verb} was called outside a phase, so "
            f"{'its values were dropped' if verb == 'tw.log' else 'nothing was recorded'}; "
            "call it inside a @tw.watch_epoch function or a `with tw.phase(...)` block"
        )


def log(value: Any = None, /, *, n: Any = None, **metrics: Any) -> None:
    """Record metrics into the innermost active phase; a positional value is named ``loss``."""
    if is_compiling():  # traced by torch.compile: break the graph, log eagerly (see dynamo.py)
        return log_outside_graph(value, n, metrics)
    if ACTIVE:
        ACTIVE[-1].log(value, n, metrics)
    else:
        outside("tw.log")


python_log = log
if speedups is not None:  # the same, compiled: 0-dim real tensors, n= absent or a plain number
    speedups.configure(log, ACTIVE, torch.Tensor,
                       (torch.complex32, torch.complex64, torch.complex128),
                       (torch.float32, torch.float64, torch.int64, torch.int32, torch.int16,
                        torch.int8, torch.uint8, torch.bool),
                       FOLD_AT - 1, Phase, Accumulator, Run)
    log = speedups.log  # noqa: F811 (the Python log above is its fallback for everything else)
