"""`spikeforge simboard`: the simulated board (cocotb + Verilator) on a pty, for `spikeforge run --port`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from spikeforge.boards.simboard import SimulatedBoard
from spikeforge.hdl.folding import parse_lanes, resolve_folding
from spikeforge.ir.errors import InputError
from spikeforge.ir.network import load

NAME = "simboard"
HELP = ("start the simulated board (the board design, UART and all, under cocotb + Verilator) on a pseudo-terminal "
        "and print the port to pass to `spikeforge run --port`")


def add_arguments(parser):
    parser.add_argument("network", type=Path, help="network directory (written by `spikeforge convert`)")
    parser.add_argument("-o", "--output", type=Path, default=Path("build/simboard"),
                        help="work folder: Verilog, the Verilator build (reused) and report.json, the record "
                             "`spikeforge run --build` checks (default build/simboard)")
    parser.add_argument("--lanes", metavar="NAME=N,...", help="lanes per layer (default: automatic)")
    parser.add_argument("--no-scores", action="store_true", help="answer with the label only")
    parser.add_argument("--build-dir", type=Path, default=None,
                        help="where Verilator builds go, one folder per design (default <output>/sim_build)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="stop after this many seconds (default: run until Ctrl-C or SIGTERM)")


def run(args) -> int:
    if args.seconds is not None and not args.seconds > 0:
        raise InputError(f"--seconds {args.seconds:g} must be > 0")
    net = load(args.network)
    lanes = None
    if args.lanes:
        lanes = parse_lanes(args.lanes)
        resolve_folding(net, lanes)          # an unknown layer or an impossible value, before the build
    print(f"building the simulated board for {args.network} in {args.output}/ (Verilator; reused when unchanged) "
          f"...", flush=True)
    with SimulatedBoard(net, args.output, lanes=lanes, scores=not args.no_scores,
                        network_path=args.network, build_root=args.build_dir) as board:
        cfg = board.config
        print(f"simulated board on {board.port}: {cfg.in_features} inputs, {cfg.classes} classes, "
              f"T = {cfg.timesteps}" + (", scores" if cfg.scores else ""))
        print(f"  spikeforge run --port {board.port} --network {args.network} --build {args.output}")
        print("Ctrl-C stops it." if args.seconds is None else f"stopping in {args.seconds:g} s.", flush=True)
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        try:
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.2)
        except KeyboardInterrupt:           # Ctrl-C, or SIGTERM (the CLI turns it into this): a normal stop
            pass
    print("simulated board stopped", file=sys.stderr)
    return 0
