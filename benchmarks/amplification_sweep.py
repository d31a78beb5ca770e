"""The k-sweep: conversion error of iLIF neurons with amplification k in 1, 1.5, 2, 2.5, 3 for T in 4, 8, 16.

SpikeConverter chooses k = 2 (a spike train is then a binary number). This section measures, with the
generic-k neuron of :mod:`spikeforge.ir.amplification`:

* the single-neuron encoding error: mean ``|v - decoded(v)|`` over v uniform in [0, 1] (fraction of
  the range), which isolates the code;
* the network conversion error: the same integer network (converted at T, 8-bit weights) run with
  neurons of factor k; for every hidden neuron and test sample, ``|a / s - x / x_max(k, T)|`` where a is
  the float ANN's activation, s the layer's calibrated range and x the neuron's decoded spike train —
  errors propagate through the layers as they do in the spiking network; plus its test accuracy.
"""

from __future__ import annotations

import numpy as np

from spikeforge.converter.calibrate import InputNormalization, fold_normalization
from spikeforge.converter.torch_import import import_model
from spikeforge.ir import amplification
from spikeforge.reporting import markdown_table, new_figure, save_figure

from .accuracy_vs_timesteps import converted
from .common import NETWORKS, dataset, float_model, log

__all__ = ["measure", "render", "AMPLIFICATIONS", "TIMESTEPS"]

AMPLIFICATIONS = (1.0, 1.5, 2.0, 2.5, 3.0)
TIMESTEPS = (4, 8, 16)


def _float_activations(model, net, samples) -> list:
    """The float ANN's hidden activations on raw samples (normalisation folded as the converter does)."""
    scale = net.calibration.get("normalization", {}).get("scale", 255.0)
    layers = fold_normalization(import_model(model), InputNormalization(scale=scale))
    x = np.asarray(samples, dtype=np.float64).reshape(len(samples), -1)
    activations = []
    for layer in layers[:-1]:
        x = layer.forward(x)
        activations.append(x)
    return activations


def measure(ctx, networks=None) -> dict:
    networks = networks or ctx.networks
    results = {"amplifications": list(AMPLIFICATIONS), "timesteps": list(TIMESTEPS), "encoding_error": {},
               "networks": {}}
    for T in TIMESTEPS:
        results["encoding_error"][str(T)] = {str(k): amplification.encoding_error(k, T) for k in AMPLIFICATIONS}
    for key in networks:
        spec = NETWORKS[key]
        model = float_model(ctx, spec)
        test = dataset(spec.dataset, "test").head(ctx.test_samples(key))
        log(f"k-sweep: {key}")
        rows = {}
        for T in TIMESTEPS:
            net = converted(ctx, key, T)
            code_max = (1 << T) - 1
            scales = [step * code_max for step in net.calibration["activation_steps"]]
            activations = _float_activations(model, net, test.samples)
            rows[str(T)] = {}
            for k in AMPLIFICATIONS:
                result = amplification.run(net, test.samples, amplification=k, timesteps=T)
                errors = [np.abs(a / s - np.asarray(x, dtype=np.float64) / result.code_max)
                          for a, s, x in zip(activations, scales, result.values[1:])]
                rows[str(T)][str(k)] = {
                    "conversion_error": float(np.mean(np.concatenate([e.ravel() for e in errors]))),
                    "conversion_error_per_layer": [float(e.mean()) for e in errors],
                    "accuracy": float(np.mean(result.labels == test.labels)),
                    "code_max": result.code_max}
        results["networks"][key] = {"title": spec.title, "sizes": spec.sizes, "samples": len(test), "sweep": rows}
    return results


def best_k(result: dict) -> dict:
    """For every network and T, the k with the smallest conversion error."""
    best = {}
    for key, net in result["networks"].items():
        best[key] = {T: min(row, key=lambda k: row[k]["conversion_error"]) for T, row in net["sweep"].items()}
    best["encoding"] = {T: min(row, key=row.get) for T, row in result["encoding_error"].items()}
    return best


def _exceptions(result: dict) -> str:
    """Where k = 2 is not the smallest error: by how much."""
    notes, close = [], True
    for key, per_t in best_k(result).items():
        if key == "encoding":
            continue
        for T, k in per_t.items():
            if k != "2.0":
                row = result["networks"][key]["sweep"][T]
                best, two = row[k]["conversion_error"], row["2.0"]["conversion_error"]
                close = close and two <= 1.05 * best
                notes.append(f"{key} at T = {T}: k = {float(k):g} {100 * best:.3f} % vs. k = 2 {100 * two:.3f} %")
    text = "k = 2 is best everywhere except " + "; ".join(notes)
    if close:
        text += (" — within 5 %: at that T the code's own error is below the weight quantisation's, and the two "
                 "factors tie")
    return text + "."


def _plot(result: dict, path):
    keys = list(result["networks"])
    figure, axes = new_figure(3.3 * (len(keys) + 1), 3.4, ncols=len(keys) + 1)
    axes = np.atleast_1d(axes)
    ks = result["amplifications"]
    for T in result["timesteps"]:
        axes[0].plot(ks, [100 * result["encoding_error"][str(T)][str(k)] for k in ks], marker="o", label=f"T = {T}")
        for ax, key in zip(axes[1:], keys):
            sweep = result["networks"][key]["sweep"][str(T)]
            ax.plot(ks, [100 * sweep[str(k)]["conversion_error"] for k in ks], marker="o", label=f"T = {T}")
    axes[0].set_title("one neuron, uniform values", fontsize=9)
    for ax, key in zip(axes[1:], keys):
        ax.set_title(f"{result['networks'][key]['title']}", fontsize=9)
    for ax in axes:
        ax.set_xlabel("amplification k")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.axvline(2.0, color="grey", linestyle=":")
    axes[0].set_ylabel("mean conversion error (% of range)")
    axes[0].legend(fontsize=8)
    return save_figure(figure, path)


def render(result: dict, ctx, commands: str = "") -> str:
    ks = result["amplifications"]
    lines = ["## 1b. Amplification factor k (the k-sweep)", "",
             "The integer network converted at T is run with iLIF neurons of factor k "
             "(`spikeforge.ir.amplification`: a spike at step t is worth k^(T-1-t); k = 1 is a rate code, "
             "k < 2 is redundant with a coarser finest step, k > 2 leaves gaps; k = 2 equals the golden model "
             "bit for bit). Conversion error: mean over hidden neurons and test samples of "
             "|a/s − x/x_max(k, T)| (float activation a, calibrated range s, decoded train x), in % of the range. "
             "Encoding error: one neuron, values uniform in [0, 1].", ""]
    plot = _plot(result, ctx.plots / "amplification_sweep.png")
    lines += [f"![k-sweep](plots/{plot.name})", ""]
    headers = ["", *[f"k = {k:g}" for k in ks]]
    rows = []
    for T in result["timesteps"]:
        enc = result["encoding_error"][str(T)]
        rows.append([f"encoding, T = {T}", *[f"{100 * enc[str(k)]:.3f} %" for k in ks]])
    for key, net in result["networks"].items():
        for T in result["timesteps"]:
            sweep = net["sweep"][str(T)]
            rows.append([f"{key}, T = {T}: error", *[f"{100 * sweep[str(k)]['conversion_error']:.3f} %" for k in ks]])
            rows.append([f"{key}, T = {T}: accuracy", *[f"{100 * sweep[str(k)]['accuracy']:.2f} %" for k in ks]])
    lines.append(markdown_table(headers, rows))
    lines.append("")
    best = best_k(result)
    winners = sorted({k for per_t in best.values() for k in per_t.values()})
    lines.append("Smallest error: " + "; ".join(
        f"{key}: " + ", ".join(f"T={T} → k={float(k):g}" for T, k in per_t.items()) for key, per_t in best.items())
        + (". k = 2 is best in every case." if winners == ["2.0"] else ". " + _exceptions(result)))
    lines.append("")
    return "\n".join(lines)


def summary_lines(result: dict) -> list:
    best = best_k(result)
    winners = sorted({float(k) for per_t in best.values() for k in per_t.values()})
    return [f"k-sweep: smallest conversion error at k = {', '.join(f'{k:g}' for k in winners)} "
            f"(over {len(best) - 1} networks and T = {', '.join(map(str, result['timesteps']))})"]
