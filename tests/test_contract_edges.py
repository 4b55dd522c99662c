"""Edges of DESIGN.md's contract: rank 0 only, disabled runs, the default logdir, the bar's rules,
numpy epochs and hparams checked at init.

The distributed test starts two real gloo ranks with ``torch.multiprocessing.spawn``, the way
users do: no ``RANK`` in the environment, ``tw.init`` before ``init_process_group``.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import re
import socket
import sys
import time
import types
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import torchwatch as tw
from torchwatch import TorchwatchWarning

from .conftest import read_scalars

HARD_TIMEOUT_S = 60.0  # the whole spawn; a hung rank is killed and the test fails
PG_TIMEOUT_S = 8.0  # a collective left without its partner fails after this, never hangs


def hparams_of(logdir):
    """{name: (kind, value)} of the hparams session written to ``logdir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {name: (v.WhichOneof("kind"), getattr(v, v.WhichOneof("kind")))
            for name, v in start.hparams.items()}


def event_files(folder):
    return sorted(p.name for p in Path(folder).glob("events.out.tfevents.*"))


# -- rank 0 only, also before a phase has run -------------------------------------------------------
def spawned_rank(rank, tmp):
    """One rank under mp.spawn: two runs started before the process group exists; then the first
    is asked for a writer and both are closed with hparams, without a phase on either."""
    import torch.distributed as dist

    os.environ.pop("RANK", None)
    os.environ.pop("TORCHWATCH_DISABLE", None)
    torch.set_num_threads(1)
    first = tw.Run(f"{tmp}/first", console=False, progress=False, hparams={"lr": 0.1})
    second = tw.Run(f"{tmp}/second", console=False, progress=False, hparams={"lr": 0.1})
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=PG_TIMEOUT_S))
    try:
        writer = first.writer("images")
        if writer is not None:
            writer.add_text("note", "rank 0 only")
        second.close()  # its first look at the rank since the group came up
        first.close()
        result = {"has_writer": writer is not None, "rank": first.rank}
        dist.barrier()
    finally:
        dist.destroy_process_group()
    Path(tmp, f"result_{rank}.json").write_text(json.dumps(result))


def spawn_two(function, tmp):
    """Run ``function(rank, tmp)`` on two spawned ranks; a rank's exception fails the test with
    its traceback, a rank still running after HARD_TIMEOUT_S is killed."""
    import torch.multiprocessing as mp

    context = mp.spawn(function, args=(str(tmp),), nprocs=2, join=False)
    deadline = time.monotonic() + HARD_TIMEOUT_S
    while not context.join(timeout=max(0.1, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            pytest.fail(f"a rank of {function.__name__} hung past {HARD_TIMEOUT_S}s")
    return [json.loads(Path(tmp, f"result_{rank}.json").read_text()) for rank in range(2)]


def test_writer_and_close_settle_the_rank_when_init_came_before_the_group(tmp_path):
    """Under mp.spawn (tw.init before init_process_group, no RANK), run.writer() is None on
    rank 1 and close() with hparams writes nothing there, though no phase ran on that rank."""
    results = spawn_two(spawned_rank, tmp_path)
    assert [(r["rank"], r["has_writer"]) for r in results] == [(0, True), (1, False)]
    assert len(event_files(tmp_path / "first" / "images")) == 1
    for run in ("first", "second"):  # rank 0's hparams, and no file of rank 1's
        assert len(event_files(tmp_path / run)) == 1, run
        assert hparams_of(tmp_path / run) == {"lr": ("number_value", 0.1)}


# -- a disabled run -------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["option", "env"])
def test_a_disabled_run_switches_modes_and_warns_about_nothing(tmp_path, model, monkeypatch, how):
    """enabled=False or TORCHWATCH_DISABLE=1: modes are switched, nothing is recorded, and no
    verb warns, inside a phase or outside any."""
    if how == "env":
        monkeypatch.setenv("TORCHWATCH_DISABLE", "1")
    run = tw.init(logdir=str(tmp_path / "runs"), model=model, enabled=how == "env")
    modes = []

    @tw.watch_step
    def step(x):
        return torch.tensor(0.5)

    @tw.watch_epoch
    def train(loader):
        modes.append(model.training)
        for x in tw.steps(loader):
            tw.log(loss=torch.tensor(1.0))
            step(x)
        return 1.0

    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert train([torch.randn(2, 4)]) == 1.0
        with tw.phase("val"):
            modes.append(model.training)
            tw.log(loss=2.0)
            assert list(tw.steps([1, 2])) == [1, 2]
        tw.log(loss=1.0)  # outside any phase
        run.log(loss=1.0)
        assert list(tw.steps([1, 2])) == [1, 2]
        assert step(torch.zeros(1)).item() == 0.5
        tw.close()
    assert modes == [True, False] and model.training is False
    assert run.history == [] and not (tmp_path / "runs").exists()


def test_a_disabled_run_beside_the_default_one_is_silent_outside_a_phase(tmp_path):
    """run.steps and run.log of a disabled run that is not the default one pass through
    without the outside-a-phase warning, while the enabled default run still warns."""
    tw.init(logdir=str(tmp_path / "default"), console=False)
    off = tw.Run(str(tmp_path / "off"), enabled=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(off.steps([1, 2])) == [1, 2]
        off.log(loss=1.0)
    with pytest.warns(tw.TorchwatchWarning, match="outside"):
        assert list(tw.steps([1, 2])) == [1, 2]


def test_a_disabled_run_still_says_once_that_it_has_no_model_to_switch(tmp_path):
    """Modes are still switched while disabled, so a phase with no model to switch still warns
    once, as it does enabled."""
    tw.init(logdir=str(tmp_path), enabled=False)
    with pytest.warns(TorchwatchWarning, match="has no model to switch"):
        with tw.phase("val"):
            pass


# -- the default logdir ---------------------------------------------------------------------------
def test_an_empty_logdir_is_the_default_one_as_for_summarywriter(tmp_path, monkeypatch):
    """tw.init(logdir="") writes under runs/<date-time>_<host>, as SummaryWriter(log_dir="")."""
    monkeypatch.chdir(tmp_path)
    run = tw.init(logdir="", console=False)
    with tw.phase("val", model=nn.Linear(1, 1)):
        tw.log(loss=1.0)
    tw.close()
    folder = Path(run.logdir)
    assert folder.parent == Path("runs")
    assert re.fullmatch(r"[A-Z][a-z]{2}\d\d_\d\d-\d\d-\d\d_" + re.escape(socket.gethostname()),
                        folder.name)
    assert read_scalars(tmp_path / folder / "val")["epoch/loss"] == [(0, 1.0)]


# -- the progress bar ------------------------------------------------------------------------------
class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self):
        return True


def bar_text(tmp_path, monkeypatch, stderr):
    """What tw.steps draws to ``stderr`` in a phase of 3 steps with progress="auto"."""
    monkeypatch.setattr(sys, "stderr", stderr)
    tw.init(logdir=str(tmp_path), console=False, tensorboard=False)
    with warnings.catch_warnings(record=True) as caught:  # tqdm.auto catches its own as errors
        warnings.simplefilter("always")
        with tw.phase("val", model=nn.Linear(1, 1)):
            for _ in tw.steps([torch.zeros(2)] * 3):
                pass
    tw.close()
    assert [str(w.message) for w in caught] == []  # no TqdmWarning either
    return stderr.getvalue()


def test_ci_set_but_empty_still_hides_the_bar(tmp_path, monkeypatch):
    """CI="" is set: progress="auto" draws no bar on a terminal, as with CI=true; unset, it does."""
    monkeypatch.delenv("CI", raising=False)
    assert "0/3" in bar_text(tmp_path, monkeypatch, Terminal())
    monkeypatch.setenv("CI", "")
    assert bar_text(tmp_path, monkeypatch, Terminal()) == ""


class ZMQInteractiveShell:
    """Named as ipykernel's shell: how a Jupyter kernel is told apart."""


def test_a_kernel_without_ipywidgets_shows_the_text_bar_without_a_tqdm_warning(
        tmp_path, monkeypatch):
    """In a Jupyter kernel without ipywidgets, progress="auto" draws tqdm's text bar (tqdm.auto's
    fallback) to the kernel's stderr, which is no terminal, and tqdm warns about nothing."""
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = ZMQInteractiveShell
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "ipykernel.zmqshell", types.ModuleType("ipykernel.zmqshell"))
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # not installed, for find_spec and import
    for name in ("tqdm.auto", "tqdm.autonotebook", "tqdm.notebook"):  # so they would warn again
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.delenv("CI", raising=False)
    text = bar_text(tmp_path, monkeypatch, io.StringIO())
    assert "0/3" in text and "step" in text


# -- explicit epochs -------------------------------------------------------------------------------
def test_numpy_integer_epochs_are_used_as_given(tmp_path, model, capsys):
    """An epoch argument from np.arange, or epoch= of phase as a numpy int, is the epoch recorded,
    written as the TensorBoard step and shown 1-based on the console."""
    np = pytest.importorskip("numpy")
    run = tw.init(logdir=str(tmp_path), model=model)

    @tw.watch_epoch
    def train(model, epoch):
        return 1.0

    for epoch in np.arange(5, 8):
        train(model, epoch)
    with tw.phase("val", epoch=np.int64(7)):
        tw.log(loss=2.0)
    tw.close()
    assert [(r.phase, r.epoch) for r in run.history] == [
        ("train", 5), ("train", 6), ("train", 7), ("val", 7)]
    assert all(type(r.epoch) is int for r in run.history)
    assert [step for step, _ in read_scalars(tmp_path / "train")["epoch/loss"]] == [5, 6, 7]
    lines = [line.split("  ")[0] for line in capsys.readouterr().out.splitlines()]
    assert lines == ["Epoch [6] train", "Epoch [7] train", "Epoch [8] train", "Epoch [8] val"]


def test_a_tensor_epoch_is_not_read_and_is_warned_about_once(tmp_path, model):
    """A tensor epoch argument is not read (that could sync): epochs are counted, with one
    warning that says to pass int(epoch)."""
    run = tw.init(logdir=str(tmp_path), model=model, console=False)

    @tw.watch_epoch
    def train(model, epoch):
        return 1.0

    with pytest.warns(TorchwatchWarning, match=r"epoch argument .* is a tensor") as caught:
        for epoch in torch.arange(5, 8):
            train(model, epoch)
    assert sum("int(epoch)" in str(w.message) for w in caught) == 1
    assert [r.epoch for r in run.history] == [0, 1, 2]


# -- hparams --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "hparams, error, words",
    [
        ({1: 2}, TypeError, "hparams names must be str, got the key 1 (int)"),
        ({"opt": torch.optim.SGD}, ValueError,
         "hparams['opt'] must be a bool, int, float, str or None"),
        ({"layers": [1, 2]}, ValueError, "got list of 2 items"),
        ({"w": torch.ones(3)}, ValueError, "got a torch.float32 tensor of shape (3,)"),
    ],
)
def test_bad_hparams_raise_at_init_naming_the_key(tmp_path, hparams, error, words):
    """A non-str hparams name or a value TensorBoard cannot show raises at init, before any
    folder is made, naming the key, what was expected and what came."""
    with pytest.raises(error, match=re.escape(words)):
        tw.init(logdir=str(tmp_path / "runs"), hparams=hparams)
    assert not (tmp_path / "runs").exists()


def test_numpy_and_tensor_hparams_are_written_as_numbers_and_bools(tmp_path):
    """numpy scalars and one-element tensors are read at init and reach the HParams dashboard as
    numbers and bools, not as their text."""
    np = pytest.importorskip("numpy")
    run = tw.init(logdir=str(tmp_path), console=False, hparams={
        "bs": np.int64(32), "lr": np.float32(0.5), "wd": torch.tensor(0.25),
        "amp": np.bool_(True), "opt": np.str_("sgd"), "ema": torch.tensor([True]), "tag": None})
    assert run.hparams == {"bs": 32, "lr": 0.5, "wd": 0.25, "amp": True, "opt": "sgd",
                           "ema": True, "tag": None}
    with tw.phase("val", model=nn.Linear(1, 1)):
        tw.log(loss=1.0)
    tw.close()
    assert hparams_of(tmp_path) == {
        "bs": ("number_value", 32.0), "lr": ("number_value", 0.5), "wd": ("number_value", 0.25),
        "amp": ("bool_value", True), "opt": ("string_value", "sgd"), "ema": ("bool_value", True)}
