"""Console sink: one line per finished phase, printed on rank 0, never garbling a live bar."""

from __future__ import annotations

import math
import sys
from typing import Dict, Optional

__all__ = ["ConsoleSink", "format_value", "phase_line"]


def format_value(value: float) -> str:
    """Four significant digits; small magnitudes (a learning rate) in exponent form."""
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value != 0.0 and abs(value) < 1e-2:
        return f"{value:.3e}"
    text = f"{value:#.4g}"
    return text[:-1] if text.endswith(".") else text


def format_seconds(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds >= 1.0 else f"{seconds:.3f}s"


def epoch_label(epoch: Optional[int], total: Optional[int]) -> str:
    if epoch is None:
        return "Epoch [-]"
    return f"Epoch [{epoch}/{total}]" if total else f"Epoch [{epoch}]"


def phase_line(
    label: str,
    phase: str,
    metrics: Dict[str, float],
    time_s: float,
    samples_per_s: Optional[float] = None,
    data_wait_frac: Optional[float] = None,
) -> str:
    """``Epoch [3/10] train  loss 0.4123  lr 1.000e-03 | 12.3s  5,120 samples/s  data 4%``."""
    parts = [f"{label} {phase}"]
    parts += [f"{name} {format_value(value)}" for name, value in metrics.items()]
    tail = [format_seconds(time_s)]
    if samples_per_s is not None:
        # whole samples with a thousands separator; a slow rate (a sample every few seconds)
        # with 2 significant digits, not as 0
        rate = f"{samples_per_s:,.0f}" if samples_per_s >= 9.5 else f"{samples_per_s:.2g}"
        tail.append(f"{rate} samples/s")
    if data_wait_frac is not None:
        tail.append(f"data {data_wait_frac * 100:.0f}%")
    return "  ".join(parts) + " | " + "  ".join(tail)


class ConsoleSink:
    """Prints to ``sys.stdout`` as it is at print time (so redirection and capture work)."""

    def log(self, line: str) -> None:
        from tqdm import tqdm

        if getattr(tqdm, "_instances", None):  # a live bar: print above it, then redraw it
            tqdm.write(line, file=sys.stdout)
        else:
            print(line, file=sys.stdout, flush=True)

    def flush(self) -> None:
        sys.stdout.flush()

    def close(self) -> None:
        self.flush()
