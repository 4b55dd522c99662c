"""`torchwatch summary`: per phase and metric, the last value, the best one and its epoch.

Read with TensorBoard's own reader from the runs torchwatch writes, one per phase
(`<logdir>/<phase>/events.out.tfevents.*`), with `epoch/<metric>` scalars at step = epoch.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import re
import sys

CSV_FIELDS = ("logdir", "phase", "metric", "last", "best", "best_epoch", "epochs", "total_time_s")
# Written per phase and epoch by torchwatch; summarised per phase rather than as metric rows.
PHASE_TAGS = ("time_s", "samples_per_s", "data_wait_frac")
SCORE_WORDS = frozenset("acc accuracy top top1 top5 precision recall f1 auc ap iou map dice "
                        "score r2 bleu".split())


def best_direction(metric: str) -> str | None:
    """`"max"` for scores (`acc`, `val_f1`, `acc_top1`), `None` for learning rates, else `"min"`."""
    name = metric.lower()
    if name in ("lr", "learning_rate") or name.startswith("lr_"):
        return None
    # The last word decides: `dice_loss` is a loss, `acc@1` and `top-5` are scores.
    words = [w for w in re.split(r"[^a-z0-9]+", name) if w and not w.isdigit()]
    return "max" if words and words[-1] in SCORE_WORDS else "min"


def _read_run(folder: str) -> tuple[float, dict[str, dict[int, float]]]:
    """The first wall time and `{metric: {epoch: value}}` of the `epoch/*` scalars in `folder`."""
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.util import tensor_util

    acc = ea.EventAccumulator(folder, size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    events = [(tag, e.wall_time, e.step, e.value)
              for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)]
    for tag in acc.Tags()["tensors"]:  # scalars written with add_scalar(..., new_style=True)
        if acc.SummaryMetadata(tag).plugin_data.plugin_name == "scalars":
            events += [(tag, e.wall_time, e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
                       for e in acc.Tensors(tag)]
    latest: dict[tuple[str, int], tuple[float, float]] = {}
    for tag, wall_time, step, value in events:
        # A reused logdir repeats epochs in a newer event file: the later write wins.
        if tag.startswith("epoch/") and wall_time >= latest.get((tag, step), (-math.inf,))[0]:
            latest[tag, step] = (wall_time, value)
    series: dict[str, dict[int, float]] = {}
    for (tag, step), (_, value) in sorted(latest.items()):
        series.setdefault(tag[len("epoch/"):], {})[step] = value
    return min((wall_time for wall_time, _ in latest.values()), default=math.inf), series


def _weighted_mean(values: dict[int, float], weights: dict[int, float]) -> float | None:
    common = [s for s in values if s in weights]
    total = sum(weights[s] for s in common)
    if total > 0:
        return sum(values[s] * weights[s] for s in common) / total
    return sum(values.values()) / len(values) if values else None


def summarize(logdir: str) -> list[dict]:
    """One dict per phase and metric: `CSV_FIELDS` plus `samples_per_s` and `data_wait_frac`.

    `best_epoch` and `epochs` count TensorBoard steps, the x-axis of the charts. Raises
    `FileNotFoundError` when `logdir` is not a folder or holds no event files; returns `[]` when
    it has event files but no finished epoch yet.
    """
    if not os.path.isdir(logdir):
        what = "is not a folder" if os.path.exists(logdir) else "does not exist"
        raise FileNotFoundError(f"{logdir} {what}; pass the logdir you gave to tw.init")
    runs = {}
    for folder, subfolders, files in os.walk(logdir):
        subfolders.sort()
        if any("tfevents" in f for f in files):
            runs[os.path.relpath(folder, logdir).replace(os.sep, "/")] = _read_run(folder)
    if not runs:
        raise FileNotFoundError(
            f"no TensorBoard event files under {logdir} (expected "
            f"{logdir}/<phase>/events.out.tfevents.*); is this the logdir you passed to tw.init?")
    runs = {phase: run for phase, run in runs.items() if run[1]}
    if "." in runs:  # the root holds HParams data beside the phase runs, or is itself one run
        root = runs.pop(".")
        if not runs:
            runs[os.path.basename(os.path.abspath(logdir))] = root
    rows = []
    # Phases in the order they first wrote, which is the loop's order (train, val, test).
    for phase, (_, values) in sorted(runs.items(), key=lambda item: item[1][0]):
        times = values.get("time_s", {})
        phase_info = dict(
            logdir=logdir, phase=phase, last=None, best=None, best_epoch=None,
            total_time_s=sum(times.values()) if times else None,
            samples_per_s=_weighted_mean(values.get("samples_per_s", {}), times),
            data_wait_frac=_weighted_mean(values.get("data_wait_frac", {}), times),
        )
        metrics = sorted(name for name in values if name not in PHASE_TAGS)
        for name in metrics:
            points = values[name]
            row = dict(phase_info, metric=name, last=points[max(points)], epochs=len(points))
            direction = best_direction(name)
            if direction is not None:  # NaN never wins; a tie goes to the earliest epoch
                sign = 1 if direction == "max" else -1
                steps = [s for s in points if not math.isnan(points[s])] or list(points)
                row["best_epoch"] = max(steps, key=lambda s: (sign * points[s], -s))
                row["best"] = points[row["best_epoch"]]
            rows.append(row)
        if not metrics:  # a phase that only timed itself still shows its time
            rows.append(dict(phase_info, metric="", epochs=max(map(len, values.values()))))
    return rows


def format_value(value: float | None) -> str:
    """4 significant digits like the console (`0.4120`, `1234`, `1.000e-03`); `""` for `None`."""
    from .sinks.console import format_value as console_format

    return "" if value is None else console_format(value)


def _exact(value):
    """Shortest text that reads back as `value`: TensorBoard stores scalars as float32."""
    import numpy as np

    if isinstance(value, float) and float(np.float32(value)) == value:
        return str(np.float32(value))
    return value


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m {seconds:02d}s" if minutes < 60 else f"{minutes // 60}h {minutes % 60:02d}m"


def _align(lines: list[tuple[str, ...]], left: int) -> list[str]:
    """Columns padded to a common width: the first `left` ones flush left, the rest flush right."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return ["  ".join(cell.ljust(w) if i < left else cell.rjust(w)
                      for i, (cell, w) in enumerate(zip(line, widths))).rstrip()
            for line in lines]


def format_table(rows: list[dict]) -> str:
    """The plain-text report of one logdir's rows: a metric table, then one time line per phase."""
    table = [("phase", "metric", "last", "best", "best epoch", "epochs")]
    table += [(r["phase"], r["metric"], format_value(r["last"]), format_value(r["best"]),
               "" if r["best_epoch"] is None else str(r["best_epoch"]), str(r["epochs"]))
              for r in rows]
    lines = []
    for phase in dict.fromkeys(r["phase"] for r in rows):
        r = next(r for r in rows if r["phase"] == phase)
        n = max(row["epochs"] for row in rows if row["phase"] == phase)
        time, speed, wait = r["total_time_s"], r["samples_per_s"], r["data_wait_frac"]
        lines.append((phase, f"{n} epoch{'s' * (n != 1)}",
                      "" if time is None else f"{_duration(time)} total",
                      "" if speed is None else f"{speed:,.0f} samples/s",
                      "" if wait is None else f"data {wait:.0%}"))
    return "\n".join([rows[0]["logdir"], *_align(table, 2), "", *_align(lines, 1)])


def main(argv: list[str] | None = None) -> int:
    """`torchwatch summary LOGDIR [LOGDIR...] [--csv]`; 1 when a LOGDIR had nothing to show."""
    parser = argparse.ArgumentParser(
        prog="torchwatch summary",
        description="Summarise the epoch metrics of torchwatch runs from their TensorBoard files.")
    parser.add_argument("logdirs", nargs="+", metavar="LOGDIR", help="a logdir passed to tw.init")
    parser.add_argument("--csv", action="store_true",
                        help="write CSV (full precision) instead of a table")
    args = parser.parse_args(argv)
    writer = None
    if args.csv:
        writer = csv.DictWriter(sys.stdout, CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
    status, printed = 0, False
    for logdir in args.logdirs:
        try:
            rows = summarize(logdir)
        except FileNotFoundError as error:
            print(f"torchwatch summary: {error}", file=sys.stderr)
            status = 1
            continue
        if not rows:
            print(f"torchwatch summary: no finished epoch in {logdir} yet (no epoch/* scalars)",
                  file=sys.stderr)
            status = 1
        elif writer:
            writer.writerows({key: _exact(value) for key, value in row.items()} for row in rows)
        else:
            print(("\n" if printed else "") + format_table(rows))
            printed = True
    return status


if __name__ == "__main__":
    raise SystemExit(main())
