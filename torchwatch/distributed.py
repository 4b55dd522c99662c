"""Rank detection, rank-0 gating and the one reduction a phase makes across ranks.

Everything here runs at phase end only: a collective must fire at the same point on every rank,
so nothing is ever gated by wall-clock time, and a phase left by an exception runs none.

The reduction is one ``all_gather`` of a fixed-size float64 row per rank::

    [phase key hash, metric names hash, n metrics, time_s, samples, steps, data wait_s,
     then (weighted sum, weight total, non-finite count) of up to MAX_PACKED metrics,
     in sorted name order, zero-padded]

Every rank sees the same gathered table, so every rank takes the same decision from it. When the
names hashes or phase keys differ, or a phase has more than ``MAX_PACKED`` metrics, a second
exchange (``all_gather_object`` of each rank's key and sums) follows on every rank: the union of
the metrics is taken (with a warning naming those only some ranks logged), or, when ranks ended
different phases, every rank raises the same ``RuntimeError`` rather than mixing them.
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Dict, List, Sequence, Tuple

import torch

from .values import warn

__all__ = ["MAX_PACKED", "is_distributed", "rank", "rank_is_known", "reduce_phase", "world_size"]

Sums = Dict[str, List[float]]  # name -> [weighted sum, weight total, non-finite count]

# metrics carried by the fixed-size exchange (a row of 7 + 3 * 256 float64, 6 KiB a rank,
# once a phase); more take the second exchange
MAX_PACKED = 256
_KEY, _NAMES, _COUNT, _TIME, _SAMPLES, _STEPS, _WAIT = range(7)
_HEADER = 7
_WARNED: set = set()


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


def rank_is_known() -> bool:
    """True when the rank comes from a process group or the launcher, not from a default."""
    dist = torch.distributed
    return (dist.is_available() and dist.is_initialized()) or "RANK" in os.environ


def world_size() -> int:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def _hash(text: str) -> float:
    """A 48-bit digest as a float64 (exact below 2**53); the same in every process."""
    return float(int.from_bytes(hashlib.blake2b(text.encode(), digest_size=6).digest(), "big"))


def collective_device() -> torch.device:
    """Where the default process group's collectives take their tensors: CPU for gloo (and a
    ``cpu:gloo,cuda:nccl`` mix), the current CUDA device for NCCL."""
    backend = str(torch.distributed.get_backend()).lower()
    if backend in ("gloo", "mpi") or "cpu:" in backend:
        return torch.device("cpu")
    if "nccl" in backend and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    xpu = getattr(torch, "xpu", None)
    if "xccl" in backend and xpu is not None and xpu.is_available():
        return torch.device("xpu", xpu.current_device())
    return torch.device("cpu")


def _explain(error: BaseException, where: str) -> None:
    """Add what a failed reduction means to the collective's own error (a warning before 3.11)."""
    note = (
        f"torchwatch: the reduction at the end of {where} did not complete on every rank. "
        "Every rank must finish a reduced phase: a rank that leaves it by an exception "
        "runs no reduction (let the exception end that rank's process, as torchrun then "
        "stops the job), and a phase only some ranks run needs reduce=False."
    )
    add_note = getattr(error, "add_note", None)
    if add_note is not None:
        add_note(note)
    else:  # pragma: no cover - Python < 3.11
        warn(note)


def _total(values: List[float]) -> float:
    """The exact sum, in the same order on every rank; inf + -inf is NaN, not an error."""
    try:
        return math.fsum(values)
    except (ValueError, OverflowError):
        return sum(values)


def _gather_rows(row: List[float], where: str) -> List[List[float]]:
    dist = torch.distributed
    mine = torch.tensor(row, dtype=torch.float64, device=collective_device())
    rows = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    try:
        dist.all_gather(rows, mine)
    except Exception as error:  # a timeout or a dead peer: say what it means for the user
        _explain(error, where)
        raise
    return torch.stack(rows).cpu().tolist()


def _gather_objects(item: object, where: str) -> list:
    dist = torch.distributed
    items: list = [None] * dist.get_world_size()
    try:
        dist.all_gather_object(items, item)
    except Exception as error:
        _explain(error, where)
        raise
    return items


def reduce_phase(
    sums: Sums, time_s: float, samples: int, steps: int, data_wait_s: float, where: str,
    key: str = "",
) -> Tuple[Sums, float, int, int, float]:
    """Combine one phase's results across ranks; a no-op outside a process group.

    Metric weighted sums, weights and non-finite counts are added, so ``sum / weight`` is the
    weighted mean over every rank's samples; samples are added; time is the slowest rank's,
    and so is the data wait (its share of that rank's time is what ``data_wait_frac`` reports);
    steps are the most any rank made. ``key`` names the phase (name and epoch): ranks that end
    different phases in the same reduction raise ``RuntimeError`` on every rank.
    """
    if not is_distributed():
        return sums, time_s, samples, steps, data_wait_s
    names = sorted(sums)
    row = [_hash(key), _hash("\0".join(names)), float(len(names)), float(time_s),
           float(samples), float(steps), float(data_wait_s)]
    row += [0.0] * (3 * MAX_PACKED)
    if len(names) <= MAX_PACKED:
        for i, name in enumerate(names):
            row[_HEADER + 3 * i:_HEADER + 3 * i + 3] = [float(x) for x in sums[name]]
    table = _gather_rows(row, where)

    slowest = max(range(len(table)), key=lambda r: table[r][_TIME])  # the first on ties
    time_s = table[slowest][_TIME]
    data_wait_s = table[slowest][_WAIT]
    samples = int(round(_total([r[_SAMPLES] for r in table])))
    steps = int(max(r[_STEPS] for r in table))

    same = all(r[_KEY] == row[_KEY] and r[_NAMES] == row[_NAMES] for r in table)
    if same and len(names) <= MAX_PACKED:
        reduced = {
            name: [_total([r[_HEADER + 3 * i + j] for r in table]) for j in range(3)]
            for i, name in enumerate(names)
        }
        return reduced, time_s, samples, steps, data_wait_s

    # Names or phases differ, or too many metrics: every rank saw the same table, so every rank
    # makes this second exchange, and the decisions below are the same on every rank.
    everyone = _gather_objects((key, {k: [float(x) for x in v] for k, v in sums.items()}), where)
    keys = [k for k, _ in everyone]
    if len(set(keys)) > 1:
        ended = "; ".join(f"rank {r} {k or '?'}" for r, k in enumerate(keys))
        raise RuntimeError(
            f"torchwatch: ranks ended different phases in the same reduction at the end of "
            f"{where} ({ended}). A rank left a phase by an exception and went on, or runs "
            "phases the others do not; their results cannot be combined. Let an exception end "
            "its rank's process, and pass reduce=False to a phase only some ranks run."
        )
    return _union([s for _, s in everyone], where), time_s, samples, steps, data_wait_s


def _union(per_rank: Sequence[Sums], where: str) -> Sums:
    """Each metric summed over the ranks that logged it; warn (rank 0) about the partial ones."""
    names = sorted(set().union(*per_rank))
    reduced: Sums = {}
    partial: List[str] = []
    for name in names:
        have = [s[name] for s in per_rank if name in s]
        reduced[name] = [_total([v[j] for v in have]) for j in range(3)]
        if len(have) < len(per_rank):
            ranks = ", ".join(str(r) for r, s in enumerate(per_rank) if name in s)
            partial.append(f"'{name}' (rank{'s' if len(have) > 1 else ''} {ranks})")
    key = (where, tuple(partial))
    if partial and key not in _WARNED:
        _WARNED.add(key)  # once per phase and set of metrics (warn() speaks on rank 0 only)
        warn(
            f"torchwatch: {where} has metrics that only some ranks logged: "
            f"{', '.join(partial)}; each is averaged over the ranks that logged it. Log the "
            "same metrics on every rank, or pass reduce=False to a phase only some ranks run"
        )
    return reduced
