"""How many CPU instructions watching adds to a training step: counted, so no timing noise.

    python benchmarks/instructions.py            # needs valgrind; 10-15 minutes on 2 cores
    python benchmarks/instructions.py --steps 400 --variants bare,full
    python benchmarks/instructions.py --functions 15   # and where each variant's instructions go

On a shared machine the µs/step of ``overhead.py`` swing by ±10 µs between runs; instruction
counts do not. valgrind's cachegrind counts every instruction the process executes and simulates
its caches. Each variant runs the tiny training loop of ``overhead.py`` (MLP 8→8→8→2, batch 64,
one thread) in fresh interpreters (hash seed fixed) for 1 and for 1 + ``--epochs`` epochs; the
difference divided by the extra steps is the cost of one step, with imports and set-up
cancelled out. The table gives instructions and L1 instruction- and data-cache misses per step,
and each over the bare loop. The misses are why a few thousand instructions cost microseconds
in the loop: after a small model's step, the code and data of the hot path are fetched again.

Outputs are off in every variant: under valgrind the program runs some 50 times slower, so what
is gated by time (the bar, TensorBoard hand-overs) would fire far more often per step than in a
real run. The reading of closed intervals is gated by time too (about once a second), so here it
runs at nearly every close: its Python is counted more often than in a real run. ``full`` is the hot path itself: ``tw.steps`` + ``tw.log`` every step and the
reduction of each 50-step interval. OpenBLAS worker threads (loaded with numpy) are limited to
one: under valgrind their spinning is counted in proportion to the run's duration.

``--functions N`` also says where each variant's instructions over bare go, and then its L1
misses: by area (the compiled hot path, torch's Python bindings, the GIL, CPython's objects, the
interpreter, glibc's malloc) and the N functions that moved most. glibc's malloc is torch's
own: watching adds no malloc call to a step, but the heap it leaves behind sends torch's
allocations down other paths, by a few thousand instructions either way from one interpreter to
the next.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, Optional

VARIANTS = {
    "bare": "the loop alone",
    "phase": "the loop inside `with run.phase(\"train\")`",
    "steps": "`for x, y in tw.steps(batches)` in a phase",
    "log": "`tw.log(loss=loss)` every step in a phase",
    "full": "`tw.steps` + `tw.log` every step (the hot path, outputs off)",
    "full-python": "`full` with `TORCHWATCH_PURE_PYTHON=1`: the pure-Python hot path",
}


def inner(variant: str, epochs: int, steps: int) -> None:
    """The measured program: ``epochs`` epochs of the tiny loop, watched as ``variant`` says."""
    import torch
    from torch import nn

    import torchwatch as tw

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = [(torch.randn(64, 8), torch.randint(0, 2, (64,))) for _ in range(steps)]
    loss_fn = nn.CrossEntropyLoss()
    run = tw.Run(None, model=model, console=False, tensorboard=False, progress=False)
    full = variant.startswith("full")
    watch, log = full or variant == "steps", full or variant == "log"

    def epoch() -> None:
        for x, y in (tw.steps(batches) if watch else batches):
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if log:
                tw.log(loss=loss)

    for _ in range(epochs):
        if variant == "bare":
            epoch()
        else:
            with run.phase("train"):
                epoch()


def count(variant: str, epochs: int, steps: int, out: str = os.devnull) -> tuple:
    """(instructions, L1 instruction misses, L1 data misses) of one fresh interpreter running
    ``inner``; cachegrind's per-function counts go to ``out``."""
    command = ["valgrind", "--tool=cachegrind", "--cache-sim=yes",
               f"--cachegrind-out-file={out}", sys.executable, os.path.abspath(__file__),
               "--inner", variant, str(epochs), str(steps)]
    # a fixed hash seed: dict layouts, and so the instructions of start-up, are the same in
    # both runs of a variant (random seeds moved the difference by ~10k instructions per step)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "PYTHONHASHSEED": "0",
           "TORCHWATCH_PURE_PYTHON": "1" if variant == "full-python" else ""}
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env=env, check=True)

    def total(label: str) -> int:
        return int(re.search(rf"{label}:\s+([\d,]+)", done.stderr).group(1).replace(",", ""))

    return total(r"I\s+refs"), total(r"I1\s+misses"), total(r"D1\s+misses")


def per_function(path: str, events: tuple = ("Ir",)) -> Dict[str, int]:
    """Counts per function in a cachegrind output file (``fn=`` blocks): instructions, or the
    sum of the named ``events`` (``("D1mr", "D1mw")``: L1 data misses, reads and writes)."""
    counts: Dict[str, int] = collections.Counter()
    source = function = ""
    columns = [0]
    with open(path) as lines:
        for line in lines:
            if line.startswith("events:"):
                names = line.split()[1:]
                columns = [names.index(event) for event in events]
            elif line.startswith("fl="):
                source = line[3:].strip()
            elif line.startswith("fn="):
                function = f"{line[3:].strip()} ({os.path.basename(source)})"
            elif line[:1].isdigit() and function:
                cells = line.split()[1:]
                counts[function] += sum(int(cells[c]) for c in columns if c < len(cells))
    return counts


# (area, what marks a function as in it); the first that matches wins
AREAS = [
    ("torchwatch, compiled", ("(_speedups.c)",)),
    ("torch's Python bindings (getters, warning handler, torch-function checks)",
     ("THP", "torch::", "c10::", "at::", "pybind11::", "__tls_get_addr")),
    ("the GIL and locks", ("ceval_gil", "pthread_", "take_gil", "drop_gil")),
    ("glibc malloc/free (torch's allocations)", ("(malloc.c)", "(arena.c)")),
    ("the interpreter", ("_PyEval_EvalFrameDefault", "(ceval.c)", "(specialize.c)", "(frame.c)",
                         "_PyFrame_", "_PyEvalFrame")),
    ("CPython objects and calls", ("(pycore_", "object.c)", "object.h)", "(abstract.c)",
                                   "(call.c)", "(obmalloc.c)", "(gcmodule.c)", "(errors.c)",
                                   "(pystate.c)", "(structmember.c)", "(getargs.c)")),
]


def area(function: str) -> str:
    for name, marks in AREAS:
        if any(mark in function for mark in marks):
            return name
    return "other"


def per_step(variant: str, files: Dict[tuple, str], epochs: int, extra: int,
             events: tuple = ("Ir",)) -> Dict[str, float]:
    """Counts (``per_function``) per function in one step of ``variant``: its 1 + ``epochs`` run
    less its 1-epoch run, over the ``extra`` steps between them."""
    first = per_function(files[(variant, 1)], events)
    last = per_function(files[(variant, 1 + epochs)], events)
    return {f: (last.get(f, 0) - first.get(f, 0)) / extra for f in set(first) | set(last)}


def where(variant: str, ours: Dict[str, float], bare: Dict[str, float], top: int,
          what: str = "instructions/step") -> None:
    """Print what a variant adds to a step over bare (``per_step`` of each, counting ``what``),
    by area and by function."""
    over = {f: ours.get(f, 0.0) - bare.get(f, 0.0) for f in set(ours) | set(bare)}
    areas: Dict[str, float] = collections.Counter()
    for function, n in over.items():
        areas[area(function)] += n
    print(f"\n**{variant}: {what} over bare, by area** "
          f"(total {sum(over.values()):+,.0f})\n")
    print("| area | over bare |\n| --- | ---: |")
    for name, n in sorted(areas.items(), key=lambda item: -abs(item[1])):
        print(f"| {name} | {n:+,.0f} |")
    if top < 1:
        return
    print(f"\n**{variant}: the {top} functions whose {what} moved most**\n")
    print("| function (source file) | over bare |\n| --- | ---: |")
    for function, n in sorted(over.items(), key=lambda item: -abs(item[1]))[:top]:
        print(f"| `{function[:100]}` | {n:+,.0f} |")


def report(variants: list, results: Dict[tuple, tuple], files: Optional[Dict[tuple, str]],
           epochs: int, steps: int, top: int) -> None:
    """Print the table of ``results`` (``count`` of each (variant, epochs) run) and, with
    cachegrind's ``files`` of those runs, where each variant's counts over bare go."""
    extra = epochs * steps
    totals = {
        v: [(b - a) / extra for a, b in zip(results[(v, 1)], results[(v, 1 + epochs)])]
        for v in variants
    }
    bare_ir, bare_i1, bare_d1 = totals["bare"]
    print(f"`python benchmarks/instructions.py --steps {steps} --epochs {epochs}` "
          f"(cachegrind; tiny loop; {extra} steps measured per variant)\n")
    print("| variant | what runs | instructions/step | over bare | L1-i misses/step | over bare "
          "| L1-d misses/step | over bare |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for v in variants:
        ir, i1, d1 = totals[v]
        print(f"| {v} | {VARIANTS[v]} | {ir:,.0f} | {ir - bare_ir:+,.0f} | {i1:,.0f} | "
              f"{i1 - bare_i1:+,.0f} | {d1:,.0f} | {d1 - bare_d1:+,.0f} |")
    if files is None:
        return
    # instructions, then the misses that make them cost more in the loop than in timeit
    for what, events in (("instructions/step", ("Ir",)), ("L1-i misses/step", ("I1mr",)),
                         ("L1-d misses/step", ("D1mr", "D1mw"))):
        bare = per_step("bare", files, epochs, extra, events)  # read once, for every variant
        for v in variants[1:]:
            where(v, per_step(v, files, epochs, extra, events), bare, top, what)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--steps", type=int, default=200, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=8, help="extra epochs measured")
    parser.add_argument("--functions", type=int, default=0, metavar="N",
                        help="also show where the instructions and L1 misses go: by area and "
                             "the N functions that moved most, for each variant")
    parser.add_argument("--inner", nargs=3, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.inner:
        inner(opts.inner[0], int(opts.inner[1]), int(opts.inner[2]))
        return 0
    variants = [v for v in opts.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt install valgrind); nothing measured")
        return 1
    if "bare" not in variants:
        variants.insert(0, "bare")
    kept = tempfile.mkdtemp(prefix="torchwatch-cachegrind-") if opts.functions else None
    files = {(v, e): os.path.join(kept, f"{v}.{e}") if kept else os.devnull
             for v in variants for e in (1, 1 + opts.epochs)}
    jobs = {key: (key[0], key[1], opts.steps, out) for key, out in files.items()}
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            results = dict(zip(jobs, pool.map(lambda job: count(*job), jobs.values())))
        report(variants, results, files if kept else None, opts.epochs, opts.steps,
               opts.functions)
    finally:
        if kept:
            shutil.rmtree(kept)
    return 0


if __name__ == "__main__":
    sys.exit(main())
