"""``torchwatch demo | summary | bench``: the command line."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

__all__ = ["main"]


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="torchwatch", description="Watch a plain PyTorch training loop."
    )
    commands = parser.add_subparsers(dest="command", metavar="{demo,summary,bench}")
    demo = commands.add_parser("demo", help="train a small model on synthetic data, watched")
    demo.add_argument("--logdir", default=None, help="where to write (default runs/demo-<time>)")
    demo.add_argument("--epochs", type=int, default=5)
    commands.add_parser("summary", help="print a table of the epoch metrics in LOGDIR...",
                        add_help=False)
    commands.add_parser("bench", help="quick overhead benchmark against the bare loop",
                        add_help=False)
    if argv and argv[0] == "summary":
        from .summary import main as summary

        return summary(argv[1:])
    if argv and argv[0] == "bench":
        from .bench import main as bench

        return bench(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(args.logdir, args.epochs)
    parser.print_help()
    return 2
