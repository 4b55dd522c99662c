"""Host clock and CUDA events behind one interface.

Under asynchronous CUDA the host clock measures how fast kernels were *queued*, not run. When
CUDA is in use, interval and phase durations come from CUDA events recorded on the current
stream at interval boundaries and read lazily (``query()``) once the interval's values reach the
host, never through ``torch.cuda.synchronize()``. The data wait inside ``next()`` is host time
either way: it is the host that waits for the loader.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import torch

__all__ = ["Marker", "cuda_in_use", "host_clock"]

host_clock: Callable[[], float] = time.perf_counter


def cuda_in_use() -> bool:
    """True once this process has initialised CUDA (checking never initialises it)."""
    return torch.cuda.is_available() and torch.cuda.is_initialized()


class Marker:
    """A point in time: the host clock, plus a CUDA event when CUDA is in use."""

    __slots__ = ("host", "event")

    def __init__(self, clock: Callable[[], float], cuda: bool) -> None:
        self.host = clock()
        self.event: Optional[Any] = None
        if cuda:
            self.event = torch.cuda.Event(enable_timing=True)
            self.event.record()

    @classmethod
    def at(cls, host: float) -> "Marker":
        """A host-clock reading taken earlier (the compiled ``tw.steps`` reads the clock)."""
        marker = cls.__new__(cls)
        marker.host = host
        marker.event = None
        return marker

    def seconds_since(self, start: "Marker") -> float:
        """Seconds from ``start`` to here: device time when both have completed CUDA events."""
        if self.event is not None and start.event is not None:
            if self.event.query():  # read lazily: an event still pending falls back to the host
                return start.event.elapsed_time(self.event) / 1000.0
        return self.host - start.host
