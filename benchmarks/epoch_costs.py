"""Where a watched epoch's own time goes, function by function, inside the loop.

    python benchmarks/epoch_costs.py                  # tiny workload, 40 epochs x 500 steps: ~10 s
    python benchmarks/epoch_costs.py --epochs 100 --steps 1000

``overhead.py`` says what watching costs per step; ``outputs.py`` what each output costs at the
two ends of an epoch. This says which of torchwatch's functions that time is spent in. The loop
of ``overhead.py``'s "torchwatch full" row (``tw.steps`` + ``tw.log`` every step, the tiny MLP,
preloaded batches) trains with each per-epoch and per-redraw function wrapped in a timer of the
thread's CPU time, and the table gives the median CPU µs per epoch spent in each, with its calls
per epoch. The functions run as they do in a real loop: cold, right after a training step,
which is why they cost several times their ``timeit`` figure. A row's time includes the rows
listed as part of it (with the compiled hot path: the pure-Python ``tw.steps`` creates its bar
at the first item, after ``Steps.__iter__`` has returned).

The per-step path (the compiled ``tw.steps`` iterator and ``tw.log``) is not wrapped: a timer
around each call would cost more than the call. It is in the last row, with the training steps
themselves; ``micro.py`` and ``instructions.py`` measure it.
"""

from __future__ import annotations

import argparse
import collections
import functools
import importlib
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Counter, Dict, List, Tuple

from torchwatch import bench

clock = time.thread_time_ns  # this thread's CPU time: the loop's own, not SummaryWriter's thread


def _timed_functions() -> List[Tuple[str, str, Any, str]]:
    """(label, part of, owner, attribute): the functions timed, outermost first."""
    import tqdm.std
    from torch.utils.tensorboard import SummaryWriter

    from torchwatch.phase import Phase
    from torchwatch.run import Run
    from torchwatch.sinks.console import ConsoleSink
    from torchwatch.sinks.tensorboard import TensorBoardSink

    steps = importlib.import_module("torchwatch.steps")  # the package's ``steps`` is the function
    bar = tqdm.std.tqdm
    return [
        ("phase start: `Phase.__enter__`", "", Phase, "__enter__"),
        ("`tw.steps` set-up: `Steps.__iter__`", "", steps.Steps, "__iter__"),
        ("the bar created and first drawn: `tqdm.__init__`", "`Steps.__iter__`", bar, "__init__"),
        ("bar refreshes (every 0.1 s): `steps._show`", "", steps, "_show"),
        ("closed intervals read: `Phase.read_ready`", "`steps._show`", Phase, "read_ready"),
        ("the postfix: `tqdm.set_postfix`", "`steps._show`", bar, "set_postfix"),
        ("the redraw: `tqdm.update`", "`steps._show`", bar, "update"),
        ("the bar cleared: `tqdm.close`", "", bar, "close"),
        ("phase end: `Phase.__exit__`", "", Phase, "__exit__"),
        ("the phase's results: `Phase._finish`", "`Phase.__exit__`", Phase, "_finish"),
        ("the outputs: `Run.phase_done`", "`Phase._finish`", Run, "phase_done"),
        ("TensorBoard: `TensorBoardSink.flush`", "`Run.phase_done`", TensorBoardSink, "flush"),
        ("events built and written: `TensorBoardSink.handoff`", "`TensorBoardSink.flush`",
         TensorBoardSink, "handoff"),
        ("`SummaryWriter.flush`", "`TensorBoardSink.flush`", SummaryWriter, "flush"),
        ("the epoch line: `ConsoleSink.log`", "`Run.phase_done`", ConsoleSink, "log"),
    ]


def _wrap(function: Callable, label: str, spent: Counter, calls: Counter) -> Callable:
    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = clock()
        try:
            return function(*args, **kwargs)
        finally:
            spent[label] += clock() - started
            calls[label] += 1

    return timed


def measure(steps: int, epochs: int, warmup: int) -> Dict[str, Tuple[float, float]]:
    """{label: (median µs per epoch, calls per epoch)}: each function's, the whole epoch's
    ("epoch") and the rest's: the epoch less its outermost timed functions ("rest")."""
    functions = _timed_functions()
    outermost = [label for label, part, *_ in functions if not part]
    spent: Counter = collections.Counter()
    calls: Counter = collections.Counter()
    originals = [(owner, name, owner.__dict__[name]) for _, _, owner, name in functions]
    per_epoch: Dict[str, List[float]] = {label: [] for label, *_ in functions}
    per_epoch["epoch"], per_epoch["rest"] = [], []
    work = bench.Workload("tiny", "cpu", steps)
    with tempfile.TemporaryDirectory(prefix="torchwatch-epoch-costs-") as tmp:
        contender = bench.TorchwatchFull(work, tmp)
        try:
            for label, _, owner, name in functions:
                setattr(owner, name, _wrap(getattr(owner, name), label, spent, calls))
            with bench._quiet_output():
                for epoch in range(warmup + epochs):
                    spent.clear()
                    started = clock()
                    contender.train_one_epoch(contender.model, contender.batches,
                                              contender.optimizer)
                    spent["epoch"] = clock() - started
                    spent["rest"] = spent["epoch"] - sum(spent[label] for label in outermost)
                    if epoch >= warmup:
                        for label, times in per_epoch.items():
                            times.append(spent[label] / 1e3)
                    else:
                        calls.clear()
        finally:
            for owner, name, original in originals:
                setattr(owner, name, original)
            contender.close()
    return {label: (statistics.median(times), calls[label] / epochs)
            for label, times in per_epoch.items()}


def table(results: Dict[str, Tuple[float, float]], steps: int) -> List[str]:
    parts = {label: part for label, part, *_ in _timed_functions()}
    lines = ["| function | part of | µs per epoch | calls per epoch |",
             "| --- | --- | ---: | ---: |"]
    for label, part in parts.items():
        median, calls = results[label]
        lines.append(f"| {label} | {part} | {median:.0f} | {calls:.1f} |")
    lines.append(f"| the rest: {steps} training steps with `tw.steps` and `tw.log` |  | "
                 f"{results['rest'][0]:.0f} |  |")
    lines.append(f"| the whole epoch |  | {results['epoch'][0]:.0f} |  |")
    return lines


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500, help="steps per epoch (500)")
    parser.add_argument("--epochs", type=int, default=40, help="timed epochs (40)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed epochs first (3)")
    opts = parser.parse_args(argv)
    bench.positive_options(parser, opts, "steps", "epochs", "warmup")

    def report() -> Tuple[str, List[str]]:
        results = measure(opts.steps, opts.epochs, opts.warmup)
        how = (f"{bench.describe('tiny', opts.steps)}; the `torchwatch full` loop; {opts.epochs} "
               f"epochs after {opts.warmup} untimed; time: this thread's CPU time "
               "(SummaryWriter's own thread is not counted); medians over epochs.")
        return how, table(results, opts.steps)

    return bench.script_report("epoch_costs.py", argv, report)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
