"""Speed of the Verilator simulations: the cocotb sign-off and the compiled regression engine.

    python -m benchmarks.verilator_speed [--quick] [-o build/bench]
    python -m benchmarks --only verilator_speed

The compiled engine (:mod:`spikeforge.sim.fast_engine`) on the Fashion-MNIST 784-128-10 design at
T = 4 (the ``fmnist`` benchmark network, converted and folded as the hardware section does: lanes
budget 36, spike counts of the test split):

* the whole test split (1,000 samples with ``--quick``) from an empty build root, end to end: the
  build (Verilator's runtime compiled too), then ``verify_fast`` (golden model, simulation, comparison);
  its simulated cycles per wall second and per CPU second of the harness; the load average (the
  machine is shared: wall-clock rates fall with it, CPU rates do not);
* the same split in 2 shards on a 2-worker Dask ``LocalCluster`` (the build reused);
* the cocotb path on the same design, in the same run: simulated cycles per second inside the
  simulator over the first 200 samples (50 with ``--quick``), and the ratio.

On the demo design (the digits network generated as ``spikeforge demo`` does), it measures:

* the Verilator build, cold (an empty build root: Verilator's runtime compiled too) and with the
  runtime objects cached (what every later design of a session costs);
* the sign-off simulation, per phase: the digits test split streamed back to back, then under 90 %
  input gaps and output back-pressure; simulated cycles per wall second inside the simulator and
  samples per second;
* the simulator alone: the idle design clocked with no testbench activity (the floor the Python
  testbench adds to);
* end to end: ``verify()`` of the whole split from a cold build root, the issue's < 2 minutes.

Results go to ``<out>/verilator_speed.json`` and are printed as a Markdown table. Also usable as a
section of ``python -m benchmarks`` (``measure(ctx)`` / ``render(result, ctx)``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from spikeforge.datasets import load
from spikeforge.demo import demo_network
from spikeforge.demo_hardware import DEMO_LANES_BUDGET
from spikeforge.flow import FlowConfig, FlowState, run_step
from spikeforge.hdl.balance import balanced_folding
from spikeforge.hdl.generate import generate
from spikeforge.ir import golden
from spikeforge.sim import verilator
from spikeforge.sim.fast_engine import FastDesign, build_fast, verify_fast
from spikeforge.sim.signoff import Design, PayloadCodec, run_phases, stall_phases, verify, worst_case_cycles

from .accuracy_vs_timesteps import converted
from .common import Context, dataset, log

__all__ = ["measure", "render", "main"]


def _demo_design(out_dir: Path, test):
    net = demo_network()
    spikes_in = [float(s.mean()) for s in golden.run(net, test.samples).input_spikes()]
    rtl = out_dir / "verilator_speed_rtl"
    generate(net, rtl, lanes_budget=DEMO_LANES_BUDGET, spikes_in=spikes_in)
    return net, rtl


def _phase_rates(raw: dict) -> list:
    rows = []
    for phase in raw["phases"]:
        cycles = phase["end_cycle"] - phase["start_cycle"]
        rows.append({"phase": phase["name"], "samples": len(phase["samples"]), "cycles": cycles,
                     "seconds": phase["wall_seconds"], "cycles_per_second": cycles / phase["wall_seconds"],
                     "samples_per_second": len(phase["samples"]) / phase["wall_seconds"]})
    return rows


#: The issue's targets for the compiled engine on the Fashion-MNIST design.
FAST_TARGETS = {"cycles_per_second": 2e6, "speedup_over_cocotb": 15.0, "split_seconds": 60.0}
FMNIST_TIMESTEPS = 4
FMNIST_LANES_BUDGET = 36


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _fmnist_design(ctx, work: Path):
    net = converted(ctx, "fmnist", FMNIST_TIMESTEPS)
    test = dataset("fashion-mnist", "test")
    spikes_in = [float(s.mean()) for s in golden.run(net, test.samples).input_spikes()]
    lanes = dict(balanced_folding(net, spikes_in=spikes_in, lanes_budget=FMNIST_LANES_BUDGET).lanes)
    net_dir, rtl = work / "fmnist-net", work / "fmnist-rtl"
    net.save(net_dir)
    generate(net_dir, rtl, lanes=lanes, spikes_in=spikes_in)
    return net, net_dir, rtl, test, lanes


def measure_fast(ctx, work: Path) -> dict:
    """The compiled engine on the Fashion-MNIST design, beside the cocotb path on the same design."""
    net, net_dir, rtl, test, lanes = _fmnist_design(ctx, work)
    count = 1000 if ctx.quick else len(test)
    samples, labels = test.samples[:count], test.labels[:count]
    root = work / "fast-cold"
    load_before = os.getloadavg()
    log(f"verilator_speed: fast engine, {count} Fashion-MNIST samples, cold build root")
    # End to end = the cold build (Verilator's runtime compiled too) + verify_fast reusing it (golden
    # model, simulation, comparison); timed apart so the harness's own CPU time is known.
    cpu, started = _children_cpu(), time.perf_counter()
    build = build_fast(FastDesign.load(rtl), root)
    build_wall, build_cpu = time.perf_counter() - started, _children_cpu() - cpu
    cpu, started = _children_cpu(), time.perf_counter()
    report = verify_fast(net, rtl, samples, labels, build_root=root, report_path=False, network_path=net_dir)
    verify_wall, harness_cpu = time.perf_counter() - started, _children_cpu() - cpu
    load_after = os.getloadavg()
    if not report["ok"]:
        raise RuntimeError(f"the fast engine did not sign off the Fashion-MNIST design: {report.get('error')}, "
                           f"{report['mismatches']} mismatches")
    warm = report
    log(f"verilator_speed: fast engine: build {build_wall:.1f} s ({build_cpu:.1f} s CPU), verify {verify_wall:.1f} s, "
        f"{report['simulation']['cycles']:,} cycles at {report['simulation']['cycles_per_second']:,.0f} cycles/s "
        f"({report['simulation']['cycles'] / max(harness_cpu, 1e-9):,.0f} per CPU second), "
        f"{report['mismatches']} mismatches, load {load_before[0]:.1f} -> {load_after[0]:.1f}")

    log("verilator_speed: fast engine, 2 shards on a 2-worker LocalCluster")
    config = FlowConfig(output=str(work / "flow"), dataset="fashion-mnist", split="test", samples=count,
                        rtl_dir=str(rtl), sim_build=str(root), engine="fast", shards=2, network_dir=str(net_dir),
                        verify_report=str(work / "sharded.json"))
    started = time.perf_counter()
    sharded = run_step("verify", FlowState(network=net, network_dir=net_dir, log=lambda line: None), config).details
    sharded_wall = time.perf_counter() - started
    log(f"verilator_speed: 2 shards: {sharded_wall:.1f} s, ok {sharded['ok']}")

    cocotb_count = 50 if ctx.quick else 200
    log(f"verilator_speed: the cocotb path on the same design, {cocotb_count} samples")
    design = Design.load(rtl)
    codec = PayloadCodec(design)
    reference = golden.run(net, samples[:cocotb_count])
    expected = [codec.encode_result(l, s) for l, s in zip(reference.labels, reference.scores)]
    started = time.perf_counter()
    built = verilator.build([design.verilog], design.top,
                            verilator.build_dir_for(work / "cocotb", [design.verilog], design.top))
    cocotb_build = time.perf_counter() - started
    raw = run_phases(built, codec, samples[:cocotb_count], expected,
                     [{"name": "stream", "samples": list(range(cocotb_count))}],
                     idle_limit=2 * worst_case_cycles(net) + 4096, tail_cycles=0)
    if raw["error"] or raw["simulator_error"] or raw["mismatches"]:
        raise RuntimeError(f"the cocotb run failed: {raw['error'] or raw['simulator_error']}")
    phase = _phase_rates(raw)[0]
    fast_rate = warm["simulation"]["cycles_per_second"]
    return {
        "design": {"network": f"Fashion-MNIST 784-128-10, T = {FMNIST_TIMESTEPS}", "folding": lanes,
                   "verilog_bytes": design.verilog.stat().st_size},
        "samples": count,
        "split_seconds": build_wall + verify_wall,
        "split_children_cpu_seconds": build_cpu + harness_cpu,
        "build_seconds": build_wall,
        "build_cpu_seconds": build_cpu,
        "ok": bool(report["ok"] and warm["ok"] and sharded["ok"]),
        "mismatches": report["mismatches"],
        "accuracy": report["accuracy"],
        "simulated_cycles": warm["simulation"]["cycles"],
        "cycles_per_sample": warm["timing"].get("steady_cycles_per_sample"),
        "latency_cycles": warm["timing"].get("latency_cycles"),
        "simulation_seconds": warm["simulation"]["seconds"],
        "cycles_per_second": fast_rate,
        # Whether the harness skipped the input-combinational region on quiet cycles, and on how many.
        "fast_clock": warm["simulation"].get("fast_clock"), "quiet_cycles": warm["simulation"].get("quiet_cycles"),
        "verify_seconds": verify_wall,
        "harness_cpu_seconds": harness_cpu,
        "cycles_per_cpu_second": warm["simulation"]["cycles"] / harness_cpu if harness_cpu else None,
        "load_average": [load_before[0], load_after[0]],
        "cores": os.cpu_count(),
        "sharded": {"shards": 2, "where": sharded["simulation"].get("where"), "seconds": sharded_wall,
                    "simulation_seconds": sharded["simulation"]["seconds"],
                    "cycles_per_second": sharded["simulation"]["cycles_per_second"], "ok": sharded["ok"]},
        "cocotb": {"samples": cocotb_count, "cycles": phase["cycles"], "seconds": phase["seconds"],
                   "cycles_per_second": phase["cycles_per_second"], "build_seconds": cocotb_build},
        "speedup_over_cocotb": fast_rate / phase["cycles_per_second"],
        "targets": FAST_TARGETS,
    }


def measure(ctx) -> dict:
    work = Path(tempfile.mkdtemp(prefix="verilator-speed-fast-", dir=ctx.out_dir))
    try:
        fast = measure_fast(ctx, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {**measure_cocotb(ctx), "fast": fast}


def measure_cocotb(ctx) -> dict:
    test = load("digits", "test")
    count = 100 if ctx.quick else len(test.samples)
    samples, labels = test.samples[:count], test.labels[:count]
    work = Path(tempfile.mkdtemp(prefix="verilator-speed-", dir=ctx.out_dir))
    try:
        net, rtl = _demo_design(work, test)
        design = Design.load(rtl)
        codec = PayloadCodec(design)
        reference = golden.run(net, samples)
        expected = [codec.encode_result(l, s) for l, s in zip(reference.labels, reference.scores)]

        # End to end from a cold build root: build (runtime included) + alone + stream of the split.
        started = time.perf_counter()
        report = verify(net, rtl, samples, labels, build_root=work / "cold", report_path=False)
        end_to_end = time.perf_counter() - started
        if not report["ok"]:
            raise RuntimeError("the demo design did not sign off; speed numbers would be meaningless")
        cold_build = report["simulation"]["build_seconds"]

        # A warm build: another design folder under the same root (runtime objects cached).
        sources = [design.verilog]
        warm_dir = work / "cold" / "warm-rebuild"
        started = time.perf_counter()
        built = verilator.build(sources, design.top, warm_dir)
        warm_build = time.perf_counter() - started

        # Simulation speed per phase, in one simulator process.
        phases = ([{"name": "stream", "samples": list(range(count))}]
                  + [p for p in stall_phases(count, seed=1) if p["name"] == "stalls-90"])
        raw = run_phases(built, codec, samples, expected, phases, idle_limit=2 * worst_case_cycles(net) + 4096,
                         tail_cycles=0)
        if raw["error"] or raw["simulator_error"] or raw["mismatches"]:
            raise RuntimeError(f"the speed run failed: {raw['error'] or raw['simulator_error']}")
        phase_rows = _phase_rates(raw)
        stream_cycles = phase_rows[0]["cycles"]

        # The simulator alone: one sample, then the idle design clocked with nothing to do.
        idle_cycles = 200_000 if ctx.quick else 1_000_000
        idle = run_phases(built, codec, samples, expected, [{"name": "alone", "samples": [0]}],
                          idle_limit=2 * worst_case_cycles(net) + 4096, tail_cycles=idle_cycles)
        sim_seconds = raw["wall_seconds"]
        verilog_bytes = design.verilog.stat().st_size
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "design": {"network": "digits demo (64-64-32-10, T = 8)", "folding": design.info.get("folding"),
                   "verilog_bytes": verilog_bytes},
        "samples": count,
        "end_to_end_seconds": end_to_end,
        "cold_build_seconds": cold_build,
        "warm_build_seconds": warm_build,
        "phases": phase_rows,
        "simulation_seconds": sim_seconds,
        "simulated_cycles": raw["cycles"],
        "stream_cycles": stream_cycles,
        "stream_samples_per_second": phase_rows[0]["samples_per_second"],
        "idle_cycles_per_second": idle["cycles"] / idle["wall_seconds"],
        "process_seconds": raw["process_seconds"],
        "report_stream": {"cycles_per_second": report["simulation"]["cycles_per_second"],
                          "seconds": report["simulation"]["seconds"], "cycles": report["simulation"]["cycles"]},
    }


def _render_fast(fast: dict) -> list:
    targets = fast["targets"]

    def met(ok: bool) -> str:
        return "met" if ok else "**not met**"
    cocotb = fast["cocotb"]
    sharded = fast["sharded"]
    return [
        "### Compiled regression engine (`spikeforge verify --engine fast`)", "",
        f"{fast['design']['network']} design (folding {fast['design']['folding']}), {fast['samples']:,} test samples, "
        f"{fast['cycles_per_sample']:,.1f} cycles/sample, latency {fast['latency_cycles']:,} cycles; load average "
        f"{fast['load_average'][0]:.1f} → {fast['load_average'][1]:.1f} on {fast['cores']} cores (a shared machine: "
        f"wall-clock rates fall with the load, CPU rates do not).", "",
        "| measurement | value | target |", "|---|---|---|",
        f"| whole split bit-exact, end to end from an empty build root (golden, build, simulation, compare) | "
        f"{fast['split_seconds']:.1f} s wall ({fast['split_children_cpu_seconds']:.1f} s CPU in tools), "
        f"{fast['mismatches']} mismatches | < {targets['split_seconds']:.0f} s: "
        f"{met(fast['split_seconds'] < targets['split_seconds'] and fast['ok'])} |",
        f"| … of which the build (Verilator runtime compiled too) | {fast['build_seconds']:.1f} s wall, "
        f"{fast['build_cpu_seconds']:.1f} s CPU | |",
        f"| simulated cycles/s, wall (harness process, build reused) | {fast['cycles_per_second']:,.0f} "
        f"({fast['simulated_cycles']:,} cycles in {fast['simulation_seconds']:.1f} s) | >= 2 M: "
        f"{met(fast['cycles_per_second'] >= targets['cycles_per_second'])} |",
        f"| simulated cycles per CPU second of the harness | "
        + (f"{fast['cycles_per_cpu_second']:,.0f}" if fast['cycles_per_cpu_second'] else "n/a") + " | |",
        f"| cocotb path, same design, same run ({cocotb['samples']} samples, inside the simulator) | "
        f"{cocotb['cycles_per_second']:,.0f} cycles/s | |",
        f"| speed-up over cocotb | {fast['speedup_over_cocotb']:.1f}× | >= {targets['speedup_over_cocotb']:.0f}×: "
        f"{met(fast['speedup_over_cocotb'] >= targets['speedup_over_cocotb'])} |",
        f"| 2 shards on a 2-worker LocalCluster (build reused), wall | {sharded['seconds']:.1f} s "
        f"({sharded['cycles_per_second']:,.0f} cycles/s, {'bit-exact' if sharded['ok'] else 'FAILED'}) | |",
        "",
    ]


def render(result: dict, ctx=None, commands: str = "") -> str:
    stream_rate = result["report_stream"]
    lines = [
        "## Verilator sign-off speed", "",
        f"Demo design ({result['design']['network']}, folding {result['design']['folding']}), "
        f"{result['samples']} digits test samples, cocotb 2.1 + Verilator 5.048.", "",
        "| measurement | value |", "|---|---|",
        f"| `verify()` end to end, cold build root (build + alone + stream) | {result['end_to_end_seconds']:.1f} s |",
        f"| Verilator build, cold (runtime compiled) | {result['cold_build_seconds']:.1f} s |",
        f"| Verilator build, runtime objects cached | {result['warm_build_seconds']:.1f} s |",
        f"| sign-off simulation (stream, no stalls), simulated cycles/s | {stream_rate['cycles_per_second']:,.0f} |",
        f"| stream phase samples/s (wall) | {result['stream_samples_per_second']:,.0f} |",
        f"| idle design, no testbench activity, cycles/s | {result['idle_cycles_per_second']:,.0f} |",
        "",
        "| phase (one simulator run) | samples | simulated cycles | wall s | cycles/s | samples/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {row['phase']} | {row['samples']} | {row['cycles']:,} | {row['seconds']:.2f} | "
              f"{row['cycles_per_second']:,.0f} | {row['samples_per_second']:,.0f} |" for row in result["phases"]]
    if result.get("fast"):
        lines += [""] + _render_fast(result["fast"])
    if commands:
        lines += ["", f"Command: `{commands}`"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.verilator_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 samples and a shorter idle run")
    parser.add_argument("-o", "--output", type=Path, default=Path("build/bench"), help="output folder (build/bench)")
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)

    ctx = Context(quick=args.quick, out_dir=args.output.resolve())
    result = measure(ctx)
    path = args.output / "verilator_speed.json"
    path.write_text(json.dumps(result, indent=2, default=lambda v: v.item() if isinstance(v, np.generic) else str(v))
                    + "\n")
    print(render(result, commands="python -m benchmarks.verilator_speed" + (" --quick" if args.quick else "")))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
