"""Micro-benchmarks of torchwatch's hot path, each beside the bare-Python cost of the same shape.

    python benchmarks/micro.py                  # timeit: tw.log, tw.steps, @watch_step, phase
    python benchmarks/micro.py --micro 10       # more calls per measurement

A regression in the per-step path shows up here with a name, where the loop-level table of
``overhead.py`` only shows that something got slower.
"""

import sys

from torchwatch.bench import main

if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(["--sections", "micro", "--micro", "4", *args],
                  command=" ".join(["python benchmarks/micro.py", *args])))
