"""tw.steps and @watch_step: timing split, samples, intervals, step scalars, bar, memory."""

from __future__ import annotations

import dataclasses
import fcntl
import gc
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import textwrap
import time

import pytest
import torch

import torchwatch as tw

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from .conftest import read_scalars


class FakeClock:
    """A clock the test moves by hand, so the arithmetic of the figures can be checked exactly."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def timed_loader(clock, n, rows=8, wait=0.01):
    for i in range(n):
        clock.now += wait  # time spent inside next(): data wait
        yield torch.full((rows, 2), float(i)), torch.zeros(rows)


def test_figures_from_an_injected_clock(tmp_path, capsys):
    """Data wait vs compute, samples/s, interval means and step numbers follow the clock exactly."""
    clock = FakeClock()
    run = tw.init(logdir=str(tmp_path), log_every=4, clock=clock, progress=False)
    with tw.phase("train") as p:
        for i, (x, y) in enumerate(tw.steps(timed_loader(clock, 10))):
            clock.now += 0.03  # compute
            tw.log(loss=torch.tensor(float(i)))
    tw.close()
    step = read_scalars(tmp_path / "train")
    assert [s for s, _ in step["step/loss"]] == [4, 8, 10]
    assert [v for _, v in step["step/loss"]] == pytest.approx([1.5, 5.5, 8.5])
    assert [v for _, v in step["step/time_ms"]] == pytest.approx([40.0, 40.0, 40.0])
    assert [v for _, v in step["step/samples_per_s"]] == pytest.approx([200.0] * 3)
    assert [v for _, v in step["step/data_wait_frac"]] == pytest.approx([0.25] * 3)
    assert step["epoch/time_s"] == [(0, pytest.approx(0.4))]
    assert step["epoch/samples_per_s"] == [(0, pytest.approx(200.0))]
    assert step["epoch/data_wait_frac"] == [(0, pytest.approx(0.25))]
    assert p.metrics == pytest.approx({"loss": 4.5})
    assert p.record.samples == 80 and p.record.steps == 10 and run.global_step == 10
    line = capsys.readouterr().out.strip()
    assert line.endswith("| 0.400s  200 samples/s  data 25%")


def test_log_without_n_is_weighted_by_the_samples_of_the_step(tmp_path):
    """Without n, a value logged in a step weighs as many samples as the step's batch."""
    tw.init(tensorboard=False, console=False)
    batches = [torch.zeros(2, 3), torch.zeros(6, 3)]
    with tw.phase("val") as p:
        for batch, value in zip(tw.steps(batches), (1.0, 3.0)):
            tw.log(loss=value)
    assert p.metrics["loss"] == pytest.approx((2 * 1.0 + 6 * 3.0) / 8)
    assert p.record.samples == 8


@dataclasses.dataclass
class _Batch:  # a batch as a dataclass, as some data pipelines yield them
    ids: object
    x: torch.Tensor


@pytest.mark.parametrize(
    "batch, rows",
    [
        ((torch.zeros(5, 2), torch.zeros(5)), 5),
        ([torch.zeros(3, 2)], 3),
        ({"image": torch.zeros(4, 1), "label": torch.zeros(4)}, 4),
        (("text", [torch.zeros(6)]), 6),
        (torch.zeros(7, 1), 7),
        (["no", "tensors"], 0),
        (_Batch(ids=[1, 2], x=torch.zeros(9, 3)), 9),
        ([{"meta": "a", "batch": _Batch(ids=None, x=torch.zeros(2))}], 2),
    ],
)
def test_samples_come_from_dim0_of_the_first_tensor(batch, rows):
    """Samples are dim 0 of the first tensor found in tuples, lists, dicts and dataclasses."""
    tw.init(tensorboard=False, console=False)
    with tw.phase("val") as p:
        for _ in tw.steps([batch, batch]):
            pass
    assert p.record.samples == 2 * rows and p.record.steps == 2


def test_batch_size_and_len_less_iterables():
    """batch_size overrides counting; generators without len() work and pass items unchanged."""
    tw.init(tensorboard=False, console=False)
    items = (i for i in range(5))
    with tw.phase("val") as p:
        seen = list(tw.steps(items, batch_size=32))
    assert seen == [0, 1, 2, 3, 4]
    assert p.record.samples == 160 and p.record.steps == 5
    assert len(tw.steps([1, 2, 3])) == 3 and len(tw.steps(iter([]), total=9)) == 9


def test_steps_over_a_dataloader_yield_batches_unchanged():
    """A real DataLoader's batches come through as they are, counted by their rows."""
    data = torch.utils.data.TensorDataset(torch.arange(10.0).unsqueeze(1), torch.arange(10))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    tw.init(tensorboard=False, console=False)
    with tw.phase("train") as p:
        got = [y.tolist() for _, y in tw.steps(loader)]
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert p.record.samples == 10 and p.record.global_step == 3


def test_global_step_advances_only_in_train_phases(tmp_path):
    """Train steps advance the global step; val steps do not, and nested val writes at it."""
    run = tw.init(logdir=str(tmp_path), console=False, log_every=2)
    for _ in range(2):
        with tw.phase("train"):
            for _ in tw.steps(range(3)):
                tw.log(loss=1.0)
        with tw.phase("val"):
            for _ in tw.steps(range(4)):
                tw.log(loss=2.0)
    assert run.global_step == 6
    tw.close()
    train = read_scalars(tmp_path / "train")
    assert [s for s, _ in train["step/loss"]] == [2, 3, 5, 6]  # k counted from 1 per phase
    assert "step/loss" not in read_scalars(tmp_path / "val")


def test_watch_step_counts_each_call_once(tmp_path):
    """@watch_step makes each call a step, weighted by its batch, not counted twice in tw.steps."""
    run = tw.init(logdir=str(tmp_path), console=False, log_every=2)

    @tw.watch_step
    def train_step(x):
        return {"loss": x.sum() / len(x)}

    with tw.phase("train") as p:
        for rows in (1, 3, 4):
            train_step(torch.ones(rows, 2))
    assert p.record.steps == 3 and p.record.samples == 8 and run.global_step == 3
    assert p.metrics == pytest.approx({"loss": 2.0})
    with tw.phase("train") as q:
        for x in tw.steps([torch.ones(2, 2)] * 3):
            train_step(x)
    assert q.record.steps == 3 and run.global_step == 6
    tw.close()
    assert [s for s, _ in read_scalars(tmp_path / "train")["step/loss"]] == [2, 3, 5, 6]


def test_watch_step_names_and_outside_a_phase():
    """@watch_step(names=...) names a returned tuple; outside a phase it passes through, warning."""
    tw.init(tensorboard=False, console=False)

    @tw.watch_step(names=("loss", "acc"))
    def step(v):
        return v, 0.5

    with pytest.warns(tw.TorchwatchWarning, match="@watch_step was called outside a phase"):
        assert step(1.0) == (1.0, 0.5)
    with tw.phase("train") as p:
        step(1.0)
        step(3.0)
    assert p.metrics == pytest.approx({"loss": 2.0, "acc": 0.5})


def test_memory_stays_bounded_however_long_the_phase():
    """The tensors torchwatch holds after 5,000 logged steps are as many as after 500."""

    def live_tensors():
        gc.collect()
        # type(o), not isinstance: that asks each object its __class__, which some of torch's
        # deprecated aliases answer with a FutureWarning (torch 2.14)
        return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))

    # a clock that stands still: intervals are read only when MAX_UNREAD of them wait, the
    # most memory they can hold, at the same steps however busy the machine
    tw.init(tensorboard=False, console=False, log_every=50, clock=lambda: 0.0)
    counts = []
    with tw.phase("train"):
        steps = iter(tw.steps(range(5000)))
        for n in (500, 5000):
            while True:
                i = next(steps, None)
                tw.log(loss=torch.tensor(1.0), acc=torch.tensor(0.5))
                if i is None or i + 1 >= n:
                    break
            counts.append(live_tensors())
    assert counts[1] <= counts[0]


def test_long_phase_without_steps_folds_buffers_on_the_device():
    """Thousands of tw.log calls outside tw.steps keep a bounded buffer and the exact mean.
    (float16: a CPU float32 or float64 scalar is read on the host at once and buffers nothing
    on the compiled path; a float16 one is buffered, as any tensor on a GPU is.)"""
    from torchwatch.accumulate import FOLD_AT

    tw.init(tensorboard=False, console=False)
    with tw.phase("val") as p:
        for i in range(3 * FOLD_AT + 7):
            tw.log(loss=torch.tensor(float(i % 10), dtype=torch.float16), n=1 + i % 2)
        assert len(p.acc.values["loss"]) < FOLD_AT
    total = sum((i % 10) * (1 + i % 2) for i in range(3 * FOLD_AT + 7))
    weight = sum(1 + i % 2 for i in range(3 * FOLD_AT + 7))
    assert p.metrics["loss"] == pytest.approx(total / weight)


SCRIPT = textwrap.dedent(
    """
    import time, torch, torchwatch as tw
    tw.init(logdir={logdir!r}, total_epochs=1, log_every={log_every})
    with tw.phase("train"):
        for x in tw.steps(range({steps})):
            time.sleep(0.01)
            tw.log(loss=torch.tensor(0.5))
    tw.close()
    """
)


def _run_script(tmp_path, stderr_tty, steps=30, log_every=50):
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    script = tmp_path / "loop.py"
    script.write_text(SCRIPT.format(logdir=str(tmp_path / "runs"), steps=steps,
                                    log_every=log_every))
    if not stderr_tty:
        with open(tmp_path / "err.txt", "w") as err:
            out = subprocess.run([sys.executable, str(script)], stdout=subprocess.PIPE,
                                 stderr=err, env=env, timeout=120, text=True).stdout
        return out, (tmp_path / "err.txt").read_text()
    proc, err = _on_a_terminal(script, env, stdout=subprocess.PIPE, text=True)
    return proc.communicate(timeout=120)[0], err


def _on_a_terminal(script, env, **popen):
    """Run ``script`` with its stderr on a 100-column pty: the process, and all the terminal
    received from it (read until the script let go of it)."""
    main, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen([sys.executable, str(script)], stderr=secondary, env=env, **popen)
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(main, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    return proc, b"".join(chunks).decode(errors="replace")


def test_progress_bar_shows_on_a_terminal_only(tmp_path):
    """progress="auto" draws a tqdm bar when stderr is a terminal and nothing into a file."""
    out, err = _run_script(tmp_path, stderr_tty=True)
    assert "30/30" in err or "step/s" in err
    assert "Epoch [1/1] train  loss 0.5000" in out
    out, err = _run_script(tmp_path, stderr_tty=False)
    assert "step/s" not in err and "%|" not in err
    assert "Epoch [1/1] train  loss 0.5000" in out


def test_progress_bar_redraws_at_most_ten_times_a_second_with_the_interval_means(tmp_path):
    """The bar of 80 steps of 10 ms is drawn about 8 times, not 80, shows the loss of the
    intervals that closed as its postfix, is last drawn within 0.1 s of the end and is then
    erased (as tqdm's own iterator ends a bar that does not stay), without a last 80/80 frame."""
    out, err = _run_script(tmp_path, stderr_tty=True, steps=80, log_every=5)
    draws = err.count("\r")
    assert "loss=0.5" in err
    assert 2 <= draws <= 80 * 0.01 / 0.1 + 6, err
    frames = err.rstrip("\r").split("\r")
    shown = [int(m.group(1)) for m in map(re.compile(r"(\d+)/80").search, frames) if m]
    assert shown == sorted(shown) and 80 - 0.1 / 0.01 - 5 <= shown[-1] < 80, frames
    assert frames[-1].strip() == "", frames  # the last write erases the bar
    assert "Epoch [1/1] train  loss 0.5000" in out


RESIZE_SCRIPT = textwrap.dedent(
    """
    import fcntl, struct, sys, termios, time, torch, torchwatch as tw
    tw.init(logdir={logdir!r}, total_epochs=1, console=False)
    with tw.phase("train"):
        for i in tw.steps(range(60)):
            time.sleep(0.01)
            if i == 20:  # the user narrows the terminal window mid-phase
                fcntl.ioctl(2, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 60, 0, 0))
                print("RESIZED", file=sys.stderr, flush=True)
    tw.close()
    """
)


def test_the_bar_follows_a_terminal_that_is_resized_mid_phase(tmp_path):
    """On a terminal the bar is redrawn at the terminal's current width: 100 columns wide
    before the window is narrowed to 60 mid-phase, at most 60 after."""
    script = tmp_path / "resize.py"
    script.write_text(RESIZE_SCRIPT.format(logdir=str(tmp_path / "runs")))
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    proc, err = _on_a_terminal(script, env)
    assert proc.wait(timeout=120) == 0
    before, _, after = err.partition("RESIZED")
    # (a draw pads with spaces over the longer line it replaces)
    widths = [[len(draw.rstrip()) for draw in part.split("\r") if "step" in draw]
              for part in (before, after)]
    assert widths[0] and widths[1], (before, after)
    assert max(widths[0]) > 90 and max(widths[1]) <= 60, widths


def test_progress_never_with_ci_set(monkeypatch):
    """With CI set, progress="auto" shows no bar even on a terminal; progress=True forces one."""
    monkeypatch.setenv("CI", "true")
    assert tw.Run(tensorboard=False).bar_wanted() is False
    assert tw.Run(tensorboard=False, progress=True).bar_wanted() is True
    assert tw.Run(tensorboard=False, progress=False).bar_wanted() is False


def test_unknown_samples_write_no_throughput(tmp_path):
    """Steps over items without tensors write no samples/s, step or epoch, rather than a 0 curve."""
    tw.init(logdir=str(tmp_path), console=False, log_every=2)
    with tw.phase("train"):
        for _ in tw.steps(["a", "b", "c"]):
            tw.log(loss=1.0)
    tw.close()
    written = read_scalars(tmp_path / "train")
    assert "step/samples_per_s" not in written and "epoch/samples_per_s" not in written
    assert [s for s, _ in written["step/data_wait_frac"]] == [2, 3]


def _steps_on_disk(path):
    """The steps of the ``step/loss`` points in the event files at ``path``, as TensorBoard reads
    them now (none before its writer exists)."""
    if not path.exists():
        return []
    return [step for step, _ in read_scalars(path).get("step/loss", [])]


def test_a_short_phase_hands_its_step_events_over_at_its_end(tmp_path):
    """The step events of a phase shorter than a second reach its event file together, in the
    flush at its end, even when the phase starts seconds after the last hand-off."""
    tw.init(logdir=str(tmp_path), console=False, log_every=2)
    for epoch in range(2):
        time.sleep(1.2)  # longer than HANDOFF_SECS since the previous hand-off
        with tw.phase("train"):
            for i in tw.steps(range(10)):
                tw.log(loss=torch.tensor(float(i)))
                time.sleep(0.005)
            # nothing written while the phase ran
            assert _steps_on_disk(tmp_path / "train") == list(range(2, 10 * epoch + 1, 2))
        assert _steps_on_disk(tmp_path / "train") == list(range(2, 10 * epoch + 11, 2))
    tw.close()


def test_an_interval_longer_than_a_second_hands_its_event_over_as_it_closes(tmp_path):
    """When each interval takes more than a second, its event reaches the event file when it
    closes, not an interval (or a phase) later."""
    tw.init(logdir=str(tmp_path), console=False, log_every=1)
    seen = []
    with tw.phase("train"):
        for i in tw.steps(range(3)):
            seen.append(_steps_on_disk(tmp_path / "train"))  # the previous interval just closed
            time.sleep(1.05)
            tw.log(loss=torch.tensor(float(i)))
    tw.close()
    assert seen == [[], [1], [1, 2]]


def test_quick_intervals_wait_for_the_writer_in_bounded_batches(tmp_path):
    """A short phase of many quick intervals does not keep all their events until its end: at
    most MAX_PENDING wait, so what waits is bounded in count as well as in time."""
    from torchwatch.sinks.tensorboard import MAX_PENDING

    tw.init(logdir=str(tmp_path), console=False, log_every=1)
    waiting = []
    with tw.phase("train"):
        for i in tw.steps(range(100)):
            # the intervals closed so far, less those written
            waiting.append(i - len(_steps_on_disk(tmp_path / "train")))
            tw.log(loss=torch.tensor(float(i)))
    tw.close()
    assert 0 < max(waiting) <= MAX_PENDING
    assert _steps_on_disk(tmp_path / "train") == list(range(1, 101))


def test_step_curves_reach_the_writer_during_a_long_phase_with_their_own_times(tmp_path):
    """Interval events are handed to the SummaryWriter about once a second while the phase runs
    (readable after a flush of the user's own), each with the wall time it was logged at."""
    run = tw.init(logdir=str(tmp_path), console=False, log_every=5)
    seen_mid_phase = None
    with tw.phase("train"):
        for i in tw.steps(range(60)):
            time.sleep(0.04)
            tw.log(loss=torch.tensor(float(i)))
            if i == 54:  # 2.2 s in: the events of 0.2 s to 1.2 s were handed over at 1.2 s
                run.writer("train").flush()
                seen_mid_phase = read_scalars(tmp_path / "train").get("step/loss", [])
    tw.close()
    assert [s for s, _ in seen_mid_phase][:4] == [5, 10, 15, 20]
    acc = EventAccumulator(str(tmp_path / "train"))
    acc.Reload()
    events = acc.Scalars("step/loss")
    assert [e.step for e in events] == list(range(5, 61, 5))
    assert [e.value for e in events] == [sum(range(s - 5, s)) / 5 for s in range(5, 61, 5)]
    gaps = [b.wall_time - a.wall_time for a, b in zip(events, events[1:])]
    assert min(gaps) >= 5 * 0.04 * 0.9  # not stamped when handed over together


@pytest.mark.parametrize("accumulate", [1, 2])
def test_break_out_of_steps_counts_the_step_it_left(tmp_path, scalars, accumulate):
    """`if i == 4: break` ends the loop after 5 bodies: the phase counts 5 items (its steps,
    samples, global step) and the last interval's step curve ends at step 5 with the value
    logged in that step; a nested phase that follows is written at that global step."""
    run = tw.init(tmp_path, model=torch.nn.Linear(2, 1), console=False, log_every=3)
    batches = [(torch.full((4, 2), float(i)), torch.zeros(4)) for i in range(10)]

    @tw.watch_epoch
    def train(loader):
        for i, (x, _) in enumerate(tw.steps(loader, accumulate=accumulate)):
            tw.log(seen=x[0, 0])
            if i == 4:
                break
        with tw.phase("val"):
            tw.log(acc=torch.tensor(0.5))

    train(batches)
    val, record = run.history
    steps = 5 if accumulate == 1 else 3  # items 1-2, 3-4 and 5 alone: three optimizer steps
    assert (record.steps, record.samples, record.global_step) == (steps, 20, steps)
    assert record.metrics["seen"] == pytest.approx(2.0)  # 0..4, the fifth included
    assert val.global_step == steps
    tw.close()
    stored = scalars(tmp_path / "train")
    assert stored["step/seen"][-1][0] == steps
    # the last interval: steps 4-5 (values 3, 4); with accumulate=2 the only one (0..4)
    assert stored["step/seen"][-1][1] == pytest.approx(3.5 if accumulate == 1 else 2.0)
    assert [s for s, _ in scalars(tmp_path / "val")["step/acc"]] == [steps]


def test_a_loop_left_by_an_exception_does_not_count_the_step_that_raised(tmp_path, capsys):
    """An exception in the 3rd body: 2 steps done, the global step stays at 2, and a later
    phase of the run starts from there."""
    run = tw.init(tmp_path, model=torch.nn.Linear(2, 1), log_every=3, progress=False)
    batches = [(torch.zeros(4, 2), torch.zeros(4)) for _ in range(10)]
    with pytest.raises(KeyError):
        with tw.phase("train"):
            for i, _ in enumerate(tw.steps(batches)):
                if i == 2:
                    raise KeyError("bad batch")
    assert "Epoch [1] train interrupted after 2 steps (KeyError)" in capsys.readouterr().out
    assert run.global_step == 2
    with tw.phase("train") as p:
        for _ in tw.steps(batches[:3]):
            pass
    assert (p.record.steps, p.record.global_step) == (3, 5)


def test_two_loops_in_one_phase_after_a_break(tmp_path):
    """A loop left by break, then a second loop in the same phase: 2 + 3 steps."""
    run = tw.init(tmp_path, model=torch.nn.Linear(2, 1), console=False)
    batches = [(torch.zeros(4, 2), torch.zeros(4)) for _ in range(3)]
    with tw.phase("train") as p:
        for i, _ in enumerate(tw.steps(batches)):
            if i == 1:
                break
        for _ in tw.steps(batches):
            pass
    assert (p.record.steps, p.record.samples, run.global_step) == (5, 20, 5)


def test_validation_inside_a_step_is_written_at_that_step(tmp_path, scalars):
    """`if step % 4 == 0: validate()` in the body of steps 4 and 8, after optimizer.step(): the
    val results are written at global steps 4 and 8, where the train curve has the intervals
    that hold those steps, not at 3 and 7 (the steps tw.steps had ended then)."""
    run = tw.init(tmp_path, model=torch.nn.Linear(2, 1), console=False, log_every=2)

    @tw.watch_epoch
    def train(loader):
        for step, (x, _) in enumerate(tw.steps(loader), start=1):
            tw.log(loss=x.sum())
            if step % 4 == 0:
                with tw.phase("val"):
                    tw.log(acc=torch.tensor(step / 10))

    train([(torch.ones(2, 2), torch.zeros(2))] * 8)
    assert [r.global_step for r in run.history if r.phase == "val"] == [4, 8]
    tw.close()
    assert scalars(tmp_path / "val")["step/acc"] == [(4, pytest.approx(0.4)),
                                                     (8, pytest.approx(0.8))]
    assert [s for s, _ in scalars(tmp_path / "train")["step/loss"]] == [2, 4, 6, 8]


def test_a_metric_named_like_an_automatic_one_replaces_it(tmp_path, scalars):
    """tw.log(time_ms=...) in a train phase and a returned samples_per_s: the user's values
    are what TensorBoard gets under step/time_ms and epoch/samples_per_s, as lr's are."""
    tw.init(tmp_path, model=torch.nn.Linear(2, 1), console=False, log_every=2)

    @tw.watch_epoch
    def train(loader):
        for _ in tw.steps(loader):
            tw.log(time_ms=7.0)
        return {"samples_per_s": 3.0}

    train([(torch.ones(2, 2), torch.zeros(2))] * 4)
    tw.close()
    stored = scalars(tmp_path / "train")
    assert [v for _, v in stored["step/time_ms"]] == [7.0, 7.0]
    assert [v for _, v in stored["epoch/samples_per_s"]] == [3.0]
    assert "step/samples_per_s" in stored and "epoch/time_s" in stored  # the others stay
