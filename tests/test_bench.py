"""``torchwatch bench`` in seconds: each contender has a row of sane numbers (no timing targets)."""

from __future__ import annotations

import importlib.util
import math

import pytest

from torchwatch import bench
from torchwatch.cli import main as cli

TINY = ["--rounds", "2", "--steps", "20", "--workloads", "tiny", "--startup", "1",
        "--micro", "0.02"]


def table_rows(text: str, heading: str) -> dict:
    """{first cell: [cells]} of the markdown table that follows ``heading`` in ``text``."""
    lines = text.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        rows[cells[0]] = cells
    return rows


@pytest.fixture(scope="module")
def report():
    """One quick run of the benchmark through the command line, its stdout and exit status."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli(["bench", *TINY])
    return status, out.getvalue()


def test_bench_exits_zero_and_names_its_command_and_versions(report):
    """The report starts with the command that made it, the machine and the library versions."""
    status, text = report
    assert status == 0
    assert f"`torchwatch bench {' '.join(TINY)}`" in text
    assert "torch " in text and "torchwatch " in text and "CPUs" in text


def test_every_contender_has_a_row(report):
    """Each contender of the issue appears; Ignite, Lightning and Fabric say 'not installed' when
    absent."""
    _, text = report
    rows = table_rows(text, "**tiny: MLP 8→8→8→2, batch 64, 20 steps per epoch**")
    labels = " ".join(rows)
    for cls in bench.CONTENDERS:
        if cls is bench.PythonReference:
            assert "of pure Python per step" in labels
        else:
            assert cls.label in rows, cls.label
    for cls, module in ((bench.Ignite, "ignite"), (bench.Lightning, "lightning"),
                        (bench.Fabric, "lightning")):
        if importlib.util.find_spec(module) is None:
            assert rows[cls.label][2] == "not installed"


def test_numbers_are_sane(report):
    """Times are positive, the bare loop is 1.00× itself, syncs per step match each loop's code."""
    _, text = report
    rows = table_rows(text, "**tiny: MLP 8→8→8→2, batch 64, 20 steps per epoch**")
    measured = {label: cells for label, cells in rows.items() if cells[2] != "not installed"}
    for label, cells in measured.items():
        per_step, ratio, overhead, syncs, heap, startup = (
            float(c.split()[0]) for c in cells[2:8])  # overhead is followed by its [CI]
        assert per_step > 0 and ratio > 0 and math.isfinite(overhead), label
        low, high = (float(v) for v in cells[4].split(" ", 1)[1].strip("[]").split(", "))
        assert low <= round(overhead) + 1 and round(overhead) - 1 <= high, label
        assert syncs >= 0 and heap >= 0 and startup >= 0, label
    bare = measured["bare loop"]
    assert (bare[3], bare[4], bare[5]) == ("1.00", "+0.0 [0, 0]", "0.00")
    for cls in (bench.Seed, bench.StepScalar, bench.TqdmPostfix):  # one .item() per step
        assert measured[cls.label][5] == "1.00", cls.label
    if bench.Fabric.label in measured:  # fabric.log turns the loss into a float every step
        assert measured[bench.Fabric.label][5] == "1.00"
    for cls in (bench.TorchwatchQuiet, bench.TorchwatchEpoch, bench.TorchwatchFull):
        assert float(measured[cls.label][5]) <= 2 / 20, cls.label  # phase end only


def test_hot_path_and_start_up_sections(report):
    """The micro-benchmarks have their seven rows, and TensorBoard stays unimported at start-up."""
    _, text = report
    rows = table_rows(text, "**Hot path**")
    assert len(rows) == 7
    for cells in rows.values():
        assert float(cells[1]) > 0 and float(cells[2]) >= 0
    assert "TensorBoard modules loaded after `import torchwatch` + `init`: none." in text
    assert "| `import torch` |" in text and "| `import torchwatch` |" in text


@pytest.mark.parametrize("argv, message", [
    (["--workloads", "huge"], "--workloads must name some of tiny, small"),
    (["--only", "wandb"], "--only must name some of"),
    (["--rounds", "0"], "--rounds must be a positive int, got 0"),
])
def test_bad_arguments_are_named(argv, message, capsys):
    """A wrong option exits with status 2 and a message naming the option and what it got."""
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("variant", ["bare", "phase", "steps", "log", "full", "full-python"])
def test_instruction_counter_program_runs_each_variant(variant):
    """The program that benchmarks/instructions.py runs under valgrind trains in each variant
    (valgrind itself is too slow for the test suite)."""
    import pathlib
    import subprocess
    import sys

    script = pathlib.Path(__file__).parent.parent / "benchmarks" / "instructions.py"
    done = subprocess.run([sys.executable, str(script), "--inner", variant, "2", "20"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


def test_instruction_counter_names_an_unknown_variant(capsys):
    """An unknown --variants entry exits with status 2 naming it and the choices."""
    import pathlib
    import runpy
    import sys

    script = pathlib.Path(__file__).parent.parent / "benchmarks" / "instructions.py"
    argv, sys.argv = sys.argv, [str(script), "--variants", "bare,turbo"]
    try:
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
    assert exit_info.value.code == 2
    assert "unknown variants ['turbo']" in capsys.readouterr().err


def test_outputs_benchmark_has_a_row_per_output():
    """benchmarks/outputs.py runs a short measurement and prints a row of numbers for the bare
    loop, outputs off, each output alone and all of them."""
    import pathlib
    import subprocess
    import sys

    script = pathlib.Path(__file__).parent.parent / "benchmarks" / "outputs.py"
    done = subprocess.run([sys.executable, str(script), "--rounds", "2", "--steps", "4",
                           "--warmup", "1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout, "the mean of those two.")
    assert len(rows) == 6
    assert "the tqdm bar" in rows and "all three: the `torchwatch full` row" in rows
    for cells in rows.values():
        start, end, step = float(cells[1]), float(cells[2]), float(cells[3])
        assert start > 0 and end >= 0 and step > 0
        assert all(math.isfinite(float(cell)) for cell in cells[4:])
    assert rows["nothing (`run.history` only)"][4:] == ["+0", "+0", "+0", "+0.0"]


def test_overhead_is_measured_against_the_bare_epochs_around_each_epoch():
    """A machine slowing down steadily from epoch to epoch adds nothing to the overhead: each
    contender epoch is compared with the mean of the bare-loop epochs just before and after it,
    not with a bare epoch several epochs away."""
    steps, cost = 100, 0.5  # the contender costs 0.5 s more per epoch, 5 ms per step
    bare, spans, before = [], [], []
    for epoch in range(21):  # bare, contender, bare, contender, ... bare, on a slowing clock
        if epoch % 2 == 0:
            bare.append(10.0 + epoch)
        else:
            before.append(len(bare) - 1)
            spans.append(10.0 + epoch + cost)
    overheads = bench._overheads(spans, bare, before, steps)
    assert overheads == pytest.approx([cost / steps] * 10)


def test_instruction_counter_splits_a_step_by_function_and_area(tmp_path, capsys):
    """--functions reads cachegrind's per-function counts and prints what a variant adds to a
    step over bare: by area (torch's bindings, the compiled hot path, ...) and by function."""
    import pathlib
    import runpy

    script = pathlib.Path(__file__).parent.parent / "benchmarks" / "instructions.py"
    module = runpy.run_path(str(script), run_name="instructions")

    def cachegrind_file(name, counts):  # cachegrind's format: fl=, fn=, "line Ir I1mr ..."
        lines = ["events: Ir I1mr", "fl=/src/_speedups.c", "fn=hot_log",
                 f"10 {counts[0]} 1", f"11 {counts[1]} 0", "fl=???",
                 "fn=THPVariable_get_ndim(THPVariable*, void*)", f"0 {counts[2]} 0"]
        path = tmp_path / name
        path.write_text("\n".join(lines) + "\n")
        return str(path)

    files = {("bare", 1): cachegrind_file("b1", (0, 0, 100)),
             ("bare", 3): cachegrind_file("b3", (0, 0, 300)),
             ("full", 1): cachegrind_file("f1", (40, 10, 150)),
             ("full", 3): cachegrind_file("f3", (240, 50, 550))}
    assert module["per_function"](files[("full", 3)]) == {
        "hot_log (_speedups.c)": 290, "THPVariable_get_ndim(THPVariable*, void*) (???)": 550}
    steps = {v: module["per_step"](v, files, 2, 10) for v in ("full", "bare")}  # 2 x 5 steps
    module["where"]("full", steps["full"], steps["bare"], 5)
    out = capsys.readouterr().out
    assert "(total +44)" in out  # ((290 - 50) + (550 - 150) - (300 - 100)) / 10
    assert "| torchwatch, compiled | +24 |" in out
    assert "| torch's Python bindings (getters, warning handler, torch-function checks) | +20 |" \
        in out
    assert "| `hot_log (_speedups.c)` | +24 |" in out


def test_instruction_counter_reads_the_misses_by_name(tmp_path):
    """per_function sums the cachegrind events it is asked for, by their names in the file's
    events: line (L1 data misses are reads plus writes), and instructions by default."""
    import pathlib
    import runpy

    script = pathlib.Path(__file__).parent.parent / "benchmarks" / "instructions.py"
    module = runpy.run_path(str(script), run_name="instructions")
    path = tmp_path / "cachegrind.out"
    path.write_text("events: Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw\n"
                    "fl=/src/_speedups.c\nfn=record\n"
                    "5 100 3 0 40 2 0 20 1 0\n6 50 1 0 10 0 0 5 4 0\n"
                    "fl=???\nfn=THPVariable_is_cpu(THPVariable*, void*)\n0 7 2\n")
    read = module["per_function"]
    assert read(str(path)) == {"record (_speedups.c)": 150,
                               "THPVariable_is_cpu(THPVariable*, void*) (???)": 7}
    assert read(str(path), ("I1mr",)) == {"record (_speedups.c)": 4,
                                          "THPVariable_is_cpu(THPVariable*, void*) (???)": 2}
    # a line that stops short (cachegrind leaves trailing zero counts out) counts them as 0
    assert read(str(path), ("D1mr", "D1mw")) == {
        "record (_speedups.c)": 2 + 1 + 4, "THPVariable_is_cpu(THPVariable*, void*) (???)": 0}


def test_instruction_counter_reports_counts_and_misses_by_function(tmp_path, capsys):
    """report() (what main prints after the valgrind runs) gives the per-step table with both
    misses, then with --functions the breakdown of instructions, L1-i and L1-d misses."""
    import pathlib
    import runpy

    script = pathlib.Path(__file__).parent.parent / "benchmarks" / "instructions.py"
    module = runpy.run_path(str(script), run_name="instructions")

    def cachegrind_file(name, ir, i1, d1r, d1w):
        path = tmp_path / name
        path.write_text("events: Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw\n"
                        "fl=/src/_speedups.c\nfn=record\n"
                        f"5 {ir} {i1} 0 0 {d1r} 0 0 {d1w} 0\n")
        return str(path)

    files = {("bare", 1): cachegrind_file("b1", 0, 0, 0, 0),
             ("bare", 3): cachegrind_file("b3", 0, 0, 0, 0),
             ("full", 1): cachegrind_file("f1", 100, 10, 4, 2),
             ("full", 3): cachegrind_file("f3", 1100, 60, 24, 12)}
    # totals as count() gives them: (instructions, L1-i misses, L1-d misses) of each run
    results = {("bare", 1): (1000, 100, 50), ("bare", 3): (11000, 600, 250),
               ("full", 1): (1100, 110, 56), ("full", 3): (12100, 660, 286)}
    module["report"](["bare", "full"], results, files, 2, 5, 3)  # 2 extra epochs of 5 steps
    out = capsys.readouterr().out
    assert "| bare | the loop alone | 1,000 | +0 | 50 | +0 | 20 | +0 |" in out
    assert "| 1,100 | +100 | 55 | +5 | 23 | +3 |" in out  # full: (12,100 - 1,100) / 10 steps ...
    assert "**full: instructions/step over bare, by area** (total +100)" in out
    assert "**full: L1-i misses/step over bare, by area** (total +5)" in out
    assert "**full: L1-d misses/step over bare, by area** (total +3)" in out
    assert "| `record (_speedups.c)` | +3 |" in out


def test_full_against_the_seed_is_paired_by_round():
    """The gap between torchwatch full and the seed's way is the median of their differences in
    each round (the noise of a round hits both), not the difference of their two medians."""
    def row(cls, per_round_us):
        r = bench.Row(cls)
        r.overheads = [v * 1e-6 for v in per_round_us]
        r.overhead, *r.overhead_ci = bench.median_ci(r.overheads)
        r.syncs_per_epoch = 0
        return r

    # medians 0 and 5 (-5 apart); round by round the two differ by 0, -5 and +5: median 0
    full, seed = row(bench.TorchwatchFull, [0, 0, 10]), row(bench.Seed, [0, 5, 5])
    lines = bench.targets([full, seed], steps=500, micro_rows=[], start={}, cuda=False)
    gap = next(line for line in lines if "vs the seed's way" in line)
    assert gap.startswith("- met: ") and "+0.0 µs/step (median of the per-round differences" in gap
    full.overheads = [v + 6e-6 for v in full.overheads]  # 6 µs more in every round: a miss
    lines = bench.targets([full, seed], steps=500, micro_rows=[], start={}, cuda=False)
    gap = next(line for line in lines if "vs the seed's way" in line)
    assert gap.startswith("- **missed**: ") and "+6.0 µs/step" in gap


def test_full_target_line_gives_the_share_of_the_bare_step():
    """The µs target depends on the machine: the line also says what share of the bare loop's
    own step the overhead is, from the same run."""
    bare, full = bench.Row(bench.Bare), bench.Row(bench.TorchwatchFull)
    bare.per_step = 400e-6
    full.overheads = [8e-6, 8e-6, 8e-6]
    full.overhead, *full.overhead_ci = bench.median_ci(full.overheads)
    lines = bench.targets([bare, full], steps=500, micro_rows=[], start={}, cuda=False)
    line = next(line for line in lines if "torchwatch full costs" in line)
    assert line.startswith("- **missed**: ")
    assert "8.0 µs/step over the bare loop, 2.0% of its 400 µs step" in line
    lines = bench.targets([full], steps=500, micro_rows=[], start={}, cuda=False)  # no bare row
    assert any("costs 8.0 µs/step over the bare loop (95% CI" in line for line in lines)


def test_targets_benchmark_times_the_contenders_the_targets_compare():
    """benchmarks/targets.py: the tiny workload only, the bare loop, full, outputs off and the
    seed's way, and the targets with the paired full-vs-seed gap."""
    import pathlib
    import subprocess
    import sys

    script = pathlib.Path(__file__).parent.parent / "benchmarks" / "targets.py"
    done = subprocess.run([sys.executable, str(script), "--rounds", "2", "--steps", "10",
                           "--warmup", "1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "`python benchmarks/targets.py --rounds 2 --steps 10 --warmup 1`" in done.stdout
    rows = table_rows(done.stdout, "**tiny: MLP 8→8→8→2, batch 64, 10 steps per epoch**")
    assert set(rows) == {bench.Bare.label, bench.BareTwin.label, bench.TorchwatchFull.label,
                         bench.TorchwatchQuiet.label, bench.Seed.label}
    assert "the bare loop timed again as a contender reads" in done.stdout
    assert "**small" not in done.stdout and "**Hot path**" not in done.stdout
    assert "torchwatch full vs the seed's way" in done.stdout
    assert "median of the per-round differences" in done.stdout


def test_epoch_costs_benchmark_times_each_function_inside_the_loop():
    """benchmarks/epoch_costs.py trains a few watched epochs and prints, for each per-epoch
    function, a CPU time and its calls per epoch: one bar created, one phase entered and left,
    one TensorBoard flush per epoch; the parts never exceed the whole."""
    import pathlib
    import subprocess
    import sys

    script = pathlib.Path(__file__).parent.parent / "benchmarks" / "epoch_costs.py"
    done = subprocess.run([sys.executable, str(script), "--epochs", "3", "--steps", "30",
                           "--warmup", "1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout, "medians over epochs.")
    labels = {label.rsplit(": ", 1)[-1] for label in rows}
    whole = float(rows["the whole epoch"][2])
    for label, (_, part, spent, _) in rows.items():
        assert 0 <= float(spent) <= whole, label
        if part:  # a part names a row of the table
            assert part in labels, (label, part)
    once = ["phase start: `Phase.__enter__`", "the bar created and first drawn: `tqdm.__init__`",
            "phase end: `Phase.__exit__`", "TensorBoard: `TensorBoardSink.flush`",
            "the epoch line: `ConsoleSink.log`"]
    for label in once:
        assert float(rows[label][3]) == 1.0, label
    assert float(rows["phase end: `Phase.__exit__`"][2]) > 0
    assert float(rows["the rest: 30 training steps with `tw.steps` and `tw.log`"][2]) > 0
    assert float(rows["phase end: `Phase.__exit__`"][2]) < whole
