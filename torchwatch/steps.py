"""``tw.steps(loader)``: per-step timing, samples, progress bar and the global step, no syncs.

Per item the host reads the clock twice (around ``next()``: the data wait), counts the samples
of the batch from tensor metadata and bumps a few counters. A bar, when shown, is updated only
when the clock already read says ``BAR_SECS`` have passed: no per-step tqdm call. Everything else
(reductions, copies to the host, TensorBoard) happens once per ``log_every`` steps, in
``Phase.close_interval``; the compiled iterator closes an interval of host sums itself, and
``Phase.settle`` takes it in when the intervals are next read.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Mapping
from typing import Any, Iterable, Iterator, Optional

import torch

from .compiled import speedups
from .phase import ACTIVE, MAX_UNREAD, READ_SECS, Phase

__all__ = ["first_tensor_rows", "steps"]

Tensor = torch.Tensor  # a module global: ``torch.Tensor`` is a slow lookup in torch's big namespace


def first_tensor_rows(batch: Any) -> Optional[int]:
    """Dim 0 of the first tensor in a batch (nested tuples, lists, dicts, dataclasses); None if
    there is none."""
    kind = type(batch)
    if kind is tuple or kind is list:  # the usual (x, y) batch: no recursive call, no len()
        first = batch[0] if batch else None
        if type(first) is Tensor:
            return first.shape[0] if first.ndim else 1
    elif kind is Tensor:
        return batch.shape[0] if batch.ndim else 1
    if isinstance(batch, Tensor):
        return len(batch) if batch.ndim else 1
    if kind is tuple or kind is list or isinstance(batch, (tuple, list)):
        for item in batch:
            rows = first_tensor_rows(item)
            if rows is not None:
                return rows
        return None
    if isinstance(batch, Mapping):
        items: Iterable = batch.values()
    elif dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        items = (getattr(batch, field.name) for field in dataclasses.fields(batch))
    else:
        return None
    for item in items:
        rows = first_tensor_rows(item)
        if rows is not None:
            return rows
    return None


class Steps:
    """What ``tw.steps`` returns: iterate it once; ``len()`` works when the iterable has one."""

    def __init__(self, iterable: Iterable, total: Optional[int], desc: Optional[str],
                 batch_size: Optional[int], accumulate: int = 1) -> None:
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.batch_size = batch_size
        self.accumulate = accumulate  # items per step: micro-batches of one optimizer step
        self.run: Any = None  # the run of run.steps(); None: the default run's tw.steps

    def __len__(self) -> int:
        return self.total if self.total is not None else len(self.iterable)  # type: ignore

    def __iter__(self) -> Iterator:
        phase = ACTIVE[-1] if ACTIVE else None
        if phase is None:
            from .run import outside

            outside("tw.steps", self.run)
            return iter(self.iterable)
        if not phase.on:
            return iter(self.iterable)
        phase.end_open_step()  # an earlier loop of this phase, left by break
        if self.accumulate != 1:
            return _accumulating(phase, self)
        if speedups is None:
            return _watched(phase, self)
        bar = _bar(phase, self)
        phase.wait_known = True
        run = phase.run
        if (phase.closed is None and not phase.cuda and run.scaler is None
                and run.on_nan != "raise"):
            phase.closed = []  # it closes intervals itself (see Phase.settle)
        lrs = run.lr_tags() if run.tensorboard is not None else None
        return speedups.Watched(phase, self.iterable, self.batch_size, bar, _show,
                                first_tensor_rows, BAR_SECS, lrs, READ_SECS, MAX_UNREAD)


def steps(iterable: Iterable, *, total: Optional[int] = None, desc: Optional[str] = None,
          batch_size: Optional[int] = None, accumulate: int = 1) -> Steps:
    """Yield the items of ``iterable`` unchanged, timing and counting each step of the phase.

    ``accumulate=k`` (gradient accumulation): every k items are one step, an optimizer step, in
    the global step, ``log_every`` and the ``step/*`` scalars; their samples add up. A last group
    of fewer than k items counts as one more step.
    """
    if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
        raise ValueError(f"accumulate must be a positive int (items per step), got {accumulate!r}")
    for name, value in (("total", total), ("batch_size", batch_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 0):
            raise ValueError(f"{name} must be a non-negative int or None, got {value!r}")
    if desc is not None and not isinstance(desc, str):
        raise TypeError(f"desc must be a str or None, got {desc!r}")
    return Steps(iterable, total, desc, batch_size, accumulate)


BAR_SECS = 0.1  # the bar is updated (and its postfix set) at most this often


def _bar(phase: Phase, spec: Steps) -> Any:
    run = phase.run
    if not run.bar_wanted():
        return None
    total = spec.total
    if total is None:
        try:
            total = len(spec.iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    if total is not None:
        total = -(-total // spec.accumulate)  # the bar counts steps, not micro-batches
    from .run import _in_notebook, is_terminal
    from .sinks.console import epoch_label

    if _in_notebook():
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    label = epoch_label(run.display_epoch(phase.epoch), run.total_epochs)
    if phase.postfix is None:
        phase.postfix = {}
    # tw.steps itself calls update() at most every BAR_SECS: each call redraws. The width follows
    # a terminal's resizes; elsewhere (a pipe, a file) there is none to ask at every redraw.
    return tqdm(total=total, desc=spec.desc or f"{label} {phase.name}", leave=False,
                mininterval=0, miniters=1, unit="step", file=sys.stderr,
                dynamic_ncols=is_terminal(sys.stderr))


def _show(bar: Any, phase: Phase, done: int) -> None:
    """Bring the bar to ``done`` steps, with the phase's latest interval means as its postfix."""
    if phase.acc.pending or phase.closed:
        phase.read_ready()
    if phase.postfix:
        bar.set_postfix({k: f"{v:.4g}" for k, v in phase.postfix.items()}, refresh=False)
    bar.update(done - bar.n)


def _close_bar(bar: Any, done: int) -> None:
    """The end of the loop: the bar, left at ``done`` steps, is cleared without a last redraw,
    as tqdm's own iterator ends a ``leave=False`` bar (a frame erased at once is never seen;
    the phase's console line takes its place). The count still matters: tqdm's notebook bar
    closes in red when it is short of its total."""
    bar.n = done
    bar.close()


def _watched(phase: Phase, spec: Steps) -> Iterator:
    """The iterator of ``tw.steps`` inside a phase (``_speedups.Watched`` is its compiled twin)."""
    clock = phase.run.clock
    end_step = phase.end_step
    fixed = spec.batch_size
    bar = _bar(phase, spec)
    bar_due = 0.0 if bar is not None else math.inf  # the clock is read anyway: no counter
    done = 0
    phase.wait_known = True
    iterator = iter(spec.iterable)
    try:
        while True:
            started = clock()
            try:
                item = next(iterator)
            except StopIteration:
                return
            now = clock()
            if now >= bar_due:
                bar_due = now + BAR_SECS
                _show(bar, phase, done)
            rows = fixed if fixed is not None else first_tensor_rows(item)
            phase.step_weight = rows or 1.0
            try:
                yield item
            except GeneratorExit:  # the loop was left (break, return, an exception) in this step
                phase.open_step = (rows or 0, now - started)
                done += 1
                raise
            phase.step_weight = None
            end_step(rows or 0, now - started)
            done += 1
    finally:
        phase.step_weight = None
        if bar is not None:
            _close_bar(bar, done)


def _accumulating(phase: Phase, spec: Steps) -> Iterator:
    """``_watched`` for ``accumulate=k``: one step per k items, their samples and waits summed."""
    clock = phase.run.clock
    end_step = phase.end_step
    fixed = spec.batch_size
    every = spec.accumulate
    bar = _bar(phase, spec)
    bar_due = 0.0 if bar is not None else math.inf
    done = 0
    phase.wait_known = True
    iterator = iter(spec.iterable)
    left, samples, waited = every, 0, 0.0
    try:
        while True:
            started = clock()
            try:
                item = next(iterator)
            except StopIteration:
                if left != every:  # a last, partial group of micro-batches
                    end_step(samples, waited)
                    done += 1
                return
            now = clock()
            if now >= bar_due:
                bar_due = now + BAR_SECS
                _show(bar, phase, done)
            rows = (fixed if fixed is not None else first_tensor_rows(item)) or 0
            phase.step_weight = rows or 1.0
            try:
                yield item
            except GeneratorExit:  # left in this micro-batch: its group is one more step
                phase.open_step = (samples + rows, waited + now - started)
                done += 1
                raise
            phase.step_weight = None
            samples += rows
            waited += now - started
            left -= 1
            if not left:
                end_step(samples, waited)
                done += 1
                left, samples, waited = every, 0, 0.0
    finally:
        phase.step_weight = None
        if bar is not None:
            _close_bar(bar, done)
