"""Speed of the cocotb + Verilator sign-off: simulated cycles per second, samples per second, build time.

    python -m benchmarks.verilator_speed [--quick] [-o build/bench]

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
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from spikeforge.datasets import load
from spikeforge.demo import demo_network
from spikeforge.demo_hardware import DEMO_LANES_BUDGET
from spikeforge.hdl.generate import generate
from spikeforge.ir import golden
from spikeforge.sim import verilator
from spikeforge.sim.signoff import Design, PayloadCodec, run_phases, stall_phases, verify, worst_case_cycles

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


def measure(ctx) -> dict:
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
    if commands:
        lines += ["", f"Command: `{commands}`"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.verilator_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 samples and a shorter idle run")
    parser.add_argument("-o", "--output", type=Path, default=Path("build/bench"), help="output folder (build/bench)")
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)

    class _Context:
        quick = args.quick
        out_dir = args.output.resolve()

    result = measure(_Context)
    path = args.output / "verilator_speed.json"
    path.write_text(json.dumps(result, indent=2, default=lambda v: v.item() if isinstance(v, np.generic) else str(v))
                    + "\n")
    print(render(result, commands="python -m benchmarks.verilator_speed" + (" --quick" if args.quick else "")))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
