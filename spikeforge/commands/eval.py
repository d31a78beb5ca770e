"""`spikeforge eval`: accuracy of an integer network (golden model) beside the float ANN."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spikeforge.datasets import load as load_dataset
from spikeforge.evaluate import evaluate, format_evaluation
from spikeforge.ir.atomic import write_json
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
    net = load(args.network)
    dataset = load_dataset(args.dataset, args.split).head(args.samples)
    float_accuracy = None
    if args.model:
        # torch (seconds to import) only when a float model is compared: kept off `spikeforge --help`.
        import torch

        from spikeforge.converter.model_files import load_model  # imports torch
        model = load_model(args.model, args.state_dict)
        scale = args.input_scale if args.input_scale is not None else dataset.input_scale
        with torch.no_grad():
            scores = model(torch.tensor(dataset.samples.astype(np.float32) / np.float32(scale)))
        float_accuracy = float(np.mean(scores.argmax(1).numpy() == dataset.labels))
    report = evaluate(net, dataset, float_accuracy=float_accuracy)
    print(f"network {args.network}")
    print(net.describe())
    print()
    print(format_evaluation(report))
    if args.json:
        write_json(args.json, report)
        print(f"\nwrote {args.json}")
    return 0
