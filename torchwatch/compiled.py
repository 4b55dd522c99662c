"""The compiled hot path (``_speedups.c``), when it was built and is not switched off.

``tw.log`` and the ``tw.steps`` iterator have a pure-Python version (the reference, and what runs
where no C compiler was at hand) and a compiled one that does the same for the common case.
``TORCHWATCH_PURE_PYTHON=1`` in the environment runs the pure-Python one.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Optional

__all__ = ["speedups"]


def _load() -> Optional[ModuleType]:
    if os.environ.get("TORCHWATCH_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from . import _speedups
    except ImportError:  # built without a compiler (the build step is optional)
        return None
    return _speedups


speedups = _load()
