"""What watching a training loop costs: torchwatch beside the bare loop and the usual ways.

    python benchmarks/overhead.py                 # CPU, full settings (a few minutes)
    python benchmarks/overhead.py --device cuda   # the same table on a GPU, timed with CUDA events
    python benchmarks/overhead.py --help          # rounds, steps, workloads, contenders, ...

Prints a markdown table (machine, versions, date and this command in its header) ready to paste
into the README. ``torchwatch bench`` runs the same engine with quick settings; the engine is
``torchwatch/bench.py``, so that the installed command and this script measure the same way.
"""

import sys

from torchwatch.bench import main

if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(["--full", *args], command=" ".join(["python benchmarks/overhead.py", *args])))
