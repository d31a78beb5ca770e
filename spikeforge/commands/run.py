"""`spikeforge run`: classify a dataset on a board (or the simulated board) over its serial port."""

import dataclasses
import sys
from pathlib import Path

import numpy as np

from spikeforge import datasets
from spikeforge.boards.host import BoardClient, RunStats, board_record, check_board_shape
from spikeforge.ir import golden as golden_model
from spikeforge.ir.atomic import write_json
from spikeforge.ir.errors import InputError
from spikeforge.ir.fingerprint import check_identity
from spikeforge.ir.network import load
from spikeforge.progress import bar

NAME = "run"
HELP = "classify samples on a board over its serial port; print per-sample results, accuracy, throughput"


def add_arguments(parser):
    parser.add_argument("--port", required=True, help="serial port of the board (/dev/ttyUSB1, a simulated board's pty)")
    parser.add_argument("--dataset", default="digits", help="digits, fashion-mnist or an IDX directory (test split)")
    parser.add_argument("--samples", type=int, help="classify the first N test samples (default: all)")
    parser.add_argument("--baud", type=int,
                        help="baud rate (default: the one in --build's record, else try the boards' defaults "
                             "-- 3,000,000, 6,000,000, 12,000,000, ... -- until the board answers)")
    parser.add_argument("--batch", type=int, default=0, metavar="N",
                        help="upload N samples at a time into the board's on-chip buffer and run them back-to-back "
                             "(split into the board's buffer size when larger; default 0: stream one by one)")
    parser.add_argument("--compact", action="store_true",
                        help="send each pixel's T-bit spike code, packed 8//T a byte (boards with T <= 4)")
    parser.add_argument("--network", type=Path,
                        help="the network on the board: also check every label and score against the golden model")
    parser.add_argument("--build", type=Path, metavar="PATH",
                        help="what the board was made from: the folder of `spikeforge build` or `spikeforge "
                             "simboard`, or the bitstream loaded (a patched one too); with --network, a board "
                             "made from another network is refused before any sample is sent")
    parser.add_argument("--window", type=int, default=2, help="samples in flight (default 2)")
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for an answer (default 1)")
    parser.add_argument("--quiet", action="store_true", help="no per-sample lines")
    parser.add_argument("--json", type=Path, help="also write the results here")


def run(args) -> int:
    if args.timeout <= 0 or args.timeout != args.timeout:
        raise InputError(f"--timeout {args.timeout:g} must be > 0 seconds")
    if args.baud is not None and args.baud < 1:
        raise InputError(f"--baud {args.baud} must be a positive integer")
    if args.build is not None and args.network is None:
        raise InputError("--build goes with --network (the board's record is checked against that network)")
    if args.batch < 0:
        raise InputError(f"--batch {args.batch} must be >= 0 (0: stream the samples one by one)")
    data = datasets.load(args.dataset, "test").head(args.samples)
    golden = None
    identified = False
    if args.network is not None:
        net = load(args.network)
        if args.build is not None:
            record, where = board_record(args.build)
            if args.baud is None and isinstance(record.get("baud"), int):
                args.baud = record["baud"]          # the rate the board was built for: no search
            check_identity(record.get("network"), net, what="the board", where=where, network_path=args.network,
                           remedy="load the bitstream built from that network, or rebuild it with `spikeforge build`")
            identified = True
        golden = golden_model.run(net, data.samples.reshape(len(data), -1))     # the bytes the board is sent
    stats = RunStats()
    lines = []
    with BoardClient(args.port, args.baud, answer_timeout=args.timeout, window=args.window) as client:
        cfg = client.config
        print(f"board on {args.port}: {cfg.in_features} inputs, {cfg.classes} classes, T = {cfg.timesteps}, "
              f"{cfg.clk_freq / 1e6:g} MHz, {cfg.baud} baud" + (", scores" if cfg.scores else "")
              + (f", batch buffer {cfg.batch_depth}" if cfg.batch_depth else "")
              + (f", compact {cfg.code_bits}-bit codes" if cfg.code_bits else "")
              + (f", counters for {cfg.counted_layers} layers" if cfg.counted_layers else ""))
        if args.network is not None:
            check_board_shape(cfg, net, args.port, args.network)
            if not identified:
                print(f"note: the board's sizes match {args.network}, but a board cannot say over the link which "
                      f"weights it holds: pass --build (its build folder or bitstream) to check it was made from "
                      f"{args.network}")
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

        results = client.classify(samples, on_result=on_result, stats=stats, compact=args.compact, batch=args.batch)
        progress.close()
    labels = np.array([r.label for r in results])
    accuracy = float((labels == data.labels).mean())
    print(f"accuracy {accuracy:.2%} ({int((labels == data.labels).sum())}/{len(labels)}), "
          f"{stats.samples_per_second:,.1f} samples/s measured at the host ({stats.seconds:.2f} s), "
          f"{stats.resent} resent" + (f" {stats.errors}" if stats.errors else ""))
    board_rate = stats.board_samples_per_second
    if board_rate is not None:
        counters = stats.counters
        print(f"{board_rate:,.1f} samples/s measured by the board ({stats.board_cycles_per_sample:,.1f} cycles/sample "
              f"at {cfg.clk_freq / 1e6:g} MHz, {'back-to-back batches' if args.batch else 'as the link feeds it'}; "
              f"latency {stats.board_latency_cycles} cycles; busy {sum(c.busy for c in counters)}, input stall "
              f"{sum(c.input_stall for c in counters)}, output stall {sum(c.output_stall for c in counters)} cycles)")
    elif cfg.version < 2:
        print("the board has no performance counters (link version 1): samples/s measured at the host only")
    layers = layer_rows(stats, net if args.network is not None else None)
    if layers:
        print("per layer, board cycles per sample (busy + stalled + starved = the busy cycles above):")
        table = [["layer", "busy", "stalled", "starved", "busy %"]] + [
            [row["name"], f"{row['busy_per_sample']:,.1f}", f"{row['stalled_per_sample']:,.1f}",
             f"{row['starved_per_sample']:,.1f}", f"{100 * row['busy_share']:.1f}"] for row in layers]
        widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
        for line in table:
            print("  " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                                   for i, (cell, w) in enumerate(zip(line, widths))))
    if stats.answer_timeout is not None:
        print(f"the board answered slower than --timeout {args.timeout:g} s: waited up to {stats.answer_timeout:g} s "
              f"for an answer")
    status = 0
    if golden is not None:
        mismatches = sum(1 for i, r in enumerate(results)
                         if r.label != golden.labels[i]
                         or (cfg.scores and tuple(r.scores) != tuple(int(v) for v in golden.scores[i])))
        print(f"golden model: {len(labels) - mismatches}/{len(labels)} agree"
              + ("" if identified else " (the board's network not identified: no --build)"))
        status = 1 if mismatches else 0
    if args.json:
        write_json(args.json, ({
            "labels": labels.tolist(), "true": data.labels.tolist(), "accuracy": accuracy,
            "samples_per_second": stats.samples_per_second, "resent": stats.resent, "errors": stats.errors,
            "board_samples_per_second": board_rate, "board_cycles_per_sample": stats.board_cycles_per_sample,
            "board_counters": [dataclasses.asdict(c) for c in stats.counters], "bytes_sent": stats.bytes_sent,
            "board_layers": layers,
            "batch": args.batch, "compact": args.compact, "baud": cfg.baud, "clock_hz": cfg.clk_freq,
            "board_identified": identified if args.network is not None else None,
        }))
    return status


def layer_rows(stats: RunStats, net=None) -> list:
    """The board's per-layer counters (summed over its readings) as rows: name (the network's layer names when
    ``net`` has as many folded layers as the board counts, else ``layer N``), the cycles, the cycles per sample
    and the busy share of the top-level busy cycles."""
    layers = stats.board_layers
    if not layers:
        return []
    names = [layer.name for layer in net.layers if layer.kind != "maxpool2d"] if net is not None else []
    if len(names) != len(layers):
        names = [f"layer {i}" for i in range(len(layers))]
    samples = max(1, sum(c.samples for c in stats.counters))
    rows = []
    for name, counted in zip(names, layers):
        total = counted.busy + counted.stalled + counted.starved
        rows.append({"name": name, **dataclasses.asdict(counted),
                     **{f"{key}_per_sample": value / samples for key, value in dataclasses.asdict(counted).items()},
                     "busy_share": counted.busy / total if total else 0.0})
    return rows
