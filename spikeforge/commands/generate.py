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
                             "named one); NAME=LxT for a conv with T tap lanes (conv2=32x3); NAME=L:spram puts the "
                             "layer's membrane banks in single-port RAM (iCE40UP5K SPRAM; the layer runs at half rate)")
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
    parser.add_argument("--multiplier", default="auto", choices=("dsp", "logic", "auto"),
                        help="how lanes (dense lanes and conv adders) scale a weight by 2^(T-1-t): dsp (a multiplier per adder, a DSP where the device has them), logic (a shifter in LUTs, no DSP) or auto (dsp; the default)")
    parser.add_argument("--axis", action="store_true",
                        help="an AXI4-Stream top for a Vivado/Quartus block design: aclk, aresetn (active low), "
                             "s_axis_tdata[7:0]/tvalid/tready/tlast in, m_axis_tdata/tvalid/tready/tlast out "
                             "(label, then each score sign-extended to whole bytes; layout in design.json)")
    parser.add_argument("--name", default=None,
                        help="Verilog module name (default spikeforge_top, with --axis spikeforge_axis)")


def run(args) -> int:
    # The flow imports torch (the converter) and amaranth (the generator): imported here so
    # `spikeforge --help` stays fast.
    from spikeforge.flow import FlowConfig, FlowState, run_step

    config = FlowConfig(network_dir=str(args.network), rtl_dir=str(args.output),
                        lanes=args.lanes or None, target_cycles=args.target_cycles,
                        lanes_budget=args.lanes_budget, spikes_from=args.spikes_from,
                        membrane_banks=args.membrane_banks, interface="axis" if args.axis else "stream",
                        multiplier=args.multiplier,
                        module_name=args.name or ("spikeforge_axis" if args.axis else "spikeforge_top"))
    report = run_step("generate", FlowState(), config)
    print("\n".join(report.lines()))
    return 0
