"""The benchmark sections and the command-line options, without importing any section.

``spikeforge bench`` builds its parser from here, so ``spikeforge --help`` does not import the
sections (they import torch); :mod:`.runner` imports them when a run starts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["SECTIONS", "NETWORK_NAMES", "build_parser"]

#: Section name -> one-line description, in report order (later sections may use earlier ones' results).
SECTIONS = {
    "accuracy": "timesteps and spike-driven additions to ANN parity, iLIF vs. rate coding",
    "cnn_accuracy": "CNNs (digits, Fashion-MNIST, MNIST-5k): float vs. iLIF by T, additions vs. rate coding, golden speed",
    "k_sweep": "conversion error vs. amplification factor k",
    "hardware": "cycles, latency, throughput, resources; published designs beside them",
    "hdl_cycles": "Amaranth RTL cycles per sample vs. the cycle model, adder utilisation",
    "golden_speed": "golden model samples/s",
    "tool_speed": "convert, generate, Verilator and bitstream times",
    "verilator_speed": "cocotb + Verilator sign-off: build time, simulated cycles/s, samples/s",
    "scaling": "cycles, ROM bits and LUTs vs. layer width and T",
    "sweep": "design-space sweep on Dask: 16 points (golden, generate, cycle model, fast RTL) on 1 vs 2 workers",
    "finetune": "quantisation-aware fine-tuning at T = 2-3: accuracy vs. float, exactness, additions, cost",
    "board_link": "simulated boards: batch-mode cycles/sample from the on-chip counters, link-bound and host-visible rates",
}

#: The benchmark networks (keys of :data:`spikeforge.benchmarks.common.NETWORKS`).
NETWORK_NAMES = ("digits", "fmnist", "fmnist-deep")


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of ``python -m benchmarks`` and ``spikeforge bench`` (added to ``parser`` if given)."""
    parser = parser or argparse.ArgumentParser(
        prog="python -m benchmarks", description="spikeforge's reproducible measurements")
    parser.add_argument("--quick", action="store_true",
                        help="small subsets and short sweeps: a smoke test that finishes in under a minute")
    parser.add_argument("-o", "--output", type=Path, default=Path("build/bench"),
                        help="folder for results.json, RESULTS.md, plots, trained models (build/bench)")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated sections to (re)run: {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--publish", type=Path, default=None,
                        help="also copy RESULTS.md, results.json and plots here (default for a full run: benchmarks/)")
    parser.add_argument("--no-publish", action="store_true", help="do not copy the report into benchmarks/")
    parser.add_argument("--seed", type=int, default=0, help="seed of training and random spikes (0)")
    parser.add_argument("--networks", default=",".join(NETWORK_NAMES),
                        help=f"benchmark networks to measure ({','.join(NETWORK_NAMES)}); the scaling section "
                             "always uses its own Fashion-MNIST MLPs")
    return parser
