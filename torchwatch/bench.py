"""``torchwatch bench``: what watching a loop costs, beside the bare loop and the usual ways.

Every contender runs the same training loop (forward, loss, ``zero_grad``, ``backward``, SGD
step) over the same batches, preloaded on the device. Rounds are interleaved, each contender's
epoch between two of the bare loop's (bare A bare B bare C ... bare), each round rotated by one;
warm-up epochs are not timed. Per contender it reports the median time per step, its ratio to
the bare loop, the overhead per step (the median over rounds of the difference to the mean of
the two bare epochs around it, so the machine's slow drifts cancel), syncs per step
(``torchwatch.testing.count_syncs``), the peak memory of one epoch and the start-up cost. Then
``timeit`` micro-benchmarks of the hot path beside the bare-Python cost of the same shape, and the
cost of ``import torchwatch`` + ``init`` beside ``import torch``, measured in fresh interpreters.

On a CPU the clock is the process's CPU time (all its threads, so TensorBoard's writer thread
counts, while other load on a shared machine does not); ``--clock wall`` uses the wall clock.
With ``--device cuda`` each epoch is timed with CUDA events and syncs are those CUDA reports
(``torch.cuda.set_sync_debug_mode``). Writers are flushed at the end of each epoch, inside the
timed span, so each contender pays for its own writing. Output is a markdown table on stdout.

``torchwatch bench`` is the quick form (under a minute); ``python benchmarks/overhead.py`` runs
the full one. Nothing here asserts a timing: the targets are printed with their outcome.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import gc
import importlib.util
import json
import logging
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import tracemalloc
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

import torchwatch as tw

__all__ = ["CONTENDERS", "WORKLOADS", "main"]

WORKLOADS = {"tiny": (8, 8, 8, 2), "small": (64, 128, 128, 10)}  # MLP layer widths
BATCH = 64
LR, MOMENTUM = 0.01, 0.9
QUICK = dict(rounds=8, steps=200, warmup=1, startup=1, micro=0.5)
FULL = dict(rounds=30, steps=500, warmup=2, startup=5, micro=4.0)


# -- what a contender's epoch is measured by -------------------------------------------------
class Probe:
    """Marks where a contender's epoch starts and ends; subclasses measure between the marks."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class HostTimer(Probe):
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.spans: List[float] = []

    def start(self) -> None:
        self._started = self.clock()

    def stop(self) -> None:
        self.spans.append(self.clock() - self._started)


class CudaTimer(Probe):
    """Device time between two CUDA events; the queue is drained before the first is recorded."""

    def __init__(self) -> None:
        self.spans: List[float] = []

    def start(self) -> None:
        torch.cuda.synchronize()
        self._started = torch.cuda.Event(enable_timing=True)
        self._started.record()

    def stop(self) -> None:
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        end.synchronize()
        self.spans.append(self._started.elapsed_time(end) / 1000.0)


class SyncProbe(Probe):
    def __init__(self, cuda: bool) -> None:
        from .testing import count_syncs

        self.counter = count_syncs(cuda=cuda)

    def start(self) -> None:
        self.counter.__enter__()

    def stop(self) -> None:
        self.counter.__exit__(None, None, None)


class MemoryProbe(Probe):
    """Peak Python heap allocated during an epoch (tracemalloc); on CUDA, peak device memory too."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.heap = 0
        self.device = 0

    def start(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            # torchwatch resets the peak every interval (step/memory_mb); keep this probe's own
            self._reset, torch.cuda.reset_peak_memory_stats = (
                torch.cuda.reset_peak_memory_stats, lambda *args, **kwargs: None)
        tracemalloc.start()

    def stop(self) -> None:
        self.heap = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats = self._reset
            self.device = torch.cuda.max_memory_allocated() - self._base


# -- the workload ----------------------------------------------------------------------------
def mlp(widths: Sequence[int]) -> nn.Module:
    layers: List[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(widths) - 2 else [])
    return nn.Sequential(*layers)


class Workload:
    """A model to copy and ``steps`` batches of ``BATCH`` samples, preloaded on ``device``."""

    def __init__(self, name: str, device: str, steps: int) -> None:
        self.name = name
        self.widths = WORKLOADS[name]
        self.device = torch.device(device)
        torch.manual_seed(0)
        self.model = mlp(self.widths).to(self.device)
        generator = torch.Generator().manual_seed(0)
        self.batches = [
            (torch.randn(BATCH, self.widths[0], generator=generator).to(self.device),
             torch.randint(0, self.widths[-1], (BATCH,), generator=generator).to(self.device))
            for _ in range(steps)
        ]
        self.loss_fn = nn.CrossEntropyLoss()

    def fresh(self):
        """A copy of the model, equal for every contender, and an SGD optimizer over it."""
        model = copy.deepcopy(self.model)
        return model, torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)


def describe(name: str, steps: int) -> str:
    widths = "\u2192".join(str(w) for w in WORKLOADS[name])
    return f"{name}: MLP {widths}, batch {BATCH}, {steps} steps per epoch"


# -- the contenders --------------------------------------------------------------------------
class Contender:
    """One way of running (and watching) the loop. ``epoch(probe)`` runs one epoch and calls
    ``probe.start()`` / ``probe.stop()`` around what it costs per epoch."""

    key = ""
    label = ""
    shows = ""
    needs: Tuple[str, ...] = ()  # top-level modules, one of which must be importable

    @classmethod
    def missing(cls) -> Optional[str]:
        if cls.needs and all(importlib.util.find_spec(name) is None for name in cls.needs):
            return "not installed"
        return None

    @classmethod
    def prepare(cls) -> None:
        """Import what the contender needs, so that its set-up time does not include imports."""

    def __init__(self, work: Workload, logdir: str) -> None:
        self.work = work
        self.batches = work.batches
        self.loss_fn = work.loss_fn
        self.model, self.optimizer = work.fresh()
        self.logdir = logdir

    def epoch(self, probe: Probe) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Bare(Contender):
    key, label, shows = "bare", "bare loop", "nothing"

    def epoch(self, probe: Probe) -> None:
        model, optimizer, loss_fn = self.model, self.optimizer, self.loss_fn
        probe.start()
        model.train()
        for x, y in self.batches:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        probe.stop()


class BareTwin(Bare):
    """The bare loop again, as a contender with its own model copy: what the method reads for
    zero overhead. On a shared 2-CPU machine it read from -3.3 to +0.2 µs/step in 300-round
    runs, an error that more rounds do not remove (placement in memory, the order of epochs)."""

    key, label = "bare-twin", "bare loop again (the method's own error)"
    shows = "nothing: the first row's loop, timed as a contender"


class Watched(Contender):
    """A torchwatch contender: ``__init__`` builds ``self.run`` and ``self.train_one_epoch``."""

    run: Any
    train_one_epoch: Any

    def epoch(self, probe: Probe) -> None:
        probe.start()
        self.train_one_epoch(self.model, self.batches, self.optimizer)
        probe.stop()

    def close(self) -> None:
        self.run.close()


class TorchwatchEpoch(Watched):
    key, label = "tw-epoch", "torchwatch epoch-only"
    shows = "epoch line + epoch curves, modes, epoch time"

    def __init__(self, work: Workload, logdir: str) -> None:
        super().__init__(work, logdir)
        self.run = tw.Run(logdir, model=self.model, optimizer=self.optimizer, progress=False)
        loss_fn = self.loss_fn

        @self.run.watch_epoch
        def train_one_epoch(model, batches, optimizer):
            total = 0.0
            for x, y in batches:
                loss = loss_fn(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.detach()
            return total / len(batches)

        self.train_one_epoch = train_one_epoch


class TorchwatchFull(Watched):
    key, label = "tw-full", "torchwatch full"
    shows = "bar, step curves, step time, samples/s, epoch line"
    options: Dict[str, Any] = {"progress": True}

    def __init__(self, work: Workload, logdir: str) -> None:
        super().__init__(work, logdir)
        self.run = tw.Run(logdir, model=self.model, optimizer=self.optimizer, **self.options)
        loss_fn = self.loss_fn

        @self.run.watch_epoch
        def train_one_epoch(model, batches, optimizer):
            for x, y in tw.steps(batches):
                loss = loss_fn(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                tw.log(loss=loss)

        self.train_one_epoch = train_one_epoch


class TorchwatchQuiet(TorchwatchFull):
    key, label = "tw-off", "torchwatch, outputs off"
    shows = "`run.history` only (no bar, console, TensorBoard)"
    options = {"progress": False, "console": False, "tensorboard": False}


class Seed(Contender):
    key, label = "seed", "seed's way (.item() per step)"
    shows = "epoch line + epoch curve"

    def __init__(self, work: Workload, logdir: str) -> None:
        super().__init__(work, logdir)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(logdir)
        self.epochs = 0

    def epoch(self, probe: Probe) -> None:
        model, optimizer, loss_fn = self.model, self.optimizer, self.loss_fn
        probe.start()
        model.train()
        total = 0.0
        for x, y in self.batches:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        train_loss = total / len(self.batches)
        print(f"Epoch [{self.epochs + 1}], Training Loss: {train_loss:.4f}")
        self.writer.add_scalar("Training Loss", train_loss, self.epochs)
        self.writer.flush()
        self.epochs += 1
        probe.stop()

    def close(self) -> None:
        self.writer.close()


class StepScalar(Seed):
    key, label = "add_scalar", "add_scalar(loss.item()) per step"
    shows = "step curve (every step)"

    def epoch(self, probe: Probe) -> None:
        model, optimizer, loss_fn, writer = self.model, self.optimizer, self.loss_fn, self.writer
        step = self.epochs * len(self.batches)
        probe.start()
        model.train()
        for x, y in self.batches:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            writer.add_scalar("loss", loss.item(), step)
            step += 1
        writer.flush()
        self.epochs += 1
        probe.stop()


class TqdmPostfix(Contender):
    key, label = "tqdm", "tqdm + set_postfix(loss=loss.item())"
    shows = "bar with the loss (every step)"

    def epoch(self, probe: Probe) -> None:
        from tqdm import tqdm

        model, optimizer, loss_fn = self.model, self.optimizer, self.loss_fn
        probe.start()
        model.train()
        bar = tqdm(self.batches, leave=False)  # to sys.stderr, a null file while timed
        for x, y in bar:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            bar.set_postfix(loss=loss.item())
        probe.stop()


class Ignite(Contender):
    key, label = "ignite", "Ignite (Engine + ProgressBar + TensorboardLogger)"
    shows = "bar + step curve (every step)"
    needs = ("ignite",)

    @classmethod
    def prepare(cls) -> None:
        _ignite()

    def __init__(self, work: Workload, logdir: str) -> None:
        super().__init__(work, logdir)
        Events, create_supervised_trainer, ProgressBar, TensorboardLogger = _ignite()
        self.probe: Probe = Probe()
        trainer = create_supervised_trainer(  # its default output is loss.item()
            self.model, self.optimizer, self.loss_fn, device=work.device
        )
        trainer.logger.setLevel(logging.WARNING)
        ProgressBar(persist=False).attach(trainer, output_transform=lambda loss: {"loss": loss})
        self.tb = TensorboardLogger(log_dir=logdir)
        self.tb.attach_output_handler(
            trainer, event_name=Events.ITERATION_COMPLETED, tag="train",
            output_transform=lambda loss: {"loss": loss},
        )
        trainer.add_event_handler(Events.EPOCH_STARTED, lambda engine: self.probe.start())
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        self.trainer = trainer

    def _epoch_completed(self, engine: Any) -> None:
        self.tb.writer.flush()
        self.probe.stop()

    def epoch(self, probe: Probe) -> None:
        self.probe = probe
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.trainer.run(self.batches, max_epochs=1)

    def close(self) -> None:
        self.tb.close()


def _ignite():
    from ignite.engine import Events, create_supervised_trainer

    try:
        from ignite.handlers import ProgressBar
        from ignite.handlers.tensorboard_logger import TensorboardLogger
    except ImportError:  # ignite < 0.5
        from ignite.contrib.handlers import ProgressBar
        from ignite.contrib.handlers.tensorboard_logger import TensorboardLogger
    return Events, create_supervised_trainer, ProgressBar, TensorboardLogger


class Lightning(Contender):
    key, label = "lightning", "Lightning (Trainer + self.log(prog_bar=True))"
    shows = "bar + step curve (every 50 steps)"
    needs = ("lightning", "pytorch_lightning")

    @classmethod
    def prepare(cls) -> None:
        _lightning()
        _quiet_loggers("lightning.pytorch", "lightning.fabric", "pytorch_lightning",
                       "lightning_fabric")

    def __init__(self, work: Workload, logdir: str) -> None:
        super().__init__(work, logdir)
        L = _lightning()
        self.probe: Probe = Probe()
        bench = self
        optimizer, loss_fn = self.optimizer, self.loss_fn

        class Module(L.LightningModule):
            def __init__(self, net: nn.Module) -> None:
                super().__init__()
                self.net = net

            def training_step(self, batch: Any, batch_idx: int) -> Any:
                x, y = batch
                loss = loss_fn(self.net(x), y)
                self.log("loss", loss, on_step=True, prog_bar=True)
                return loss

            def configure_optimizers(self) -> Any:
                return optimizer

        class Timing(L.Callback):
            def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
                bench.probe.start()

            def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
                trainer.logger.experiment.flush()
                bench.probe.stop()

        self.L, self.module, self.timing = L, Module(self.model), Timing()

    def epoch(self, probe: Probe) -> None:
        # fit() runs to max_epochs once, so each epoch is a new Trainer: its set-up falls
        # outside the probe and is reported as start-up
        self.probe = probe
        L = self.L
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = L.Trainer(
                max_epochs=1, accelerator="gpu" if self.work.device.type == "cuda" else "cpu",
                devices=1, logger=L.loggers.TensorBoardLogger(self.logdir, name="", version=0),
                callbacks=[self.timing], enable_checkpointing=False, enable_model_summary=False,
                num_sanity_val_steps=0, log_every_n_steps=50,
            )
            # a list would be read as a list of loaders: hand over one plain iterable instead
            trainer.fit(self.module, train_dataloaders=_Iterable(self.batches))


class Fabric(Contender):
    key, label = "fabric", "Fabric (fabric.log(loss) per step + TensorBoardLogger)"
    shows = "step curve (every step)"
    needs = ("lightning", "lightning_fabric")

    @classmethod
    def prepare(cls) -> None:
        _fabric()
        _quiet_loggers("lightning.fabric", "lightning_fabric")

    def __init__(self, work: Workload, logdir: str) -> None:
        super().__init__(work, logdir)
        Fabric, TensorBoardLogger = _fabric()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.fabric = Fabric(
                accelerator="cuda" if work.device.type == "cuda" else "cpu", devices=1,
                loggers=TensorBoardLogger(logdir, name="", version=0),
            )
            self.model, self.optimizer = self.fabric.setup(self.model, self.optimizer)
        self.step = 0

    def epoch(self, probe: Probe) -> None:
        fabric, model, optimizer, loss_fn = self.fabric, self.model, self.optimizer, self.loss_fn
        step = self.step
        probe.start()
        model.train()
        for x, y in self.batches:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            fabric.backward(loss)
            optimizer.step()
            fabric.log("loss", loss, step=step)  # the Fabric docs' way: .item() + add_scalar
            step += 1
        fabric.logger.experiment.flush()
        probe.stop()
        self.step = step

    def close(self) -> None:
        self.fabric.logger.experiment.close()


def _fabric():
    try:
        from lightning.fabric import Fabric
        from lightning.fabric.loggers import TensorBoardLogger
    except ImportError:
        from lightning_fabric import Fabric
        from lightning_fabric.loggers import TensorBoardLogger
    return Fabric, TensorBoardLogger


class _Iterable:
    """The preloaded batches as one iterable with a length, no DataLoader around them."""

    def __init__(self, items: Sequence[Any]) -> None:
        self.items = items

    def __iter__(self) -> Any:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def _quiet_loggers(*names: str) -> None:
    """A peer's info lines (devices, set-up) are not part of the table."""
    for name in names:
        logging.getLogger(name).setLevel(logging.ERROR)


def _lightning():
    try:
        import lightning.pytorch as L
        import lightning.pytorch.loggers  # noqa: F401  (L.loggers)
    except ImportError:
        import pytorch_lightning as L
        import pytorch_lightning.loggers  # noqa: F401
    return L


class PythonReference(Contender):
    """The bare loop plus a fixed bit of pure Python per step, timed alone with ``timeit``: what
    a microsecond of host work measured in isolation costs inside this loop on this machine
    (caches and branch predictors are cold after the step's torch work, so it costs more)."""

    key, label = "py-ref", "bare loop + pure Python (reference)"
    shows = "nothing: a yardstick for the rows above and below"

    hot = math.nan  # seconds per call of _python_work, timed alone

    @classmethod
    def prepare(cls) -> None:
        box = _Box()
        times = timeit.repeat(lambda: _python_work(box), number=20000, repeat=5)
        cls.hot = statistics.median(times) / 20000

    def __init__(self, work: Workload, logdir: str) -> None:
        super().__init__(work, logdir)
        self.box = _Box()
        self.label = f"bare loop + {self.hot * 1e6:.2f} µs (timeit) of pure Python per step"

    def epoch(self, probe: Probe) -> None:
        model, optimizer, loss_fn, box = self.model, self.optimizer, self.loss_fn, self.box
        probe.start()
        model.train()
        for x, y in self.batches:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            _python_work(box)
        probe.stop()


class _Box:
    a = 0


def _python_work(box: _Box) -> None:
    for i in range(12):
        box.a += i


CONTENDERS = [Bare, BareTwin, PythonReference, TorchwatchQuiet, TorchwatchEpoch, TorchwatchFull,
              Seed, StepScalar, TqdmPostfix, Ignite, Lightning, Fabric]
# peers with per-step visibility
_PER_STEP_VIEW = ("add_scalar", "tqdm", "ignite", "lightning", "fabric")


# -- running the rounds ----------------------------------------------------------------------
class Row:
    """What one contender measured on one workload."""

    def __init__(self, cls: type, note: str = "") -> None:
        self.cls = cls
        self.label = cls.label
        self.note = note
        self.hot: float = math.nan  # the reference's own timeit cost
        self.per_step: float = math.nan  # seconds
        self.ratio: float = math.nan
        self.overhead: float = math.nan  # seconds per step, median of paired differences
        self.overhead_ci = (math.nan, math.nan)  # its ~95% confidence interval
        self.overheads: List[float] = []  # per round, in round order (see _overheads)
        self.syncs: float = math.nan
        self.syncs_per_epoch = 0
        self.heap = 0
        self.device_memory = 0
        self.startup: float = math.nan  # seconds


@contextlib.contextmanager
def _quiet_output():
    """Bars and console lines go to a null file while contenders run: written, not shown."""
    with open(os.devnull, "w") as null:
        with contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
            yield


def _prime(work: Workload) -> None:
    """One untimed step, so torch's first-use costs fall on no contender's start-up."""
    model, optimizer = work.fresh()
    x, y = work.batches[0]
    work.loss_fn(model(x), y).backward()
    optimizer.step()


def bench_workload(name: str, opts: argparse.Namespace, log: Callable[[str], None]) -> List[Row]:
    """Run every chosen contender on one workload, interleaved; one ``Row`` each."""
    cuda = opts.device == "cuda"
    work = Workload(name, opts.device, opts.steps)
    tmp = tempfile.mkdtemp(prefix="torchwatch-bench-")
    rows: List[Row] = []
    live: list = []  # (row, contender, timer, outside-the-probe seconds per round)
    clock = time.perf_counter if cuda else opts.clock
    _prime(work)
    try:
        for cls in opts.contenders:
            note = cls.missing()
            rows.append(Row(cls, note or ""))
            if note:
                continue
            try:
                with _quiet_output():
                    cls.prepare()
                    started = clock()
                    contender = cls(work, os.path.join(tmp, cls.key))
                    rows[-1].startup = clock() - started
                    for _ in range(opts.warmup):
                        contender.epoch(Probe())
            except Exception as error:  # a peer's API changed: report it, run the others
                if not cls.needs:
                    raise
                rows[-1].note = f"failed: {type(error).__name__}: {error}"[:100]
                continue
            rows[-1].label = contender.label
            rows[-1].hot = getattr(contender, "hot", math.nan)
            timer = CudaTimer() if cuda else HostTimer(opts.clock)
            live.append((rows[-1], contender, timer, []))
        # each contender's epoch between two of the bare loop's: see _overheads
        bare_entry = next(entry for entry in live if entry[0].cls is Bare)  # always run
        others = [entry for entry in live if entry is not bare_entry]
        brackets: Dict[str, List[int]] = {entry[0].cls.key: [] for entry in others}

        def timed(entry: tuple) -> None:
            _, contender, timer, outside = entry
            gc.collect()
            started = clock()
            contender.epoch(timer)
            outside.append(clock() - started - timer.spans[-1])

        with _quiet_output():
            for r in range(opts.rounds):
                k = r % len(others) if others else 0
                for entry in others[k:] + others[:k]:
                    timed(bare_entry)
                    brackets[entry[0].cls.key].append(len(bare_entry[2].spans) - 1)
                    timed(entry)
                if not others:
                    timed(bare_entry)
            if others:
                timed(bare_entry)  # closes the last contender's bracket
        log(f"{name}: {opts.rounds} rounds timed; counting syncs and memory ...")
        for row, contender, _, _ in live:
            syncs, memory = SyncProbe(cuda), MemoryProbe(cuda)
            with _quiet_output():
                contender.epoch(syncs)
                contender.epoch(memory)
            row.syncs_per_epoch = syncs.counter.total
            row.syncs = syncs.counter.total / opts.steps
            row.heap, row.device_memory = memory.heap, memory.device
    finally:
        with _quiet_output():
            for _, contender, _, _ in live:
                contender.close()
        shutil.rmtree(tmp, ignore_errors=True)
    bare = next((t for row, _, t, _ in live if row.cls is Bare), None)
    for row, _, timer, outside in live:
        spans = timer.spans
        row.per_step = statistics.median(spans) / opts.steps
        row.startup += max(0.0, statistics.median(outside))
        if bare is not None:
            row.ratio = statistics.median(spans) / statistics.median(bare.spans)
            if timer is bare:
                row.overhead, row.overhead_ci = 0.0, (0.0, 0.0)
            else:
                row.overheads = _overheads(spans, bare.spans, brackets[row.cls.key], opts.steps)
                row.overhead, *row.overhead_ci = median_ci(row.overheads)
    return rows


def _overheads(spans: Sequence[float], bare: Sequence[float], before: Sequence[int],
               steps: int) -> List[float]:
    """Per round, a contender's epoch minus the mean of the bare loop's epochs just before and
    just after it, per step. The machine's speed drifts over seconds (successive bare epochs
    correlate at about 0.75 here), so the bare epochs next to it are the fairest yardstick."""
    return [(span - (bare[i] + bare[i + 1]) / 2) / steps for span, i in zip(spans, before)]


def median_ci(values: Sequence[float]) -> tuple:
    """The median and a ~95% confidence interval for it, from order statistics (no assumption
    about the distribution: the noise of a shared machine is anything but normal)."""
    xs = sorted(values)
    n = len(xs)
    half = 0.98 * math.sqrt(n)  # 1.96 standard deviations of a Binomial(n, 1/2), halved
    lo = max(1, math.floor(n / 2 - half))
    hi = min(n, math.ceil(1 + n / 2 + half))
    return statistics.median(xs), xs[lo - 1], xs[hi - 1]


# -- micro-benchmarks of the hot path --------------------------------------------------------
class _NoopContext:
    def __init__(self, name: str, model: Any = None) -> None:
        self.name = name
        self.model = model

    def __enter__(self) -> "_NoopContext":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def _per_call(stmt: str, names: Dict[str, Any], number: int, repeat: int, per: int = 1) -> float:
    """Best of ``repeat`` runs of ``number`` executions of ``stmt``, in seconds per call (the
    noise of a shared machine only ever adds time, so the best run is the cost)."""
    times = timeit.repeat(stmt, number=number, repeat=repeat, globals=names)
    return min(times) / (number * per)


def micro(device: str, scale: float) -> List[tuple]:
    """(what, torchwatch s/call, bare-Python s/call, the bare shape) for each hot-path verb."""
    repeat = 7
    n = max(1, int(20000 * scale))
    tmp = tempfile.mkdtemp(prefix="torchwatch-micro-")
    run = tw.Run(tmp, progress=False, console=False, tensorboard=False)
    model = nn.Linear(8, 2).to(device)
    loss = (torch.ones((), device=device, requires_grad=True) * 2)  # has a grad_fn, as a loss
    correct = torch.tensor(3, device=device)  # an int64 count, as (pred == y).sum() gives
    x = torch.zeros(BATCH, 8, device=device)
    batches = [(x, x)] * n

    def log(value=None, /, *, n=None, **metrics):
        return None

    def plain_step(x, y):
        return loss

    watched_step = run.watch_step(plain_step)
    names = dict(tw=tw, run=run, model=model, loss=loss, correct=correct, x=x, batches=batches,
                 log=log, plain_step=plain_step, watched_step=watched_step, Noop=_NoopContext)
    rows = []

    def logged(what: str, call: str) -> tuple:
        """A row for a call of ``call`` (``tw.log(...)`` or ``run.log(...)``), beside the no-op
        ``log`` called with the same arguments."""
        bare = "log(" + call.split("(", 1)[1]
        return (what, _per_call(call, names, n, repeat), _per_call(bare, names, n, repeat),
                "a no-op function of the same signature")

    try:
        with run.phase("train", model):
            rows.append(logged("`tw.log(loss=loss)` per call", "tw.log(loss=loss)"))
            rows.append(logged("`tw.log(loss=loss, n=64)` per call (a weight given)",
                               "tw.log(loss=loss, n=64)"))
            rows.append(logged("`tw.log(correct=correct)` per call (an int64 count)",
                               "tw.log(correct=correct)"))
            rows.append(logged("`run.log(loss=loss)` per call (the verb on a `tw.Run`)",
                               "run.log(loss=loss)"))
            rows.append(("`tw.steps(batches)` per item, outputs off",
                         _per_call("for b in tw.steps(batches): pass", names, 1, repeat, n),
                         _per_call("for b in batches: pass", names, 1, repeat, n),
                         "`for b in batches: pass`"))
            rows.append(("`@watch_step` per call (returns the loss)",
                         _per_call("watched_step(x, x)", names, n, repeat),
                         _per_call("plain_step(x, x)", names, n, repeat),
                         "the undecorated function"))
        m = max(1, n // 20)
        rows.append(("`with run.phase(\"val\", model)` per entry",
                     _per_call("with run.phase('val', model): pass", names, m, repeat),
                     _per_call("with Noop('val', model): pass", names, m, repeat),
                     "a class-based no-op context manager"))
    finally:
        run.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


# -- start-up in fresh interpreters ----------------------------------------------------------
_STARTUP = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
import torchwatch
t2 = time.perf_counter()
run = torchwatch.init(logdir=sys.argv[1], progress=False)
t3 = time.perf_counter()
loaded = sorted(m for m in ("tensorboard", "torch.utils.tensorboard") if m in sys.modules)
run.close()
t4 = time.perf_counter()
from torch.utils.tensorboard import SummaryWriter
t5 = time.perf_counter()
out = {"import torch": t1 - t0, "import torchwatch": t2 - t1, "tw.init()": t3 - t2,
       "import torch.utils.tensorboard": t5 - t4, "loaded": loaded}
for name, modules in (("import ignite", ("ignite.engine",)),
                      ("import lightning", ("lightning.pytorch", "pytorch_lightning"))):
    for module in modules:
        try:
            t = time.perf_counter()
            __import__(module)
            out[name] = time.perf_counter() - t
            break
        except ImportError:
            pass
print(json.dumps(out))
"""


def startup(repeats: int) -> Dict[str, Any]:
    """Median seconds of each start-up step over ``repeats`` fresh interpreters."""
    samples: Dict[str, List[float]] = {}
    loaded: set = set()
    env = {k: v for k, v in os.environ.items() if k != "TORCHWATCH_DISABLE"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(tw.__file__)))  # this torchwatch
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    for _ in range(repeats):
        tmp = tempfile.mkdtemp(prefix="torchwatch-startup-")
        try:
            done = subprocess.run(
                [sys.executable, "-c", _STARTUP, os.path.join(tmp, "run")], cwd=tmp, env=env,
                capture_output=True, text=True, timeout=300, check=True,
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        out = json.loads(done.stdout.strip().splitlines()[-1])
        loaded.update(out.pop("loaded"))
        for key, value in out.items():
            samples.setdefault(key, []).append(value)
    result: Dict[str, Any] = {k: statistics.median(v) for k, v in samples.items()}
    result["loaded"] = sorted(loaded)
    return result


# -- the report ------------------------------------------------------------------------------
def _us(seconds: float, signed: bool = False) -> str:
    if math.isnan(seconds):
        return ""
    return f"{seconds * 1e6:+.1f}" if signed else f"{seconds * 1e6:.1f}"


def positive_options(parser: argparse.ArgumentParser, opts: argparse.Namespace,
                     *keys: str) -> None:
    """Stop with argparse's usage message where one of ``keys`` is not a positive int."""
    for key in keys:
        if getattr(opts, key) < 1:
            parser.error(f"--{key} must be a positive int, got {getattr(opts, key)}")


def script_report(script: str, argv: Sequence[str],
                  measure: Callable[[], Tuple[str, List[str]]]) -> int:
    """Run ``measure`` with torch on one thread and print what it returns as the scripts of
    ``benchmarks/`` print: the command, date, machine and versions; how it measured (the first
    item ``measure`` returns); its table (the second); the time it all took."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        started = time.perf_counter()
        how, table = measure()
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        command = " ".join([f"python benchmarks/{script}", *argv])
        print("\n".join([f"`{command}` · {stamp} · {_machine('cpu')} · {_versions()}", "", how,
                         "", *table, "", f"_{time.perf_counter() - started:.0f} s in all._"]))
    finally:
        torch.set_num_threads(threads)
    return 0


def _versions() -> str:
    from importlib import metadata

    parts = [f"Python {platform.python_version()}", f"torch {torch.__version__}"]
    for dist in ("tensorboard", "tqdm", "pytorch-ignite", "lightning", "pytorch-lightning"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")  # read, not imported
        except metadata.PackageNotFoundError:
            pass
    parts.append(f"torchwatch {tw.__version__}")
    return ", ".join(parts)


def _machine(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu})"
    if device == "cuda":
        text += f", {torch.cuda.get_device_name()}"
    return text


def workload_table(rows: List[Row], cuda: bool) -> List[str]:
    head = ["contender", "shows", "µs/step", "× bare", "overhead µs/step [95% CI]", "syncs/step",
            "peak heap KiB"] + (["peak CUDA MiB"] if cuda else []) + ["start-up ms"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join([" --- "] * 2 + [" ---: "] * (len(head) - 2)) + "|"]
    for row in rows:
        cls = row.cls
        if row.note:
            cells = [row.label, cls.shows, row.note] + [""] * (len(head) - 3)
        else:
            cells = [
                row.label, cls.shows, _us(row.per_step),
                "" if math.isnan(row.ratio) else f"{row.ratio:.2f}",
                _us(row.overhead, signed=True) + (
                    "" if math.isnan(row.overhead) else
                    f" [{row.overhead_ci[0] * 1e6:.0f}, {row.overhead_ci[1] * 1e6:.0f}]"),
                f"{row.syncs:.2f}", f"{row.heap / 1024:.0f}",
            ]
            if cuda:
                cells.append(f"{row.device_memory / 2**20:.2f}")
            cells.append(f"{row.startup * 1000:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def targets(rows: List[Row], steps: int, micro_rows: List[tuple], start: Dict[str, Any],
            cuda: bool) -> List[str]:
    """The issue's targets on the tiny workload, each with its measured value and outcome."""
    by = {row.cls.key: row for row in rows if not row.note}
    lines = []

    def check(ok: bool, text: str) -> None:
        lines.append(f"- {'met' if ok else '**missed**'}: {text}")

    full, seed = by.get("tw-full"), by.get("seed")
    if full is not None and not math.isnan(full.overhead):
        over = full.overhead * 1e6
        lo, hi = (v * 1e6 for v in full.overhead_ci)
        bare = by.get("bare")
        share = (f", {full.overhead / bare.per_step:.1%} of its {bare.per_step * 1e6:.0f} µs step"
                 if bare is not None and bare.per_step > 0 else "")
        check(over <= 5.0, f"torchwatch full costs {over:.1f} µs/step over the bare loop{share} "
                           f"(95% CI {lo:.0f} to {hi:.0f}; target ≤ 5, aim ≤ 2)")
        intervals = -(-steps // 50)
        check(full.syncs_per_epoch <= intervals + 2,
              f"torchwatch full: {full.syncs_per_epoch} syncs in a {steps}-step epoch, none per "
              f"step (at most one read per {50}-step interval, of values already on the host, "
              "plus the phase end)")
        if seed is not None and len(seed.overheads) == len(full.overheads) > 0:
            # paired by round, like the overhead itself: full minus seed in each round
            gap, lo, hi = (v * 1e6 for v in median_ci(
                [f - s for f, s in zip(full.overheads, seed.overheads)]))
            paired = (f"{gap:+.1f} µs/step (median of the per-round differences, 95% CI "
                      f"{lo:.0f} to {hi:.0f}")
            if cuda:
                check(gap < 0, f"torchwatch full vs the seed's way: {paired}; target: cheaper "
                               "on a GPU)")
            else:
                check(gap <= 5.0, f"torchwatch full vs the seed's way: {paired}; target ≤ +5 "
                                  "on a CPU)")
        for key in _PER_STEP_VIEW:
            peer = by.get(key)
            if peer is not None and not math.isnan(peer.overhead):
                check(full.overhead < peer.overhead,
                      f"torchwatch full ({full.overhead * 1e6:+.1f}) cheaper than "
                      f"{peer.label} ({peer.overhead * 1e6:+.1f} µs/step)")
    twin = by.get("bare-twin")
    if twin is not None and not math.isnan(twin.overhead):
        lo, hi = (v * 1e6 for v in twin.overhead_ci)
        lines.append(f"- for scale: the bare loop timed again as a contender reads "
                     f"{twin.overhead * 1e6:+.1f} µs/step [{lo:.0f}, {hi:.0f}]: the method's own "
                     "error on this machine, which more rounds do not shrink")
    ref = by.get("py-ref")
    if ref is not None and not math.isnan(ref.overhead) and ref.hot > 0:
        lo, hi = (v * 1e6 for v in ref.overhead_ci)
        lines.append(f"- for scale: {ref.hot * 1e6:.2f} µs of pure Python, timed alone, costs "
                     f"{ref.overhead * 1e6:+.1f} µs/step [{lo:.0f}, {hi:.0f}] inside this loop "
                     "on this machine")
    for what, ours, bare, _ in micro_rows:
        if what.startswith("`tw.steps"):
            check(ours - bare <= 1e-6, f"`tw.steps` with every output off: "
                                       f"{(ours - bare) * 1e6:.2f} µs/item over a bare `for` "
                                       "loop (target ≤ 1)")
    if start:
        check(not start["loaded"], "TensorBoard is not imported by `import torchwatch` + "
                                   f"`init` (loaded: {', '.join(start['loaded']) or 'none'})")
    return lines


def _parse(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="torchwatch bench",
        description="Per-step overhead of torchwatch beside the bare loop and the usual ways "
                    "of watching a loop; prints a markdown table.",
    )
    parser.add_argument("--full", action="store_true",
                        help="the full settings of benchmarks/overhead.py (minutes)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--rounds", type=int, help="timed rounds per workload (quick 8, full 30)")
    parser.add_argument("--steps", type=int, help="steps per epoch (quick 200, full 500)")
    parser.add_argument("--warmup", type=int,
                        help="untimed epochs per contender, at least 1 (quick 1, full 2)")
    parser.add_argument("--workloads", default="tiny,small",
                        help=f"comma-separated, of {', '.join(WORKLOADS)}")
    parser.add_argument("--only", default=None,
                        help="comma-separated contenders, of "
                             + ", ".join(c.key for c in CONTENDERS) + " (bare is always run)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="CPU timing: process CPU time (default) or wall clock")
    parser.add_argument("--startup", type=int, help="fresh interpreters timed (0: skip)")
    parser.add_argument("--micro", type=float, help="scale of the micro-benchmarks (0: skip)")
    parser.add_argument("--sections", default="table,micro,startup",
                        help="which of table, micro, startup to run")
    opts = parser.parse_args(argv)
    preset = FULL if opts.full else QUICK
    for key, value in preset.items():
        if getattr(opts, key) is None:
            setattr(opts, key, value)
    for key in ("rounds", "steps", "warmup"):
        if getattr(opts, key) < 1:
            parser.error(f"--{key} must be a positive int, got {getattr(opts, key)}")
    if opts.startup < 0 or opts.micro < 0:
        parser.error("--startup and --micro must not be negative")
    opts.workloads = [w.strip() for w in opts.workloads.split(",") if w.strip()]
    unknown = [w for w in opts.workloads if w not in WORKLOADS]
    if unknown or not opts.workloads:
        parser.error(f"--workloads must name some of {', '.join(WORKLOADS)}, got {unknown}")
    keys = {c.key: c for c in CONTENDERS}
    chosen = [k.strip() for k in opts.only.split(",")] if opts.only else list(keys)
    unknown = [k for k in chosen if k not in keys]
    if unknown:
        parser.error(f"--only must name some of {', '.join(keys)}, got {unknown}")
    opts.contenders = [c for c in CONTENDERS if c.key == "bare" or c.key in chosen]
    opts.sections = {s.strip() for s in opts.sections.split(",")}
    if opts.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here")
    opts.clock = time.process_time if opts.clock == "cpu" else time.perf_counter
    opts.clock_name = ("CUDA events" if opts.device == "cuda" else
                       "process CPU time (all threads)" if opts.clock is time.process_time
                       else "wall clock")
    return opts


def main(argv: Optional[List[str]] = None, command: Optional[str] = None) -> int:
    """``torchwatch bench [--full] [--device cuda] ...``: print the overhead tables; returns 0."""
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = _parse(argv)
    command = command or " ".join(["torchwatch bench", *argv])
    out = sys.stdout

    def emit(lines: Sequence[str]) -> None:
        print("\n".join(lines), file=out, flush=True)

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - started:5.1f} s] {text}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        emit([
            f"#### torchwatch overhead, {opts.device.upper()}",
            "",
            f"`{command}` · {stamp} · {_machine(opts.device)} · {_versions()}",
            "",
        ])
        rows_by: Dict[str, List[Row]] = {}
        if "table" in opts.sections:
            import tqdm  # noqa: F401  (shared imports, out of every contender's start-up)
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401

            emit([f"Same loop for every contender; {opts.rounds} rounds × {opts.steps} steps, "
                  f"interleaved, {opts.warmup} warm-up epoch(s) excluded; time: "
                  f"{opts.clock_name}, median per step; overhead: median over rounds of the "
                  "difference to the mean of the bare-loop epochs just before and after; "
                  "`torch.set_num_threads(1)`.", ""])
            for name in opts.workloads:
                log(f"torchwatch bench: {name} workload ...")
                rows = rows_by[name] = bench_workload(name, opts, log)
                emit([f"**{describe(name, opts.steps)}**", ""] + workload_table(
                    rows, opts.device == "cuda") + [""])
        micro_rows: List[tuple] = []
        if "micro" in opts.sections and opts.micro > 0:
            log("torchwatch bench: micro-benchmarks ...")
            micro_rows = micro(opts.device, opts.micro)
            lines = [f"**Hot path** (`timeit`, best of 7, {opts.device}; bare = the "
                     "bare-Python cost of the same shape)", "",
                     "| hot path | torchwatch µs | bare µs | over bare µs | bare shape |",
                     "| --- | ---: | ---: | ---: | --- |"]
            for what, ours, bare, shape in micro_rows:
                lines.append(f"| {what} | {ours * 1e6:.2f} | {bare * 1e6:.2f} | "
                             f"{(ours - bare) * 1e6:+.2f} | {shape} |")
            emit(lines + [""])
        start: Dict[str, Any] = {}
        if "startup" in opts.sections and opts.startup > 0:
            log("torchwatch bench: start-up in fresh interpreters ...")
            start = startup(opts.startup)
            lines = [f"**Start-up** (fresh interpreters, median of {opts.startup})", "",
                     "| step | ms |", "| --- | ---: |"]
            for key, value in start.items():
                if key != "loaded":
                    lines.append(f"| `{key}` | {value * 1000:.1f} |")
            lines += ["", "TensorBoard modules loaded after `import torchwatch` + `init`: "
                          f"{', '.join(start['loaded']) or 'none'}.", ""]
            emit(lines)
        tiny = rows_by.get("tiny", [])
        checks = targets(tiny, opts.steps, micro_rows, start, opts.device == "cuda")
        if checks:
            emit(["**Targets** (tiny workload)" if tiny else "**Targets**", ""] + checks + [""])
        emit([f"_{time.perf_counter() - started:.0f} s in all._"])
    finally:
        torch.set_num_threads(threads)
    return 0
