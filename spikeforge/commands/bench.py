"""`spikeforge bench`: the reproducible benchmarks of ``benchmarks/`` (same as ``python -m benchmarks``)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

NAME = "bench"
HELP = ("run spikeforge's benchmarks (accuracy and work vs. timesteps against rate coding, the k-sweep, "
        "hardware speed and cost, tool speed, scaling) and write RESULTS.md with plots")


def import_benchmarks():
    """The ``benchmarks`` package of a source checkout (it is not installed with the wheel).

    Found on ``sys.path`` or beside the ``spikeforge`` package (an editable install or a checkout).
    """
    try:
        return importlib.import_module("benchmarks.runner")
    except ModuleNotFoundError as error:
        if error.name not in ("benchmarks", "benchmarks.runner"):
            raise
    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / "runner.py").is_file():
        raise OSError(f"the benchmarks live in spikeforge's source checkout (benchmarks/ beside spikeforge/); "
                      f"none at {root}: run this from a clone of the repository")
    sys.path.insert(0, str(root))
    return importlib.import_module("benchmarks.runner")


def add_arguments(parser):
    # The options are the benchmark runner's own, defined there once. Without a checkout the command
    # still parses (so the rest of the CLI works) and run() says where the benchmarks are.
    try:
        runner = import_benchmarks()
    except OSError:
        parser.add_argument("ignored", nargs="*", help=argparse_suppress())
        return
    runner.build_parser(parser)


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS


def run(args) -> int:
    runner = import_benchmarks()
    args.argv = list(sys.argv[2:]) if len(sys.argv) > 1 and sys.argv[1] == NAME else []
    args.command_prefix = "spikeforge bench"
    return runner.run(args)
