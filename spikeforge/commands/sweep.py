"""`spikeforge sweep SPEC.toml`: a design-space sweep on Dask (convert, golden, generate, cycle model, RTL, build)."""

from __future__ import annotations

from pathlib import Path

NAME = "sweep"
HELP = ("sweep a design space (T, weight bits, clip, folding, membrane banks, board) on Dask: accuracy, cycles, "
        "RTL regression and bitstreams per point, cached; sweep.csv/json and a Pareto plot")


def add_arguments(parser):
    parser.add_argument("spec", type=Path, help="the sweep spec (TOML: model or network, dataset, [axes])")
    parser.add_argument("-o", "--output", type=Path,
                        help="the sweep's folder (default: the spec's output, else build/sweep/<spec name>)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                       help="run on an existing Dask cluster (`dask scheduler`, plus `dask worker tcp://HOST:PORT` "
                            "on each machine with spikeforge installed); default: an embedded local cluster")
    where.add_argument("--workers", type=int, metavar="N",
                       help="worker processes of the embedded local cluster (default: one per core)")


def run(args) -> int:
    # The sweep imports torch (the converter), amaranth and dask: imported here so `spikeforge --help` stays fast.
    from spikeforge.sweep import best_table, load_spec, run_sweep

    spec = load_spec(args.spec)
    sweep = run_sweep(spec, output=args.output, scheduler=args.scheduler, workers=args.workers)
    finished = [r for r in sweep.results if r is not None]
    print(f"\n{len(finished)} points in {sweep.seconds:.1f} s ({sweep.cached} cached, {sweep.ran} run, "
          f"{len(sweep.failed)} failed, {len(sweep.mismatched)} RTL mismatches)")
    for result in sweep.failed:
        print(f"  FAILED {result['label']}: {result['failed_step']}: {(result.get('error') or '').strip()[:300]}")
    for result in sweep.mismatched:
        print(f"  RTL MISMATCH {result['label']}: {result['rtl'].get('mismatches')} mismatches "
              f"(see {sweep.output / 'points' / result['key']})")
    if sweep.front:
        print("\nPareto front (golden accuracy vs µs/sample" + (", LUTs" if all(
            (r.get("build") or {}).get("luts") is not None for r in sweep.front) else "") + "):")
        print(best_table(sweep))
    print("\nwrote " + ", ".join(str(path) for path in sweep.files.values()))
    return 1 if sweep.mismatched else 0
