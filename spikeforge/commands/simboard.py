"""`spikeforge simboard`: the simulated board (cocotb + Verilator) on a pty, for `spikeforge run --port`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from spikeforge.boards.simboard import SIM_BATCH_DEPTH, SimulatedBoard, board_timing
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
    parser.add_argument("--board", default=None,
                        help="simulate this board's clock and link (icebreaker, ulx3s-85f; default an iCEBreaker: "
                             "12 MHz, 3 Mbaud)")
    parser.add_argument("--clock-mhz", type=float, default=None,
                        help="the design's clock (a PLL's; default the board's oscillator): sets the baud rate")
    parser.add_argument("--baud", type=int, default=None,
                        help="baud rate (default: the fastest the board's USB bridge makes from the clock)")
    parser.add_argument("--batch-depth", type=int, default=SIM_BATCH_DEPTH,
                        help=f"samples the on-chip batch buffer holds (default {SIM_BATCH_DEPTH}; 0: no batch mode)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="stop after this many seconds (default: run until Ctrl-C or SIGTERM)")


def run(args) -> int:
    if args.seconds is not None and not args.seconds > 0:
        raise InputError(f"--seconds {args.seconds:g} must be > 0")
    if not 0 <= args.batch_depth <= 255:
        raise InputError(f"--batch-depth {args.batch_depth} is not in 0..255")
    if args.clock_mhz is not None and not (args.clock_mhz > 0 and args.clock_mhz < 1e6):
        raise InputError(f"--clock-mhz {args.clock_mhz:g} must be a positive number of MHz")
    if args.baud is not None and args.baud < 1:
        raise InputError(f"--baud {args.baud} must be a positive integer")
    clk_freq = args.clock_mhz * 1e6 if args.clock_mhz is not None else None
    board_timing(args.board, clk_freq, args.baud)      # an unknown board or a rate the clock cannot make: now
    net = load(args.network)
    lanes = None
    if args.lanes:
        lanes = parse_lanes(args.lanes)
        resolve_folding(net, lanes)          # an unknown layer or an impossible value, before the build
    print(f"building the simulated board for {args.network} in {args.output}/ (Verilator; reused when unchanged) "
          f"...", flush=True)
    with SimulatedBoard(net, args.output, lanes=lanes, scores=not args.no_scores, network_path=args.network,
                        build_root=args.build_dir, board=args.board, clk_freq=clk_freq, baud=args.baud,
                        batch_depth=args.batch_depth) as board:
        cfg = board.config
        print(f"simulated board on {board.port}: {cfg.in_features} inputs, {cfg.classes} classes, "
              f"T = {cfg.timesteps}, {cfg.clk_freq / 1e6:g} MHz, {cfg.baud} baud"
              + (", scores" if cfg.scores else "") + (f", batch buffer {cfg.batch_depth}" if cfg.batch_depth else "")
              + (f", counters for {cfg.counted_layers} layers" if cfg.counted_layers else "")
              + (f", compact {cfg.code_bits}-bit codes" if cfg.code_bits else ""))
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
