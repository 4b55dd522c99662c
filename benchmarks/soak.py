"""Soak: a watched loop of 100k steps with ``tw.log`` every step keeps memory flat.

Prints, every ``--report-every`` steps, the process RSS, the live tensors the garbage collector
sees, and on CUDA the allocated bytes (current and peak); at the end, the growth from the first
report (after warm-up) to the last. ``--check`` exits with status 1 when RSS grew more than
``--max-rss-growth-mib`` or CUDA allocated bytes grew at all, so the script can gate CI.

    python benchmarks/soak.py                       # 100k steps, 10 epochs, cuda if available
    python benchmarks/soak.py --steps 20000 --device cpu --check
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import warnings

import torch
from torch import nn

import torchwatch as tw


def rss_mib() -> float:
    """Resident set size now (Linux /proc), else the peak from getrusage."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def live_tensors() -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sum(isinstance(o, torch.Tensor) for o in gc.get_objects())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=10, help="phases the steps are split into")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--report-every", type=int, default=10_000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--logdir", default=None, help="default: a temporary folder")
    parser.add_argument("--check", action="store_true", help="exit 1 if memory grew")
    parser.add_argument("--max-rss-growth-mib", type=float, default=16.0)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(32, 64, device=device)
    y = torch.randint(0, 10, (32,), device=device)
    logdir = args.logdir or tempfile.mkdtemp(prefix="torchwatch-soak-")
    run = tw.init(logdir, model=model, optimizer=optimizer, total_epochs=args.epochs,
                  log_every=args.log_every, progress=False, console=False)
    per_epoch = max(args.steps // args.epochs, 1)
    reports = []
    started = time.perf_counter()

    def report() -> None:
        gc.collect()
        row = {"step": run.global_step, "rss_mib": rss_mib(), "tensors": live_tensors(),
               "seconds": time.perf_counter() - started}
        if cuda:
            row["cuda_alloc"] = torch.cuda.memory_allocated(device)
            row["cuda_peak"] = torch.cuda.max_memory_allocated(device)
        reports.append(row)
        print("  ".join(f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v:,}"
                        for k, v in row.items()), flush=True)

    @tw.watch_epoch
    def train_one_epoch(steps: int):
        for _ in tw.steps(range(steps), batch_size=len(x)):
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            tw.log(loss=loss, acc=(model(x).argmax(1) == y).float().mean())
            if run.global_step % args.report_every == args.report_every - 1:
                report()  # at the same point of an interval each time

    print(f"soak: {args.steps:,} steps in {args.epochs} epochs on {device}, log_every "
          f"{args.log_every}, logdir {logdir}", flush=True)
    for _ in range(args.epochs):
        train_one_epoch(per_epoch)
    tw.close()
    if cuda:
        torch.cuda.synchronize(device)
    total_s = time.perf_counter() - started
    print(f"{run.global_step:,} steps in {total_s:.1f}s ({run.global_step / total_s:,.0f} steps/s)")
    if len(reports) < 2:
        print("too few reports to compare; lower --report-every")
        return 0
    first, last = reports[0], reports[-1]
    rss_growth = last["rss_mib"] - first["rss_mib"]
    print(f"growth from step {first['step']:,} to {last['step']:,}: RSS {rss_growth:+.1f} MiB, "
          f"live tensors {last['tensors'] - first['tensors']:+d}"
          + (f", CUDA allocated {last['cuda_alloc'] - first['cuda_alloc']:+,} bytes"
             if cuda else ""))
    if args.check:
        grew = rss_growth > args.max_rss_growth_mib or last["tensors"] > first["tensors"] + 2 or (
            cuda and last["cuda_alloc"] > first["cuda_alloc"])
        if grew:
            print("memory grew", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
