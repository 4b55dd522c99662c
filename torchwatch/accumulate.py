"""Device-side sums of logged metrics that reach the host once per interval, read when ready.

Per ``add`` the hot path appends a detached tensor and its weight to two lists: no kernel, no
copy, no sync. When an interval closes, each metric's list is stacked and reduced on its own
device (weighted sum, weight total, count of non-finite values); the results of all metrics are
packed into one small tensor per device and copied to the host with one non-blocking copy into
pinned memory, followed by a CUDA event. ``ready()`` hands back the intervals whose event has
completed without waiting; ``drain()`` (phase end) waits for the rest: that is the one sync a
phase may make. Memory stays bounded: long lists are folded into per-metric running partials.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Deque, Dict, Iterator, List, Optional, Tuple

import torch

__all__ = ["Accumulator", "Interval"]

FOLD_AT = 1024  # buffered tensors before they are folded into running partials on the device

Sums = Dict[str, List[float]]  # name -> [weighted sum, weight total, non-finite count]


def _acc_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _reduce(values: List[torch.Tensor], weights: List[Any]) -> Tuple[Any, Any, Any]:
    """(weighted sum, weight total, non-finite count) of one metric's buffered values."""
    try:
        stacked = torch.stack(values)
    except RuntimeError:  # values on several devices: gather them where the first one lives
        stacked = torch.stack([v.to(values[0].device, non_blocking=True) for v in values])
    device = stacked.device
    stacked = stacked.to(_acc_dtype(device))
    nonfinite = stacked.isfinite().logical_not().sum()
    first = weights[0]
    if all(type(w) is float for w in weights):
        total = math.fsum(weights)
        if weights.count(first) == len(weights):
            return stacked.sum() * first, total, nonfinite
        w = torch.tensor(weights, dtype=stacked.dtype, pin_memory=device.type == "cuda")
        return (stacked * w.to(device, non_blocking=True)).sum(), total, nonfinite
    w = torch.stack(
        [
            x.to(device, stacked.dtype) if isinstance(x, torch.Tensor)
            else torch.full((), x, dtype=stacked.dtype, device=device)
            for x in weights
        ]
    )
    return (stacked * w).sum(), w.sum(), nonfinite


class Interval:
    """One closed interval on its way to the host; ``meta`` is whatever the phase attached."""

    __slots__ = ("meta", "host", "parts", "extra")

    def __init__(self, meta: Any, host: Sums) -> None:
        self.meta = meta
        self.host = host  # sums of Python-number values, already on the host
        # per device: (names, layout, host buffer, event); layout says which fields are tensors
        self.parts: List[Tuple[List[str], List[Tuple[bool, bool]], torch.Tensor, Any]] = []
        self.extra: List[Tuple[str, int]] = []  # (name, index) of extra tensors in parts[...]

    def is_ready(self) -> bool:
        return all(event is None or event.query() for *_, event in self.parts)

    def read(self) -> Tuple[Sums, Dict[str, float]]:
        """The interval's sums (host and device merged) and its extra values, as floats."""
        sums = {k: list(v) for k, v in self.host.items()}
        extras: Dict[str, float] = {}
        for names, layout, buffer, event in self.parts:
            if event is not None:
                event.synchronize()  # a no-op when is_ready() said so
            flat = buffer.tolist()
            i = 0
            for name, (has_sum, total_on_device) in zip(names, layout):
                if not has_sum:  # an extra value, not a metric sum
                    extras[name] = flat[i]
                    i += 1
                    continue
                wsum, nonfinite = flat[i], flat[i + 1]
                i += 2
                total = None
                if total_on_device:
                    total = flat[i]
                    i += 1
                into = sums.setdefault(name, [0.0, 0.0, 0.0])
                into[0] += wsum
                into[2] += nonfinite
                if total is not None:
                    into[1] += total
        return sums, extras


class Accumulator:
    """One phase's logged metrics: buffered per step, reduced per interval, totalled on the host."""

    def __init__(self) -> None:
        self.values: Dict[str, List[torch.Tensor]] = {}
        self.weights: Dict[str, List[Any]] = {}
        self.host: Sums = {}
        self.carry: Dict[str, Tuple[Any, Any, Any]] = {}
        self.buffered = 0
        self.pending: Deque[Interval] = deque()

    def add(self, name: str, value: Any, weight: Any) -> None:
        """Record one value (a float or a detached one-element tensor) with its weight."""
        if type(value) is float:
            sums = self.host.get(name)
            if sums is None:
                sums = self.host[name] = [0.0, 0.0, 0.0]
            if type(weight) is float:
                sums[0] += value * weight
                sums[1] += weight
                if value - value != 0.0:  # NaN or Inf, without a function call
                    sums[2] += 1
                return
            value = torch.full((), value, dtype=torch.float64, device=weight.device)
        values = self.values.get(name)
        if values is None:
            values = self.values[name] = []
            self.weights[name] = []
        values.append(value)
        self.weights[name].append(weight)
        self.buffered += 1
        if self.buffered >= FOLD_AT:
            self.fold()

    def fold(self) -> None:
        """Reduce every buffered list into its running partial, on the device."""
        for name, values in self.values.items():
            if not values:
                continue
            wsum, total, nonfinite = _reduce(values, self.weights[name])
            previous = self.carry.get(name)
            if previous is not None:
                wsum, total, nonfinite = (
                    wsum + previous[0], total + previous[1], nonfinite + previous[2]
                )
            self.carry[name] = (wsum, total, nonfinite)
            values.clear()
            self.weights[name].clear()
        self.buffered = 0

    def close(self, meta: Any = None, extra: Optional[Dict[str, torch.Tensor]] = None) -> Interval:
        """End the current interval and start its copy to the host; nothing waits here."""
        self.fold()
        interval = Interval(meta, self.host)
        self.host = {}
        by_device: Dict[torch.device, Tuple[List[str], list, list]] = {}
        for name, (wsum, total, nonfinite) in self.carry.items():
            names, layout, tensors = by_device.setdefault(wsum.device, ([], [], []))
            on_device = isinstance(total, torch.Tensor)
            names.append(name)
            layout.append((True, on_device))
            tensors.append(wsum)
            tensors.append(nonfinite.to(wsum.dtype))
            if on_device:
                tensors.append(total.to(wsum.dtype))
            else:
                into = interval.host.setdefault(name, [0.0, 0.0, 0.0])
                into[1] += total
        self.carry = {}
        for name, value in (extra or {}).items():
            names, layout, tensors = by_device.setdefault(value.device, ([], [], []))
            names.append(name)
            layout.append((False, False))
            tensors.append(value.to(_acc_dtype(value.device)))
        for device, (names, layout, tensors) in by_device.items():
            packed = torch.stack([t.to(_acc_dtype(device)) for t in tensors])
            event = None
            if device.type == "cuda":
                buffer = torch.empty(packed.shape, dtype=packed.dtype, pin_memory=True)
                buffer.copy_(packed, non_blocking=True)
                event = torch.cuda.Event()
                event.record()
            elif device.type == "cpu":
                buffer = packed
            else:  # mps, xpu, ...: no pinned path, a plain async-capable copy
                buffer = packed.to("cpu", non_blocking=True)
            interval.parts.append((names, layout, buffer, event))
        self.pending.append(interval)
        return interval

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
        self.weights.clear()
        self.host = {}
        self.carry = {}
        self.pending.clear()
        self.buffered = 0
