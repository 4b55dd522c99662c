"""The phase context: mode capture and restore, grad mode, timing, accumulation of metrics.

A phase is one call of a ``@watch_epoch`` function or one ``with tw.phase(...)`` block. On entry
it saves every submodule's own ``training`` flag and the grad mode and switches them; on exit,
normal or by exception, it restores them exactly and never swallows the exception.
"""

from __future__ import annotations

import math
import numbers
import time
from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch

from .accumulate import FOLD_AT, Accumulator, Interval
from .clocks import Marker, cuda_in_use
from .distributed import is_distributed, reduce_phase
from .dynamo import prepare_if_loaded
from .values import NonFiniteError, describe, flatten, held, scalar

if TYPE_CHECKING:  # pragma: no cover
    from .run import Run

__all__ = ["Phase", "PhaseRecord", "active_phase"]

Tensor = torch.Tensor  # a module global: ``torch.Tensor`` is a slow lookup in torch's big namespace
# Every active phase of every run, innermost last: where tw.log and tw.steps record.
ACTIVE: List["Phase"] = []
LOSS_SCALE = "amp/scale"  # the GradScaler's scale: an extra value of train intervals
# Closed intervals are read (summed into the phase, their step scalars queued for TensorBoard,
# their means put in the bar's postfix) in batches: at the close after which the oldest unread
# one would wait READ_SECS (the TensorBoard sink hands events over on the same schedule), when
# MAX_UNREAD wait, when the bar is redrawn, at the phase's end, and at each close when
# on_nan="raise" (it raises at the end of the interval). One interval read alone after the
# training step's work costs ~30 µs of cold Python here; in a batch, the rest cost a few each.
READ_SECS = 1.0
MAX_UNREAD = 32


def active_phase() -> Optional["Phase"]:
    return ACTIVE[-1] if ACTIVE else None


class PhaseRecord(NamedTuple):
    """One finished phase, as kept in ``run.history``."""

    epoch: Optional[int]
    phase: str
    metrics: Dict[str, float]
    time_s: float
    samples: int
    steps: int
    global_step: int
    nested: bool


class IntervalInfo(NamedTuple):
    """What the host knew when an interval of steps closed."""

    first_step: int  # global step numbers, counted from 1
    last_step: int
    steps: int
    samples: int
    data_wait_s: float
    start: Marker
    end: Marker
    lrs: Dict[str, float]
    wall_time: float  # time.time() at the close: the time its TensorBoard event carries
    first_in_phase: int  # the phase's own step number of its first step, counted from 1


class Phase:
    """``with tw.phase(name, model=None, *, train=None, grad=None, epoch=None, reduce=True) as p``.

    After exit ``p.metrics`` holds the phase's user metrics as floats and ``p.record`` its
    ``PhaseRecord`` (``None`` when the phase was interrupted or the run is disabled).
    """

    # slots: the per-step reads and writes (step_weight, steps, ...) are the interpreter's
    # fastest attribute accesses, and a phase has too many attributes for a shared-key dict
    __slots__ = (
        "_grad_before", "_modes", "acc", "closed", "cuda", "data_wait_s", "deferred", "epoch",
        "explicit_epoch", "finishing", "grad", "interval_base", "interval_due", "interval_first",
        "interval_start", "is_train", "metrics", "models", "name", "nested", "on", "open_step",
        "postfix",
        "record", "reduce", "returned", "run", "samples", "source", "start", "step_weight",
        "steps", "totals", "unread_since", "wait_known",
    )

    def __init__(
        self,
        run: "Run",
        name: str,
        model: Any = None,
        *,
        train: Optional[bool] = None,
        grad: Optional[bool] = None,
        epoch: Optional[int] = None,
        reduce: bool = True,
        models: Optional[List[torch.nn.Module]] = None,
        source: Optional[str] = None,
    ) -> None:
        if (not isinstance(name, str) or not name or name.startswith("/")
                or ".." in name.split("/")):
            raise ValueError(
                f"phase name must be a non-empty str naming a folder under the logdir "
                f"(e.g. 'val' or 'val/fold1'), got {name!r}"
            )
        if epoch is not None and (isinstance(epoch, bool)
                                  or not isinstance(epoch, numbers.Integral)):
            raise TypeError(f"epoch must be an int or None, got {epoch!r}")
        epoch = None if epoch is None else int(epoch)  # numpy integers too
        self.run = run
        self.name = name
        self.is_train = name.startswith("train") if train is None else bool(train)
        self.grad = self.is_train if grad is None else bool(grad)
        self.reduce = reduce
        self.source = source or f"phase '{name}'"
        self.models = models if models is not None else run.models_for(model, self.source)
        self.explicit_epoch = epoch
        self.metrics: Dict[str, float] = {}
        self.record: Optional[PhaseRecord] = None
        self.on = run.enabled
        self.returned: Dict[str, Any] = {}
        # inside a step of tw.steps or @watch_step: its samples (or 1), tw.log's default weight
        self.step_weight: Optional[float] = None
        self.finishing = False
        self.wait_known = False  # set by tw.steps, which times next(); @watch_step alone cannot
        self.deferred: Optional[BaseException] = None
        # (samples, data wait) of the step a tw.steps loop left by break or return was in: it
        # counts once the phase goes on (a new loop, a nested phase, its normal end); a phase
        # left by an exception drops it, as it drops the step that raised
        self.open_step: Optional[Tuple[int, float]] = None

    # -- entry and exit ------------------------------------------------------------------------
    def __enter__(self) -> "Phase":
        self._modes: List[Tuple[torch.nn.Module, bool]] = [
            (m, m.training) for model in self.models for m in model.modules()
        ]
        self._grad_before = torch.is_grad_enabled()
        torch.set_grad_enabled(self.grad)
        for model in self.models:
            if not self.is_train:
                model.eval()
            # a frozen submodule of a training model stays frozen. A torch.compile'd model's own
            # flag can be stale (torch < 2.2 kept one apart from its original's): ask the original
            elif not getattr(model, "_orig_mod", model).training:
                model.train()
        if self.on:
            run = self.run
            prepare_if_loaded()  # for tw.log inside torch.compile'd code (see dynamo.py)
            for outer in run.stack:  # a loop left by break before this phase: its step is done
                outer.end_open_step()
            self.nested = bool(run.stack)
            self.epoch = run.begin_epoch(self)
            self.acc = Accumulator()
            self.cuda = cuda_in_use()
            self.steps = self.samples = 0
            self.data_wait_s = 0.0
            # the latest interval means, for a progress bar; None while tw.steps shows none
            self.postfix: Optional[Dict[str, float]] = None
            self.totals: Dict[str, List[float]] = {}
            # intervals the compiled tw.steps closed, for settle(); None: close_interval does it
            self.closed: Optional[List[tuple]] = None
            self._open_interval()
            self.start = self.interval_start
            run.stack.append(self)
        ACTIVE.append(self)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self._pop()
            if self.on:
                if exc_type is None:
                    self.end_open_step()
                    self._finish()
                else:
                    self._interrupted(exc_type)
        finally:
            for module, training in self._modes:  # each submodule's own flag; no recursion
                if module.training is not training:  # Module.__setattr__ is slow Python
                    module.training = training
            torch.set_grad_enabled(self._grad_before)
        return None

    def _pop(self) -> None:
        for stack in (ACTIVE, self.run.stack if self.on else []):
            if stack and stack[-1] is self:
                stack.pop()
            elif self in stack:
                stack.remove(self)

    @property
    def in_step(self) -> bool:
        return self.step_weight is not None

    # -- recording -----------------------------------------------------------------------------
    def log(self, value: Any, n: Any, metrics: Dict[str, Any], names: Optional[Sequence[str]] = None,
            source: Optional[str] = None) -> None:
        """Record logged values. The hot path, a 0-dim tensor under a name already logged in this
        phase, is ``values.held`` (a ``detach``) and one append; everything else goes through
        ``_log_one``.
        The compiled ``tw.log`` (``_speedups.c``) takes that hot path itself, without ``n=``."""
        if not self.on:
            return
        if n is None:
            weight = self.step_weight or 1.0
        elif type(n) is int or type(n) is float:
            weight = float(n) if -1e300 < n < 1e300 else self._weight(n, source)
        else:
            weight = self._weight(n, source)
        items: Any = metrics.items()
        if value is not None:
            if names is None and type(value) is Tensor:  # tw.log(loss): named loss, same path
                items = (("loss", value), *items)
            else:
                self._log_value(value, weight, names, source)
        buffered = self.acc.values
        for name, item in items:
            if type(item) is Tensor and not item.dim() and not item.dtype.is_complex:
                pairs = buffered.get(name)
                if pairs is not None and len(pairs) < FOLD_AT - 1:
                    pairs.append((held(item), weight))
                    continue
            self._log_one(name, item, weight, source)

    def _log_value(self, value: Any, weight: Any, names: Optional[Sequence[str]],
                   source: Optional[str]) -> None:
        """A positional value that is not a lone tensor: a number, mapping, dataclass, tuple
        with ``names=`` (``tw.log`` or a ``@watch_step``'s return value)."""
        for name, good in flatten(value, names, source or f"logged in {self.source}",
                                  self.run.report):
            self.acc.add(name, good, weight)

    def _log_one(self, name: str, item: Any, weight: Any, source: Optional[str]) -> None:
        add = self.acc.add
        if type(item) is Tensor:
            if item.numel() == 1 and not item.dtype.is_complex:
                item = held(item)
                add(name, item.reshape(()) if item.dim() else item, weight)
                return
        elif item is None:
            return
        elif type(item) is float or type(item) is int:
            try:
                add(name, float(item), weight)
                return
            except OverflowError:  # an int beyond float range, explained by scalar()
                pass
        good, fix = scalar(item)
        if fix is None:
            add(name, good, weight)
        else:
            self._bad(name, item, fix, source)

    def _weight(self, n: Any, source: Optional[str]) -> Any:
        """``n=`` as a weight (a real number or one-element tensor); else the default, reported."""
        try:
            if isinstance(n, torch.Tensor):
                if n.numel() == 1 and not n.dtype.is_complex:
                    return n.detach().reshape(())  # shape (1,) would broadcast in the sums
            elif isinstance(n, numbers.Real):
                return float(n)
        except OverflowError:
            pass
        where = source or f"logged in {self.source}"
        self.run.report("n", f"n= {where}: got {describe(n)}; pass the number of samples as an "
                             "int, a float or a one-element tensor (the default weight was used)")
        return self.step_weight or 1.0

    def _bad(self, name: str, item: Any, fix: str, source: Optional[str]) -> None:
        where = source or f"logged in {self.source}"
        self.run.report(name, f"metric '{name}' {where}: got {describe(item)}; {fix}")

    def capture(self, value: Any, names: Optional[Sequence[str]], source: str) -> None:
        """The value a watched function returned: its names replace the logged ones."""
        if self.on:
            for name, good in flatten(value, names, source, self.run.report):
                self.returned[name] = good

    # -- steps and intervals -------------------------------------------------------------------
    def _open_interval(self) -> None:
        self.interval_start = Marker(self.run.clock, self.cuda)
        self.interval_first = self.run.global_step + 1
        # the phase's counters when the interval opened: the interval's own are differences
        self.interval_base = (self.steps, self.samples, self.data_wait_s)
        self.interval_due = self.steps + self.run.log_every

    def end_step(self, samples: int, data_wait_s: float) -> None:
        """One step done: count it, and close the interval every ``log_every`` steps.

        ``_speedups.c`` (``end_step``) does the same for the compiled ``tw.steps`` iterator."""
        self.steps += 1
        self.samples += samples
        self.data_wait_s += data_wait_s
        if self.is_train:
            self.run.global_step += 1
        if self.steps >= self.interval_due:
            self.close_interval()

    def end_open_step(self) -> None:
        """Count the step a ``tw.steps`` loop was left in (``open_step``), if any."""
        if self.open_step is not None:
            samples, data_wait_s = self.open_step
            self.open_step = None
            self.end_step(samples, data_wait_s)

    def close_interval(self, extra: Optional[Dict[str, torch.Tensor]] = None) -> None:
        """Start the interval's copy to the host; read the closed intervals when due."""
        self.settle()
        run = self.run
        end = Marker(run.clock, self.cuda)  # and the start of the next interval
        length = end.host - self.interval_start.host
        stepped = self.steps > self.interval_base[0]
        lrs = run.learning_rates() if stepped and run.tensorboard is not None else {}
        info = self._next_interval(end, run.global_step, self.steps, self.samples,
                                   self.data_wait_s, lrs, time.time())
        closing = extra is not None  # the phase's last interval: _finish drains it
        scale = None
        if info is not None and self.is_train and not self.nested:
            scale = run.loss_scale()
        if scale is not None:  # the scale tensor rides the interval's one copy: no sync
            extra = {**(extra or {}), LOSS_SCALE: scale}
        pending = self.acc.pending
        if not pending:
            self.unread_since = end.host
        self.acc.close(info, extra)
        if self.acc.changed:
            self._changed_after_logging()
        self.interval_due = self.steps + run.log_every
        if not closing and (end.host - self.unread_since + length >= READ_SECS
                            or len(pending) >= MAX_UNREAD or run.on_nan == "raise"):
            self.read_ready()

    def _changed_after_logging(self) -> None:
        for name in sorted(self.acc.changed):
            self.run.once(
                ("changed", name),
                f"torchwatch: metric '{name}' logged in {self.source} was changed in place after "
                "tw.log and before its interval was read, so some of its step values are the "
                f"value after the change; log a copy (tw.log({name}=t.detach().clone())) or a "
                "new tensor each step",
            )
        self.acc.changed.clear()

    def _next_interval(self, end: Marker, last_step: int, steps: int, samples: int, wait: float,
                       lrs: Dict[str, float], wall_time: float) -> Optional[IntervalInfo]:
        """The interval that ended at ``end``, the phase's counters then at these values: its
        IntervalInfo (None if it had no steps); the next one starts there."""
        first_steps, first_samples, first_wait = self.interval_base
        info = None
        if steps > first_steps:
            info = IntervalInfo(self.interval_first, last_step, steps - first_steps,
                                samples - first_samples, wait - first_wait, self.interval_start,
                                end, lrs, wall_time, first_steps + 1)
        self.interval_start = end
        self.interval_first = last_step + 1
        self.interval_base = (steps, samples, wait)
        return info

    def settle(self) -> None:
        """Take in the intervals the compiled ``tw.steps`` closed without calling Python (it
        appends ``(end, wall_time, global step, steps, samples, data wait, lrs, host sums)`` to
        ``closed``): each becomes the closed interval ``close_interval`` would have made. A
        close run cold after a training step costs ~25 µs of Python here; these run in a batch
        when the intervals are read."""
        closed = self.closed
        if not closed:
            return
        self.closed = []
        for end, wall_time, last_step, steps, samples, wait, lrs, host in closed:
            info = self._next_interval(Marker.at(end), last_step, steps, samples, wait, lrs,
                                       wall_time)
            self.acc.closed(info, host)

    def read_ready(self) -> None:
        """Read the closed intervals whose values have reached the host (see READ_SECS)."""
        self.settle()
        for interval in self.acc.ready():
            self._arrived(interval)
        self.unread_since = self.run.clock()  # those still in flight wait from now

    def _arrived(self, interval: Interval) -> Dict[str, float]:
        sums, extras = interval.read()
        info: Optional[IntervalInfo] = interval.meta
        means: Dict[str, float] = {}
        for name, (wsum, total, nonfinite) in sums.items():
            into = self.totals.setdefault(name, [0.0, 0.0, 0.0])
            into[0] += wsum
            into[1] += total
            into[2] += nonfinite
            if total:
                means[name] = wsum / total
        scale = extras.pop(LOSS_SCALE, None)
        if info is not None and self.is_train and not self.nested:
            self.run.write_interval(self, means, info, scale)
        if means and self.postfix is not None:  # shown by tw.steps when its bar next refreshes
            self.postfix.update(means)
        try:
            for name, (_, _, nonfinite) in sums.items():
                if nonfinite:
                    self.run.nonfinite(self, name, self._steps_of(info))
        except NonFiniteError as error:
            if not self.finishing:
                raise
            self.deferred = self.deferred or error  # raised once the phase is written
        return extras

    def _steps_of(self, info: Optional[IntervalInfo]) -> Optional[str]:
        """An interval's steps, for a message: global steps in a train phase (the x-axis of its
        curves); the phase's own, counted from 1, in another, which does not move the global step."""
        if info is None:
            return None
        if self.is_train:
            return f"steps {info.first_step}-{info.last_step}"
        last = info.first_in_phase + info.steps - 1
        return f"steps {info.first_in_phase}-{last} of this phase"

    # -- the end -------------------------------------------------------------------------------
    def _finish(self) -> None:
        # the end is marked before the copy is queued, so waiting for the copy completes it
        end = Marker(self.run.clock, self.cuda)
        self.finishing = True
        extra = {k: v for k, v in self.returned.items() if isinstance(v, torch.Tensor)}
        self.close_interval(extra)
        extras: Dict[str, float] = {}
        for interval in self.acc.drain():  # the one sync a phase may make
            extras.update(self._arrived(interval))
        time_s = end.seconds_since(self.start)
        sums = {k: list(v) for k, v in self.totals.items()}
        for name, value in self.returned.items():
            value = extras[name] if isinstance(value, torch.Tensor) else value
            sums[name] = [value, 1.0, 0.0 if math.isfinite(value) else 1.0]
        steps, samples, wait = self.steps, self.samples, self.data_wait_s
        if self.reduce:
            if is_distributed():
                sums, time_s, samples, steps, wait = reduce_phase(
                    sums, time_s, samples, steps, wait, self.source,
                    key=f"phase '{self.name}' epoch {self.epoch}",
                )
        means = {k: (s / w if w else math.nan) for k, (s, w, _) in sums.items()}
        # what the function returned first, then the logged metrics as first logged (the sums
        # come grouped by how each was kept, or sorted by the reduction across ranks)
        self.metrics = {k: means[k] for k in (*self.returned, *self.acc.order, *means)
                        if k in means}
        self.record = PhaseRecord(
            self.epoch, self.name, dict(self.metrics), time_s, samples, steps,
            self._global_step(), self.nested,
        )
        self.run.phase_done(self, time_s, wait)
        if self.deferred is not None:
            raise self.deferred
        reduced = self.reduce and is_distributed()
        for name, value in self.metrics.items():
            if name in self.returned:
                if not math.isfinite(value):
                    self.run.nonfinite(self, name, None)
            elif reduced and sums[name][2] and self.run.on_nan == "warn":
                # a NaN only another rank logged, whose warning that rank does not give
                self.run.nonfinite(self, name, "a step of another rank")

    def _global_step(self) -> int:
        """The run's global step as this phase ends. A phase nested in the body of a train
        step (validation every N steps, after ``optimizer.step()``) counts that step, which
        ``tw.steps`` only ends when the loop asks for the next item: its results belong with
        the train curve's point at that step."""
        run = self.run
        stepping = any(outer.is_train and outer.step_weight is not None for outer in run.stack)
        return run.global_step + 1 if stepping else run.global_step

    def _interrupted(self, exc_type: Any) -> None:
        self.settle()
        for interval in self.acc.ready():  # what already reached the host is still written
            try:
                self._arrived(interval)
            except Exception:  # the original exception matters more than ours
                break
        self.acc.discard()
        self.run.phase_interrupted(self, exc_type)
