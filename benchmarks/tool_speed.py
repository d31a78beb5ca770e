"""How fast the tool itself is: convert, save, generate, golden model, Verilator, bitstream builds.

Convert and generate are timed here (best of 3, the digits and Fashion-MNIST networks). Golden
samples/s come from the golden-speed section; Verilator simulated cycles/s and build times and the
bitstream build times come from the hardware section's runs (this section runs after it).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import spikeforge
from spikeforge.hdl.generate import generate
from spikeforge.reporting import fmt, markdown_table

from .accuracy_vs_timesteps import converted
from .common import NETWORKS, float_model, log

__all__ = ["measure", "render"]

CASES = (("digits", 8), ("fmnist", 4))


def _best(function, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def measure(ctx) -> dict:
    rows = []
    for key, T in [case for case in (CASES[:1] if ctx.quick else CASES) if case[0] in ctx.networks]:
        spec = NETWORKS[key]
        model = float_model(ctx, spec)
        row = {"network": key, "sizes": spec.sizes, "timesteps": T}
        row["convert_seconds"] = _best(lambda: spikeforge.convert(model, spec.dataset, timesteps=T, weight_bits=8),
                                       repeat=1 if ctx.quick else 3)
        net = converted(ctx, key, T)
        with tempfile.TemporaryDirectory(dir=ctx.out_dir) as folder:
            row["save_seconds"] = _best(lambda: net.save(Path(folder) / "net"), repeat=3)

            def one():
                target = Path(folder) / "rtl"
                if target.exists():
                    shutil.rmtree(target)
                generate(net, target)
            try:
                row["generate_seconds"] = _best(one, repeat=1 if ctx.quick else 3)
            except Exception as error:  # reported, not fatal
                row["generate_error"] = f"{type(error).__name__}: {error}"
        log(f"tool speed: {key} T={T}: convert {row['convert_seconds']:.2f} s, "
            f"generate {row.get('generate_seconds', float('nan')):.2f} s")
        rows.append(row)
    hardware = ((ctx.previous or {}).get("hardware") or {}).get("result") or {}
    simulation, bitstreams = [], []
    for entry in hardware.get("cases", []):
        verify = entry.get("verify") or {}
        if verify.get("simulated_cycles_per_second"):
            simulation.append({"design": f"{entry['network']} T={entry['timesteps']}", "samples": verify["samples"],
                               "cycles": verify["simulated_cycles"], "seconds": verify["simulation_seconds"],
                               "cycles_per_second": verify["simulated_cycles_per_second"],
                               "build_seconds": verify["verilator_build_seconds"],
                               "build_reused": verify["verilator_build_reused"]})
        board = entry.get("board_build") or {}
        if board.get("build_seconds") is not None:
            bitstreams.append({"design": f"{entry['network']} T={entry['timesteps']}", "board": entry["board"],
                               "seconds": board["build_seconds"], "synthesis_seconds": board.get("synthesis_seconds"),
                               "pnr_seconds": board.get("pnr_seconds"), "reused": board.get("reused")})
    golden = ((ctx.previous or {}).get("golden_speed") or {}).get("result")
    return {"rows": rows, "simulation": simulation, "bitstreams": bitstreams,
            "golden_digits_samples_per_s": golden["digits_samples_per_s"] if golden else None}


def render(result: dict, ctx, commands: str = "") -> str:
    lines = ["## 3b. Tool speed", ""]
    lines.append(markdown_table(
        ["network", "T", "convert (s)", "save (s)", "generate Verilog (s)"],
        [[f"{r['network']} ({r['sizes']})", r["timesteps"], fmt(r["convert_seconds"], 2), fmt(r["save_seconds"], 3),
          fmt(r.get("generate_seconds"), 2) if "generate_seconds" in r else f"not measured ({r.get('generate_error')})"]
         for r in result["rows"]]))
    lines += ["", "Convert includes loading the dataset, calibration on 5,000 training samples and quantisation; best of 3.", ""]
    if result.get("golden_digits_samples_per_s"):
        lines += [f"Golden model: {fmt(result['golden_digits_samples_per_s'], 0)} samples/s on digits (section 3a).", ""]
    if result["simulation"]:
        lines.append(markdown_table(
            ["Verilator run (cocotb)", "samples", "simulated cycles", "seconds", "cycles/s", "Verilator build (s)"],
            [[s["design"], fmt(s["samples"]), fmt(s["cycles"]), fmt(s["seconds"], 1), fmt(s["cycles_per_second"], 0),
              fmt(s["build_seconds"], 1) + (" (reused)" if s["build_reused"] else "")] for s in result["simulation"]]))
        lines.append("")
    else:
        lines += ["Verilator simulated cycles/s: not measured yet (needs the hardware section's sign-off runs).", ""]
    if result["bitstreams"]:
        lines.append(markdown_table(
            ["bitstream", "board", "total (s)", "synthesis (s)", "place and route (s)"],
            [[b["design"], b["board"], fmt(b["seconds"], 0) + (" (earlier run, reused)" if b["reused"] else ""),
              fmt(b["synthesis_seconds"], 0), fmt(b["pnr_seconds"], 0)] for b in result["bitstreams"]]))
        lines.append("")
    else:
        lines += ["Bitstream build time: not measured yet (needs the hardware section's board builds).", ""]
    return "\n".join(lines)
