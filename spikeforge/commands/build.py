"""`spikeforge build`: a network (dense, conv, pooled) -> bitstream for an FPGA board, with a resource / Fmax /
throughput report, clocked from the device PLL at the fastest frequency that meets timing (or --clock MHZ);
a design that does not fit is refused naming the layer's memory (or the resource) that
overflows and by how much."""

import argparse
import json
import math
from pathlib import Path

from spikeforge.ir.errors import InputError

#: nextpnr's routers, as :data:`spikeforge.boards.build.ROUTERS` (not imported: ``--help`` stays fast).
ROUTERS = ("router1", "router2")

NAME = "build"
HELP = "build a bitstream for a board (icebreaker, ulx3s-85f, any amaranth-boards platform) with a report"


def add_arguments(parser):
    parser.add_argument("network", type=Path, help="network directory (written by `spikeforge convert`)")
    parser.add_argument("--board", required=True,
                        help="icebreaker, ulx3s-85f, or any amaranth-boards platform class name")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="output directory (bitstream, report.json, build/)")
    parser.add_argument("--baud", type=int, help="UART baud rate (default: the fastest the board's USB bridge carries "
                                                 "at the design's clock, e.g. 3000000 on icebreaker at 12 MHz and on "
                                                 "ulx3s-85f from 46 MHz, else 115200)")
    parser.add_argument("--lanes", metavar="NAME=N,...",
                        help="lanes per layer, NAME=LxT for a conv with T tap lanes (conv2=32x3), NAME=L:spram for "
                             "a layer whose membrane banks go to the iCE40UP5K's SPRAM (half rate) (default on iCE40: "
                             "as many lanes as DSPs for a dense network, in one membrane bank, 1 each for a CNN; "
                             "automatic elsewhere)")
    parser.add_argument("--lanes-budget", type=int, metavar="N", help="choose lanes automatically within N in total")
    parser.add_argument("--no-scores", action="store_true", help="answer with the label only")
    parser.add_argument("--no-patchable", action="store_true",
                        help="iCE40: synthesise the real weights (the bitstream cannot be patched later)")
    parser.add_argument("--clock", type=float, metavar="MHZ",
                        help="run at this clock (the nearest PLL output, or the board oscillator's own frequency) "
                             "instead of searching for the fastest clock that meets timing (default: search)")
    parser.add_argument("--membrane-banks", type=int, choices=(1, 2), default=None,
                        help="membrane banks per layer: 2 (ping-pong) or 1 (compact: far fewer LUTs for wide layers; "
                             "the fire sweep follows the accumulate phase) (default: 2, falling back to 1 when 2 do "
                             "not fit)")
    parser.add_argument("--multiplier", default="auto", choices=("dsp", "logic", "auto"),
                        help="how lanes (dense lanes and conv adders) scale a weight by 2^(T-1-t): dsp (a multiplier per adder, a DSP where the device has them), logic (a shifter in LUTs, no DSP) or auto (logic once the device's DSPs run out; the default)")
    parser.add_argument("--batch-depth", type=int, metavar="N",
                        help="samples the on-chip batch buffer holds, for `spikeforge run --batch` (default: as many as "
                             "the block RAM the accelerator leaves holds, at most 64; 0: no batch buffer); a depth "
                             "that does not fit is refused")
    parser.add_argument("--layer-counters", action=argparse.BooleanOptionalAction, default=None,
                        help="per-layer performance counters (busy, stalled, starved cycles of each layer; printed by "
                             "`spikeforge run`) (default: yes, except on iCE40, where they cost about a third more "
                             "LUTs on the digits MLP)")
    parser.add_argument("--router", choices=ROUTERS,
                        help="nextpnr's router (default: nextpnr's own, router1); router2 copes better with congested "
                             "designs, such as a 28x28 CNN that fills most of the ECP5-85F's block RAM")
    parser.add_argument("--seed", type=int, default=1,
                        help="nextpnr's placement seed (default 1; report.json: seed): another seed places the same "
                             "netlist differently, worth a try when routing does not converge; on iCE40 it also seeds "
                             "the placeholder weights patch-weights replaces")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")


def run(args) -> int:
    # The flow imports torch (the converter) and amaranth (the generator): imported here so
    # `spikeforge --help` stays fast.
    from spikeforge.flow import FlowConfig, FlowState, run_step

    if args.baud is not None and args.baud < 1:
        raise InputError(f"--baud: baud rate {args.baud} is not a positive integer (leave it out for the board's "
                         f"default)")
    if args.clock is not None and not (math.isfinite(args.clock) and args.clock > 0):
        raise InputError(f"--clock {args.clock} MHz must be a finite frequency > 0 (leave it out to search for the "
                         f"fastest clock that meets timing)")
    config = FlowConfig(network_dir=str(args.network), board=args.board, board_dir=str(args.output),
                        baud=args.baud, lanes=args.lanes or None,
                        lanes_budget=args.lanes_budget, scores=not args.no_scores, patchable=not args.no_patchable,
                        build_seed=args.seed, multiplier=args.multiplier, membrane_banks=args.membrane_banks, build_clock_mhz=args.clock,
                        batch_depth=args.batch_depth, layer_counters=args.layer_counters, router=args.router)
    report = run_step("build", FlowState(), config)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        print(f"wrote {args.output}/report.json")
    else:
        print("\n".join(report.lines()))
    return 0
