"""Reliability: nothing printed is lost, signals keep their meaning, sinks fail soft, bad input is
explained, on_nan does what it says, and memory stays flat however many steps.

The durability and signal tests run a real training script in a subprocess, parse what it printed
and read the event files back with TensorBoard's own reader.
"""

from __future__ import annotations

import errno
import gc
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
import warnings
import weakref

import pytest
import torch
from torch import nn

import torchwatch as tw
from torchwatch import signals

# -- a real training script, killed at chosen points ---------------------------------------------

SCRIPT = r'''
import os, signal, sys, time
# the state an interactive shell gives a script, whatever state the test runner is in
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.SIG_DFL)

import torch
from torch import nn
import torchwatch as tw

logdir, mode, epochs, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
record_s = float(sys.argv[5])
torch.manual_seed(0)
torch.set_num_threads(1)

if record_s:  # a slow disk: each record takes record_s to write, so only a real flush keeps up
    from tensorboard.summary.writer import record_writer
    from torchwatch.sinks import tensorboard as sink

    write = record_writer.RecordWriter.write  # SummaryWriter's thread: its own records
    record_writer.RecordWriter.write = lambda self, data: (time.sleep(record_s), write(self, data))
    append = sink._EventFile.append  # torchwatch's: the scalar events, a batch at a time
    sink._EventFile.append = lambda self, data: (time.sleep(record_s * len(data)),
                                                 append(self, data))

if mode == "user-handler":
    def on_term(signum, frame):
        print("user handler ran", flush=True)
        sys.exit(3)
    signal.signal(signal.SIGTERM, on_term)
if mode == "handler-goes-on":  # a handler that checkpoints (slowly), then lets training go on
    def on_term(signum, frame):
        print("user handler ran", flush=True)
        time.sleep(30)  # the test reads the disk meanwhile
    signal.signal(signal.SIGTERM, on_term)

model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
run = tw.init(logdir, model=model, optimizer=opt, total_epochs=epochs, log_every=5,
              progress=False, hparams={"lr": 0.05})
data = [(torch.randn(16, 8), torch.randn(16, 1)) for _ in range(20)]


@tw.watch_epoch
def train_one_epoch(model, loader, opt):
    total = 0.0
    for x, y in tw.steps(loader):
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        tw.log(loss=loss)
        total += loss.detach()
        print(f"step {run.global_step + 1} loss {loss.item():.9g}", flush=True)
        if mode == "fork" and run.global_step + 1 == 23:  # like a DataLoader worker
            started = time.time()
            pid = os.fork()
            if pid == 0:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            print(f"child {pid} signal {os.WTERMSIG(status) if os.WIFSIGNALED(status) else None}"
                  f" after {time.time() - started:.2f}s", flush=True)
        time.sleep(delay)
    return {"loss": total / len(loader), "acc": 0.5 + total / 100}


try:
    for epoch in range(epochs):
        train_one_epoch(model, data, opt)
        with tw.phase("val"):
            for x, y in data[:5]:
                tw.log(loss=nn.functional.mse_loss(model(x), y), n=len(x))
except KeyboardInterrupt:
    print("caught KeyboardInterrupt", flush=True)
if mode == "atexit":
    run.writer("notes").add_scalar("notes/custom", 1.5, 7)
print("script end", flush=True)  # no tw.close(): atexit closes the run
'''

EPOCH_LINE = re.compile(r"^Epoch \[(\d+)(?:/\d+)?\] (\S+)((?:  \S+ \S+)*) \| (.*)$")
STEP_LINE = re.compile(r"^step (\d+) loss (\S+)$")


class Training:
    """The script above in a subprocess; its stdout lines collected by a reader thread."""

    def __init__(self, tmp_path, mode="plain", epochs=1000, delay=0.0, record_s=0.0):
        script = tmp_path / "train.py"
        script.write_text(SCRIPT)
        self.logdir = tmp_path / "runs"
        self.stderr = tmp_path / "stderr.txt"
        env = {k: v for k, v in os.environ.items() if k != "TORCHWATCH_DISABLE"}
        with open(self.stderr, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(script), str(self.logdir), mode, str(epochs), str(delay),
                 str(record_s)],
                stdout=subprocess.PIPE, stderr=err, text=True, cwd=tmp_path, env=env,
            )
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, predicate, timeout=60.0):
        """Block until a line satisfies ``predicate``; return every line read so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(predicate(line) for line in list(self.lines)):
                return list(self.lines)
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.005)
        self.proc.kill()
        raise AssertionError(f"line not seen; stdout {self.lines[-5:]}, stderr "
                             f"{self.stderr.read_text()[-2000:]}")

    def epoch_lines(self, count):
        return self.wait_for(lambda _: len(reported(self.lines)) >= count)

    def finish(self, timeout=30.0):
        """Wait for the process to end; its return code and every line it printed."""
        try:
            code = self.proc.wait(timeout)
        finally:
            self.proc.kill()
        self.reader.join(10)
        return code, list(self.lines)


def reported(lines):
    """(phase, display epoch, {tag: (printed text, scale)}) of every finished-phase line."""
    out = []
    for line in lines:
        match = EPOCH_LINE.match(line)
        if not match:
            continue
        epoch, phase, metrics, tail = match.groups()
        values = {}
        for pair in metrics.split("  ")[1:]:
            name, text = pair.split(" ")
            values[f"epoch/{name}"] = (text, 1.0)
        parts = tail.split("  ")
        values["epoch/time_s"] = (parts[0].rstrip("s"), 1.0)
        for part in parts[1:]:
            if part.endswith(" samples/s"):
                values["epoch/samples_per_s"] = (part.split()[0], 1.0)
            elif part.startswith("data "):
                values["epoch/data_wait_frac"] = (part[5:].rstrip("%"), 100.0)
        out.append((phase, int(epoch), values))
    return out


def same_as_printed(text, stored):
    """Whether ``stored`` rounds to ``text`` (4 significant digits, or the printed decimals)."""
    if text in ("nan", "inf", "-inf"):
        return str(stored) == text
    value = float(text.replace(",", ""))
    mantissa, _, exponent = text.partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    half_unit = 0.5 * 10.0 ** (int(exponent or 0) - decimals)
    return abs(stored - value) <= half_unit * 1.001 + abs(value) * 1e-6  # float32 storage


def assert_lines_on_disk(logdir, lines, scalars):
    """Every value every finished-phase line printed is in that phase's event files."""
    phases = reported(lines)
    assert phases, lines
    stored = {}
    for phase, epoch, values in phases:
        if phase not in stored:
            stored[phase] = {tag: dict(points) for tag, points in scalars(logdir / phase).items()}
        for tag, (text, scale) in values.items():
            points = stored[phase].get(tag, {})
            assert epoch - 1 in points, f"{phase} {tag} of epoch {epoch} missing"
            assert same_as_printed(text, points[epoch - 1] * scale), (phase, tag, text, points)
    return phases


def assert_step_scalars_on_disk(logdir, lines, scalars, log_every=5):
    """Every step/loss interval that closed before the last printed step is on disk, with the
    mean of the losses the script printed for its steps."""
    losses = {int(m.group(1)): float(m.group(2)) for m in map(STEP_LINE.match, lines) if m}
    last = max(losses)
    points = dict(scalars(logdir / "train")["step/loss"])
    ends = range(log_every, last, log_every)  # closed at end_step, before step `last` began
    assert len(ends) >= 5
    for end in ends:
        expected = sum(losses[s] for s in range(end - log_every + 1, end + 1)) / log_every
        assert points[end] == pytest.approx(expected, rel=1e-5), end
    return last


def hparams_written(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")


def test_sigkill_right_after_a_line_loses_nothing_it_reported(tmp_path, scalars):
    """A process SIGKILLed just after printing phase lines has every value they showed on disk,
    even when the disk is slow (each record takes 5 ms)."""
    training = Training(tmp_path, record_s=0.005)
    training.epoch_lines(6)
    training.proc.send_signal(signal.SIGKILL)
    code, lines = training.finish()
    assert code == -signal.SIGKILL
    phases = assert_lines_on_disk(training.logdir, lines, scalars)
    assert len(phases) >= 6 and {"train", "val"} == {p for p, _, _ in phases}


def test_sigterm_flushes_closes_and_exits_with_the_signal(tmp_path, scalars):
    """SIGTERM mid-epoch: printed values and step scalars so far are on disk, the run is closed
    (hparams written), the phase is reported interrupted and the exit status is -SIGTERM; the
    disk is slow (50 ms a record), so the step scalars still queued are there only if the
    handler flushed them."""
    training = Training(tmp_path, delay=0.005, record_s=0.05)
    training.epoch_lines(2)
    training.wait_for(lambda line: bool(re.match(r"step (2[89]|[3-9]\d)\b", line)))
    training.proc.send_signal(signal.SIGTERM)
    code, lines = training.finish()
    assert code == -signal.SIGTERM
    assert_lines_on_disk(training.logdir, lines, scalars)
    last = assert_step_scalars_on_disk(training.logdir, lines, scalars)
    interrupted = [line for line in lines if "interrupted" in line]
    assert len(interrupted) == 1
    steps = int(re.match(r"Epoch \[2/1000\] train interrupted after (\d+) steps \(SIGTERM\)$",
                         interrupted[0]).group(1))
    assert steps in (last - 21, last - 20)
    assert hparams_written(training.logdir)


def test_sigterm_chains_to_the_users_own_handler(tmp_path, scalars):
    """A SIGTERM handler the script installed before tw.init still runs, and its sys.exit
    unwinds through the phase (reported interrupted) with the data on disk."""
    training = Training(tmp_path, mode="user-handler", delay=0.005)
    training.epoch_lines(2)
    training.wait_for(lambda line: line.startswith("step 28 "))
    training.proc.send_signal(signal.SIGTERM)
    code, lines = training.finish()
    assert code == 3
    assert "user handler ran" in lines
    assert any(re.match(r"Epoch \[2/1000\] train interrupted after \d+ steps \(SystemExit\)$", l)
               for l in lines)
    assert_lines_on_disk(training.logdir, lines, scalars)
    assert_step_scalars_on_disk(training.logdir, lines, scalars)
    assert hparams_written(training.logdir)  # atexit closed the run


def test_a_signal_the_loop_survives_still_puts_every_closed_interval_on_disk(tmp_path, scalars):
    """When the user's SIGTERM handler lets training go on, the step scalars of every interval
    that closed before the signal are on disk by the time that handler runs, read and written by
    torchwatch's flush ahead of it (not at the next read, up to READ_SECS later)."""
    training = Training(tmp_path, mode="handler-goes-on", delay=0.005)
    training.epoch_lines(2)
    training.wait_for(lambda line: line.startswith("step 28 "))
    training.proc.send_signal(signal.SIGTERM)
    lines = training.wait_for(lambda line: line == "user handler ran")
    try:
        assert_step_scalars_on_disk(training.logdir, lines[:lines.index("user handler ran")],
                                    scalars)
    finally:
        training.proc.kill()
        training.finish()


def test_ctrl_c_raises_keyboard_interrupt_in_the_loop_and_keeps_the_data(tmp_path, scalars):
    """SIGINT becomes KeyboardInterrupt in the user's code as usual; the phase says it was
    interrupted after how many steps, and everything so far is on disk."""
    training = Training(tmp_path, delay=0.005)
    training.epoch_lines(2)
    training.wait_for(lambda line: line.startswith("step 28 "))
    training.proc.send_signal(signal.SIGINT)
    code, lines = training.finish()
    assert code == 0
    assert "caught KeyboardInterrupt" in lines and "script end" in lines
    match = [re.match(r"Epoch \[2/1000\] train interrupted after (\d+) steps "
                      r"\(KeyboardInterrupt\)$", line) for line in lines]
    assert [m for m in match if m]
    assert_lines_on_disk(training.logdir, lines, scalars)
    assert_step_scalars_on_disk(training.logdir, lines, scalars)
    assert hparams_written(training.logdir)


def test_a_forked_worker_does_not_act_on_the_signal(tmp_path, scalars):
    """A process forked inside a phase (as DataLoader workers are) dies of SIGTERM at once,
    without flushing, closing or printing for the parent's run."""
    training = Training(tmp_path, mode="fork", epochs=3)
    code, lines = training.finish(60)
    assert code == 0
    child = [re.match(r"child (\d+) signal (\S+) after (\S+)s", line) for line in lines]
    child = [m for m in child if m]
    assert len(child) == 1
    pid, status, seconds = child[0].groups()
    assert status == str(int(signal.SIGTERM)) and float(seconds) < 2.0
    assert not [line for line in lines if "interrupted" in line]
    files = [name for _, _, names in os.walk(training.logdir) for name in names]
    assert files and not [name for name in files if f".{pid}." in name]
    assert len(reported(lines)) == 6
    assert_lines_on_disk(training.logdir, lines, scalars)


def test_atexit_closes_the_run(tmp_path, scalars):
    """A script that never calls tw.close() still gets its run closed at exit: hparams and
    what it wrote to run.writer() after the last phase are on disk."""
    training = Training(tmp_path, mode="atexit", epochs=2)
    code, lines = training.finish(60)
    assert code == 0 and "script end" in lines
    assert hparams_written(training.logdir)
    assert scalars(training.logdir / "notes")["notes/custom"] == [(7, 1.5)]
    assert_lines_on_disk(training.logdir, lines, scalars)


AT_312_EXIT = """
import atexit, sys, threading
import torchwatch as tw

def as_python_312_exits():
    # Python 3.12 runs atexit after the threads are shut down, and refuses new ones there
    def refuse(self):
        raise RuntimeError("can't create new thread at interpreter shutdown")
    threading.Thread.start = refuse

tw.init(logdir=sys.argv[1], console=False, progress=False, hparams={"lr": 0.1})
atexit.register(as_python_312_exits)  # after the run's own: runs before it
if sys.argv[2] == "phase":
    with tw.phase("train"):
        tw.log(loss=0.5)
"""


def test_atexit_writes_hparams_where_no_thread_can_start(tmp_path, scalars):
    """Closed at exit as Python 3.12 exits (no new thread, so no new SummaryWriter), a run with
    hparams writes them with its last metrics; one that never ended a phase says the fix."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    def run(logdir, mode):
        done = subprocess.run([sys.executable, "-c", AT_312_EXIT, str(logdir), mode],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stderr

    assert "failed" not in run(tmp_path / "phase", "phase")
    assert hparams_written(tmp_path / "phase")
    assert scalars(tmp_path / "phase" / "train")["epoch/loss"] == [(0, 0.5)]
    acc = EventAccumulator(str(tmp_path / "phase"))
    acc.Reload()
    data = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent("hparams")["_hparams_/experiment"])
    assert ("train", "epoch/loss") in {(m.name.group, m.name.tag)
                                       for m in data.experiment.metric_infos}
    err = run(tmp_path / "none", "none")
    assert "TensorBoard writing to" in err and "call tw.close() or run.close()" in err


# -- signal handlers in this process ------------------------------------------------------------


def kill_self(calls):
    """SIGTERM to this process, returning once the Python handlers have run (they run at the
    next check of the interpreter's eval breaker, which a loop's backward jump is)."""
    os.kill(os.getpid(), signal.SIGTERM)
    deadline = time.monotonic() + 30
    while not calls and time.monotonic() < deadline:
        pass


@pytest.fixture
def sigterm_calls():
    """A Python SIGTERM handler (so a signal here can never kill pytest) recording its calls."""
    calls = []
    before = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    yield calls
    signal.signal(signal.SIGTERM, before)


def test_handlers_go_in_with_the_run_and_back_out_when_it_closes(tmp_path, sigterm_calls):
    """tw.init puts a handler in front of SIGTERM's and SIGINT's; closing the last run restores
    the previous ones exactly."""
    for leftover in list(signals._runs):  # runs other tests left open keep ours installed
        leftover.close()
    term, interrupt = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    run = tw.init(tmp_path, console=False)
    assert signal.getsignal(signal.SIGTERM) is not term
    assert signal.getsignal(signal.SIGINT) is not interrupt
    other = tw.Run(tmp_path / "other", console=False)
    run.close()
    assert signal.getsignal(signal.SIGTERM) is not term  # `other` is still open
    other.close()
    assert signal.getsignal(signal.SIGTERM) is term
    assert signal.getsignal(signal.SIGINT) is interrupt


def test_a_run_started_off_the_main_thread_installs_nothing(tmp_path, sigterm_calls):
    """A Run created in another thread works and leaves the signal handlers as they are."""
    term = signal.getsignal(signal.SIGTERM)
    errors = []

    def start():
        try:
            run = tw.Run(tmp_path, console=False)
            with run.phase("val", model=nn.Linear(1, 1)):
                run.log(loss=0.5)
            run.close()
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    assert not errors
    assert signal.getsignal(signal.SIGTERM) is term


def test_sigterm_flushes_then_chains_to_the_previous_python_handler(tmp_path, sigterm_calls,
                                                                   scalars):
    """In-process SIGTERM with a Python handler before ours: step scalars still queued are
    flushed, the previous handler runs, and the run stays open."""
    run = tw.init(tmp_path, console=False, log_every=1)
    with tw.phase("train", model=nn.Linear(1, 1)):
        for i in tw.steps(range(3)):
            tw.log(loss=float(i))
        writer = run.writer("train")
        # a scalar only the handler's flush can bring to disk in time
        writer.add_scalar("custom", 4.0, 1)
        kill_self(sigterm_calls)
        assert sigterm_calls == [signal.SIGTERM]
        assert scalars(tmp_path / "train")["custom"] == [(1, 4.0)]
    assert not run.closed and len(run.history) == 1


def test_signal_while_the_loop_holds_the_writer_lock_does_not_wait(tmp_path, sigterm_calls):
    """A signal that lands while the interrupted code holds SummaryWriter's lock is chained at
    once: the handler skips that writer instead of deadlocking or waiting out the timeout."""
    run = tw.init(tmp_path, console=False)
    with tw.phase("train", model=nn.Linear(1, 1)):
        tw.log(loss=1.0)
        writer = run.writer("train")
        lock = writer.file_writer.event_writer._async_writer._lock
        started = time.monotonic()
        with lock:
            kill_self(sigterm_calls)
            assert sigterm_calls == [signal.SIGTERM]
        assert time.monotonic() - started < 1.0 < signals.FLUSH_TIMEOUT_S


def test_a_stuck_flush_is_abandoned_after_the_timeout(tmp_path, sigterm_calls, monkeypatch):
    """A flush that never returns (a hung disk) delays the signal by FLUSH_TIMEOUT_S at most."""
    run = tw.init(tmp_path, console=False)
    monkeypatch.setattr(signals, "FLUSH_TIMEOUT_S", 0.3)
    release = threading.Event()
    with tw.phase("train", model=nn.Linear(1, 1)):
        tw.log(loss=1.0)
        writer = run.writer("train")
        monkeypatch.setattr(writer, "flush", lambda: release.wait(30))
        started = time.monotonic()
        kill_self(sigterm_calls)
        elapsed = time.monotonic() - started
        release.set()
    assert sigterm_calls == [signal.SIGTERM]
    assert 0.25 < elapsed < 2.0


# -- run lifecycle ------------------------------------------------------------------------------


def count_events(path, tag):
    """How many summaries named ``tag`` the event files directly in ``path`` hold."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    count = 0
    for name in os.listdir(path):
        if name.startswith("events.out.tfevents"):
            for event in EventFileLoader(str(path / name)).Load():
                count += sum(value.tag == tag for value in event.summary.value)
    return count


def test_close_twice_is_harmless(tmp_path, model):
    """tw.close() and run.close() again after a close do nothing: no error, no warning, the
    hparams written once."""
    run = tw.init(tmp_path, model=model, console=False, hparams={"lr": 0.1})
    with tw.phase("val"):
        tw.log(loss=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tw.close()
        tw.close()
        run.close()
    assert run.closed
    assert count_events(tmp_path, "_hparams_/session_start_info") == 1


def test_a_closed_run_used_again_is_open_again(tmp_path, model, scalars):
    """A phase or writer() on a closed run reopens it, as a closed SummaryWriter reopens: what it
    writes then is closed by the next close (atexit's), and the hparams stay written once."""
    run = tw.Run(tmp_path, model=model, console=False, hparams={"lr": 0.1})
    with run.phase("val"):
        run.log(loss=1.0)
    run.close()
    notes = run.writer("notes")
    notes.add_scalar("custom", 2.5, 3)
    with run.phase("val"):
        run.log(loss=2.0)
    assert not run.closed and notes.all_writers is not None
    run.close()
    assert run.closed and notes.all_writers is None  # SummaryWriter.close() ran: flushed
    assert scalars(tmp_path / "notes")["custom"] == [(3, 2.5)]
    assert [v for _, v in scalars(tmp_path / "val")["epoch/loss"]] == [1.0, 2.0]
    assert count_events(tmp_path, "_hparams_/session_start_info") == 1


def test_second_init_closes_the_first_run(tmp_path, model, scalars):
    """A second tw.init closes the first run: its writers are closed and its files complete."""
    first = tw.init(tmp_path / "a", model=model, console=False, hparams={"lr": 0.1})
    with tw.phase("val"):
        tw.log(loss=0.25)
    notes = first.writer("notes")
    notes.add_scalar("custom", 2.5, 3)
    second = tw.init(tmp_path / "b", model=model, console=False)
    assert first.closed and not second.closed and tw.current_run() is second
    assert notes.all_writers is None  # SummaryWriter.close() ran
    assert scalars(tmp_path / "a" / "notes")["custom"] == [(3, 2.5)]
    assert scalars(tmp_path / "a" / "val")["epoch/loss"] == [(0, 0.25)]
    assert count_events(tmp_path / "a", "_hparams_/session_start_info") == 1


# -- sink failures ------------------------------------------------------------------------------


def train_three_epochs(run, model, between=None):
    """Train and validate for three epochs, calling ``between(epoch)`` after each."""
    torch.manual_seed(0)
    data = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(4)]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    @run.watch_epoch
    def train_one_epoch(model, loader):
        for x, y in run.steps(loader):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss)

    for epoch in range(3):
        train_one_epoch(model, data)
        with run.phase("val"):
            for x, y in data:
                run.log(loss=nn.functional.cross_entropy(model(x), y))
        if between is not None:
            between(epoch)


def assert_failed_soft(run, caught, capsys, scalars, logdir, words):
    """One TensorBoard warning naming the cause, all six console lines, the history complete."""
    messages = [str(w.message) for w in caught if issubclass(w.category, tw.TorchwatchWarning)]
    assert len(messages) == 1, messages
    assert "TensorBoard writing to" in messages[0] and re.search(words, messages[0])
    assert "training and the console go on" in messages[0]
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Epoch")]
    assert len(lines) == 6 and len(run.history) == 6


thread_noise = pytest.mark.filterwarnings(  # TensorBoard's writer thread reports its own error
    "ignore::pytest.PytestUnhandledThreadExceptionWarning"
)


@thread_noise
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_full_disk_warns_once_and_training_goes_on(tmp_path, model, capsys, scalars):
    """A writer whose file writes fail with ENOSPC costs one warning; training and the console go
    on, and what reached the disk before stays readable."""
    run = tw.init(tmp_path, model=model, log_every=2, progress=False)
    moved = {}  # event file -> where its contents wait while the disk is "full"

    def fill_disk(epoch):
        if epoch == 0:  # each event file becomes /dev/full, where every write fails: ENOSPC
            for phase in ("train", "val"):
                (path,) = (tmp_path / phase).glob("events.out.tfevents.*")
                moved[path] = path.rename(tmp_path / f"{phase}.kept")
                path.symlink_to("/dev/full")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_three_epochs(run, model, fill_disk)
        run.close()
    assert_failed_soft(run, caught, capsys, scalars, tmp_path, "No space left on device")
    for path, contents in moved.items():  # what had reached the disk, where it was
        path.unlink()
        contents.rename(path)
    assert [step for step, _ in scalars(tmp_path / "train")["epoch/loss"]] == [0]


@thread_noise
def test_deleted_logdir_warns_once_and_training_goes_on(tmp_path, model, capsys, scalars):
    """The logdir removed between epochs costs one warning; training and the console go on."""
    logdir = tmp_path / "runs"
    run = tw.init(logdir, model=model, log_every=2, progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_three_epochs(run, model, lambda epoch: epoch == 0 and shutil.rmtree(logdir))
        run.close()
    assert_failed_soft(run, caught, capsys, scalars, logdir, "No such file or directory")


@thread_noise
def test_raising_writer_warns_once_and_training_goes_on(tmp_path, model, capsys, scalars):
    """A SummaryWriter whose thread died writing (the user's own event met a quota error) costs
    one warning naming the error; training and the console go on."""
    run = tw.init(tmp_path, model=model, log_every=2, progress=False)

    def break_writer(epoch):
        def write(*args, **kwargs):  # the event file's write, in the writer's thread
            raise RuntimeError("quota exceeded")

        if epoch == 0:
            writer = run.writer("train")
            writer.file_writer.event_writer._general_file_writer.write = write
            writer.add_text("note", "after epoch 0", 0)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_three_epochs(run, model, break_writer)
        run.close()
    assert_failed_soft(run, caught, capsys, scalars, tmp_path, "quota exceeded")


# -- bad input ----------------------------------------------------------------------------------

BAD_VALUES = [
    ("string", "high", r"got str 'high'; log numbers only"),
    ("multi-element tensor", torch.ones(3),
     r"got a torch.float32 tensor of shape \(3,\) on cpu; reduce it to one number first"),
    ("nested container", {"top1": 0.9}, r"got dict of 1 items; flatten it into top-level names"),
    ("complex number", 1 + 2j, r"got complex \(1\+2j\); log its real part"),
    ("complex tensor", torch.tensor(1 + 2j), r"complex64 tensor .*; log `.real` or `.abs\(\)`"),
    ("huge int", 10**400, r"it is too large for a float"),
]


def caught_warnings(action):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = action()
    return result, [str(w.message) for w in caught if issubclass(w.category, tw.TorchwatchWarning)]


@pytest.mark.parametrize("kind, value, words", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_logged_value_is_skipped_with_a_message(tmp_path, model, kind, value, words):
    """tw.log(acc=<bad>) warns once naming the metric, the phase, what came and the fix; the good
    value beside it is kept."""
    tw.init(tmp_path, model=model, console=False)

    def log():
        with tw.phase("val") as p:
            for _ in range(2):
                tw.log(loss=0.5, acc=value)
        return p.metrics

    metrics, messages = caught_warnings(log)
    assert metrics == {"loss": 0.5}
    assert len(messages) == 1
    assert messages[0].startswith("torchwatch: skipped metric 'acc' logged in phase 'val': ")
    assert re.search(words, messages[0])


@pytest.mark.parametrize("kind, value, words", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_returned_value_is_skipped_with_a_message(tmp_path, model, kind, value, words):
    """@watch_epoch returning {'loss': good, 'acc': <bad>} warns once naming the metric and the
    function; the loss is kept."""
    run = tw.init(tmp_path, model=model, console=False)

    @tw.watch_epoch("val")
    def evaluate():
        return {"loss": 0.5, "acc": value}

    _, messages = caught_warnings(lambda: (evaluate(), evaluate()))
    assert [r.metrics for r in run.history] == [{"loss": 0.5}, {"loss": 0.5}]
    assert len(messages) == 1
    assert re.match(r"torchwatch: skipped metric 'acc' returned by .*evaluate\(\): ", messages[0])
    assert re.search(words, messages[0])


@pytest.mark.parametrize("how", ["logged", "returned"])
def test_non_string_keys_and_bare_tuples_are_explained(tmp_path, model, how):
    """A dict with a non-str key and a bare tuple are each skipped with a message saying how to
    name the values; str keys beside them are kept."""
    run = tw.init(tmp_path, model=model, console=False)
    values = [{1: 0.5, "loss": 0.25}, (0.5, 0.9)]

    @tw.watch_epoch("val")
    def evaluate(value):
        return value

    def feed():
        for value in values:
            if how == "logged":
                with tw.phase("val"):
                    tw.log(value)
            else:
                evaluate(value)

    _, messages = caught_warnings(feed)
    assert run.history[0].metrics == {"loss": 0.25} and run.history[1].metrics == {}
    source = "logged in phase 'val'" if how == "logged" else "returned by .*evaluate\\(\\)"
    fix = ("log them by name, e.g. tw.log" if how == "logged"
           else r"pass names=\('loss', 'acc', ...\) to the decorator, or return a dict")
    assert len(messages) == 2
    assert re.match(f"torchwatch: skipped a value {source}: metric name 1 is a int, not a str; "
                    "use string keys", messages[0])
    assert re.match(f"torchwatch: skipped a value {source}: got a bare tuple of 2 values and no "
                    f"names; {fix}", messages[1])


@pytest.mark.parametrize("kind, value, words", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_strict_raises_value_error_with_the_message(tmp_path, model, kind, value, words):
    """Under strict=True a bad value raises ValueError carrying the same explanation."""
    tw.init(tmp_path, model=model, console=False, strict=True)
    with pytest.raises(ValueError, match=words):
        with tw.phase("val"):
            tw.log(acc=value)


def test_int_and_bool_tensors_are_cast_and_none_is_skipped(tmp_path, model, scalars):
    """Integer and bool tensors become floats, on the console and on disk; None is skipped
    without a word."""
    tw.init(tmp_path, model=model, console=False)

    def log():
        with tw.phase("val") as p:
            tw.log(correct=torch.tensor(3), hit=torch.tensor(True), skipped=None)
            tw.log({"correct": torch.tensor(5, dtype=torch.int8), "skipped": None})
        return p.metrics

    metrics, messages = caught_warnings(log)
    assert messages == []
    assert metrics == {"correct": 4.0, "hit": 1.0}
    assert all(type(v) is float for v in metrics.values())
    tw.close()
    stored = scalars(tmp_path / "val")
    assert stored["epoch/correct"] == [(0, 4.0)] and stored["epoch/hit"] == [(0, 1.0)]


class _Marker:
    pass


class _HoldsMarker(torch.autograd.Function):
    """Doubles its input; its graph node keeps a Python object alive, so a weakref to that
    object tells whether the graph is still alive."""

    @staticmethod
    def forward(ctx, x, marker):
        ctx.marker = marker
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return grad * 2, None


@pytest.mark.parametrize("hold", [False, True])
def test_a_logged_tensor_that_requires_grad_does_not_keep_its_graph(tmp_path, hold):
    """tw.log and a returned loss keep a detached tensor: once the loop drops the loss, its
    autograd graph is freed (when the loop keeps the loss, the graph visibly stays)."""
    tw.init(tmp_path, console=False)
    weight = torch.randn(3, requires_grad=True)
    marker = _Marker()
    graph_alive = weakref.ref(marker)
    loss = _HoldsMarker.apply(weight, marker).sum()
    del marker
    kept = [loss] if hold else []

    @tw.watch_epoch("train", model=nn.Linear(1, 1))
    def train(loss):
        tw.log(loss=loss)
        tw.log(loss)
        tw.log({"other": loss})
        return {"loss": loss}

    expected = loss.item()
    train(loss)
    with tw.phase("val", model=nn.Linear(1, 1)) as p:
        tw.log(loss=loss)
        del loss
        gc.collect()
        assert (graph_alive() is not None) == hold
    assert p.metrics["loss"] == pytest.approx(expected)
    assert tw.current_run().history[0].metrics["loss"] == pytest.approx(expected)
    assert kept or graph_alive() is None


def test_log_and_steps_outside_a_phase_warn_once_each(tmp_path):
    """tw.log and tw.steps outside a phase pass through, each with one warning saying where to
    call them."""
    tw.init(tmp_path, console=False)

    def outside():
        for _ in range(3):
            tw.log(loss=1.0)
            assert list(tw.steps([1, 2])) == [1, 2]

    _, messages = caught_warnings(outside)
    assert messages == [
        "torchwatch: tw.log was called outside a phase, so its values were dropped; call it "
        "inside a @tw.watch_epoch function or a `with tw.phase(...)` block",
        "torchwatch: tw.steps was called outside a phase, so nothing was recorded; call it "
        "inside a @tw.watch_epoch function or a `with tw.phase(...)` block",
    ]


@pytest.mark.parametrize("n", ["16", torch.ones(3), 1j, 10**400])
def test_a_bad_n_is_explained_and_the_value_kept(tmp_path, model, n):
    """A bad n= warns naming n and what came; the value is kept with the default weight."""
    tw.init(tmp_path, model=model, console=False)

    def log():
        with tw.phase("val") as p:
            tw.log(loss=torch.tensor(0.5), n=n)
            tw.log(loss=1.0, n=n)
        return p.metrics

    metrics, messages = caught_warnings(log)
    assert metrics == {"loss": 0.75}
    assert len(messages) == 1
    assert messages[0].startswith("torchwatch: skipped n= logged in phase 'val': got ")
    assert "pass the number of samples as an int, a float or a one-element tensor" in messages[0]


def test_a_one_element_tensor_n_weights_like_a_number(tmp_path, model):
    """n= as a tensor of shape (1,) weights the value like the same int would."""
    tw.init(tmp_path, model=model, console=False)
    with tw.phase("val") as p:
        tw.log(loss=torch.tensor(1.0), n=torch.tensor([3]))
        tw.log(loss=torch.tensor(0.0), n=torch.tensor([1]))
    assert p.metrics == {"loss": 0.75}


class _NotAModule:
    pass


def _generator():
    yield 1


async def _coroutine():
    return 1


async def _async_generator():
    yield 1


@pytest.mark.parametrize(
    "options, error, words",
    [
        ({"model": _NotAModule()}, TypeError, r"model must be an nn.Module.*got <"),
        ({"model": [nn.Linear(1, 1), 3]}, TypeError, r"model must be an nn.Module.*got \["),
        ({"log_every": 0}, ValueError, r"log_every must be a positive int, got 0"),
        ({"log_every": -5}, ValueError, r"log_every must be a positive int, got -5"),
        ({"log_every": 2.5}, ValueError, r"log_every must be a positive int, got 2.5"),
        ({"progress": "x"}, ValueError, r"progress must be 'auto', True or False, got 'x'"),
        ({"on_nan": "skip"}, ValueError,
         r"on_nan must be one of 'warn', 'raise', 'ignore', got 'skip'"),
        ({"strict": "yes"}, TypeError, r"strict must be True or False, got 'yes'"),
    ],
)
def test_bad_option_fails_at_once_naming_it(tmp_path, options, error, words):
    """A wrong option raises TypeError/ValueError from tw.init, naming the option, what was
    expected and what was received."""
    with pytest.raises(error, match=words):
        tw.init(tmp_path, **options)


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_unwritable_logdir_fails_at_once_naming_it(tmp_path, where):
    """A logdir that cannot be created or written raises ValueError from tw.init naming it."""
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    logdir = blocker if where == "a file" else blocker / "runs"
    with pytest.raises(ValueError, match=re.escape(f"logdir {str(logdir)!r} cannot be created or "
                                                   "written") + ".*pass a writable logdir="):
        tw.init(logdir)


@pytest.mark.parametrize("function, kind", [(_generator, "generator"), (_coroutine, "async"),
                                            (_async_generator, "generator")])
@pytest.mark.parametrize("decorator", ["watch_epoch", "watch_step"])
def test_decorating_a_generator_or_async_function_fails_at_once(function, kind, decorator):
    """@watch_epoch/@watch_step refuse generator and async functions at decoration time."""
    with pytest.raises(TypeError, match=f"@{decorator} cannot watch {kind} function "
                                        f"{function.__name__}\\(\\)"):
        getattr(tw, decorator)(function)


# -- on_nan --------------------------------------------------------------------------------------


def nan_epochs(run, epochs=2, nan_at=(7, 12), steps=20):
    """Train phases of ``steps`` steps logging loss = step number, NaN at the given global
    steps; a finite acc beside it. Returns the global steps whose bodies ran."""
    ran = []

    @run.watch_epoch
    def train_one_epoch():
        for i in run.steps(range(steps)):
            step = run.global_step + 1
            ran.append(step)
            value = float("nan") if step in nan_at else float(step)
            run.log(loss=torch.tensor(value), acc=torch.tensor(0.5))

    for _ in range(epochs):
        train_one_epoch()
    return ran


def test_on_nan_warn_warns_once_per_metric_with_the_first_step_range(tmp_path, scalars):
    """on_nan='warn': one warning for 'loss' naming steps 6-10, none for 'acc'; the NaN is
    recorded as it is in the step and epoch scalars."""
    run = tw.init(tmp_path, model=nn.Linear(1, 1), console=False, log_every=5, on_nan="warn")
    ran, messages = caught_warnings(lambda: nan_epochs(run))
    assert len(ran) == 40
    assert len(messages) == 1
    assert messages[0].startswith("torchwatch: metric 'loss' of train phase of ")
    assert "was NaN or Inf first in steps 6-10 (Epoch [1]); it is recorded as it is" in messages[0]
    tw.close()
    stored = scalars(tmp_path / "train")
    step_loss = dict(stored["step/loss"])
    assert math.isnan(step_loss[10]) and math.isnan(step_loss[15])
    assert step_loss[5] == 3.0 and step_loss[20] == 18.0
    assert [math.isnan(v) for _, v in stored["epoch/loss"]] == [True, False]


def test_on_nan_in_a_val_phase_names_its_own_steps(tmp_path):
    """A NaN in step 5 of a val phase (after 20 train steps, which val does not move) is named
    by the val phase's own steps, 4-6 with log_every=3, not by global steps; the same in an
    evaluation-only run."""
    def val(run):
        with run.phase("val"):
            for i in run.steps(range(8)):
                run.log(loss=torch.tensor(float("nan") if i == 4 else 1.0))

    run = tw.init(tmp_path, model=nn.Linear(1, 1), console=False, log_every=3, on_nan="warn")
    nan_epochs(run, epochs=1, nan_at=())
    _, messages = caught_warnings(lambda: val(run))
    assert len(messages) == 1
    assert "metric 'loss' of phase 'val' was NaN or Inf first in steps 4-6 of this phase" \
        in messages[0]
    tw.close()
    evaluating = tw.init(tmp_path / "eval", model=nn.Linear(1, 1), console=False, log_every=3,
                         on_nan="warn")
    _, messages = caught_warnings(lambda: [val(evaluating) for _ in range(2)])
    assert len(messages) == 1 and "first in steps 4-6 of this phase" in messages[0]


def test_on_nan_raise_raises_at_the_end_of_the_interval(tmp_path, scalars, capsys):
    """on_nan='raise': NonFiniteError (a FloatingPointError) right after the interval holding the
    NaN closes, naming the metric and the steps; the interval's NaN is on disk and the phase is
    reported interrupted."""
    run = tw.init(tmp_path, model=nn.Linear(1, 1), log_every=5, on_nan="raise", progress=False)
    ran = []
    with pytest.raises(tw.NonFiniteError, match=r"metric 'loss' .* first in steps 6-10") as info:
        ran.extend(nan_epochs(run))
    assert isinstance(info.value, FloatingPointError)
    assert "Epoch [1] train interrupted after 10 steps (NonFiniteError)" in capsys.readouterr().out
    stored = dict(scalars(tmp_path / "train")["step/loss"])
    assert stored[5] == 3.0 and math.isnan(stored[10]) and 15 not in stored


def test_on_nan_raise_on_a_returned_value_raises_at_phase_end(tmp_path, scalars):
    """on_nan='raise' and a NaN returned by the epoch function: the phase is written (NaN on
    disk) and NonFiniteError follows."""
    run = tw.init(tmp_path, model=nn.Linear(1, 1), console=False, on_nan="raise")

    @tw.watch_epoch("val")
    def evaluate():
        return {"loss": torch.tensor(float("nan")), "acc": 0.5}

    with pytest.raises(tw.NonFiniteError, match="metric 'loss'"):
        evaluate()
    assert run.history[0].metrics["acc"] == 0.5
    tw.close()
    assert math.isnan(scalars(tmp_path / "val")["epoch/loss"][0][1])


def test_on_nan_raise_on_a_logged_value_raises_after_the_phase_is_written(tmp_path, scalars):
    """on_nan='raise' and a NaN logged in the last interval of a phase: the phase's record and
    line are written first, then NonFiniteError follows."""
    run = tw.init(tmp_path, model=nn.Linear(1, 1), console=False, on_nan="raise")
    with pytest.raises(tw.NonFiniteError, match="metric 'loss' of phase 'val'"):
        with tw.phase("val"):
            tw.log(loss=torch.tensor(float("nan")), acc=torch.tensor(0.5))
    assert run.history[0].metrics["acc"] == 0.5
    tw.close()
    assert math.isnan(scalars(tmp_path / "val")["epoch/loss"][0][1])


def test_on_nan_ignore_is_silent_and_records_the_nan(tmp_path, scalars):
    """on_nan='ignore': no warning at all, the NaN is recorded."""
    run = tw.init(tmp_path, model=nn.Linear(1, 1), console=False, log_every=5, on_nan="ignore")
    ran, messages = caught_warnings(lambda: nan_epochs(run))
    assert len(ran) == 40 and messages == []
    tw.close()
    assert math.isnan(dict(scalars(tmp_path / "train")["step/loss"])[10])


# -- soak ----------------------------------------------------------------------------------------


def test_memory_stays_flat_over_steps(tmp_path):
    """Inside one long phase, live tensors and traced Python memory at step 5000 are what they
    were at step 500: nothing torchwatch keeps grows with the step count."""
    run = tw.init(tmp_path, model=nn.Linear(4, 1), console=False, log_every=50, progress=False)
    run.writer("train")  # TensorBoard imported and the writer made before the first sample
    model = run.models[0]
    x = torch.randn(8, 4)
    samples = {}

    def live_tensors():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sum(isinstance(o, torch.Tensor) for o in gc.get_objects())

    tracemalloc.start()
    try:
        with tw.phase("train"):
            for step in tw.steps(range(1, 5001)):
                loss = model(x).square().mean()
                tw.log(loss=loss, n=8)
                if step in (500, 5000):  # the same point of an interval (log_every=50)
                    run.read_closed()  # and no closed interval waiting to be read (READ_SECS)
                    gc.collect()
                    samples[step] = (live_tensors(), tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    (tensors_500, bytes_500), (tensors_5000, bytes_5000) = samples[500], samples[5000]
    assert tensors_5000 <= tensors_500 + 2
    assert bytes_5000 - bytes_500 < 64 * 1024, (bytes_500, bytes_5000)
    assert run.global_step == 5000
