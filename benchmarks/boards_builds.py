"""Board builds: resources, Fmax and samples/s for the digits and Fashion-MNIST networks.

    .venv/bin/python -m benchmarks.boards_builds                    # all
    .venv/bin/python -m benchmarks.boards_builds --only icebreaker-digits

Writes ``build/bench/boards_builds.json`` and prints a table. Each entry builds a real
bitstream (minutes each on a 2-core machine); a design that does not fit is recorded with the fit
check's message. The Fashion-MNIST entry uses a random 784-128-10 network of the same shape and
widths class as a converted one (resources and timing do not depend on the weight values beyond
their widths) unless ``--fashion-net DIR`` names a converted network.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from spikeforge.ir.atomic import write_json

RESULTS = Path("build/bench/boards_builds.json")


def _networks(fashion_net):
    from spikeforge.ir.network import load
    from spikeforge.ir.random_network import random_network
    from spikeforge.demo import demo_network
    fashion = load(fashion_net) if fashion_net else random_network(7, sizes=(784, 128, 10), timesteps=8)
    return {"digits": demo_network, "fashion-mnist": lambda: fashion}


CASES = {
    "icebreaker-digits": ("icebreaker", "digits"),
    "ulx3s-85f-digits": ("ulx3s-85f", "digits"),
    "ulx3s-85f-fashion-mnist": ("ulx3s-85f", "fashion-mnist"),
}


def main(argv=None):
    from spikeforge.boards.build import BuildOptions, FitError, build, format_report
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(CASES), action="append")
    parser.add_argument("--fashion-net", type=Path)
    parser.add_argument("--work", type=Path, default=Path("build/bench_boards"))
    args = parser.parse_args(argv)
    networks = _networks(args.fashion_net)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    for name in args.only or CASES:
        board, network = CASES[name]
        print(f"== {name}", flush=True)
        start = time.monotonic()
        try:
            report = build(networks[network](), board, args.work / name, options=BuildOptions())
            print(format_report(report))
            results[name] = {k: report[k] for k in ("board", "device", "folding", "synthesis", "place_and_route",
                                                   "fmax_mhz", "timing_met", "clock_mhz", "samples_per_second",
                                                   "prediction", "bitstream_bytes", "seconds")}
        except FitError as error:
            print(f"does not fit: {error}")
            results[name] = {"board": board, "fits": False, "message": str(error),
                             "seconds": round(time.monotonic() - start, 1)}
        results[name]["command"] = f"python -m benchmarks.boards_builds --only {name}"
        write_json(RESULTS, results)
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
