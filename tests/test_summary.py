"""Tests of `torchwatch summary`, on event files written by TensorBoard's own SummaryWriter."""
import csv
import io
import math
import subprocess
import sys

import pytest
from torch.utils.tensorboard import SummaryWriter

from torchwatch.summary import best_direction, format_value, main, summarize

TRAIN_LOSS = [2.0, 1.0, 0.5, 0.25, 0.125]
TRAIN_ACC = [0.5, 0.6, 0.7, 0.8, 0.9]
VAL_LOSS = [1.5, 0.9, 0.7, 0.8, 0.95]  # overfits after epoch 2
VAL_ACC = [0.55, 0.65, 0.75, 0.85, 0.8]  # best at epoch 3


def write_run(folder, scalars, start=1000.0):
    """Write `{tag: [values at steps 0, 1, ...]}` to one TensorBoard run, wall times from `start`."""
    writer = SummaryWriter(str(folder))
    for tag, values in scalars.items():
        for step, value in enumerate(values):
            writer.add_scalar(tag, value, step, walltime=start + step)
    writer.close()


@pytest.fixture
def logdir(tmp_path):
    """A two-phase torchwatch logdir: five epochs of train and val, plus step scalars."""
    root = tmp_path / "exp1"
    write_run(root / "train", {
        "epoch/loss": TRAIN_LOSS, "epoch/acc": TRAIN_ACC, "epoch/lr": [1e-3] * 5,
        "epoch/time_s": [10.0, 12.0, 12.0, 12.0, 14.0],
        "epoch/samples_per_s": [1000.0, 2000.0, 2000.0, 2000.0, 3000.0],
        "epoch/data_wait_frac": [0.1] * 5, "step/loss": [3.0] * 40, "step/time_ms": [5.0] * 40,
    })
    write_run(root / "val", {"epoch/loss": VAL_LOSS, "epoch/acc": VAL_ACC,
                             "epoch/time_s": [1.5] * 5}, start=1000.5)
    return root


def table_rows(out):
    """`{(phase, metric): [cells after the metric]}` from the metric table of a text report."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("phase  metric"))
    end = lines.index("", start)
    return {tuple(line.split()[:2]): line.split()[2:] for line in lines[start + 1:end]}


def test_table_reports_last_best_best_epoch_and_epochs(logdir, capsys):
    """Each phase and metric shows its last value, its best value, the best epoch and the count."""
    assert main([str(logdir)]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert rows == {
        ("train", "acc"): ["0.9000", "0.9000", "4", "5"],
        ("train", "loss"): ["0.1250", "0.1250", "4", "5"],
        ("train", "lr"): ["1.000e-03", "5"],
        ("val", "acc"): ["0.8000", "0.8500", "3", "5"],
        ("val", "loss"): ["0.9500", "0.7000", "2", "5"],
    }


def test_table_has_phase_time_lines_and_no_step_tags(logdir, capsys):
    """Per phase a line gives epochs, total time, samples/s and data wait; step/* tags are ignored."""
    main([str(logdir)])
    out = capsys.readouterr().out
    assert out.splitlines()[0] == str(logdir)
    assert "train  5 epochs  1m 00s total  2,067 samples/s  data 10%" in out
    assert "val    5 epochs    7.5s total" in out
    assert "time_ms" not in out and "time_s" not in out and "\x1b" not in out


def test_columns_are_aligned(logdir, capsys):
    """The numeric columns of the table end at the same character on every line."""
    main([str(logdir)])
    lines = capsys.readouterr().out.splitlines()
    table = lines[1:lines.index("")]
    assert len({len(line) for line in table}) == 1


def test_csv_has_header_and_full_precision(logdir, capsys):
    """--csv writes one row per phase and metric, values as stored and the phase's total time."""
    assert main([str(logdir), "--csv"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "logdir,phase,metric,last,best,best_epoch,epochs,total_time_s"
    rows = {(r["phase"], r["metric"]): r for r in csv.DictReader(io.StringIO(out))}
    assert rows["val", "acc"] == {
        "logdir": str(logdir), "phase": "val", "metric": "acc", "last": "0.8", "best": "0.85",
        "best_epoch": "3", "epochs": "5", "total_time_s": "7.5"}
    assert rows["train", "lr"]["last"] == "0.001"
    assert rows["train", "lr"]["best"] == rows["train", "lr"]["best_epoch"] == ""
    assert float(rows["train", "loss"]["total_time_s"]) == 60.0
    assert len(rows) == 5


def test_summarize_returns_rows_for_reuse(logdir):
    """summarize() gives dicts with the CSV fields plus time-weighted samples/s and data wait."""
    rows = summarize(str(logdir))
    assert [(r["phase"], r["metric"]) for r in rows] == [
        ("train", "acc"), ("train", "loss"), ("train", "lr"), ("val", "acc"), ("val", "loss")]
    train = rows[0]
    assert train["samples_per_s"] == pytest.approx(124_000 / 60)
    assert train["data_wait_frac"] == pytest.approx(0.1)
    assert rows[-1]["samples_per_s"] is None and rows[-1]["total_time_s"] == 7.5


def test_reused_logdir_reads_every_event_file_and_later_writes_win(logdir, capsys):
    """A second event file in a phase folder replaces the epochs it rewrote and keeps the rest."""
    write_run(logdir / "val", {"epoch/loss": [0.6, 0.5], "epoch/time_s": [2.0, 2.0]}, start=5000.0)
    assert len(list((logdir / "val").iterdir())) == 2
    rows = {r["metric"]: r for r in summarize(str(logdir)) if r["phase"] == "val"}
    assert rows["loss"]["best"] == pytest.approx(0.5) and rows["loss"]["best_epoch"] == 1
    assert rows["loss"]["last"] == pytest.approx(0.95) and rows["loss"]["epochs"] == 5
    assert rows["loss"]["total_time_s"] == pytest.approx(2.0 + 2.0 + 1.5 * 3)


def test_phases_in_the_order_they_first_wrote(tmp_path):
    """Phases are listed in the loop's order (train before eval), not alphabetically."""
    write_run(tmp_path / "train", {"epoch/loss": [1.0]}, start=1000.0)
    write_run(tmp_path / "eval", {"epoch/loss": [1.0]}, start=1001.0)
    assert [r["phase"] for r in summarize(str(tmp_path))] == ["train", "eval"]


def test_root_hparams_file_is_not_a_phase(logdir, capsys):
    """An HParams event file in the logdir itself does not show up as a phase."""
    writer = SummaryWriter(str(logdir))
    writer.add_hparams({"lr": 1e-3, "batch_size": 32}, {"epoch/loss": 0.7}, run_name=".")
    writer.close()
    assert {r["phase"] for r in summarize(str(logdir))} == {"train", "val"}


def test_single_run_folder_is_summarised_as_its_phase(logdir, capsys):
    """Passing a phase folder itself summarises that one run under its folder name."""
    assert main([str(logdir / "val")]) == 0
    assert set(table_rows(capsys.readouterr().out)) == {("val", "acc"), ("val", "loss")}


def test_new_style_scalars_are_read(tmp_path):
    """Scalars written with add_scalar(new_style=True), stored as tensors, are read too."""
    writer = SummaryWriter(str(tmp_path / "train"))
    for step, value in enumerate([0.3, 0.2, 0.4]):
        writer.add_scalar("epoch/loss", value, step, new_style=True)
    writer.close()
    (row,) = summarize(str(tmp_path))
    assert row["best"] == pytest.approx(0.2) and row["best_epoch"] == 1 and row["epochs"] == 3


def test_best_skips_nan_and_ties_go_to_the_earliest_epoch(tmp_path):
    """A NaN loss is never the best, and of equal values the earliest epoch is the best one."""
    write_run(tmp_path / "train", {"epoch/loss": [float("nan"), 0.5, 0.5, 0.7],
                                   "epoch/acc": [0.9, 0.9, 0.8, float("nan")]})
    rows = {r["metric"]: r for r in summarize(str(tmp_path))}
    assert rows["loss"]["best_epoch"] == 1 and rows["acc"]["best_epoch"] == 0
    assert math.isnan(rows["acc"]["last"])


def test_folder_without_event_files_is_reported_and_others_still_summarised(logdir, tmp_path,
                                                                            capsys):
    """A folder with no event files gets a message naming the expected layout and exit code 1."""
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    assert main([str(empty), str(logdir)]) == 1
    captured = capsys.readouterr()
    assert captured.err == (
        f"torchwatch summary: no TensorBoard event files under {empty} (expected "
        f"{empty}/<phase>/events.out.tfevents.*); is this the logdir you passed to tw.init?\n")
    assert ("val", "loss") in table_rows(captured.out)


def test_nonexistent_path_is_reported_with_exit_code_1(tmp_path, capsys):
    """A LOGDIR that does not exist gets a message saying so and exit code 1."""
    missing = tmp_path / "nope"
    assert main([str(missing)]) == 1
    captured = capsys.readouterr()
    assert captured.err == (
        f"torchwatch summary: {missing} does not exist; pass the logdir you gave to tw.init\n")
    assert captured.out == ""


def test_event_files_without_epoch_scalars_are_reported(tmp_path, capsys):
    """A run interrupted before its first epoch ended has only step/* tags: message, exit code 1."""
    write_run(tmp_path / "train", {"step/loss": [1.0, 0.9]})
    assert main([str(tmp_path)]) == 1
    assert "no finished epoch" in capsys.readouterr().err


def test_no_logdir_is_a_usage_error(capsys):
    """Without a LOGDIR argparse prints the usage of `torchwatch summary` and exits with 2."""
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "usage: torchwatch summary" in capsys.readouterr().err


def test_runs_as_a_module(logdir):
    """`python -m torchwatch.summary LOGDIR` prints the table and exits with 0."""
    done = subprocess.run([sys.executable, "-m", "torchwatch.summary", str(logdir)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert ("train", "lr") in table_rows(done.stdout)


@pytest.mark.parametrize("metric, direction", [
    ("loss", "min"), ("val_loss", "min"), ("dice_loss", "min"), ("mse", "min"),
    ("acc", "max"), ("val_acc", "max"), ("acc_top1", "max"), ("Accuracy", "max"),
    ("top-5", "max"), ("acc@1", "max"), ("F1", "max"), ("mAP", "max"), ("bleu", "max"),
    ("lr", None), ("lr_0", None), ("lr_adam_1", None),
])
def test_best_direction(metric, direction):
    """Scores are maximised, losses and unknown names minimised, learning rates have no best."""
    assert best_direction(metric) == direction


@pytest.mark.parametrize("value, text", [
    (0.41234, "0.4123"), (0.9, "0.9000"), (12.345, "12.35"), (1234.0, "1234"),
    (123456.0, "1.235e+05"), (1e-3, "1.000e-03"), (0.0, "0.000"), (float("nan"), "nan"),
    (None, ""),
])
def test_format_value(value, text):
    """Values show 4 significant digits like the console, small ones in scientific notation."""
    assert format_value(value) == text
