"""`spikeforge generate`: an integer network directory -> Verilog, ROM images and design.json."""

from __future__ import annotations

from pathlib import Path

NAME = "generate"
HELP = "generate the pipelined iLIF accelerator (Amaranth -> Verilog, rom/*.hex, design.json) for a network"


def add_arguments(parser):
    parser.add_argument("network", type=Path, help="network directory (written by `spikeforge convert`)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="design directory to write")
    parser.add_argument("--lanes", metavar="NAME=N,...",
                        help="lanes per layer, e.g. fc1=8,fc2=4 (layers left out are balanced to the slowest "
                             "named one)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--target-cycles", type=int, metavar="N",
                       help="choose lanes automatically: the fewest that keep every layer within N cycles/sample")
    group.add_argument("--lanes-budget", type=int, metavar="N",
                       help="choose lanes automatically: balance the layers within N lanes in total")
    parser.add_argument("--spikes-from", metavar="DATA",
                        help="measure spike counts on this dataset's test split (digits, fashion-mnist or an "
                             "IDX directory) for balancing and the prediction (default: estimate T/2 ones per code)")
    parser.add_argument("--membrane-banks", type=int, choices=(1, 2), default=2,
                        help="membrane banks per layer: 2 (ping-pong, default: accumulate sample n+1 while firing "
                             "sample n) or 1 (compact: less memory, the fire sweep follows the accumulate phase)")
    parser.add_argument("--name", default="spikeforge_top", help="Verilog module name (default spikeforge_top)")


def run(args) -> int:
    from spikeforge.ir.network import load
    from ..hdl.folding import parse_lanes
    from ..hdl.generate import generate, summary

    net = load(args.network)
    lanes = parse_lanes(args.lanes) if args.lanes else None
    spikes_in = None
    if args.spikes_from:
        from .. import datasets
        from spikeforge.ir import golden
        data = datasets.load(args.spikes_from, "test")
        result = golden.run(net, data.samples[:512])
        spikes_in = [float(s.mean()) for s in result.input_spikes()]
    design = generate(args.network, args.output, lanes=lanes, target_cycles=args.target_cycles,
                      lanes_budget=args.lanes_budget, name=args.name, spikes_in=spikes_in,
                      membrane_banks=args.membrane_banks)
    print(summary(design))
    print(f"wrote {args.output}/ ({design['verilog']}, rom/*.hex, design.json)")
    return 0
