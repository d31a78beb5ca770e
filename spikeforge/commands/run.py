"""`spikeforge run`: classify a dataset on a board (or the simulated board) over its serial port."""

import json
import sys
from pathlib import Path

import numpy as np

from spikeforge import datasets
from spikeforge.boards.host import BoardClient, RunStats
from spikeforge.ir import golden as golden_model
from spikeforge.ir.errors import InputError
from spikeforge.ir.network import load
from spikeforge.progress import bar

NAME = "run"
HELP = "classify samples on a board over its serial port; print per-sample results, accuracy, throughput"


def add_arguments(parser):
    parser.add_argument("--port", required=True, help="serial port of the board (/dev/ttyUSB1, a simulated board's pty)")
    parser.add_argument("--dataset", default="digits", help="digits, fashion-mnist or an IDX directory (test split)")
    parser.add_argument("--samples", type=int, help="classify the first N test samples (default: all)")
    parser.add_argument("--baud", type=int, help="baud rate (default: try the usual ones until the board answers)")
    parser.add_argument("--network", type=Path,
                        help="the network on the board: also check every label and score against the golden model")
    parser.add_argument("--window", type=int, default=2, help="samples in flight (default 2)")
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for an answer (default 1)")
    parser.add_argument("--quiet", action="store_true", help="no per-sample lines")
    parser.add_argument("--json", type=Path, help="also write the results here")


def run(args) -> int:
    data = datasets.load(args.dataset, "test").head(args.samples)
    golden = None
    if args.network is not None:
        golden = golden_model.run(load(args.network), data.samples)
    stats = RunStats()
    lines = []
    with BoardClient(args.port, args.baud, answer_timeout=args.timeout, window=args.window) as client:
        cfg = client.config
        print(f"board on {args.port}: {cfg.in_features} inputs, {cfg.classes} classes, T = {cfg.timesteps}, "
              f"{cfg.clk_freq / 1e6:g} MHz, {cfg.baud} baud" + (", scores" if cfg.scores else ""))
        samples = data.samples.reshape(len(data), -1)
        if samples.shape[1] != cfg.in_features:
            raise InputError(f"{args.dataset} samples have {samples.shape[1]} bytes; the board takes "
                             f"{cfg.in_features}: is the right bitstream loaded?")
        progress = bar(len(samples), "classifying", unit="sample")

        def on_result(index, result):
            truth = int(data.labels[index])
            mark = "ok" if result.label == truth else "x"
            text = f"{index:5d}  label {result.label:3d}  true {truth:3d}  {mark}"
            if golden is not None:
                agree = result.label == golden.labels[index] and (
                    not cfg.scores or tuple(golden.scores[index]) == tuple(result.scores))
                text += "  golden " + ("=" if agree else f"MISMATCH ({golden.labels[index]})")
            lines.append(text)
            if not args.quiet:
                progress.write(text, file=sys.stdout) if not progress.disable else print(text)
            progress.update(1)

        results = client.classify(samples, on_result=on_result, stats=stats)
        progress.close()
    labels = np.array([r.label for r in results])
    accuracy = float((labels == data.labels).mean())
    print(f"accuracy {accuracy:.2%} ({int((labels == data.labels).sum())}/{len(labels)}), "
          f"{stats.samples_per_second:,.1f} samples/s measured at the host ({stats.seconds:.2f} s), "
          f"{stats.resent} resent" + (f" {stats.errors}" if stats.errors else ""))
    status = 0
    if golden is not None:
        mismatches = sum(1 for i, r in enumerate(results)
                         if r.label != golden.labels[i]
                         or (cfg.scores and tuple(r.scores) != tuple(int(v) for v in golden.scores[i])))
        print(f"golden model: {len(labels) - mismatches}/{len(labels)} agree")
        status = 1 if mismatches else 0
    if args.json:
        args.json.write_text(json.dumps({
            "labels": labels.tolist(), "true": data.labels.tolist(), "accuracy": accuracy,
            "samples_per_second": stats.samples_per_second, "resent": stats.resent, "errors": stats.errors,
        }, indent=2) + "\n")
    return status
