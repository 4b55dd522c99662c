"""Device-side sums of logged metrics that reach the host once per interval, read when ready.

Per ``add`` the hot path appends a (detached tensor, weight) pair to the metric's list: no
kernel, no copy, no sync. When an interval closes, each metric's list is stacked and reduced on
its own device (two kernels: stack and a float64 sum; equal weights multiply on the host, and a
NaN or Inf shows up as a non-finite sum, checked on the host); the sums of all metrics are
packed into one small tensor per device and copied to the host with one non-blocking copy into
pinned memory, followed by a CUDA event. ``ready()`` hands back the intervals whose event has
completed without waiting; ``drain()`` (phase end) waits for the rest: that is the one sync a
phase may make. Memory stays bounded: long lists are folded into per-metric running partials.

Python numbers go straight into per-interval sums on the host (``host``). So do float32,
float64, integer and bool scalars on the CPU logged through the compiled ``tw.log``
(``_speedups.c``): their value is already in host memory, so it is read when logged and nothing
is kept per step.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Deque, Dict, Iterator, List, Optional, Set, Tuple

import torch

__all__ = ["Accumulator", "Interval"]

FOLD_AT = 1024  # buffered values of a metric before they are folded into a partial on the device

Sums = Dict[str, List[float]]  # name -> [weighted sum, weight total, non-finite count]
Partial = Tuple[torch.Tensor, float, Any]  # (device sum, host factor, weight total)

SUM, TOTAL, EXTRA = 0, 1, 2  # what an entry of a packed interval holds
MAX_PARTIALS = 64  # per metric within one interval; more are combined on the device


def _acc_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _reduce(pairs: List[Tuple[torch.Tensor, Any]]) -> Partial:
    """One metric's buffered (value, weight) pairs as a device sum, a host factor and the
    weight total.

    Two kernels in the usual case (stack, sum): equal weights multiply on the host, and a
    non-finite value shows up as a non-finite sum, checked once the sum reaches the host.
    """
    values, weights = [v for v, _ in pairs], [w for _, w in pairs]
    try:
        stacked = torch.stack(values)
    except RuntimeError:  # values on several devices: gather them where the first one lives
        stacked = torch.stack([v.to(values[0].device, non_blocking=True) for v in values])
    device = stacked.device
    dtype = _acc_dtype(device)
    first = weights[0]
    if torch.Tensor not in map(type, weights):  # ints (samples) and floats (n=)
        total = math.fsum(weights)
        if weights.count(first) == len(weights):
            return stacked.sum(dtype=dtype), float(first), total
        w = torch.tensor(weights, dtype=dtype, pin_memory=device.type == "cuda")
        return (stacked.to(dtype) * w.to(device, non_blocking=True)).sum(), 1.0, total
    w = torch.stack(
        [
            x.to(device, dtype) if isinstance(x, torch.Tensor)
            else torch.full((), x, dtype=dtype, device=device)
            for x in weights
        ]
    )
    return (stacked.to(dtype) * w).sum(), 1.0, w.sum()


def _changed(pairs: List[Tuple[torch.Tensor, Any]]) -> bool:
    """Whether a buffered value was changed in place after it was logged: each was kept at
    version 0 (``values.held`` copies one that was not), so a version counter that moved since
    means the interval reads the value after the change."""
    try:
        return any(value._version for value, _ in pairs)
    except RuntimeError:  # an inference tensor among them: it keeps no counter
        return any(not value.is_inference() and value._version for value, _ in pairs)


def _combine(parts: List[Partial]) -> Partial:
    """Many partials of one metric as one (bounded memory in very long intervals)."""
    sums = torch.stack([t * f for t, f, _ in parts]).sum()
    totals = [w for _, _, w in parts]
    if all(not isinstance(w, torch.Tensor) for w in totals):
        return sums, 1.0, math.fsum(totals)
    return sums, 1.0, torch.stack([torch.as_tensor(w, dtype=sums.dtype, device=sums.device)
                                   for w in totals]).sum()


class Interval:
    """One closed interval on its way to the host; ``meta`` is whatever the phase attached."""

    __slots__ = ("meta", "host", "parts")

    def __init__(self, meta: Any, host: Sums) -> None:
        self.meta = meta
        self.host = host  # sums of Python-number values, already on the host
        # per device: (entries (name, host factor, SUM|TOTAL|EXTRA), host buffer, event)
        self.parts: List[Tuple[List[Tuple[str, float, int]], torch.Tensor, Any]] = []

    def is_ready(self) -> bool:
        return all(event is None or event.query() for *_, event in self.parts)

    def read(self) -> Tuple[Sums, Dict[str, float]]:
        """The interval's sums (host and device merged) and its extra values, as floats."""
        if not self.parts:  # host sums only: the interval's own, read once
            return self.host, {}
        sums = {k: list(v) for k, v in self.host.items()}
        extras: Dict[str, float] = {}
        for entries, buffer, event in self.parts:
            if event is not None:
                event.synchronize()  # a no-op when is_ready() said so
            for (name, factor, kind), value in zip(entries, buffer.tolist()):
                if kind == EXTRA:
                    extras[name] = value
                    continue
                into = sums.setdefault(name, [0.0, 0.0, 0.0])
                if kind == TOTAL:
                    into[1] += value
                else:
                    into[0] += value * factor
                    if not math.isfinite(value):
                        into[2] += 1
        return sums, extras


class Accumulator:
    """One phase's logged metrics: buffered per step, reduced per interval, totalled on the host."""

    # _speedups.c reads values, host, partials, pending and order by offset
    __slots__ = ("values", "host", "partials", "pending", "changed", "order")

    def __init__(self) -> None:
        # name -> [(detached one-element tensor, weight), ...]; Phase.log appends to it directly
        self.values: Dict[str, List[Tuple[torch.Tensor, Any]]] = {}
        self.host: Sums = {}
        self.partials: Dict[str, List[Partial]] = {}
        self.pending: Deque[Interval] = deque()
        self.changed: Set[str] = set()  # metrics whose values changed in place after logging
        # every name logged in the phase, first logged first: the order of its results,
        # whichever way each value was kept (host sums, buffered tensors)
        self.order: Dict[str, None] = {}

    def add(self, name: str, value: Any, weight: Any) -> None:
        """Record one value (a float or a detached one-element tensor) with its weight (a
        number, or a one-element tensor)."""
        if type(value) is float:
            sums = self.host.get(name)
            if sums is None:
                sums = self.host[name] = [0.0, 0.0, 0.0]
                self.order.setdefault(name)
            if type(weight) is not torch.Tensor:
                sums[0] += value * weight
                sums[1] += weight
                if value - value != 0.0:  # NaN or Inf, without a function call
                    sums[2] += 1
                return
            value = torch.full((), value, dtype=torch.float64, device=weight.device)
        pairs = self.values.get(name)
        if pairs is None:
            pairs = self.values[name] = []
            self.order.setdefault(name)
        pairs.append((value, weight))
        if len(pairs) >= FOLD_AT:
            self.fold()

    def fold(self) -> None:
        """Reduce every buffered list into a partial sum on its device."""
        for name, pairs in self.values.items():
            if not pairs:
                continue
            if _changed(pairs):
                self.changed.add(name)
            parts = self.partials.setdefault(name, [])
            parts.append(_reduce(pairs))
            if len(parts) > MAX_PARTIALS:
                parts[:] = [_combine(parts)]
            pairs.clear()

    def close(self, meta: Any = None, extra: Optional[Dict[str, torch.Tensor]] = None) -> Interval:
        """End the current interval and start its copy to the host; nothing waits here."""
        interval = Interval(meta, self.host)
        self.host = {}
        if self.partials or extra or any(self.values.values()):  # else host sums only
            self._copy_to_host(interval, extra)
        self.pending.append(interval)
        return interval

    def closed(self, meta: Any, host: Sums) -> None:
        """An interval the compiled ``tw.steps`` closed: only host sums, already swapped out."""
        self.pending.append(Interval(meta, host))

    def _copy_to_host(self, interval: Interval, extra: Optional[Dict[str, torch.Tensor]]) -> None:
        """The interval's device values, reduced and packed, on their way to the host."""
        self.fold()
        by_device: Dict[torch.device, Tuple[list, list]] = {}
        for name, parts in self.partials.items():
            for tensor, factor, total in parts:
                entries, tensors = by_device.setdefault(tensor.device, ([], []))
                entries.append((name, factor, SUM))
                tensors.append(tensor)
                if isinstance(total, torch.Tensor):
                    entries.append((name, 1.0, TOTAL))
                    tensors.append(total)
                else:
                    interval.host.setdefault(name, [0.0, 0.0, 0.0])[1] += total
        self.partials = {}
        for name, value in (extra or {}).items():
            entries, tensors = by_device.setdefault(value.device, ([], []))
            entries.append((name, 1.0, EXTRA))
            tensors.append(value.reshape(()) if value.dim() else value)
        for device, (entries, tensors) in by_device.items():
            dtype = _acc_dtype(device)
            tensors = [t if t.dtype == dtype else t.to(dtype) for t in tensors]
            packed = torch.stack(tensors) if len(tensors) > 1 else tensors[0].reshape(1)
            event = None
            if device.type == "cuda":
                buffer = torch.empty(packed.shape, dtype=dtype, pin_memory=True)
                buffer.copy_(packed, non_blocking=True)
                event = torch.cuda.Event()
                event.record()
            elif device.type == "cpu":
                buffer = packed
            else:  # mps, xpu, ...: no pinned path, a plain async-capable copy
                buffer = packed.to("cpu", non_blocking=True)
            interval.parts.append((entries, buffer, event))

    def ready(self) -> Iterator[Interval]:
        """Closed intervals whose values have reached the host, oldest first, without waiting."""
        while self.pending and self.pending[0].is_ready():
            yield self.pending.popleft()

    def drain(self) -> Iterator[Interval]:
        """Every closed interval, waiting for the copies still in flight (phase end only)."""
        while self.pending:
            yield self.pending.popleft()

    def discard(self) -> None:
        """Forget everything buffered (a phase interrupted by an exception)."""
        self.values.clear()
        self.host = {}
        self.partials = {}
        self.pending.clear()
        self.changed.clear()
