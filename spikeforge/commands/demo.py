"""`spikeforge demo`: the main job on the embedded default (digits), end to end."""

from __future__ import annotations

from pathlib import Path

from spikeforge.ir.errors import InputError
from spikeforge.ir.network import MAX_TIMESTEPS, MIN_TIMESTEPS

NAME = "demo"
HELP = ("run the whole flow on scikit-learn digits: train/load, convert, evaluate, generate, verify, report "
        "(--cnn: the digits CNN; --board: build a bitstream too)")


def add_arguments(parser):
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="output folder (build/demo; build/demo-cnn with --cnn)")
    parser.add_argument("--cnn", action="store_true",
                        help="the shipped digits CNN (1x8x8 -> conv 16 -> pool -> conv 32 -> pool -> 10) instead "
                             "of the 64-64-32-10 MLP")
    parser.add_argument("--timesteps", "-T", type=int, default=None,
                        help="T for the generated design (8 for the MLP, 4 for the CNN)")
    parser.add_argument("--retrain", action="store_true",
                        help="train the model from scratch (seed 0) instead of loading the shipped weights")
    parser.add_argument("--skip-rtl", action="store_true", help="stop after the golden-model evaluation")
    parser.add_argument("--board", help="after the sign-off, build a bitstream for this board (icebreaker, "
                                        "ulx3s-85f, ...) into OUTPUT/board with the board's default folding")


def run(args) -> int:
    # The demo imports torch: imported here so `spikeforge --help` stays fast.
    from spikeforge.demo_flow import run_demo
    if args.timesteps is not None and not MIN_TIMESTEPS <= args.timesteps <= MAX_TIMESTEPS:
        raise InputError(f"--timesteps {args.timesteps} is out of range; T is {MIN_TIMESTEPS}..{MAX_TIMESTEPS}")
    model = "cnn" if args.cnn else "mlp"
    output = args.output or Path("build/demo-cnn" if args.cnn else "build/demo")
    return run_demo(output, timesteps=args.timesteps, retrain=args.retrain, rtl=not args.skip_rtl, model=model,
                    board=args.board)
