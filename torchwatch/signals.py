"""SIGTERM and Ctrl-C: put what the runs wrote on disk, then let the signal do what it would have.

SIGTERM is what torchrun, SLURM and Kubernetes send on preemption; Ctrl-C sends SIGINT. When a
run starts in the main thread, torchwatch puts a handler in front of the one already there and
chains to it, so the signal keeps its meaning:

- previous handler a Python function (``default_int_handler`` raising ``KeyboardInterrupt``, or
  the user's own): flush the writers, then call it. The run stays open, because the process may
  go on (a notebook after Ctrl-C, a handler that checkpoints and finishes the epoch); if it ends,
  the exception unwinds through the phase (reported interrupted) and ``atexit`` closes the run.
- previous handler ``SIG_DFL`` (SIGTERM's usual case): the process is about to die, so flush and
  close every run (hparams included), print the interrupted phases, restore ``SIG_DFL`` and send
  the signal again: the exit status is the signal's, as without torchwatch.
- ``SIG_IGN`` or a handler installed from C: left alone (nothing to chain to from Python).

Why the flush runs on a helper thread with a timeout: Python runs a handler in the main thread
between two bytecodes of whatever it was doing, which may be inside ``SummaryWriter`` holding its
non-reentrant lock (``_AsyncWriter.write``/``flush``) or the queue's mutex. Flushing from the
handler itself would then wait for a lock that its own thread holds: a deadlock. Setting a flag
for the loop to act on does not work either when the signal's default is to die now, or when the
loop is stuck in a data loader. So the handler skips writers whose lock is already held (the
interrupted code holds it; their events still queued are the only loss, and everything a console
line reported was flushed before the line), flushes the others from a helper thread, and waits at
most ``FLUSH_TIMEOUT_S`` for it (a hung disk, a lock we could not see): nothing can hang.

A process forked after the handlers went in (a DataLoader worker) inherits them but not the
writers' threads: flushing there would block and write duplicates, so the handler checks
``os.getpid()`` against the process that installed it and, elsewhere, only chains.
"""

from __future__ import annotations

import os
import signal
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, List

if TYPE_CHECKING:  # pragma: no cover
    from .run import Run

__all__ = ["FLUSH_TIMEOUT_S", "install", "uninstall"]

SIGNALS = (signal.SIGTERM, signal.SIGINT)
FLUSH_TIMEOUT_S = 5.0

_runs: "weakref.WeakSet[Run]" = weakref.WeakSet()
_installed: Dict[int, Callable] = {}  # signal -> our handler now in place
_pid = os.getpid()
_handling = False


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def install(run: "Run") -> None:
    """Flush ``run`` on SIGTERM/SIGINT; the handlers go in from the main thread only."""
    global _runs, _pid
    if _pid != os.getpid():  # a forked child: the parent's runs are not ours to flush
        _runs, _pid = weakref.WeakSet(), os.getpid()
    _runs.add(run)
    if not _main_thread():
        return
    for signum in SIGNALS:
        current = signal.getsignal(signum)
        if current is not None and current is _installed.get(signum):
            continue
        if current is None or current is signal.SIG_IGN:
            continue
        # one handler per installation, bound to what it replaced: if the user put a handler
        # of their own over an earlier one of ours and chains to it, each link still chains on
        handler = _installed[signum] = _chain_to(current)
        signal.signal(signum, handler)


def uninstall(run: "Run") -> None:
    """Forget ``run``; with no run left, put the previous handlers back where ours still is."""
    _runs.discard(run)
    if len(_runs) or not _main_thread() or _pid != os.getpid():
        return
    for signum, handler in list(_installed.items()):
        if signal.getsignal(signum) is handler:
            signal.signal(signum, handler.previous)  # type: ignore[attr-defined]
        del _installed[signum]  # else a later handler may chain to it: it stays valid there


def _chain_to(previous: Any) -> Callable:
    def handle(signum: int, frame: Any) -> None:
        global _handling
        dies = previous is signal.SIG_DFL
        if os.getpid() == _pid and not _handling:  # a second signal meanwhile: just chain
            _handling = True
            try:
                _save(signal.Signals(signum).name, closing=dies)
            finally:
                _handling = False
        if callable(previous):
            previous(signum, frame)
            return
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    handle.previous = previous  # type: ignore[attr-defined]
    return handle


def _save(name: str, closing: bool) -> None:
    """Flush (and when ``closing``, close) every open run, waiting at most FLUSH_TIMEOUT_S."""
    runs = [run for run in list(_runs) if not run.closed]
    if not runs:
        return
    worker = threading.Thread(target=_flush_runs, args=(runs, name, closing),
                              name="torchwatch-signal-flush", daemon=True)
    worker.start()
    worker.join(FLUSH_TIMEOUT_S)


def _flush_runs(runs: List["Run"], name: str, closing: bool) -> None:
    for run in runs:
        sink = run.tensorboard
        writers = list(sink.writers.values()) if sink is not None else []
        busy = [w for w in writers if _lock_held(w)]
        if sink is not None and not busy:
            try:
                run.read_closed()  # the intervals closed but not yet read (see READ_SECS)
            except Exception:  # noqa: S110  whatever it was, putting the rest on disk comes first
                pass
            sink.handoff()  # the events still queued for the writers (see HANDOFF_SECS)
            writers = list(sink.writers.values())
        for writer in writers:
            if writer not in busy:
                try:
                    writer.flush()
                except Exception as error:  # the sink's one warning; the signal goes on
                    sink._fail(error)
        if closing:
            if not busy:
                run.close()
            _report(run, name)


def _lock_held(writer: Any) -> bool:
    """Whether the writer's lock is taken (by the interrupted code, most likely): flushing it
    would only wait out the timeout. False when TensorBoard's internals look different."""
    try:
        return bool(writer.file_writer.event_writer._async_writer._lock.locked())
    except AttributeError:
        return False


def _report(run: "Run", name: str) -> None:
    if run.console is None:
        return
    from .sinks.console import epoch_label

    for phase in reversed(run.stack):
        label = epoch_label(run.display_epoch(phase.epoch), run.total_epochs)
        run.console.log(f"{label} {phase.name} interrupted after {phase.steps} steps ({name})")
