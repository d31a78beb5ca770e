"""`spikeforge report`: a report for people on one integer network (Markdown + PNG plots + JSON)."""

from __future__ import annotations

import json
from pathlib import Path

from spikeforge.boards.build import REPORT_FORMAT as BOARD_FORMAT
from spikeforge.datasets import load as load_dataset
from spikeforge.hdl.generate import DESIGN_FORMAT
from spikeforge.hdl.folding import parse_lanes, resolve_folding
from spikeforge.ir.errors import InputError
from spikeforge.ir.fingerprint import check_identity
from spikeforge.ir.network import MAX_TIMESTEPS, load
from spikeforge.reporting import REPORT_TIMESTEPS, network_report, write_network_report

NAME = "report"
HELP = ("render a report for an integer network: spike density per layer and timestep, accuracy vs. T "
        "(with --dataset), cycles per layer (hardware cycle model) and resource use (with a generated design)")


def add_arguments(parser):
    parser.add_argument("network", type=Path, help="network directory (written by `spikeforge convert`)")
    parser.add_argument("--dataset", default=None,
                        help="dataset for accuracy vs. T and spike statistics: digits, fashion-mnist or an "
                             "MNIST-format IDX directory (default: none; random bytes drive the spike statistics)")
    parser.add_argument("--split", choices=["test", "train"], default="test")
    parser.add_argument("--samples", type=int, default=1000, help="samples to use (default 1000; 0 = all)")
    parser.add_argument("--timesteps", default=None, metavar="T,T,...",
                        help="timesteps of the accuracy sweep (default 1,2,3,4,5,6,8,10,12,16)")
    parser.add_argument("--design", type=Path, default=None,
                        help="a `spikeforge generate` output folder: its folding drives the cycle model and its "
                             "design.json / board report.json are summarised (default: look in the network folder)")
    parser.add_argument("--lanes", metavar="NAME=N,...", default=None,
                        help="folding for the cycle model, e.g. fc1=8,fc2=4 (default: the design's, else automatic)")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="folder for REPORT.md, report.json and the plots (default: NETWORK/report)")


#: Without a dataset, random stimuli drive the spike statistics: at most this many (memory stays small).
MAX_RANDOM_SAMPLES = 100_000


def _parse_timesteps(text: str) -> tuple:
    values = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if not item.isdigit() or not 1 <= int(item) <= MAX_TIMESTEPS:
            raise InputError(f"--timesteps entry {item!r} is not an integer in 1..{MAX_TIMESTEPS}")
        values.append(int(item))
    if not values:
        raise InputError("--timesteps names no timesteps")
    return tuple(sorted(set(values)))


def _check_design(design_dir: Path, net, network_path: Path) -> None:
    """Refuse a ``--design`` folder whose design.json / board report.json is of another network.

    The folder's cycle figures and resources would be reported as this network's otherwise. The same
    files as :func:`spikeforge.reporting.network_report` reads are checked.
    """
    candidates = [design_dir / "design.json", design_dir / "rtl" / "design.json", design_dir / "report.json",
                  design_dir / "board" / "report.json"]
    checked = 0
    for path in candidates:
        if not path.is_file():
            continue
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise InputError(f"--design: {path} is not readable JSON ({error})") from None
        kind = info.get("format") if isinstance(info, dict) else None
        if kind not in (DESIGN_FORMAT, BOARD_FORMAT):
            continue                     # another tool's report.json (a network report, say): not a design
        build = kind == BOARD_FORMAT
        check_identity(info.get("network"), net, what="the board build" if build else "the design",
                       where=path, network_path=network_path,
                       remedy="rebuild it with `spikeforge build`" if build
                       else "regenerate it with `spikeforge generate`")
        checked += 1
    if not checked:
        raise InputError(f"--design {design_dir} holds no design.json or board report.json (looked for "
                         f"{', '.join(str(p.relative_to(design_dir)) for p in candidates)}): give a folder "
                         f"written by `spikeforge generate` or `spikeforge build`")


def run(args) -> int:
    net = load(args.network)
    if args.design is not None:
        _check_design(args.design, net, args.network)
    if args.samples is not None and args.samples < 0:
        raise InputError(f"--samples {args.samples} must be >= 0 (0 = all)")
    if not args.dataset and (args.samples or 0) > MAX_RANDOM_SAMPLES:
        raise InputError(f"--samples {args.samples}: without --dataset at most {MAX_RANDOM_SAMPLES:,} random "
                         f"stimuli drive the spike statistics")
    data = None
    if args.dataset:
        data = load_dataset(args.dataset, args.split)
    lanes = None
    if args.lanes is not None:
        lanes = parse_lanes(args.lanes)
        # Checked here: the cycle model's failures are reported as "not available", which would hide
        # a misspelt layer or an impossible lanes value.
        resolve_folding(net, lanes)
    timesteps = _parse_timesteps(args.timesteps) if args.timesteps is not None else REPORT_TIMESTEPS
    report = network_report(net, dataset=data, samples=args.samples or None, network_dir=args.network,
                            design_dir=args.design, timesteps=timesteps, lanes=lanes)
    out_dir = args.output or args.network / "report"
    written = write_network_report(report, out_dir)
    print(net.describe())
    print()
    spikes = ", ".join(f"{name} {value:.1f}" for name, value in report["spikes"]["spikes_per_sample"].items())
    print(f"spikes per sample ({report['stimulus']}): {spikes}")
    print(f"spike-driven additions per sample: {report['spikes']['additions_per_sample']:.0f}")
    if "accuracy" in report:
        acc = report["accuracy"]
        print(f"accuracy on {acc['dataset']} ({acc['samples']} samples): {100 * acc['accuracy']:.2f} % at "
              f"T = {net.timesteps}; vs. T: " + ", ".join(f"{p['timesteps']}: {100 * p['accuracy']:.1f} %"
                                                          for p in acc["points"]))
    cycles = report["cycles"]
    if cycles.get("available"):
        print(f"cycle model: {cycles['cycles_per_sample']:.0f} cycles/sample, latency {cycles['latency']:.0f} "
              f"cycles (one sample alone, first pixel to result), adder utilisation "
              f"{100 * cycles['adder_utilisation']:.0f} %")
    else:
        print(f"cycles: not available ({cycles.get('why')})")
    print(f"wrote {written['markdown']}, {written['json'].name} and "
          f"{len(written) - 2} plot{'s' if len(written) != 3 else ''} in {out_dir}/")
    return 0
