"""Tests of torchwatch.testing.count_syncs."""

import os
import time
import warnings

import numpy as np
import pytest
import torch

import torchwatch
from torchwatch.testing import SyncCounter, SyncEvent, count_syncs

TORCHWATCH_DIR = os.path.dirname(os.path.abspath(torchwatch.__file__))
SYNC_MESSAGE = "called a synchronizing CUDA operation"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def fake_torchwatch(src, name="_fake_for_test.py"):
    """Return the namespace of `src` compiled as if it were a file in the torchwatch package."""
    namespace = {"torch": torch}
    exec(compile(src, os.path.join(TORCHWATCH_DIR, name), "exec"), namespace)
    return namespace


def scalar():
    return torch.tensor(1.5)


def vector():
    return torch.arange(4.0)


HOST_READS = {
    "item": lambda: scalar().item(),
    "float": lambda: float(scalar()),
    "int": lambda: int(torch.tensor(3)),
    "bool": lambda: bool(torch.tensor(True)),
    "if": lambda: 1 if torch.tensor(True) else 0,
    "not": lambda: not torch.tensor(True),
    "index": lambda: [0, 1, 2][torch.tensor(1)],
    "complex": lambda: complex(scalar()),
    "tolist": lambda: vector().tolist(),
    "cpu": lambda: vector().cpu(),
    "numpy": lambda: vector().numpy(),
    "np.asarray": lambda: np.asarray(vector()),
    "format": lambda: f"{scalar():.3f}",
    "repr": lambda: repr(vector()),
    "str": lambda: str(vector()),
    "in": lambda: 2.0 in vector(),
    "equal": lambda: torch.equal(vector(), vector()),
    "Tensor.equal": lambda: vector().equal(vector()),
    "allclose": lambda: torch.allclose(vector(), vector()),
    "is_nonzero": lambda: torch.is_nonzero(torch.tensor(1)),
}
OP_NAMES = {"if": "bool", "not": "bool", "str": "repr", "Tensor.equal": "equal"}


@pytest.mark.parametrize("case", sorted(HOST_READS))
def test_each_host_read_is_counted_once(case):
    """Each way of reading tensor data into Python counts as exactly one sync, under its op name."""
    run = HOST_READS[case]
    with count_syncs() as syncs:
        run()
    assert syncs.by_op() == {OP_NAMES.get(case, case): 1}, syncs
    assert (syncs.total, syncs.user, syncs.torchwatch) == (1, 1, 0)


def test_non_syncing_ops_are_not_counted():
    """Arithmetic, detach, stack, shape, numel and copies that stay on the CPU are not syncs."""
    x = torch.randn(4, 3, requires_grad=True)
    with count_syncs() as syncs:
        y = (x * 2 + 1).sum(0).detach()
        torch.stack([y, y]).mean()
        _ = x.shape, x.numel(), x.dtype, x.device, len(x), x[0], x.clone()
        y.to(torch.float64), y.to("cpu"), torch.empty(3).copy_(y)
        (x ** 2).sum().backward()
    assert syncs.total == 0, syncs


def test_blocking_copy_from_a_device_to_the_host_is_counted():
    """`.to("cpu")`/`.copy_` from a non-CPU tensor count unless non_blocking (meta stands in)."""
    source = torch.empty(3, device="meta")
    with count_syncs() as syncs:
        for copy in (
            lambda: source.to("cpu"),
            lambda: source.to(torch.empty(1)),
            lambda: source.to(device="cpu", dtype=torch.float64),
            lambda: torch.empty(3).copy_(source),
            lambda: source.to("cpu", non_blocking=True),
            lambda: torch.empty(3).copy_(source, non_blocking=True),
        ):
            with pytest.raises(NotImplementedError):  # a meta tensor has no data to copy
                copy()
        source.to(torch.float64)  # stays on its device
    assert syncs.by_op() == {"to": 3, "copy_": 1}, syncs


def test_results_are_unchanged():
    """Ops run under the counter return exactly what they return without it."""
    x = torch.randn(5)
    with count_syncs():
        inside = (x.item() if x.numel() == 1 else x.tolist(), float(x[0]), (x * 3).sum(), x.cpu())
    assert inside[0] == x.tolist() and inside[1] == float(x[0])
    assert torch.equal(inside[2], (x * 3).sum()) and inside[3] is x.cpu()


def test_user_sync_is_attributed_to_the_user_line():
    """A sync in user code counts as "user", at this file's line and function."""
    with count_syncs() as syncs:
        scalar().item()
    (event,) = syncs.events
    assert event.origin == "user" and event.via == ""
    assert event.where.split(":")[0].endswith("test_testing.py")
    assert event.where.endswith(" test_user_sync_is_attributed_to_the_user_line")


def test_sync_from_torchwatch_code_is_attributed_to_torchwatch():
    """A sync made by code in a torchwatch package file counts as "torchwatch", at that line."""
    fake = fake_torchwatch("def accumulate(t):\n    total = t * 2\n    return total.item()\n")
    with count_syncs() as syncs:
        fake["accumulate"](scalar())
        scalar().item()
    assert (syncs.torchwatch, syncs.user) == (1, 1), syncs
    where = "torchwatch/_fake_for_test.py:3 accumulate"
    assert syncs.events[0] == SyncEvent("item", "torchwatch", where)


def test_user_code_called_by_torchwatch_stays_user():
    """A sync in a user function that torchwatch calls (a decorated epoch) counts as "user"."""
    fake = fake_torchwatch("def wrapper(fn):\n    return fn()\n")

    def train_one_epoch():
        return scalar().item()

    with count_syncs() as syncs:
        fake["wrapper"](train_one_epoch)
    assert [e.origin for e in syncs.events] == ["user"], syncs
    assert syncs.events[0].where.endswith("train_one_epoch")


def test_library_frames_are_looked_through():
    """A sync inside a library (here the stdlib) counts for the code that called it, naming both."""
    src = "import string\ndef show(t):\n    return string.Formatter().format('{:.2f}', t)\n"
    fake = fake_torchwatch(src)
    with count_syncs() as syncs:
        fake["show"](scalar())
    (event,) = syncs.events
    assert (event.op, event.origin) == ("format", "torchwatch")
    assert event.where == "torchwatch/_fake_for_test.py:3 show" and "string.py" in event.via


def test_exception_propagates_and_counting_stops():
    """An exception in the block propagates, the mode is removed and later syncs go uncounted."""
    depth = torch._C._len_torch_function_stack()
    with pytest.raises(KeyError):
        with count_syncs() as syncs:
            scalar().item()
            raise KeyError("boom")
    assert torch._C._len_torch_function_stack() == depth
    scalar().item()
    assert syncs.total == 1


def test_nested_blocks_each_count_their_own_syncs():
    """An outer block counts every sync in it; an inner block counts only its own."""
    with count_syncs() as outer:
        scalar().item()
        with count_syncs() as inner:
            float(scalar())
        vector().tolist()
    assert inner.by_op() == {"float": 1}, inner
    assert outer.by_op() == {"item": 1, "float": 1, "tolist": 1}, outer
    here = "test_nested_blocks_each_count_their_own_syncs"
    assert all(e.where.endswith(here) for e in outer.events)


def test_reentering_one_counter_counts_each_sync_once():
    """Entering the same counter again while it is active does not count a sync twice."""
    counter = count_syncs()
    with counter:
        with counter:
            scalar().item()
        scalar().item()
    scalar().item()
    assert counter.total == 2, counter


def test_summary_names_counts_ops_and_places():
    """str() gives the totals and each op with its count and place; repr() wraps it."""
    fake = fake_torchwatch("def read(t):\n    return t.tolist()\n")
    with count_syncs() as syncs:
        for _ in range(2):
            scalar().item()
        fake["read"](vector())
    text = str(syncs)
    assert text.startswith("3 syncs: 1 torchwatch, 2 user (item x2 at ")
    assert "tolist x1 at torchwatch/_fake_for_test.py:2 read" in text
    assert repr(syncs) == f"<SyncCounter {text}>" and isinstance(syncs, SyncCounter)
    assert str(count_syncs()) == "0 syncs: 0 torchwatch, 0 user"


def test_bad_cuda_argument_is_refused():
    """count_syncs(cuda=...) accepts only None, True or False and names the argument otherwise."""
    with pytest.raises(TypeError, match="cuda must be None, True or False, got 'yes'"):
        count_syncs(cuda="yes")


def test_a_cpu_training_loop_stays_fast_and_sync_free():
    """A 400-step CPU loop accumulating losses as tensors has no syncs and stays within a few x."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    batches = [(torch.randn(8, 16), torch.randint(0, 4, (8,))) for _ in range(400)]

    def loop():
        total = torch.zeros(())
        for x, y in batches:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.detach()
        return total

    loop()
    start = time.perf_counter()
    loop()
    bare = time.perf_counter() - start
    with count_syncs() as syncs:
        start = time.perf_counter()
        loop()
        watched = time.perf_counter() - start
    assert syncs.total == 0, syncs
    assert watched < 10 * bare + 1.0, (watched, bare)


_CUDA_LIKE_SRC = """
import warnings
import torch

class WarnsLikeCuda(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.item, torch.Tensor.sum):
            warnings.warn("called a synchronizing CUDA operation")
        return super().__torch_function__(func, types, args, kwargs or {})
"""


def warns_like_cuda(t):
    """Return `t` as a tensor whose `.item()`/`.sum()` raise CUDA's sync warning inside torch."""
    namespace = {}
    torch_dir = os.path.dirname(os.path.abspath(torch.__file__))
    exec(compile(_CUDA_LIKE_SRC, os.path.join(torch_dir, "_fake_cuda_op.py"), "exec"), namespace)
    return t.as_subclass(namespace["WarnsLikeCuda"])


@pytest.fixture
def fake_cuda_debug_mode(monkeypatch):
    """Stand in for torch.cuda's sync debug mode on a machine without CUDA; yields the modes set."""
    modes = [0]
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: modes[-1])
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", lambda mode: modes.append(mode))
    return modes


def test_cuda_warnings_are_counted_once_and_hidden(fake_cuda_debug_mode):
    """CUDA sync warnings count as syncs (not twice for an op already counted) and are not shown."""
    t = warns_like_cuda(torch.ones(3))
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("error")
        with count_syncs(cuda=True) as syncs:
            t.sum()  # a sync only CUDA reports
            t.sum()  # the same line again still counts
            t[0].item()  # counted by the mode, reported by CUDA too
            warnings.warn(SYNC_MESSAGE)  # outside any torch op
        warnings.simplefilter("always")
        warnings.warn("unrelated")
    assert [e.op for e in syncs.events] == ["sum", "sum", "item", "cuda sync"], syncs
    assert all(e.origin == "user" for e in syncs.events)
    assert syncs.events[0].where.endswith("test_cuda_warnings_are_counted_once_and_hidden")
    assert syncs.events[0].via.startswith("torch/_fake_cuda_op.py:")
    assert [str(w.message) for w in shown] == ["unrelated"]
    assert fake_cuda_debug_mode == [0, "warn", 0]


def test_cuda_path_forwards_other_warnings_and_nests(fake_cuda_debug_mode):
    """Other warnings still reach the user; nested blocks both count a CUDA-reported sync."""
    t = warns_like_cuda(torch.ones(3))
    with pytest.warns(UserWarning, match="keep me"):
        with count_syncs(cuda=True) as outer:
            with count_syncs(cuda=True) as inner:
                t.sum()
                warnings.warn("keep me")
    assert (outer.by_op(), inner.by_op()) == ({"sum": 1}, {"sum": 1})
    assert fake_cuda_debug_mode == [0, "warn", "warn", "warn", 0]


@needs_cuda
def test_cuda_item_counts_once():
    """On CUDA, `.item()` counts once though both the mode and CUDA's debug mode see it."""
    x = torch.ones(3, device="cuda")
    with count_syncs(cuda=True) as syncs:
        x.sum().item()
    assert syncs.by_op() == {"item": 1}, syncs


@needs_cuda
def test_cuda_hidden_syncs_are_counted():
    """On CUDA, syncs inside ops that are not host reads (a boolean mask) are counted."""
    x = torch.randn(100, device="cuda")
    with count_syncs(cuda=True) as syncs:
        x[x > 0].sum()
        y = x * 2  # no sync
    assert syncs.total >= 1 and syncs.user == syncs.total, syncs
    assert y.device.type == "cuda"


@needs_cuda
def test_cuda_copies_and_debug_mode_restore():
    """On CUDA a blocking copy to the host counts once and the previous debug mode is restored."""
    x = torch.randn(100, device="cuda")
    before = torch.cuda.get_sync_debug_mode()
    with count_syncs(cuda=True) as syncs:
        x.to("cpu")
    assert syncs.by_op() == {"to": 1}, syncs
    with count_syncs(cuda=True) as syncs:
        x.to("cpu", non_blocking=True)
    assert syncs.by_op()["to"] <= 1
    assert torch.cuda.get_sync_debug_mode() == before
