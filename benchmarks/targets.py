"""Are the issue's per-step targets met, with a confidence interval narrow enough to say?

    python benchmarks/targets.py          # about 12 minutes on a 2-CPU machine
    python benchmarks/targets.py --rounds 600

The engine and the method of ``overhead.py`` (same loop, interleaved rounds, each epoch against
the bare epochs around it, median of the per-round differences), on the tiny workload, with only
the contenders the targets compare (the bare loop, torchwatch full, torchwatch with its outputs
off, the seed's way), the bare loop again as a contender (what the method reads for zero: its own
error here), and ten times the rounds. The 95% interval of a median narrows with the square
root of the rounds: about ±6–10 µs/step at 30 rounds on a shared 2-CPU machine, ±1.5–3 at 300,
narrower than the 5 µs/step the targets are about (the twin's error, up to ~3, does not
narrow). The peers, which cost 100–1,000 µs/step and need no such precision, are in
``overhead.py``.
"""

import sys

from torchwatch.bench import main

DEFAULTS = ["--full", "--workloads", "tiny", "--only", "bare-twin,tw-full,tw-off,seed",
            "--rounds", "300", "--sections", "table"]

if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main([*DEFAULTS, *args], command=" ".join(["python benchmarks/targets.py", *args])))
