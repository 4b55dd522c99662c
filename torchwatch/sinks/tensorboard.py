"""TensorBoard sink: one ``SummaryWriter`` per phase under ``<logdir>/<phase>/``.

The same tag of ``train`` and ``val`` then overlays on one chart. Writers exist on rank 0 only
and are created (and TensorBoard imported) when a phase first writes. They are handed Python
floats, never tensors (``add_scalar`` on a tensor calls ``.cpu()``: a sync). A writer that fails
(full disk, deleted logdir) warns once and is dropped; training and the other sinks go on.

Events are handed to the writers in batches: at the interval close after which the oldest of
them would have waited ``HANDOFF_SECS`` (one interval's length ahead) or when ``MAX_PENDING``
are waiting, and in every ``flush()`` (phase end, close, SIGTERM). A phase shorter than a second
hands its events over in the flush that precedes its console line. Each event keeps the wall
time at which it was logged.

A hand-off writes its events into the writer's own event file from the calling thread, in one
``write`` to a descriptor kept open in append mode, in TensorBoard's record format
(``_speedups.records``, byte for byte what tensorboard's RecordWriter writes), under the writer's
lock and after the events already queued on it (``add_image``, ``add_text``: they keep their
order). SummaryWriter's thread would do the same work in pure Python, event by event: a CRC loop
of ~14 µs, a file opened and closed, a wake-up, the GIL traded back and forth with the training
loop; about 40 µs of CPU per event, against about 4 here. Where tensorboard's internals are not
as expected, or the logdir is not on the local disk (``s3://``, ``gs://``: uploaded on flush),
events go through the writer's ``add_event`` as before.
"""

from __future__ import annotations

import os
import struct
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..compiled import speedups
from ..values import warn

__all__ = ["TensorBoardSink"]

FLUSH_SECS = 10  # SummaryWriter's own flush to the OS
HANDOFF_SECS = 1.0  # events wait about this long at most (or until flush()) for a writer
# SummaryWriter's queue of serialized events (default 10), for the fallback hand-off: more events
# than that would wait for its thread, event by event. Events are ~150 bytes.
MAX_QUEUE = 1000
# events waiting for a hand-off at most (quick intervals, a small log_every): memory stays
# bounded by count as well as by time, at one hand-off per this many intervals
MAX_PENDING = 32


class TensorBoardSink:
    def __init__(self, logdir: str, hparams: bool = False) -> None:
        self.logdir = logdir
        # hparams will go to <logdir> itself when the run closes, often from atexit, where Python
        # 3.12 starts no thread (a SummaryWriter's): its writer is opened with the first other one
        self.root_wanted = hparams
        self.writers: Dict[str, Any] = {}
        self.failed = False
        self.final: Dict[Tuple[str, str], float] = {}  # (phase, tag) -> last value, for hparams
        self.reopen: Any = None  # after run.load_state_dict: opens writers with a purge_step
        self.pending: List[Tuple[str, Mapping[str, float], int, float]] = []
        self.oldest = 0.0  # the wall time of the oldest pending event
        self.files: Dict[str, Optional[_EventFile]] = {}  # phase -> its writer's event file

    def writer(self, phase: str) -> Optional[Any]:
        """The phase's ``SummaryWriter``, created on first use; ``None`` after a failure."""
        if self.failed:
            return None
        writer = self.writers.get(phase)
        if writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                path = os.path.join(self.logdir, phase)
                options = dict(flush_secs=FLUSH_SECS, max_queue=MAX_QUEUE)
                if self.reopen is not None and phase:
                    writer = self.reopen.open(path, **options)
                else:
                    writer = SummaryWriter(path, **options)
            except Exception as error:
                self._fail(error)
                return None
            self.writers[phase] = writer
            if self.root_wanted and phase:
                self.root_wanted = False
                self.writer("")
        return writer

    def log(self, phase: str, scalars: Mapping[str, float], step: int,
            every: float = 0.0, wall_time: Optional[float] = None, final: bool = False) -> None:
        """Queue one event with all of ``scalars`` (floats) at ``step``, stamped ``wall_time``
        (default now); ``every``: the seconds until the next is expected (the interval's
        length). See ``HANDOFF_SECS``. ``final``: a phase's ``epoch/*`` results, the latest of
        which go with the hparams."""
        if self.failed:
            return
        now = time.time()
        stamp = now if wall_time is None else wall_time
        if not self.pending or stamp < self.oldest:
            self.oldest = stamp
        self.pending.append((phase, scalars, step, stamp))
        if final:
            for tag, value in scalars.items():
                self.final[(phase, tag)] = value
        # handed over before the oldest would wait longer than HANDOFF_SECS for the next call
        waited = now - self.oldest + (every if every > 0 else 0.0)  # every NaN: unknown
        if waited >= HANDOFF_SECS or len(self.pending) >= MAX_PENDING:
            self.handoff()

    def handoff(self) -> None:
        """Give the queued events to their writers (one ``Summary`` event per ``log`` call)."""
        pending, self.pending = self.pending, []
        if not pending or self.failed:
            return
        try:
            from tensorboard.compat.proto.event_pb2 import Event

            events: Dict[str, List[bytes]] = {}
            for phase, scalars, step, wall_time in pending:
                # values added in place: half the cost of building a Summary and copying it in
                event = Event(step=step, wall_time=wall_time)
                add = event.summary.value.add
                for tag, value in scalars.items():
                    add(tag=tag, simple_value=float(value))
                events.setdefault(phase, []).append(event.SerializeToString())
            for phase, batch in events.items():
                writer = self.writer(phase)
                if writer is None:
                    return
                if phase not in self.files:
                    self.files[phase] = _EventFile.of(writer)
                file = self.files[phase]
                if file is not None:
                    file.append(batch)
                else:
                    add_event = writer._get_file_writer().add_event
                    for data in batch:
                        event = Event.FromString(data)
                        add_event(event, event.step, event.wall_time)
        except Exception as error:
            self._fail(error)

    def flush(self) -> None:
        """Hand everything logged so far to the writers, and the writers' files to the OS."""
        self.handoff()
        for writer in list(self.writers.values()):
            try:
                writer.flush()
            except Exception as error:
                self._fail(error)

    def hparams(self, hparams: Mapping[str, Any]) -> None:
        """HParams in ``<logdir>`` itself, with the final ``epoch/*`` metric of each phase."""
        if self.failed or not hparams:
            return
        try:
            writer = self.writer("")
            if writer is None:
                return
            for summary in _hparams_summaries(hparams, sorted(self.final)):
                writer.file_writer.add_summary(summary)
        except Exception as error:
            self._fail(error)

    def close(self) -> None:
        self.handoff()
        for writer in list(self.writers.values()):
            try:
                writer.close()
            except Exception as error:
                self._fail(error)
        self.writers.clear()
        for file in self.files.values():
            if file is not None:
                file.close()
        self.files.clear()

    def _fail(self, error: BaseException) -> None:
        if not self.failed:
            self.failed = True
            if isinstance(error, RuntimeError) and "shutdown" in str(error):
                fix = ("It was at the interpreter's exit, where Python 3.12 starts no thread (a "
                       "SummaryWriter's): call tw.close() or run.close() at the end of the "
                       "script.")
            else:
                fix = "Check the disk space and that the logdir still exists."
            warn(
                f"torchwatch: TensorBoard writing to {self.logdir!r} failed ({error!r}); "
                "TensorBoard output is off for the rest of this run, training and the console "
                f"go on. {fix}"
            )


class _EventFile:
    """The local event file behind a SummaryWriter, appended to from the calling thread."""

    __slots__ = ("queued", "path", "fd", "opened")

    def __init__(self, queued: Any, path: bytes) -> None:
        self.queued = queued  # SummaryWriter's queue-and-thread writer: its lock, its queue
        self.path = path
        self.fd: Optional[int] = None  # kept open: an open() per hand-off costs ~100 µs here
        self.opened: Any = None  # os.fstat(fd) when it was opened: the file it writes to

    @classmethod
    def of(cls, writer: Any) -> Optional["_EventFile"]:
        """The writer's event file; None where tensorboard's internals are not as expected or
        the file is not on the local disk (the writer's own ``add_event`` is used then)."""
        try:
            from tensorboard.compat.tensorflow_stub.io.gfile import LocalFileSystem

            queued = writer._get_file_writer().event_writer._async_writer
            file = queued._writer._writer  # AsyncWriter -> RecordWriter -> GFile
            usable = (callable(queued._check_worker_status) and hasattr(queued._lock, "locked")
                      and callable(queued._byte_queue.join) and isinstance(file.filename, bytes)
                      and isinstance(file.fs, LocalFileSystem))  # else uploaded on flush
        except (AttributeError, ImportError):
            return None
        return cls(queued, file.filename) if usable else None

    def append(self, data: List[bytes]) -> None:
        """Serialized events at the end of the file as records, after those queued on the
        writer."""
        queued = self.queued
        with queued._lock:  # what SummaryWriter holds to queue an event or to flush
            queued._check_worker_status()  # raises what its thread died of, as a flush would
            if queued._closed:
                raise OSError("the SummaryWriter is closed")
            queued._byte_queue.join()  # the events queued before these are written first
            queued._check_worker_status()  # and did not kill its thread
            left = memoryview(speedups.records(data) if speedups is not None else _records(data))
            # the file at the path now (FileNotFoundError: the logdir was deleted), as the
            # writer's own open-per-write would find it
            here = os.stat(self.path)
            if self.fd is None or not os.path.samestat(here, self.opened):
                self.close()
                self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
                self.opened = os.fstat(self.fd)
            while left:
                left = left[os.write(self.fd, left):]

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


def _records(data: List[bytes]) -> bytes:
    """``_speedups.records`` in Python: what tensorboard's RecordWriter writes for each item."""
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    out = []
    for item in data:
        header = struct.pack("<Q", len(item))
        out += [header, struct.pack("<I", masked_crc32c(header)), item,
                struct.pack("<I", masked_crc32c(item))]
    return b"".join(out)


def _hparams_summaries(hparams: Mapping[str, Any], metrics: Any) -> list:
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    infos, start = [], plugin_data_pb2.SessionStartInfo()
    for name, value in hparams.items():
        if value is None:
            continue
        if isinstance(value, bool):
            start.hparams[name].bool_value = value
            kind = "DATA_TYPE_BOOL"
        elif isinstance(value, (int, float)):
            start.hparams[name].number_value = float(value)
            kind = "DATA_TYPE_FLOAT64"
        else:
            start.hparams[name].string_value = str(value)
            kind = "DATA_TYPE_STRING"
        infos.append(api_pb2.HParamInfo(name=name, type=api_pb2.DataType.Value(kind)))
    experiment = api_pb2.Experiment(
        hparam_infos=infos,
        metric_infos=[
            api_pb2.MetricInfo(
                name=api_pb2.MetricName(group=phase, tag=tag), display_name=f"{phase}/{tag}"
            )
            for phase, tag in metrics
        ],
    )
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.Status.Value("STATUS_SUCCESS"))

    def summary(tag: str, **data: Any) -> Any:
        content = plugin_data_pb2.HParamsPluginData(version=metadata.PLUGIN_DATA_VERSION, **data)
        meta = SummaryMetadata(
            plugin_data=SummaryMetadata.PluginData(
                plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString()
            )
        )
        return Summary(value=[Summary.Value(tag=tag, metadata=meta)])

    return [
        summary(metadata.EXPERIMENT_TAG, experiment=experiment),
        summary(metadata.SESSION_START_INFO_TAG, session_start_info=start),
        summary(metadata.SESSION_END_INFO_TAG, session_end_info=end),
    ]
