"""The compiled hot path (_speedups.c) against the pure-Python one: built, used, and the same."""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import torchwatch as tw
from torchwatch.compiled import speedups

from .conftest import read_scalars

PURE = os.environ.get("TORCHWATCH_PURE_PYTHON", "") not in ("", "0")

# One script, run once per hot path: every case the compiled path hands back to Python (n=, a
# positional float, a complex or multi-element tensor, a batch without a tensor, float16, a
# negative view), the CPU scalars it reads on the host (float32, float64, int64, bool), batches
# of one 0-dim or empty tensor, an early break out of tw.steps, a metric first logged mid-phase,
# and a NaN.
SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    import torch
    from torch import nn
    import torchwatch as tw
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [(torch.randn(8 + i % 3, 4), torch.randint(0, 2, (8 + i % 3,))) for i in range(23)]
    run = tw.init(sys.argv[1], model=model, optimizer=optimizer, log_every=4, progress=False)
    for epoch in range(2):
        with tw.phase("train"):
            for i, (x, y) in enumerate(tw.steps(batches)):
                out = model(x)
                loss = nn.functional.cross_entropy(out, y)
                optimizer.zero_grad(); loss.backward(); optimizer.step()
                tw.log(loss=loss)
                tw.log(loss.detach() * 2 if i % 2 else loss)  # positional: also named loss
                if i >= 5:
                    tw.log(late=torch.tensor(float(i)), acc=(out.argmax(1) == y).float().mean())
                tw.log(weighted=torch.tensor(float(i)), n=i + 1)
                tw.log(plain=float(i), ints=torch.tensor(i), correct=(out.argmax(1) == y).sum(),
                       flag=torch.tensor(i % 3 == 0))
                tw.log(bad=torch.ones(2), cplx=torch.tensor(1j))
                # read on the host by the compiled path, or not: a negative view (its memory
                # holds minus its value), float64, float16
                tw.log(neg=torch._neg_view(torch.tensor(i / 7)),
                       f64=torch.tensor(i / 3, dtype=torch.float64),
                       half=torch.tensor(i / 5, dtype=torch.float16))
                if epoch == 1 and i == 7:
                    tw.log(nan=torch.tensor(float("nan")))
        with tw.phase("val"):
            items = [{"x": 1}, (torch.ones(3, 1),), torch.ones(5), (torch.ones(()),),
                     [torch.ones(0, 2)]]  # samples: none, 3, 5, 1 (0-dim), 0 (empty)
            for j, item in enumerate(tw.steps(items * 3)):
                tw.log(loss=torch.tensor(float(j)))
                if j == 8:
                    break
    tw.close()
    print(json.dumps([r._asdict() for r in run.history]))
    """
)


def run_script(tmp_path, pure):
    env = {**os.environ, "TORCHWATCH_PURE_PYTHON": "1" if pure else "0"}
    logdir = tmp_path / ("pure" if pure else "compiled")
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(logdir)], env=env, text=True,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    history = json.loads(done.stdout.strip().splitlines()[-1])
    for record in history:
        record.pop("time_s")
    return logdir, history


@pytest.mark.skipif(PURE, reason="TORCHWATCH_PURE_PYTHON is set")
def test_the_compiled_hot_path_was_built_and_is_what_runs():
    """pip install built _speedups (a C compiler was at hand), and tw.log and tw.steps use it."""
    assert speedups is not None, (
        "torchwatch._speedups was not built: reinstall with a C compiler (pip install -e .)")
    assert tw.log is speedups.log
    with tw.Run(None, console=False, tensorboard=False, progress=False).phase("val"):
        assert isinstance(iter(tw.steps([1, 2])), speedups.Watched)
    # the tensor attributes it reads go straight to torch's getters with this torch
    assert sorted(speedups.direct()) == ["_version", "data_ptr", "dtype", "is_cpu",
                                        "is_inference", "is_neg", "ndim", "requires_grad",
                                        "shape"]


def test_compiled_and_pure_python_write_the_same_values(tmp_path):
    """The same loop under both hot paths gives the same history and the same TensorBoard
    values at the same steps (timings aside), through every fallback case."""
    if importlib.util.find_spec("torchwatch._speedups") is None:
        pytest.skip("the compiled hot path is not built here")
    pure_dir, pure = run_script(tmp_path, pure=True)
    compiled_dir, compiled = run_script(tmp_path, pure=False)
    assert json.dumps(compiled, sort_keys=True) == json.dumps(pure, sort_keys=True)
    # val broke out in its 9th step (j == 8), which counts: its body ran
    assert compiled[2]["steps"] == 23 and compiled[1]["steps"] == 9
    assert compiled[1]["samples"] == 3 + 5 + 1 + 0 + 3 + 5 + 1  # the first 9 batches
    timed = ("time_ms", "time_s", "samples_per_s", "data_wait_frac")
    for phase in ("train", "val"):
        expected, got = read_scalars(pure_dir / phase), read_scalars(compiled_dir / phase)
        assert sorted(got) == sorted(expected)
        for tag in expected:
            if not tag.endswith(timed):
                assert [s for s, _ in got[tag]] == [s for s, _ in expected[tag]], (phase, tag)
                assert [v for _, v in got[tag]] == pytest.approx(
                    [v for _, v in expected[tag]], nan_ok=True), (phase, tag)
    assert "step/late" in read_scalars(compiled_dir / "train")


# Intervals of host sums only, which the compiled tw.steps closes without Python (Phase.settle),
# among ones it hands to Phase.close_interval: a float16 value buffered as a tensor, an lr that
# is a tensor. The lrs change every step, so each interval's must be read when it closes.
CLOSES = textwrap.dedent(
    """
    import json, sys
    import torch
    from torch import nn
    import torchwatch as tw
    from torchwatch.phase import active_phase
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD([{"params": model.weight}, {"params": model.bias}], lr=0.1)
    batches = [(torch.randn(6, 4), torch.randint(0, 2, (6,))) for _ in range(20)]
    run = tw.init(sys.argv[1], model=model, optimizer=optimizer, log_every=3, progress=False)
    most = 0  # the most intervals waiting in phase.closed at once
    with tw.phase("train"):
        for loop in range(2):  # two loops in one phase
            for i, (x, y) in enumerate(tw.steps(batches[: 20 - 12 * loop])):
                loss = nn.functional.cross_entropy(model(x), y)
                optimizer.zero_grad(); loss.backward(); optimizer.step()
                optimizer.param_groups[0]["lr"] = 0.1 / (2 + i + 20 * loop)
                optimizer.param_groups[1]["lr"] = torch.tensor(0.3) if 14 <= i < 17 else 0.2 + i
                tw.log(loss=loss)
                if i == 10:
                    tw.log(half=torch.tensor(0.5, dtype=torch.float16))
                most = max(most, len(active_phase().closed or []))
    tw.close()
    print(json.dumps([most, [r._asdict() for r in run.history]]))
    """
)


def test_intervals_closed_in_c_write_what_python_closes_write(tmp_path):
    """The compiled tw.steps closes intervals of host sums itself and Python takes them in
    later; the step scalars (lrs of each interval's end included), the history and the epoch
    scalars are those of the pure-Python path, fallback intervals included."""
    if importlib.util.find_spec("torchwatch._speedups") is None:
        pytest.skip("the compiled hot path is not built here")
    found = {}
    for pure in (True, False):
        logdir = tmp_path / ("pure" if pure else "compiled")
        env = {**os.environ, "TORCHWATCH_PURE_PYTHON": "1" if pure else "0"}
        done = subprocess.run([sys.executable, "-c", CLOSES, str(logdir)], env=env, text=True,
                              capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr
        most, history = json.loads(done.stdout.strip().splitlines()[-1])
        for record in history:
            record.pop("time_s")
        found[pure] = most, history, read_scalars(logdir / "train")
    (pure_most, pure_history, expected), (most, history, got) = found[True], found[False]
    assert pure_most == 0 and most >= 3  # only the compiled path leaves intervals to settle
    assert history == pure_history and history[0]["steps"] == 28
    assert sorted(got) == sorted(expected)
    assert [s for s, _ in got["step/loss"]] == [3, 6, 9, 12, 15, 18, 21, 24, 27, 28]
    for tag in expected:
        assert [s for s, _ in got[tag]] == [s for s, _ in expected[tag]], tag
        if not tag.endswith(("time_ms", "time_s", "samples_per_s", "data_wait_frac")):
            assert [v for _, v in got[tag]] == pytest.approx([v for _, v in expected[tag]]), tag
    assert got["step/lr_0"][0][1] == pytest.approx(0.1 / 4)  # set after step 3's optimizer step


@pytest.mark.skipif(PURE, reason="TORCHWATCH_PURE_PYTHON is set")
@pytest.mark.parametrize("verb", ["tw.log", "run.log", "tw.log n=2", "tw.log n=2.0"])
def test_compiled_log_reads_a_cpu_scalar_when_it_is_logged(verb, recwarn):
    """The compiled tw.log reads a float32/float64 CPU scalar from host memory at the call: the
    phase makes no read of its own at all, and a tensor changed in place afterwards keeps the
    value it had when logged, without a warning. ``run.log``, the same verb on a Run, takes the
    same path (it used to pass ``n=None`` on, which sent every call to the Python one), and so
    does a call with ``n=`` an int or a float."""
    if speedups is None:
        pytest.skip("the compiled hot path is not built here")
    from torchwatch.testing import count_syncs

    x = torch.linspace(0, 1, 8, requires_grad=True)
    total = torch.zeros((), dtype=torch.float64)
    run = tw.Run(None, console=False, tensorboard=False, progress=False, log_every=10)
    log = {"tw.log": tw.log, "run.log": run.log,
           "tw.log n=2": functools.partial(tw.log, n=2),
           "tw.log n=2.0": functools.partial(tw.log, n=2.0)}[verb]
    with count_syncs() as syncs, run.phase("train") as p:
        for i in run.steps(range(100)):
            loss = (x * i).sum()
            log(loss=loss)
            total += 1.0
            log(total=total)  # the same tensor each step, bumped in place after the call
    assert syncs.torchwatch == 0, syncs
    assert not [w for w in recwarn if "changed in place" in str(w.message)]
    assert p.metrics["loss"] == pytest.approx(sum(4.0 * i for i in range(100)) / 100)
    assert p.metrics["total"] == pytest.approx(50.5)  # the mean of 1..100, not 100


@pytest.mark.skipif(PURE, reason="TORCHWATCH_PURE_PYTHON is set")
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8,
                                   torch.bool])
def test_compiled_log_reads_integer_and_bool_cpu_scalars_when_logged(dtype):
    """An accuracy counter (``(pred == y).sum()``, int64) or a flag logged as a CPU scalar is read
    from host memory at the call, cast to a float as Phase.log casts it: the right mean, and no
    read of the interval's sums for count_syncs to count. A scalar viewed out of a larger tensor
    is read at its own offset; a negative view (its memory holds minus its value) still takes the
    kept-tensor path and keeps its sign."""
    if speedups is None:
        pytest.skip("the compiled hot path is not built here")
    from torchwatch.testing import count_syncs

    top = 1 if dtype == torch.bool else 100
    values = [i % (top + 1) for i in range(100)]
    row = torch.tensor(values, dtype=dtype)
    run = tw.Run(None, console=False, tensorboard=False, progress=False, log_every=10)
    with count_syncs() as syncs, run.phase("train") as p:
        for i in run.steps(range(100)):
            tw.log(made=torch.tensor(values[i], dtype=dtype), viewed=row[i])
    assert syncs.torchwatch == 0, syncs
    expected = sum(float(bool(v)) if dtype == torch.bool else v for v in values) / 100
    assert p.metrics == {"made": pytest.approx(expected), "viewed": pytest.approx(expected)}
    if dtype in (torch.int64, torch.int32, torch.int16, torch.int8):
        with run.phase("train") as p:
            for i in run.steps(range(20)):
                tw.log(neg=torch._neg_view(torch.tensor(i, dtype=dtype)))
        assert p.metrics["neg"] == pytest.approx(-9.5)


def test_a_watched_steps_returned_loss_takes_the_compiled_path(recwarn):
    """``@watch_step`` records a returned 0-dim loss as the compiled ``tw.log(loss)`` does: read
    on the host at the return, so a tensor the loop changes in place after the step keeps the
    value it was returned with, without a warning, and each call is still one step."""
    if speedups is None:
        pytest.skip("the compiled hot path is not built here")
    total = torch.zeros(())
    run = tw.Run(None, console=False, tensorboard=False, progress=False, log_every=10)

    @run.watch_step
    def step(x):
        return total

    with run.phase("train") as p:
        for i in range(100):
            step(torch.ones(4, 2))
            total += 1.0  # after the step returned it
    assert not [w for w in recwarn if "changed in place" in str(w.message)]
    assert p.metrics["loss"] == pytest.approx(49.5)  # the mean of 0..99
    assert (p.record.steps, p.record.samples) == (100, 400)


def test_running_sums_are_added_in_place_only_where_nobody_else_sees_them():
    """The compiled path adds a step's data wait and a logged value to their running sums
    without a new float each step, yet a sum that Python code has read keeps its value: the
    next step gives the phase a new float instead."""
    if speedups is None:
        pytest.skip("the compiled hot path is not built here")
    run = tw.Run(None, console=False, tensorboard=False, progress=False, log_every=1000)
    seen = []
    with run.phase("train") as p:
        for i, _ in enumerate(tw.steps([torch.ones(2, 1)] * 20)):
            tw.log(loss=torch.tensor(float(i)))
            if i in (5, 12):
                wait, loss_sum = p.data_wait_s, p.acc.host["loss"][0]
                seen.append((wait, wait + 0.0, loss_sum, loss_sum + 0.0))
    for held_wait, wait_then, held_sum, sum_then in seen:
        assert held_wait == wait_then and held_sum == sum_then  # unchanged by later steps
    assert seen[0][2] == sum(range(6)) * 2.0 and seen[1][2] == sum(range(13)) * 2.0
    assert p.data_wait_s >= seen[1][0] and p.metrics["loss"] == pytest.approx(9.5)


def test_an_early_break_ends_the_loop_cleanly():
    """Breaking out of tw.steps leaves no step open: tw.log after the loop weighs by 1 again,
    and the phase counts the steps whose bodies ran, the one left by break included."""
    run = tw.Run(None, console=False, tensorboard=False, progress=False)
    with run.phase("val") as p:
        for i, x in enumerate(tw.steps([torch.ones(4, 1)] * 10)):
            if i == 3:
                break
        tw.log(loss=torch.tensor(2.0))
        assert not p.in_step
    assert p.record.steps == 4 and p.record.samples == 16
    assert p.metrics == {"loss": 2.0}


@given(st.lists(st.binary(max_size=300), max_size=5))
@settings(max_examples=200, deadline=None)
def test_event_records_are_framed_byte_for_byte_as_tensorboard_frames_them(items):
    """The compiled record framing, and its Python fallback, give the bytes tensorboard's own
    RecordWriter writes for the same data (length, masked CRC-32C, data, masked CRC-32C)."""
    from tensorboard.summary.writer.record_writer import RecordWriter

    from torchwatch.sinks.tensorboard import _records

    into = io.BytesIO()
    writer = RecordWriter(into)
    for item in items:
        writer.write(item)
    assert _records(items) == into.getvalue()
    if speedups is not None:
        assert speedups.records(items) == into.getvalue()
