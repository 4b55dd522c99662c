"""Resuming from a checkpoint: the run's counters in a state dict, and curves that continue.

``run.state_dict()`` goes into the checkpoint beside the model's; ``run.load_state_dict(state)``
after ``tw.init`` in the restarted process restores the epoch, the global step and the epoch
numbering, so the next epoch and step carry on from the checkpoint.

The crashed process usually wrote past its last checkpoint. TensorBoard hides such orphaned
points when a new event file starts with ``purge_step``: on reading, a ``SessionLog.START``
event at step s drops every earlier point with step >= s *from the whole run folder*, every tag
alike. A phase folder mixes two x-axes: ``epoch/*`` (and histograms) at step = epoch, and
``step/*``, ``amp/scale`` at step = global step. The orphans start at epoch E+1 on the first
axis and at global step G+1 on the second, so no single purge step is right: purging from G+1
would keep the orphaned epochs (epoch numbers are far below step numbers) and they would be
doubled; purging from E+1 would also drop the step curve between E+1 and G. So each phase
folder is reopened with ``purge_step = min(E+1, G+1)``, and the points of the old files that the
checkpoint covers but the purge drops (step-axis points in [E+1, G]) are written again, as they
were, into the new file after the purge. TensorBoard then shows each curve once, up to the
checkpoint, then the resumed run. Tags written through ``run.writer()`` that are neither
``epoch/``, ``params/`` nor ``grads/`` count as step-axis: kept up to the checkpoint's step.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional

if TYPE_CHECKING:  # pragma: no cover
    from .run import Run

__all__ = ["Reopen", "load_state_dict", "state_dict"]

EPOCH_AXIS = ("epoch/", "params/", "grads/")  # tags whose step is the epoch
_KEYS = ("epoch", "global_step", "epoch_offset", "had_train", "seen")


def state_dict(run: "Run") -> Dict[str, Any]:
    """The counters that place the next phase: plain Python values, safe for ``torch.save``.

    Inside a top-level train phase, the epoch under way is not finished: the state is that of
    the epoch before it, so the resumed run trains that epoch again. Inside a step of a train
    phase (where checkpoints are taken, after ``optimizer.step()``), that step counts as done.
    """
    epoch, had_train, seen = run.epoch, run._had_train, sorted(run._seen)
    step = run.global_step
    inner = run.stack[-1] if run.stack else None
    if inner is not None and inner.is_train and inner.in_step:
        step += 1
    top = run.stack[0] if run.stack else None
    if top is not None and top.is_train and top.epoch is not None:
        # the state before this epoch began (as far as a resumed run needs it)
        epoch, had_train, seen = (
            (top.epoch - 1, True, [top.name]) if top.epoch > 0 else (None, False, [])
        )
    return {
        "epoch": epoch,
        "global_step": step,
        "epoch_offset": run._epoch_offset,
        "had_train": had_train,
        "seen": seen,
    }


def _check(state: Any) -> Dict[str, Any]:
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a dict from run.state_dict(), got {state!r:.80}")
    missing = [k for k in _KEYS if k not in state]
    if missing:
        raise ValueError(f"state is missing {', '.join(missing)}: pass what run.state_dict() "
                         f"returned, got keys {sorted(state)!r}")
    for key in ("epoch", "epoch_offset"):
        value = state[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"state['{key}'] must be an int or None, got {value!r}")
    step = state["global_step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"state['global_step'] must be a non-negative int, got {step!r}")
    if not isinstance(state["had_train"], bool):
        raise TypeError(f"state['had_train'] must be True or False, got {state['had_train']!r}")
    seen = state["seen"]
    if isinstance(seen, str) or not all(isinstance(n, str) for n in seen):
        raise TypeError(f"state['seen'] must be a list of phase names, got {seen!r}")
    return dict(state)


def load_state_dict(run: "Run", state: Mapping[str, Any]) -> None:
    """Restore the counters and reopen the TensorBoard writers so the curves continue."""
    state = _check(state)
    if run.stack:
        raise RuntimeError(
            "run.load_state_dict() was called inside a phase; call it before the first phase, "
            "right after tw.init"
        )
    run.epoch = state["epoch"]
    run.global_step = state["global_step"]
    run._epoch_offset = state["epoch_offset"]
    run._had_train = state["had_train"]
    run._seen = set(state["seen"])
    sink = run.tensorboard
    if sink is not None:
        sink.flush()
        sink.close()  # writers open from now on start with the purge
        sink.reopen = Reopen(state["epoch"], state["global_step"])


class Reopen:
    """Opens a phase's writer after a resume: purge the orphans, rewrite what the purge hides."""

    def __init__(self, epoch: Optional[int], global_step: int) -> None:
        self.last_epoch = -1 if epoch is None else epoch
        self.last_step = global_step
        self.purge_step = min(self.last_epoch, self.last_step) + 1

    def kept(self, tag: str, step: int) -> bool:
        """Whether the checkpoint covers a point: its step is at most the checkpoint's on its
        own axis."""
        last = self.last_epoch if tag.startswith(EPOCH_AXIS) else self.last_step
        return step <= last

    def open(self, path: str, **options: Any) -> Any:
        """A ``SummaryWriter`` on ``path`` whose file starts with the purge and the rewrite."""
        from torch.utils.tensorboard import SummaryWriter

        rewrite = self._hidden_by_purge(path)  # read before the new file exists
        writer = SummaryWriter(path, purge_step=self.purge_step, **options)
        for event in rewrite:
            writer.file_writer.add_event(event, walltime=event.wall_time)
        return writer

    def _hidden_by_purge(self, path: str) -> List[Any]:
        """The old points in ``path`` that the checkpoint covers and ``purge_step`` would hide."""
        rewrite = []
        for event in _visible_events(path):
            if event.step < self.purge_step:
                continue
            values = [v for v in event.summary.value if self.kept(v.tag, event.step)]
            if values:
                del event.summary.value[:]
                event.summary.value.extend(values)
                rewrite.append(event)
        return rewrite


def _visible_events(path: str) -> List[Any]:
    """The summary events of a run folder as TensorBoard shows them: event files in name order
    (as TensorBoard reads them), earlier purges applied."""
    if not os.path.isdir(path):
        return []
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
    from tensorboard.compat.proto.event_pb2 import SessionLog

    events: List[Any] = []
    for name in sorted(os.listdir(path)):
        if "tfevents" not in name or not os.path.isfile(os.path.join(path, name)):
            continue
        for event in LegacyEventFileLoader(os.path.join(path, name)).Load():
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                events = [e for e in events if e.step < event.step]
            elif event.HasField("summary"):
                events.append(event)
    return events
