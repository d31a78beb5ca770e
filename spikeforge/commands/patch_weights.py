"""`spikeforge patch-weights`: another network's weights into an iCE40 bitstream, without place and route."""

import time
from pathlib import Path

from spikeforge.boards.patch import patch_weights
from spikeforge.ir.network import load

NAME = "patch-weights"
HELP = "put a same-shape network's weights into an iCE40 bitstream from `spikeforge build` (icebram, no P&R)"


def add_arguments(parser):
    parser.add_argument("bitstream", type=Path, help="top.bin written by `spikeforge build` (its directory is used)")
    parser.add_argument("network", type=Path, help="network directory with the new weights")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the patched bitstream to write")


def run(args) -> int:
    start = time.monotonic()
    result = patch_weights(args.bitstream, load(args.network), args.output, new_network_path=args.network)
    print(f"patched weight ROMs of {', '.join(p.split('/')[-1].split('.')[0] for p in result['layers'])} "
          f"for {result['board']} in {time.monotonic() - start:.1f} s: wrote {result['bitstream']} "
          f"({result['bytes']} bytes)")
    return 0
