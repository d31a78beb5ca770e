"""`spikeforge patch-weights`: another network's weights into an iCE40 bitstream, without place and route."""

import time
from pathlib import Path

from spikeforge.boards.host import PATCHED_BITSTREAM_FORMAT
from spikeforge.boards.patch import patch_weights
from spikeforge.ir.atomic import write_json
from spikeforge.ir.fingerprint import identity
from spikeforge.ir.network import load

NAME = "patch-weights"
HELP = "put a same-shape network's weights into an iCE40 bitstream from `spikeforge build` (icebram, no P&R)"


def add_arguments(parser):
    parser.add_argument("bitstream", type=Path, help="top.bin written by `spikeforge build` (its directory is used)")
    parser.add_argument("network", type=Path, help="network directory with the new weights")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the patched bitstream to write")


def run(args) -> int:
    start = time.monotonic()
    net = load(args.network)
    result = patch_weights(args.bitstream, net, args.output, new_network_path=args.network)
    # The patched bitstream runs another network than its build's report.json names: record which, beside
    # it, so that `spikeforge run --network NET --build PATCHED.bin` can check it.
    record = write_json(Path(f"{args.output}.json"), {
        "format": PATCHED_BITSTREAM_FORMAT, "version": 1, "bitstream": Path(args.output).name,
        "patched_from": str(args.bitstream), "board": result["board"],
        "network": {**identity(net), "path": str(args.network)}})
    print(f"patched weight ROMs of {', '.join(p.split('/')[-1].split('.')[0] for p in result['layers'])} "
          f"for {result['board']} in {time.monotonic() - start:.1f} s: wrote {result['bitstream']} "
          f"({result['bytes']} bytes) and {record.name} (the network it now runs)")
    return 0
