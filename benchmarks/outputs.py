"""What each output of `torchwatch full` costs per epoch, at the two ends where it is paid.

    python benchmarks/outputs.py                  # tiny workload, 30 rounds x 500 steps: ~2 min
    python benchmarks/outputs.py --steps 200 --rounds 40

The bar is created and first drawn as the epoch starts. Its clearing, TensorBoard's
hand-off and flush, and the console line come as it ends. ``overhead.py`` times whole epochs. A
100-ms epoch on this shared machine swings by milliseconds from round to round, more than these
costs. So this script times the ends apart:
- the start: from calling the watched epoch function to the end of its first step;
- the end: from the end of its last step to its return;
- the step: the mean step in between (periodic bar draws, the interval closes that feed
  TensorBoard), noisier, as in ``overhead.py``.

Each variant runs the loop of ``overhead.py``'s "torchwatch full" row (``tw.steps`` +
``tw.log`` every step, the tiny MLP, preloaded batches) with one output switched on. Rounds are
interleaved, each variant's epoch between two epochs with every output off, and its windows are
compared with the mean of theirs. The time is process CPU time (all threads: SummaryWriter
writes on its own).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Tuple

import torchwatch as tw
from torchwatch import bench

VARIANTS = {  # key: (what is on, the Run's options; None: the loop without torchwatch)
    "bare": ("the bare loop, without torchwatch (for scale)", None),
    "off": ("nothing (`run.history` only)",
            dict(progress=False, console=False, tensorboard=False)),
    "console": ("the epoch line", dict(progress=False, console=True, tensorboard=False)),
    "bar": ("the tqdm bar", dict(progress=True, console=False, tensorboard=False)),
    "tensorboard": ("TensorBoard (step and epoch curves)",
                    dict(progress=False, console=False, tensorboard=True)),
    "full": ("all three: the `torchwatch full` row", dict(progress=True)),
}


class Watched:
    """One variant: a run, a fresh copy of the model, and the watched epoch function."""

    def __init__(self, work: bench.Workload, logdir: str, options: dict,
                 clock: Callable[[], float]) -> None:
        self.model, self.optimizer = work.fresh()
        self.run = (tw.Run(logdir, model=self.model, optimizer=self.optimizer, **options)
                    if options is not None else None)
        self.batches, loss_fn = work.batches, work.loss_fn
        marks: List[float] = [0.0, 0.0]  # the ends of the first and of the last step
        self.marks = marks
        watched = self.run is not None

        def train_one_epoch(model, batches, optimizer):
            first = True
            for x, y in (tw.steps(batches) if watched else batches):
                loss = loss_fn(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if watched:
                    tw.log(loss=loss)
                marks[1] = clock()
                if first:
                    marks[0], first = marks[1], False

        if watched:
            train_one_epoch = self.run.watch_epoch(train_one_epoch)
        else:  # the model.train() of the bare loop in overhead.py
            def train_one_epoch(model, batches, optimizer, _loop=train_one_epoch):
                model.train()
                _loop(model, batches, optimizer)
        self.train_one_epoch = train_one_epoch

    def epoch(self, clock: Callable[[], float]) -> Tuple[float, float, float]:
        """(start, end, step) seconds of one epoch: see the module's docstring; the mean step
        between the first and the last."""
        called = clock()
        self.train_one_epoch(self.model, self.batches, self.optimizer)
        returned = clock()
        first, last = self.marks
        return first - called, returned - last, (last - first) / (len(self.batches) - 1)


Windows = Tuple[float, float, float]  # start, end, step: see Watched.epoch


def measure(steps: int, rounds: int, warmup: int,
            clock: Callable[[], float]) -> Dict[str, List[Tuple[Windows, Windows]]]:
    """{variant: [(its windows, the outputs-off windows to compare them with), one per round]}.

    Rounds are interleaved, each variant's epoch between two outputs-off epochs, and compared
    with their mean: the machine's speed drifts over seconds, so the nearest epochs are the
    fairest yardstick (as in ``overhead.py``)."""
    work = bench.Workload("tiny", "cpu", steps)
    with tempfile.TemporaryDirectory(prefix="torchwatch-outputs-") as tmp:
        variants = {key: Watched(work, os.path.join(tmp, key), options, clock)
                    for key, (_, options) in VARIANTS.items()}
        off = variants["off"]
        keys = [key for key in variants if key != "off"]
        off_runs: List[Windows] = []
        runs: Dict[str, List[Tuple[Windows, int]]] = {key: [] for key in keys}

        def timed(variant: Watched) -> Windows:
            gc.collect()
            return variant.epoch(clock)

        try:
            with bench._quiet_output():
                for _ in range(warmup):
                    for variant in variants.values():
                        variant.epoch(clock)
                for r in range(rounds):
                    k = r % len(keys)
                    for key in keys[k:] + keys[:k]:
                        off_runs.append(timed(off))
                        runs[key].append((timed(variants[key]), len(off_runs) - 1))
                off_runs.append(timed(off))
        finally:
            for variant in variants.values():
                if variant.run is not None:
                    variant.run.close()

    def around(i: int) -> Windows:
        before, after = off_runs[i], off_runs[i + 1]
        return tuple((a + b) / 2 for a, b in zip(before, after))  # type: ignore[return-value]

    results = {"off": [(windows, windows) for windows in off_runs]}
    for key in keys:
        results[key] = [(windows, around(i)) for windows, i in runs[key]]
    return {key: results[key] for key in VARIANTS}


def table(results: Dict[str, List[Tuple[Windows, Windows]]]) -> List[str]:
    """One row per variant: medians of its windows, and of their differences to the outputs-off
    windows around them."""

    def median(values) -> float:
        return statistics.median(values) * 1e6

    lines = ["| on | start µs | end µs | step µs | over off: start µs | end µs "
             "| both ends µs | step µs |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key, (what, _) in VARIANTS.items():
        runs = results[key]
        cells = [median(run[i] for run, _ in runs) for i in range(3)]
        cells += [median(run[i] - base[i] for run, base in runs) for i in range(2)]
        cells.append(median(run[0] + run[1] - base[0] - base[1] for run, base in runs))
        cells.append(median(run[2] - base[2] for run, base in runs))
        lines.append(f"| {what} | {cells[0]:.0f} | {cells[1]:.0f} | {cells[2]:.1f} "
                     f"| {cells[3]:+.0f} | {cells[4]:+.0f} | {cells[5]:+.0f} | {cells[6]:+.1f} |")
    return lines


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500, help="steps per epoch (500)")
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds (30)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed epochs first (2)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="process CPU time of all threads (default) or the wall clock")
    opts = parser.parse_args(argv)
    bench.positive_options(parser, opts, "steps", "rounds", "warmup")
    clock = time.process_time if opts.clock == "cpu" else time.perf_counter

    def report() -> Tuple[str, List[str]]:
        results = measure(opts.steps, opts.rounds, opts.warmup, clock)
        how = (f"{bench.describe('tiny', opts.steps)}; {opts.rounds} rounds, interleaved, "
               f"{opts.warmup} warm-up epoch(s) excluded; time: "
               f"{'process CPU time (all threads)' if opts.clock == 'cpu' else 'wall clock'}; "
               "each variant's epoch between two with every output off; medians, and medians "
               "of the differences to the mean of those two.")
        return how, table(results)

    return bench.script_report("outputs.py", argv, report)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
