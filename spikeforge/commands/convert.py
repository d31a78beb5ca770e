"""`spikeforge convert`: a trained PyTorch model -> an integer iLIF network directory."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from spikeforge.commands import add_model_arguments
from spikeforge.ir.errors import InputError
from spikeforge.progress import step

NAME = "convert"
HELP = "convert a trained PyTorch classifier into an integer iLIF spiking network (network.json, weights.npz, rom/)"


def add_arguments(parser):
    add_model_arguments(parser, "the model saw raw/SCALE (default: the dataset's, 255; 1 for raw data files)")
    parser.add_argument("--calibrate", required=True, metavar="DATA",
                        help="calibration data: a dataset name (digits, fashion-mnist), an MNIST-format IDX "
                             "directory, or a .npy/.pt file of raw byte samples (N, ...)")
    parser.add_argument("--timesteps", "-T", type=int, default=8, help="T, 1..16 (default 8)")
    parser.add_argument("--weight-bits", type=int, default=8, help="signed weight width, 2..16 (default 8)")
    parser.add_argument("--method", choices=["percentile", "max", "search"], default="percentile",
                        help="activation clip: a percentile of each layer's activations (default), their max, "
                             "or search: the percentile whose integer network classifies the calibration set "
                             "best (worth it at T = 2-4)")
    parser.add_argument("--percentile", type=float, default=99.9, help="percentile for --method percentile (99.9)")
    parser.add_argument("--v0", choices=["round", "floor"], default="round",
                        help="initial membrane potential: θ//2 rounds to nearest (default), 0 floors")
    parser.add_argument("--per-channel", action="store_true", help="one threshold per output neuron")
    parser.add_argument("--input-shape", help="shape of one sample, e.g. 1,28,28 (default: from the data)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="network directory to write")


def run(args) -> int:
    # The flow imports torch (the converter) and amaranth (the generator): imported here so
    # `spikeforge --help` stays fast.
    from spikeforge.conversion import ChanceLevelWarning
    from spikeforge.converter.model_files import load_model
    from spikeforge.flow import FlowConfig, FlowState, run_step

    config = FlowConfig(model=args.model, state_dict=None if args.state_dict is None else str(args.state_dict),
                        calibration=args.calibrate, timesteps=args.timesteps, weight_bits=args.weight_bits,
                        method=args.method, percentile=args.percentile, v0=args.v0, per_channel=args.per_channel,
                        input_scale=args.input_scale, input_mean=args.input_mean, input_std=args.input_std,
                        input_shape=parse_shape(args.input_shape), network_dir=str(args.output))
    state = FlowState()
    with step(f"loading {args.model}"):
        state.model = load_model(config.model, config.state_dict)
    with step(f"converting (T = {args.timesteps}, {args.weight_bits}-bit weights)"), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ChanceLevelWarning)
        report = run_step("convert", state, config)
    print("\n".join(report.lines()))
    for warning in caught:
        if issubclass(warning.category, ChanceLevelWarning):
            print(f"\nWARNING: {warning.message}\n", file=sys.stderr, flush=True)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return 0


def parse_shape(text: str | None):
    """``"1,28,28"`` -> ``[1, 28, 28]``; a malformed shape is an InputError naming it."""
    if text is None:
        return None
    try:
        shape = [int(d) for d in text.split(",")]
    except ValueError:
        shape = []
    if not shape or min(shape) < 1:
        raise InputError(f"--input-shape {text!r} is not a list of positive integers such as 1,28,28")
    return shape
