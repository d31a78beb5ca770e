"""`spikeforge eval`: accuracy of an integer network (golden model) beside the float ANN."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from spikeforge.datasets import load as load_dataset
from spikeforge.evaluate import evaluate, format_evaluation
from spikeforge.ir.atomic import write_json
from spikeforge.ir.errors import InputError, VerificationFailure
from spikeforge.ir.network import load

NAME = "eval"
HELP = "evaluate an integer iLIF network with the golden model and compare with the float ANN"


def add_arguments(parser):
    parser.add_argument("network", type=Path, help="network directory written by `spikeforge convert`")
    parser.add_argument("--dataset", default="digits", help="dataset name or MNIST-format directory (digits)")
    parser.add_argument("--split", choices=["test", "train"], default="test")
    parser.add_argument("--samples", type=int, default=None, help="only the first N samples")
    parser.add_argument("--model", help="float model to evaluate beside it (.pt2, .pt, file.py:factory)")
    parser.add_argument("--state-dict", type=Path)
    parser.add_argument("--input-scale", type=float, default=None, help="the float model saw raw/SCALE")
    parser.add_argument("--json", type=Path, help="also write the report as JSON")


def run(args) -> int:
    if args.input_scale is not None and not (math.isfinite(args.input_scale) and args.input_scale > 0):
        raise InputError(f"--input-scale {args.input_scale:g} must be a finite number > 0 (the model saw raw / SCALE)")
    if args.input_scale is not None and not args.model:
        raise InputError("--input-scale goes with --model (the scale the float model saw its input at)")
    if args.state_dict is not None and not args.model:
        raise InputError("--state-dict goes with --model file.py:factory")
    net = load(args.network)
    dataset = load_dataset(args.dataset, args.split).head(args.samples)
    float_accuracy = None
    if args.model:
        # The converter (and torch, seconds to import) only when a float model is compared: kept off
        # `spikeforge --help`.
        from spikeforge.converter.calibrate import InputNormalization  # imports torch
        from spikeforge.converter.convert import float_model_outputs  # imports torch
        from spikeforge.converter.model_files import load_model  # imports torch
        model = load_model(args.model, args.state_dict)
        # The normalisation recorded at conversion is what the model saw; --input-scale overrides it.
        recorded = net.calibration.get("normalization") or {"scale": dataset.input_scale}
        normalization = InputNormalization(
            scale=args.input_scale if args.input_scale is not None else recorded.get("scale", 1.0),
            mean=recorded.get("mean", 0.0), std=recorded.get("std", 1.0))
        # The folded float chain equals the model's own outputs (checked at conversion); it takes the
        # samples in the model's input shape and any batch size an exported program was made for.
        scores, _ = float_model_outputs(model, dataset.samples, normalization=normalization,
                                        input_shape=net.input_shape if len(net.input_shape) == 3 else None)
        float_accuracy = float(np.mean(scores.argmax(1) == dataset.labels))
    report = evaluate(net, dataset, float_accuracy=float_accuracy)
    print(f"network {args.network}")
    print(net.describe())
    print()
    print(format_evaluation(report))
    if args.json:
        write_json(args.json, report)
        print(f"\nwrote {args.json}")
    if report.get("literal_matches_closed_form") is False:
        raise VerificationFailure("the golden closed form and the literal timestep iLIF model disagree: the "
                                  "network's arithmetic is not exact (please report this as a bug)")
    return 0
