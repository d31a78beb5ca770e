"""`spikeforge demo`: the main job on the embedded default (digits), end to end."""

from __future__ import annotations

from pathlib import Path

NAME = "demo"
HELP = "run the whole flow on scikit-learn digits: train/load, convert, evaluate, generate, verify, report"


def add_arguments(parser):
    parser.add_argument("-o", "--output", type=Path, default=Path("build/demo"), help="output folder (build/demo)")
    parser.add_argument("--timesteps", "-T", type=int, default=8, help="T for the generated design (8)")
    parser.add_argument("--retrain", action="store_true",
                        help="train the MLP from scratch (seed 0) instead of loading the shipped weights")
    parser.add_argument("--skip-rtl", action="store_true", help="stop after the golden-model evaluation")


def run(args) -> int:
    # The demo imports torch: imported here so `spikeforge --help` stays fast.
    from spikeforge.demo_flow import run_demo
    return run_demo(args.output, timesteps=args.timesteps, retrain=args.retrain, rtl=not args.skip_rtl)
