"""`spikeforge bench`: the reproducible benchmarks of :mod:`spikeforge.benchmarks` (``python -m benchmarks``)."""

from __future__ import annotations

import sys

from spikeforge.benchmarks.options import build_parser

NAME = "bench"
HELP = ("run spikeforge's benchmarks (accuracy and work vs. timesteps against rate coding, the k-sweep, "
        "hardware speed and cost, tool speed, scaling) and write RESULTS.md with plots")


def add_arguments(parser):
    build_parser(parser)       # the options are the benchmark runner's own, defined there once


def run(args) -> int:
    # The runner imports every section, and the sections import torch (seconds): kept off `spikeforge --help`.
    from spikeforge.benchmarks import runner

    args.argv = list(sys.argv[2:]) if len(sys.argv) > 1 and sys.argv[1] == NAME else []
    args.command_prefix = "spikeforge bench"
    return runner.run(args)
