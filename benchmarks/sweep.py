"""Design-space sweeps on Dask: the same sweep on a 1-worker and a 2-worker LocalCluster, same run.

    python -m benchmarks.sweep [--quick] [-o build/bench]
    python -m benchmarks --only sweep

The sweep (:mod:`spikeforge.sweep`): the shipped digits MLP, T ∈ {2, 4, 6, 8} × lanes budget ∈
{8, 16, 32, 64} = 16 points (``--quick``: 2 × 2), each point converted, graded by the golden model on
the whole digits test split, generated, predicted by the cycle model and run through the compiled
Verilator engine on 200 test samples (``--quick``: 20) bit-exactly against the golden model. It runs
twice from empty folders (nothing cached, the fast engine's builds included): on an embedded
LocalCluster of 1 worker process, then of 2; the wall time of each covers the cluster's start and
shutdown. The issue's target: 2 workers in <= 0.6× the wall time of 1. The machine is shared, so the
load average before and after each run is recorded beside the times, with the CPU seconds of the
worker processes. The 2-worker run's Pareto plot is kept as ``plots/sweep_pareto.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import time
from pathlib import Path

from spikeforge.cluster import client
from spikeforge.reporting import markdown_table
from spikeforge.sweep import best_table, parse_spec, run_sweep

from .common import Context, log

__all__ = ["measure", "render", "main", "spec_for"]

TARGET_RATIO = 0.6


def spec_for(quick: bool):
    """The benchmark's sweep spec (a dict, as TOML would give it)."""
    axes = {"timesteps": [4, 8], "lanes_budget": [16, 32]} if quick else {
        "timesteps": [2, 4, 6, 8], "lanes_budget": [8, 16, 32, 64]}
    return {"model": "digits-mlp", "dataset": "digits", "rtl_samples": 20 if quick else 200, "rtl_engine": "fast",
            "axes": axes}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _one(spec, workers: int, out: Path) -> dict:
    if out.exists():
        shutil.rmtree(out)
    load_before = os.getloadavg()
    cpu_before = _children_cpu()
    lines = []
    started = time.perf_counter()
    with client(workers=workers) as dask:
        sweep = run_sweep(spec, output=out, dask=dask, log=lambda line: (lines.append(line), log(f"  {line}")))
    wall = time.perf_counter() - started
    results = [r for r in sweep.results if r is not None]
    steps = {}
    for result in results:
        for name, seconds in result.get("steps", {}).items():
            steps.setdefault(name, []).append(seconds)
    return {"workers": workers, "wall_seconds": wall, "points_seconds": sweep.seconds,
            "worker_cpu_seconds": _children_cpu() - cpu_before, "load_before": list(load_before),
            "load_after": list(os.getloadavg()), "points": len(results), "cached": sweep.cached,
            "ok": sum(r["status"] == "ok" for r in results), "failed": len(sweep.failed),
            "mismatched": len(sweep.mismatched),
            "errors": [f"{r['label']}: {r['failed_step']}: {r['error'].splitlines()[0]}" for r in sweep.failed],
            "mean_step_seconds": {name: sum(v) / len(v) for name, v in steps.items()},
            "numbers": {r["key"]: [r.get("golden_accuracy"), r.get("cycles_per_sample"),
                                   (r.get("rtl") or {}).get("ok")] for r in results},
            "front": best_table(sweep) if sweep.front else "", "files": {k: str(v) for k, v in sweep.files.items()},
            "lines": lines}


def measure(ctx: Context) -> dict:
    spec = parse_spec(spec_for(ctx.quick), name="bench_sweep")
    root = ctx.out_dir / "sweep"
    runs = []
    for workers in (1, 2):
        log(f"sweep: {len(spec.axes['timesteps']) * len(spec.axes['lanes_budget'])} points on a {workers}-worker "
            f"LocalCluster (load average {os.getloadavg()[0]:.1f})")
        runs.append(_one(spec, workers, root / f"workers-{workers}"))
        log(f"sweep: {workers} worker(s): {runs[-1]['wall_seconds']:.0f} s")
    one, two = runs
    ratio = two["wall_seconds"] / one["wall_seconds"]
    same = one["numbers"] == two["numbers"]
    plot = Path(two["files"].get("plot", ""))
    if plot.is_file():
        ctx.plots.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(plot, ctx.plots / "sweep_pareto.png")
    return {"spec": spec_for(ctx.quick), "runs": [{k: v for k, v in run.items() if k != "numbers"} for run in runs],
            "ratio": ratio, "target_ratio": TARGET_RATIO, "met": ratio <= TARGET_RATIO and one["failed"] == 0
            and two["failed"] == 0 and one["mismatched"] == 0 and two["mismatched"] == 0,
            "same_numbers": same, "cores": len(os.sched_getaffinity(0)),
            "plot": "plots/sweep_pareto.png" if plot.is_file() else None}


def render(result: dict, ctx: Context) -> str:
    spec = result["spec"]
    axes = ", ".join(f"{name} {values}" for name, values in spec["axes"].items())
    lines = ["## sweep: design-space sweeps on Dask, 1 vs 2 workers", "",
             f"The shipped digits MLP over {axes}: per point convert, golden accuracy on the digits test split, "
             f"generate, cycle model, {spec['rtl_samples']}-sample RTL regression with the compiled Verilator engine "
             f"(every label and score vs. the golden model). Each run from empty folders (no cache, builds included), "
             f"on an embedded LocalCluster; wall time includes the cluster's start and shutdown. "
             f"Machine: {result['cores']} cores, shared (load averages below).", ""]
    rows = []
    for run in result["runs"]:
        steps = ", ".join(f"{k} {v:.1f}" for k, v in run["mean_step_seconds"].items())
        rows.append([run["workers"], run["points"], f"{run['ok']} ok, {run['failed']} failed, {run['mismatched']} mismatched",
                     f"{run['wall_seconds']:.0f}", f"{run['worker_cpu_seconds']:.0f}",
                     f"{run['load_before'][0]:.1f} → {run['load_after'][0]:.1f}", steps])
    lines += [markdown_table(["workers", "points", "status", "wall s", "worker CPU s", "load avg (1 min)",
                              "mean s per point and step"], rows), ""]
    verdict = "met" if result["met"] else "not met"
    lines += [f"**2 workers / 1 worker: {result['ratio']:.2f}× the wall time** (target <= {result['target_ratio']}×: "
              f"{verdict}); the two runs' numbers (accuracy, cycles/sample, RTL verdict) "
              f"{'agree point for point' if result['same_numbers'] else 'DIFFER'}.", ""]
    for run in result["runs"]:
        for error in run["errors"]:
            lines.append(f"* failed ({run['workers']} worker(s)): {error}")
    front = result["runs"][-1]["front"]
    if front:
        lines += ["", "Pareto front (2-worker run; µs/sample at 100 MHz from the RTL's cycles):", "", front, ""]
    if result.get("plot"):
        lines += [f"![sweep Pareto plot]({result['plot']})", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("-o", "--output", type=Path, default=Path("build/bench"))
    args = parser.parse_args(argv)
    ctx = Context(quick=args.quick, out_dir=args.output)
    result = measure(ctx)
    (ctx.out_dir / "sweep.json").write_text(json.dumps(result, indent=2) + "\n")
    print(render(result, ctx))


if __name__ == "__main__":
    main()
