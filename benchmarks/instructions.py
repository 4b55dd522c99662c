"""How many CPU instructions watching adds to a training step: counted, so no timing noise.

    python benchmarks/instructions.py            # needs valgrind; 5-10 minutes on 2 cores
    python benchmarks/instructions.py --steps 400 --variants bare,full

On a shared machine the µs/step of ``overhead.py`` swing by ±10 µs between runs; instruction
counts do not. valgrind's cachegrind counts every instruction the process executes and simulates
its caches. Each variant runs the tiny training loop of ``overhead.py`` (MLP 8→8→8→2, batch 64,
one thread) in fresh interpreters (hash seed fixed) for 1 and for 1 + ``--epochs`` epochs; the difference
divided by the extra steps is the cost of one step, with imports and set-up cancelled out. The table gives
instructions and L1 instruction-cache misses per step, and both over the bare loop.

Outputs are off in every variant: under valgrind the program runs some 50 times slower, so what
is gated by time (the bar, TensorBoard hand-overs) would fire far more often per step than in a
real run. ``full`` is the hot path itself: ``tw.steps`` + ``tw.log`` every step and the
reduction of each 50-step interval. OpenBLAS worker threads (loaded with numpy) are limited to
one: under valgrind their spinning is counted in proportion to the run's duration.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys

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


def count(variant: str, epochs: int, steps: int) -> tuple:
    """(instructions, L1 instruction misses) of one fresh interpreter running ``inner``."""
    command = ["valgrind", "--tool=cachegrind", "--cache-sim=yes",
               "--cachegrind-out-file=/dev/null", sys.executable, os.path.abspath(__file__),
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

    return total(r"I\s+refs"), total(r"I1\s+misses")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--steps", type=int, default=200, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=8, help="extra epochs measured")
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
    jobs = {(v, e): (v, e, opts.steps) for v in variants for e in (1, 1 + opts.epochs)}
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = dict(zip(jobs, pool.map(lambda job: count(*job), jobs.values())))
    extra = opts.epochs * opts.steps
    per_step = {
        v: [(b - a) / extra for a, b in zip(results[(v, 1)], results[(v, 1 + opts.epochs)])]
        for v in variants
    }
    bare_ir, bare_i1 = per_step["bare"]
    print(f"`python benchmarks/instructions.py --steps {opts.steps} --epochs {opts.epochs}` "
          f"(cachegrind; tiny loop; {extra} steps measured per variant)\n")
    print("| variant | what runs | instructions/step | over bare | L1-i misses/step | over bare |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for v in variants:
        ir, i1 = per_step[v]
        print(f"| {v} | {VARIANTS[v]} | {ir:,.0f} | {ir - bare_ir:+,.0f} | {i1:,.0f} | "
              f"{i1 - bare_i1:+,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
