"""Turning what a loop returns or logs into named scalars, and explaining what cannot be.

A scalar here is a Python float or a detached one-element tensor left on its device: nothing in
this module reads a tensor's value, so normalising a value never synchronises with a GPU.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import sys
import warnings
from collections.abc import Mapping
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple

import torch

__all__ = ["NonFiniteError", "TorchwatchWarning", "describe", "flatten", "held", "warn"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

Scalar = Any  # float | torch.Tensor (one element, detached)
Report = Callable[[str, str], None]  # (metric, message) -> None; warns or raises


class TorchwatchWarning(UserWarning):
    """A value torchwatch skipped, or a setting it could not honour; training goes on."""


class NonFiniteError(FloatingPointError):
    """A metric was NaN or infinite and the run was started with ``on_nan="raise"``."""


def describe(value: Any) -> str:
    """A short, readable account of what was received, for error messages."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)} on {value.device}"
    if isinstance(value, str):
        text = value if len(value) <= 30 else value[:27] + "..."
        return f"str {text!r}"
    if isinstance(value, complex):
        return f"complex {value!r}"
    if isinstance(value, (list, tuple, dict, set)):
        return f"{type(value).__name__} of {len(value)} items"
    return f"{type(value).__name__} {value!r}"[:80]


def held(value: torch.Tensor) -> torch.Tensor:
    """A one-element tensor as it is kept until its interval is read: detached (no graph stays
    alive), and copied where it may change in place before then: a ``Parameter`` (the optimizer
    steps it), or a tensor changed in place before it was logged (its version counter moved: a
    buffer, a running total). A fresh result of an op is kept as it is: no kernel, no copy."""
    copy = ((type(value) is not torch.Tensor and isinstance(value, torch.nn.Parameter))
            or (not value.is_inference() and value._version != 0))  # inference: no counter
    if value.requires_grad:
        value = value.detach()
    return value.clone() if copy else value


def scalar(value: Any) -> Tuple[Optional[Scalar], Optional[str]]:
    """``(scalar, None)`` for an accepted value, ``(None, fix)`` for one that must be skipped."""
    if type(value) is torch.Tensor or isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None, "reduce it to one number first, e.g. `.mean()` or `.sum()`"
        if value.dtype.is_complex:
            return None, "log `.real` or `.abs()` of it instead"
        value = held(value)
        if value.dim():
            value = value.reshape(())
        return value, None
    if isinstance(value, bool):
        return float(value), None
    if isinstance(value, numbers.Real):
        try:
            return float(value), None
        except OverflowError:
            return None, "it is too large for a float; log it scaled down (e.g. its logarithm)"
    if isinstance(value, numbers.Complex):
        return None, "log its real part or its absolute value instead"
    if isinstance(value, (str, bytes)):
        return None, "log numbers only; put text in `run.writer(phase).add_text(...)`"
    if _is_container(value):
        return None, "flatten it into top-level names, e.g. {'acc_top1': ..., 'acc_top5': ...}"
    return None, "log a Python number or a one-element tensor"


def _is_container(value: Any) -> bool:
    return isinstance(value, (Mapping, list, tuple, set)) or (
        dataclasses.is_dataclass(value) and not isinstance(value, type)
    )


def _named_items(value: Any, names: Optional[Sequence[str]]) -> Optional[Iterator[Tuple[Any, Any]]]:
    """The (name, value) pairs of a container value, or None if ``value`` is not a container."""
    if isinstance(value, Mapping):
        return iter(value.items())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return zip(value._fields, value)
    if isinstance(value, (tuple, list)) and names is not None:
        return zip(names, value)
    return None


def flatten(
    value: Any, names: Optional[Sequence[str]], source: str, report: Report
) -> Iterator[Tuple[str, Scalar]]:
    """Yield ``(name, scalar)`` for every good metric in ``value``; ``report`` each bad one.

    ``source`` says where the value came from ("returned by train_one_epoch()", "logged in phase
    'val'") and goes into every message.
    """
    if value is None:
        return
    if isinstance(value, (tuple, list)) and names is not None and len(names) != len(value):
        report(
            "loss" if not names else names[0],
            f"a value {source}: got {describe(value)} but names= has {len(names)} names "
            f"{tuple(names)!r}; make them the same length",
        )
        return
    items = _named_items(value, names)
    if items is None:
        if isinstance(value, (tuple, list)):
            fix = (
                "log them by name, e.g. tw.log(loss=..., acc=...)" if source.startswith("logged")
                else "pass names=('loss', 'acc', ...) to the decorator, or return a dict"
            )
            report(
                "loss",
                f"a value {source}: got a bare {type(value).__name__} of {len(value)} values and "
                f"no names; {fix}",
            )
            return
        name = names[0] if names else "loss"
        items = iter(((name, value),))
    for key, item in items:
        if item is None:
            continue
        if not isinstance(key, str):
            report(
                str(key),
                f"a value {source}: metric name {key!r} is a {type(key).__name__}, not a str; "
                "use string keys such as 'loss' or 'acc'",
            )
            continue
        good, fix = scalar(item)
        if fix is not None:
            report(key, f"metric '{key}' {source}: got {describe(item)}; {fix}")
            continue
        yield key, good


def warn(message: str, category: type = TorchwatchWarning) -> None:
    """Warn, attributing the warning to the first frame of the user's code. Under
    ``torch.distributed`` only rank 0 warns, as only it prints: every rank runs the same code,
    and a value that only another rank saw reaches rank 0 in the phase's reduction."""
    from .distributed import rank  # (distributed imports this module)

    if rank() != 0:
        return
    level, frame = 2, sys._getframe(1)
    while frame is not None and (
        frame.f_code.co_filename.startswith(_PACKAGE_DIR) or "wrapt" in frame.f_code.co_filename
    ):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def reporter(strict: bool, seen: set) -> Report:
    """A ``report`` callable: raise ``ValueError`` under ``strict``, else warn once per metric."""

    def report(metric: str, message: str) -> None:
        if strict:
            raise ValueError(f"torchwatch: rejected (strict=True) {message}")
        text = f"torchwatch: skipped {message}"
        key = (metric, message.split(":", 1)[0])
        if key not in seen:
            seen.add(key)
            warn(text)

    return report
