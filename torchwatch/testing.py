"""Count host-device synchronisations in a block of your own loop.

Wrap a few steps of a training loop and look at what reached the host::

    from torchwatch.testing import count_syncs

    with count_syncs() as syncs:
        for x, y in tw.steps(loader):
            ...
    print(syncs)  # 3 syncs: 0 torchwatch, 3 user (item x3 at train.py:12 train_one_epoch)
    # none per step; at most one read per log_every-step interval (values that already reached
    # the host), plus the phase end
    assert syncs.torchwatch <= len(loader) // 50 + 2, syncs

Each sync is a `SyncEvent(op, origin, where, via)`. ``origin`` is ``"torchwatch"`` when the code
that made the call is in the torchwatch package and ``"user"`` otherwise; ``where`` is that code's
``"file:line function"``. Frames of torch, the standard library and installed packages are looked
through (``via`` names the innermost of them), so a sync that torchwatch causes inside tqdm counts
as torchwatch's, and one inside your ``@tw.watch_epoch`` function (which torchwatch calls) as yours.

How syncs are seen:

- Always, on any device, a `torch.overrides.TorchFunctionMode` counts the calls that read tensor
  data into Python: ``.item()``, ``float()``, ``int()``, ``bool()`` (``if t:``, ``not t``),
  ``operator.index()`` (``lst[t]``), ``complex()``, ``.tolist()``, ``.numpy()``,
  ``np.asarray()``, ``.cpu()``, ``format()``/f-strings, ``repr()``/``str()``/``print()``,
  ``x in t``, ``torch.equal``, ``torch.allclose``, ``torch.is_nonzero``; and ``.to()``/``.copy_()``
  into a CPU tensor from a non-CPU tensor unless ``non_blocking=True``. These are counted on CPU
  tensors too, where they cost nothing, so a CPU test proves a loop would not sync on a GPU.
- When CUDA is in use, ``torch.cuda.set_sync_debug_mode("warn")`` is on during the block and its
  warnings are captured (not shown), so syncs inside other ops (boolean masks, ``nonzero``, syncs
  during ``backward``) are counted too, once each, named after the op (``"cuda sync"`` if none).

Gaps: on CPU, ops whose output shape depends on the data (``t[mask]``, ``nonzero``, ``unique``)
are not counted, since they sync only on a GPU; explicit ``torch.cuda.synchronize()`` and
``Event.synchronize()`` are never counted (torch does not report them); ops run in other threads
are seen only through CUDA's warnings; warning filters changed inside a CUDA block are reset on
exit. Conversely a CPU run counts reads of tensors that stay on the CPU even on a GPU: Adam's
``.item()`` on its step counter shows up as ``item ... via torch/optim/optimizer.py``. One block
runs per thread at a time (nesting is fine). The mode adds a few microseconds per torch call:
fine for tests and audits, not meant to stay on in production.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
import threading
import warnings
from collections import Counter
from contextlib import ExitStack
from typing import NamedTuple

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["SyncCounter", "SyncEvent", "count_syncs"]

_T = torch.Tensor
# Calls that hand tensor data to Python. Names are how a user would write them.
_READS = {
    _T.item: "item", _T.__float__: "float", _T.__int__: "int", _T.__bool__: "bool",
    _T.__index__: "index", _T.__complex__: "complex", _T.tolist: "tolist", _T.cpu: "cpu",
    _T.numpy: "numpy", _T.__array__: "np.asarray", _T.__format__: "format",
    _T.__repr__: "repr", _T.__contains__: "in", _T.equal: "equal", _T.allclose: "allclose",
    _T.is_nonzero: "is_nonzero", torch.equal: "equal", torch.allclose: "allclose",
    torch.is_nonzero: "is_nonzero",
}
_COPIES = {_T.to: "to", _T.copy_: "copy_"}  # syncs only when they block on a copy to the host
_OPS = {**_READS, **_COPIES}
_CUDA_SYNC_TEXT = "synchronizing CUDA operation"  # torch: "called a synchronizing CUDA operation"

_OWN, _TORCHWATCH, _USER, _LIBRARY = "own", "torchwatch", "user", "library"
_DISPATCH_CODE = torch.overrides.handle_torch_function.__code__  # called by Python-level ops
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_THIS_FILE = os.path.abspath(__file__)
_kinds: dict = {}  # co_filename -> (kind, display name)


def _library_dirs():
    """Map each directory of library code (torch, stdlib, installed packages) to its shown root."""
    torch_dir = os.path.dirname(os.path.abspath(torch.__file__))
    roots = {torch_dir: os.path.dirname(torch_dir)}  # shown as torch/optim/adam.py
    for d in [p for k, p in sysconfig.get_paths().items() if k.endswith(("stdlib", "lib"))] + list(
        getattr(site, "getsitepackages", lambda: [])()
    ):
        roots.setdefault(os.path.abspath(d), os.path.abspath(d))
    return {os.path.join(d, ""): os.path.join(r, "") for d, r in roots.items()}


_LIBRARY_DIRS = _library_dirs()
_LIBRARY_PREFIXES = tuple(_LIBRARY_DIRS)


def _classify(filename):
    """Say whose code a file is and how to show it; cached per filename."""
    known = _kinds.get(filename)
    if known is not None:
        return known
    path = filename if filename.startswith("<") else os.path.abspath(filename)
    if path == _THIS_FILE:
        known = (_OWN, path)
    elif path.startswith(os.path.join(_PACKAGE_DIR, "")):
        known = (_TORCHWATCH, os.path.relpath(path, os.path.dirname(_PACKAGE_DIR)))
    elif path.startswith(_LIBRARY_PREFIXES):
        root = _LIBRARY_DIRS[max((d for d in _LIBRARY_PREFIXES if path.startswith(d)), key=len)]
        known = (_LIBRARY, path[len(root):])
    elif path.startswith("<frozen"):
        known = (_LIBRARY, path)
    else:
        cwd = os.path.join(os.getcwd(), "")
        known = (_USER, path[len(cwd):] if path.startswith(cwd) else path)
    _kinds[filename] = known
    return known


def _attribute(frame):
    """Return (origin, where, via) for the innermost frame, outside this module, that is no library.

    torch, the standard library and installed packages are looked through: ``via`` names the
    innermost of their frames when the call came from one. When no other frame exists, the
    innermost library frame stands for the user.
    """
    via = ""
    while frame is not None:
        code = frame.f_code
        if code is _DISPATCH_CODE:  # torch's dispatch and the op's own body: the op, no caller
            frame = frame.f_back
            frame = frame.f_back if frame is not None else None
            continue
        kind, name = _classify(code.co_filename)
        if kind != _OWN:
            where = f"{name}:{frame.f_lineno} {code.co_name}"
            if kind != _LIBRARY:
                return kind, where, via
            via = via or where
        frame = frame.f_back
    return _USER, via or "?", ""


def _blocking_copy_to_host(func, args, kwargs):
    """Whether a ``Tensor.to``/``Tensor.copy_`` call waits for a device-to-host copy."""
    if func is _T.copy_:
        dst, src = args[0], (args[1] if len(args) > 1 else kwargs.get("src"))
        non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
    else:
        src = args[0]
        try:
            dst_device, _, non_blocking, _ = torch._C._nn._parse_to(*args[1:], **kwargs)
        except Exception:  # a malformed call: torch raises the real error below
            return False
        dst = dst_device  # None: a dtype change that stays on the source's device
    if not isinstance(src, torch.Tensor) or src.device.type == "cpu" or non_blocking is True:
        return False
    dst_type = dst.device.type if isinstance(dst, torch.Tensor) else getattr(dst, "type", None)
    return dst_type == "cpu"


class SyncEvent(NamedTuple):
    """One sync: what ran, whose code called it ("torchwatch" or "user"), where, and via what.

    ``where`` is ``"file:line function"`` of that code; ``via`` is the innermost torch, standard
    library or installed-package frame when the op was called from one (``""`` otherwise).
    """

    op: str
    origin: str
    where: str
    via: str = ""


class _SyncMode(TorchFunctionMode):
    """Counts host reads on the way through; never changes a call's arguments or result."""

    def __init__(self, counter):
        super().__init__()
        self.counter = counter
        self.running = None  # (op name, counted) of the call in flight, kept only for CUDA

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if kwargs is None:
            kwargs = {}
        try:
            op = _OPS.get(func)
        except TypeError:  # an unhashable callable is no host read
            op = None
        if op is not None and func in _COPIES and not _blocking_copy_to_host(func, args, kwargs):
            op = None
        if op is not None:
            self.counter._record(op, sys._getframe(1))
        if not self.counter._cuda:
            return func(*args, **kwargs)
        running, self.running = self.running, (op or getattr(func, "__name__", "?"), op is not None)
        try:
            return func(*args, **kwargs)
        finally:
            self.running = running


class SyncCounter:
    """The result of `count_syncs`: the syncs seen so far, split by origin.

    Re-entering the same counter while it is active adds nothing: each sync is counted once.
    """

    def __init__(self, *, cuda=None):
        if cuda is not None and not isinstance(cuda, bool):
            raise TypeError(f"cuda must be None, True or False, got {cuda!r}")
        self.events: list = []
        self._want_cuda = cuda
        self._cuda = False
        self._depth = 0
        self._stack = None
        self._mode = None
        self._thread = None

    @property
    def total(self) -> int:
        """Number of syncs counted."""
        return len(self.events)

    @property
    def torchwatch(self) -> int:
        """Number of syncs made by torchwatch's code."""
        return sum(1 for e in self.events if e.origin == _TORCHWATCH)

    @property
    def user(self) -> int:
        """Number of syncs made by any other code."""
        return sum(1 for e in self.events if e.origin == _USER)

    def by_op(self) -> Counter:
        """Counter of syncs per op name."""
        return Counter(e.op for e in self.events)

    def __enter__(self):
        self._depth += 1
        if self._depth > 1:
            return self
        try:
            with ExitStack() as stack:
                self._thread = threading.get_ident()
                self._mode = stack.enter_context(_SyncMode(self))
                self._cuda = self._start_cuda(stack)
                self._stack = stack.pop_all()
        except BaseException:
            self._depth -= 1
            self._cuda = False
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        self._depth -= 1
        if self._depth == 0:
            stack, self._stack = self._stack, None
            try:
                stack.close()
            finally:
                self._cuda, self._mode = False, None

    def _start_cuda(self, stack):
        """Turn on CUDA's sync warnings and capture them until the stack closes; False if unused."""
        use = self._want_cuda
        if use is None:
            use = torch.cuda.is_available() and torch.cuda.is_initialized()
        if not use:
            return False
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("always", message=".*" + _CUDA_SYNC_TEXT, category=UserWarning)
        previous_show = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if _CUDA_SYNC_TEXT not in str(message):
                return previous_show(message, category, filename, lineno, file, line)
            frame = sys._getframe(1)
            while frame is not None and frame.f_code.co_filename == warnings.__file__:
                frame = frame.f_back  # start at the code that made the sync, not at warnings.py
            self._on_cuda_sync(frame)
            if getattr(previous_show, "_counts_syncs", False):  # an enclosing count_syncs
                previous_show(message, category, filename, lineno, file, line)

        show._counts_syncs = True
        warnings.showwarning = show
        stack.callback(torch.cuda.set_sync_debug_mode, torch.cuda.get_sync_debug_mode())
        torch.cuda.set_sync_debug_mode("warn")
        return True

    def _on_cuda_sync(self, frame):
        """Count a sync CUDA reported, unless it is the op the mode is already counting."""
        mode = self._mode
        running = None
        if mode is not None and threading.get_ident() == self._thread:
            running = mode.running
        if running is not None and running[1]:
            return
        self._record(running[0].strip("_") if running else "cuda sync", frame)

    def _record(self, op, frame):
        """Append a `SyncEvent` for `op` called from `frame`'s stack."""
        self.events.append(SyncEvent(op, *_attribute(frame)))

    def __str__(self):
        groups = Counter((e.op, e.where, e.via) for e in self.events)
        head = f"{self.total} syncs: {self.torchwatch} torchwatch, {self.user} user"
        if not groups:
            return head
        parts = [
            f"{op} x{n} at {where}" + (f" via {via}" if via else "")
            for (op, where, via), n in list(groups.items())[:8]
        ]
        if len(groups) > 8:
            parts.append(f"... {len(groups) - 8} more places")
        return f"{head} ({', '.join(parts)})"

    def __repr__(self):
        return f"<SyncCounter {self}>"


def count_syncs(*, cuda=None) -> SyncCounter:
    """Count host-device syncs in a ``with`` block; returns the `SyncCounter` that holds them.

    ``cuda=None`` also captures CUDA's own sync reports when CUDA is already initialised;
    ``True`` forces that (initialising CUDA), ``False`` counts host reads only.
    """
    return SyncCounter(cuda=cuda)
