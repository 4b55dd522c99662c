"""``tw.log`` met inside a ``torch.compile``d function: one graph break, no recompiles.

Traced by dynamo, ``tw.log``'s bookkeeping (appending to per-metric lists, counting) would make
dynamo guard on list lengths and recompile the function at nearly every step. So while dynamo
traces, ``tw.log`` calls itself through ``torch._dynamo.disable``: the graph breaks at that call
and the logging runs eagerly, with the values the graph computed, at the same cost as outside.

Logging the values a compiled function returns, outside it, keeps its graph whole; that is the
recommended form. Dynamo's ``reorderable_logging_functions`` (how ``print`` avoids a break) is
no way out: it drops keyword arguments, and calls made from a nested function.

``torch._dynamo`` takes a second to import, so the disabled wrapper is made when a phase starts
and the program has already imported it (``torch.compile`` does). The compiled ``tw.log``
(``_speedups.c``) is registered with dynamo then too, with the Python one as what dynamo traces in
its place. A program that first imports dynamo inside a phase gets, in that phase, dynamo's own
break at an unknown builtin, with its warning; the values are recorded all the same.
"""

from __future__ import annotations

import sys
from typing import Any, Dict

import torch

__all__ = ["is_compiling", "log_outside_graph", "prepare_if_loaded"]

# constant True while dynamo traces, else False (torch.compiler's from torch 2.3 on)
is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None) or (
    torch._utils.is_compiling)
_eager_log: Any = None


def prepare_if_loaded() -> None:
    """Make ``tw.log``'s disabled wrapper once the program has imported ``torch._dynamo``."""
    global _eager_log
    if _eager_log is None and "torch._dynamo" in sys.modules:
        _eager_log = _disabled_log()


def _disabled_log() -> Any:
    import torch._dynamo as dynamo

    from .run import log, python_log

    substitute = getattr(torch.compiler, "substitute_in_graph", None)  # torch >= 2.5
    if log is not python_log and substitute is not None:
        # the compiled tw.log is a C function dynamo cannot read: it traces the Python one in
        # its place, which breaks the graph here as above (else: a break with a warning)
        substitute(log)(python_log)
    return dynamo.disable(log)


def log_outside_graph(value: Any, n: Any, metrics: Dict[str, Any]) -> None:
    """``tw.log`` reached while dynamo traces: break the graph here and log eagerly."""
    eager = _eager_log if _eager_log is not None else _disabled_log()
    eager(value, n=n, **metrics)
