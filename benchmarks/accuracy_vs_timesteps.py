"""Timesteps and work to ANN parity: iLIF (k = 2) vs. the classic rate-coded IF conversion.

For each benchmark network (digits MLP, Fashion-MNIST 784-128-10, deep Fashion-MNIST 784-256-256-256-10):

* the float ANN's test accuracy (torch, float32);
* iLIF k = 2: convert at every T (8-bit weights, percentile calibration, ``v0 = θ//2``) and run the
  golden closed form on the test split; the literal timestep model is checked against it;
* the rate-coded IF baseline (:func:`spikeforge.ir.golden.run_rate_coded`, via the checkpointed
  :func:`benchmarks.rate_coded.rate_coded_curve`) on the same integer weights for T = 1..256, with
  inputs as Bernoulli spikes and as a constant current, each with the classic ``V(0) = 0`` and with
  ``V(0) = θ/2`` (the same rounding offset the iLIF network uses);
* per method: the smallest T whose accuracy is within 0.5 and within 1 point of the float ANN, and
  the spike-driven additions per sample there (events × fan-out, ``golden.spike_driven_additions``).
"""

from __future__ import annotations

import time

import numpy as np

import spikeforge
from spikeforge.demo_model import train_digits_mlp
from spikeforge.ir import golden
from spikeforge.reporting import fmt, markdown_table, new_figure, save_figure

from .common import NETWORKS, dataset, float_accuracy, float_model, log
from .rate_coded import rate_coded_curve

__all__ = ["measure", "render", "converted", "METHODS", "parity_point"]

#: (key, label, input_mode, initial potential) of the rate-coded baselines.
BASELINES = (
    ("rate-spikes", "rate IF, spike input, V0 = 0 (classic)", "spikes", 0.0),
    ("rate-spikes-half", "rate IF, spike input, V0 = θ/2", "spikes", 0.5),
    ("rate-current", "rate IF, current input, V0 = 0 (classic)", "current", 0.0),
    ("rate-current-half", "rate IF, current input, V0 = θ/2", "current", 0.5),
)
#: The iLIF conversions measured: the default clip (99.9th percentile) and the clip search.
ILIF_METHODS = {"ilif": "iLIF k = 2 (SpikeConverter), default clip",
                "ilif-search": "iLIF k = 2, clip searched on the training split"}
METHODS = {**ILIF_METHODS, **{key: label for key, label, _, _ in BASELINES}}
TOLERANCES = (0.5, 1.0)     # accuracy points below the float ANN

_CONVERTED = {}


def converted(ctx, key: str, timesteps: int, method: str = "percentile"):
    """``spikeforge.convert(model, dataset, timesteps=T, weight_bits=8, method=...)`` for a benchmark
    network, cached."""
    cache_key = (ctx.quick, key, timesteps, method)
    if cache_key not in _CONVERTED:
        spec = NETWORKS[key]
        model = float_model(ctx, spec)
        start = time.perf_counter()
        net = spikeforge.convert(model, spec.dataset, timesteps=timesteps, weight_bits=8, method=method)
        _CONVERTED[cache_key] = (net, time.perf_counter() - start)
    return _CONVERTED[cache_key][0]


def conversion_seconds(ctx, key: str, timesteps: int) -> float:
    converted(ctx, key, timesteps)
    return _CONVERTED[ctx.quick, key, timesteps, "percentile"][1]


def parity_point(curve: list, float_acc: float, tolerance_points: float):
    """The first point of ``curve`` (ascending T) with accuracy >= float - tolerance, or None."""
    bound = float_acc - tolerance_points / 100.0 - 1e-12
    for point in curve:
        if point["accuracy"] >= bound:
            return point
    return None


def _ilif_curve(ctx, key: str, test, timesteps, method: str = "percentile") -> list:
    curve = []
    for T in timesteps:
        net = converted(ctx, key, T, method)
        result = golden.run(net, test.samples)
        spikes = result.input_spikes()
        additions = golden.spike_driven_additions(net, spikes)
        curve.append({"timesteps": T, "accuracy": float(np.mean(result.labels == test.labels)),
                      "additions_per_sample": float(additions.mean()),
                      "spikes_per_sample": [float(s.mean()) for s in spikes],
                      "percentile": net.calibration["percentile"]})
    return curve


def _literal_check(ctx, key: str, test, timesteps) -> dict:
    """The literal timestep iLIF model must give the closed form's labels and scores exactly."""
    count = min(len(test), 500)
    checked = {}
    for T in timesteps:
        net = converted(ctx, key, T)
        closed = golden.run(net, test.samples[:count])
        literal = golden.run_timesteps(net, test.samples[:count])
        checked[T] = bool(np.array_equal(closed.scores, literal.scores)
                          and all(np.array_equal(a, b) for a, b in zip(closed.codes, literal.codes)))
    return {"samples": count, "agree": checked}


def _baseline_curves(ctx, net, test, max_timesteps: int) -> dict:
    curves = {}
    out_features = np.array([layer.out_features for layer in net.layers], dtype=np.float64)
    for key, _, mode, v0 in BASELINES:
        start = time.perf_counter()
        run = rate_coded_curve(net, test.samples, max_timesteps, input_mode=mode, seed=ctx.seed,
                               initial_potential=v0)
        accuracy = (run.labels == test.labels[None, :]).mean(axis=1)
        mean_spikes = run.spike_counts.mean(axis=2)                   # (T, layers)
        additions = mean_spikes @ out_features
        curves[key] = {"seconds": time.perf_counter() - start,
                       "points": [{"timesteps": t + 1, "accuracy": round(float(accuracy[t]), 6),
                                   "additions_per_sample": round(float(additions[t]), 2)}
                                  for t in range(max_timesteps)]}
    return curves




def _calibration_sensitivity(ctx, key: str, model, test, parity) -> dict | None:
    """One step below iLIF's 1-point parity T: test accuracy and additions for each clip percentile the
    search tries, beside its training-split accuracy (the search's own record of every candidate).

    Shows whether T - 1 is out of reach or only a matter of the clip.
    """
    point = parity["ilif"]["1.0"]
    if point is None or point["timesteps"] < 2:
        return None
    T = point["timesteps"] - 1
    spec = NETWORKS[key]
    searched = converted(ctx, key, T, "search").calibration
    rows = []
    for candidate in searched["search"]["candidates"]:
        net = spikeforge.convert(model, spec.dataset, timesteps=T, weight_bits=8, percentile=candidate["percentile"])
        result = golden.run(net, test.samples)
        additions = golden.spike_driven_additions(net, result.input_spikes())
        rows.append({"percentile": candidate["percentile"], "accuracy": float(np.mean(result.labels == test.labels)),
                     "train_accuracy": candidate["agreement"], "additions_per_sample": float(additions.mean())})
    return {"timesteps": T, "train_samples": searched["samples"], "points": rows}


#: Retrained digits models (seeds of ``train_digits_mlp``) for the robustness check of the parity T.
ROBUSTNESS_SEEDS = tuple(range(1, 9))


def _seed_robustness(ctx, spec, test, parity) -> dict | None:
    """The shipped digits model is one draw: retrain it with other seeds and ask, at the T where either
    iLIF conversion reached 1-point parity, how often each conversion is within 1 point of *its* float
    model. Only for the shipped digits network (retraining takes ~2 s a seed)."""
    if spec.epochs != 0:
        return None
    found = sorted({p["1.0"]["timesteps"] for m, p in parity.items() if m in ILIF_METHODS and p["1.0"]})
    if not found:
        return None
    seeds = ROBUSTNESS_SEEDS[:2] if ctx.quick else ROBUSTNESS_SEEDS
    rows = []
    for seed in seeds:
        model = train_digits_mlp(seed=seed)
        float_acc = float_accuracy(model, test)
        row = {"seed": seed, "float_accuracy": float_acc, "accuracy": {}}
        for method_key, method in (("ilif", "percentile"), ("ilif-search", "search")):
            for T in found:
                net = spikeforge.convert(model, spec.dataset, timesteps=T, weight_bits=8, method=method)
                row["accuracy"][f"{method_key}@{T}"] = float(np.mean(net.run(test.samples).labels == test.labels))
        rows.append(row)
    return {"timesteps": found, "seeds": list(seeds), "rows": rows}


def measure(ctx, networks=None) -> dict:
    networks = networks or ctx.networks
    ilif_timesteps = (1, 2, 3, 4, 6, 8) if ctx.quick else tuple(range(1, 17))
    rate_max = 48 if ctx.quick else 256
    results = {"ilif_timesteps": list(ilif_timesteps), "rate_max_timesteps": rate_max,
               "tolerances": list(TOLERANCES), "methods": METHODS, "networks": {}}
    for key in networks:
        spec = NETWORKS[key]
        start = time.perf_counter()
        model = float_model(ctx, spec)
        test = dataset(spec.dataset, "test").head(ctx.test_samples(key))
        float_acc = float_accuracy(model, test)
        log(f"accuracy: {key} float {100 * float_acc:.2f} %, iLIF T = {ilif_timesteps[0]}..{ilif_timesteps[-1]}")
        curves = {"ilif": {"points": _ilif_curve(ctx, key, test, ilif_timesteps)}}
        log(f"accuracy: {key} iLIF with the clip search, T = {ilif_timesteps[0]}..{ilif_timesteps[-1]}")
        curves["ilif-search"] = {"points": _ilif_curve(ctx, key, test, ilif_timesteps, method="search")}
        literal = _literal_check(ctx, key, test, (4, 8) if not ctx.quick else (4,))
        # The baseline runs on the finest-quantised network of the sweep (its biases lose least).
        baseline_net = converted(ctx, key, max(ilif_timesteps))
        log(f"accuracy: {key} rate-coded baselines, T = 1..{rate_max}")
        curves.update(_baseline_curves(ctx, baseline_net, test, rate_max))
        parity = {}
        for method, curve in curves.items():
            parity[method] = {}
            for tolerance in TOLERANCES:
                point = parity_point(curve["points"], float_acc, tolerance)
                parity[method][str(tolerance)] = None if point is None else {
                    "timesteps": point["timesteps"], "accuracy": point["accuracy"],
                    "additions_per_sample": point["additions_per_sample"]}
            best = max(curve["points"], key=lambda p: p["accuracy"])
            parity[method]["best"] = {"timesteps": best["timesteps"], "accuracy": best["accuracy"]}
        log(f"accuracy: {key} calibration sensitivity one step below parity")
        sensitivity = _calibration_sensitivity(ctx, key, model, test, parity)
        robustness = _seed_robustness(ctx, spec, test, parity)
        layers = [{"name": l.name, "in": l.in_features, "out": l.out_features} for l in baseline_net.layers]
        results["networks"][key] = {
            "title": spec.title, "sizes": spec.sizes, "dataset": f"{spec.dataset}/test", "samples": len(test),
            "float_accuracy": float_acc, "layers": layers, "curves": curves, "parity": parity,
            "literal_check": literal, "baseline_network_timesteps": baseline_net.timesteps,
            "calibration_sensitivity": sensitivity, "seed_robustness": robustness,
            "first_layer_dense_macs": layers[0]["in"] * layers[0]["out"],
            "seconds": time.perf_counter() - start}
    return results


# --- rendering ---------------------------------------------------------------------------------------


def _ratio(baseline, ilif):
    if baseline is None or ilif is None or not ilif:
        return None
    return baseline / ilif


def _parity_rows(net: dict, tolerance: str) -> list:
    ilif = net["parity"]["ilif"][tolerance]
    rows = []
    for method, label in METHODS.items():
        point = net["parity"][method][tolerance]
        best = net["parity"][method]["best"]
        dense = fmt(net["first_layer_dense_macs"]) if "current" in method else "—"
        if point is None:
            rows.append([label, f"not reached (best {100 * best['accuracy']:.2f} % at T = {best['timesteps']})",
                         "—", "—", dense, "—", "—"])
            continue
        t_ratio = _ratio(point["timesteps"], ilif["timesteps"] if ilif else None)
        add_ratio = _ratio(point["additions_per_sample"], ilif["additions_per_sample"] if ilif else None)
        rows.append([label, point["timesteps"], f"{100 * point['accuracy']:.2f} %",
                     fmt(point["additions_per_sample"], 0), dense,
                     "1" if method == "ilif" else ("—" if method == "ilif-search" else
                                                   (f"{t_ratio:.1f}×" if t_ratio else "—")),
                     "1" if method == "ilif" else ("—" if "current" in method or method == "ilif-search" else
                                                   (f"{add_ratio:.1f}×" if add_ratio else "—"))])
    return rows


def _sensitivity_lines(net: dict) -> list:
    """The calibration-sensitivity table one step below parity, and what it says."""
    study = net.get("calibration_sensitivity")
    if not study:
        return []
    bound = net["float_accuracy"] - 0.01 - 1e-12
    points = study["points"]
    within = [p for p in points if p["accuracy"] >= bound]
    lines = [f"Calibration sensitivity at T = {study['timesteps']} (one step below iLIF's 1-point parity): "
             "the same network converted with other activation-clip percentiles (99.9 is the default); "
             f"training-split accuracy on {study['train_samples']} samples beside the test accuracy.", ""]
    lines.append(markdown_table(
        ["percentile", "test accuracy", "within 1 point", "training-split accuracy", "additions / sample"],
        [[f"{p['percentile']:g}", f"{100 * p['accuracy']:.2f} %", "yes" if p["accuracy"] >= bound else "no",
          f"{100 * p['train_accuracy']:.2f} %", fmt(p["additions_per_sample"], 0)] for p in points]))
    lines.append("")
    if within:
        listed = ", ".join(f"{p['percentile']:g}" for p in within)
        lines.append(f"At T = {study['timesteps']}, {len(within)} of {len(points)} clips are within 1 point "
                     f"(percentiles {listed}): how much rides on the clip at this T. The searched clip "
                     "(row \"clip searched\" above) is picked from the training split alone, by the criterion of "
                     "`converter/clip_search.py`; this table shows every candidate on the test split.")
    else:
        lines.append(f"No clip reaches 1 point at T = {study['timesteps']}: T = {study['timesteps'] + 1} is needed.")
    lines.append("")
    return lines


def robust_counts(net: dict) -> dict:
    """``{"ilif@T": (within, seeds)}``: how many retrained models are within 1 point at each T."""
    study = net.get("seed_robustness")
    if not study:
        return {}
    counts = {}
    for row in study["rows"]:
        for column, accuracy in row["accuracy"].items():
            within, total = counts.get(column, (0, 0))
            counts[column] = (within + (accuracy >= row["float_accuracy"] - 0.01 - 1e-12), total + 1)
    return counts


def _robustness_lines(net: dict) -> list:
    study = net.get("seed_robustness")
    if not study:
        return []
    columns = [f"{m}@{T}" for m in ILIF_METHODS for T in study["timesteps"]]
    names = {"ilif": "default clip", "ilif-search": "clip search"}
    header = ["seed", "float"] + [f"{names[c.split('@')[0]]}, T = {c.split('@')[1]}" for c in columns]
    rows = []
    for row in study["rows"]:
        bound = row["float_accuracy"] - 0.01 - 1e-12
        rows.append([row["seed"], f"{100 * row['float_accuracy']:.2f} %"] +
                    [f"{100 * row['accuracy'][c]:.2f} %{' ✓' if row['accuracy'][c] >= bound else ''}" for c in columns])
    counts = robust_counts(net)
    rows.append(["within 1 point", ""] + [f"{counts[c][0]} of {counts[c][1]}" for c in columns])
    return [f"Robustness: the same network retrained with {len(study['seeds'])} other seeds "
            "(`train_digits_mlp(seed)`), converted both ways at the parity T found above; ✓ = within 1 point of "
            "that model's own float accuracy.", "", markdown_table(header, rows), ""]


def headline(result: dict, ilif_method: str = "ilif") -> dict:
    """Per network: an iLIF conversion's advantage in additions at 1 point, against spike-input baselines.

    ``ilif_method`` is a key of :data:`ILIF_METHODS`; results without it give ``None`` for that network.
    """
    summary = {}
    for key, net in result["networks"].items():
        if ilif_method not in net["parity"]:
            continue
        ilif = net["parity"][ilif_method]["1.0"]
        ratios = {}
        for method in ("rate-spikes", "rate-spikes-half"):
            point = net["parity"][method]["1.0"]
            ratios[method] = None if (point is None or ilif is None) else \
                point["additions_per_sample"] / ilif["additions_per_sample"]
        summary[key] = {"ilif": ilif, "ratios": ratios}
    return summary


def _plot_network(net: dict, path, title: str):
    figure, (left, right) = new_figure(10, 3.8, ncols=2)
    styles = {"ilif": dict(color="tab:red", marker="o", linewidth=2),
              "ilif-search": dict(color="tab:orange", marker="s", linewidth=1.5, linestyle="--"),
              "rate-spikes": dict(color="tab:blue"), "rate-spikes-half": dict(color="tab:blue", linestyle="--"),
              "rate-current": dict(color="tab:green"), "rate-current-half": dict(color="tab:green", linestyle="--")}
    float_acc = 100 * net["float_accuracy"]
    for method, curve in net["curves"].items():
        t = [p["timesteps"] for p in curve["points"]]
        acc = [100 * p["accuracy"] for p in curve["points"]]
        add = [p["additions_per_sample"] for p in curve["points"]]
        left.plot(t, acc, label=METHODS[method], markersize=3, **styles[method])
        if method.startswith("ilif") or "spikes" in method:
            right.plot(add, acc, label=METHODS[method], markersize=3, **styles[method])
    for axes in (left, right):
        axes.axhline(float_acc, color="grey", linestyle=":", label="float ANN")
        axes.axhspan(float_acc - 1.0, float_acc, color="grey", alpha=0.12)
        axes.set_xscale("log")
        axes.set_ylim(max(0, float_acc - 15), min(100, float_acc + 2))
        axes.grid(alpha=0.3, which="both")
    left.set_xlabel("timesteps T (log)")
    left.set_ylabel("test accuracy (%)")
    left.set_title(f"{title}: accuracy vs. T")
    right.set_xlabel("spike-driven additions per sample (log)")
    right.set_title("accuracy vs. work (spike-input methods)")
    left.legend(fontsize=7, loc="lower right")
    return save_figure(figure, path)


def render(result: dict, ctx, commands: str = "") -> str:
    lines = ["## 1. Timesteps and work to ANN parity", ""]
    lines += [
        "Side by side in one run, on the same 8-bit integer weights: the iLIF network (k = 2, temporal "
        "separation) converted at each T and run by the golden closed form, and the classic rate-coded "
        "integrate-and-fire conversion (soft reset, accumulate and fire in the same timestep) run by "
        "`golden.run_rate_coded` for T = 1.."
        f"{result['rate_max_timesteps']} on the network converted at T = {max(result['ilif_timesteps'])} "
        "(rates = codes / (2^T - 1), weights W/θ). \"Within x points\" is the first T whose test accuracy "
        "is at least float − x. Additions are spike-driven: every spike a layer receives costs one addition "
        "per output neuron (events × fan-out). The rate baselines with current input receive no input "
        "spikes; their first layer needs one dense in × out multiply-accumulate pass per sample instead "
        "(column \"dense MACs\", multiplications a spike-driven design avoids), so their additions ratio is not "
        "shown: the spike-input rows are the like-for-like comparison. Ratios are baseline / iLIF; the smallest T is "
        "the first crossing, which favours the noisier rate-coded curves.",
        ""]
    for key, net in result["networks"].items():
        lines += [f"### {net['title']} ({net['sizes']}), {net['dataset']}, {net['samples']} samples", ""]
        lines += [f"Float ANN: **{100 * net['float_accuracy']:.2f} %**. Literal timestep iLIF = closed form on "
                  f"the first {net['literal_check']['samples']} samples at T = "
                  + ", ".join(f"{t} ({'agree' if ok else 'DISAGREE'})" for t, ok in net['literal_check']['agree'].items())
                  + ".", ""]
        plot = _plot_network(net, ctx.plots / f"accuracy_{key}.png", net["title"])
        lines += [f"![accuracy vs T, {key}](plots/{plot.name})", ""]
        for tolerance in ("0.5", "1.0"):
            lines += [f"Within {tolerance} point{'s' if tolerance != '1.0' else ''} of the float ANN:", ""]
            lines.append(markdown_table(["method", "smallest T", "accuracy", "spike-driven additions / sample",
                                         "+ dense MACs / sample", "T ratio", "additions ratio"],
                                        _parity_rows(net, tolerance)))
            lines.append("")
        ilif_points = {p["timesteps"]: p for p in net["curves"]["ilif"]["points"]}
        lines.append("iLIF accuracy by T: " + ", ".join(
            f"T={t}: {100 * p['accuracy']:.2f} %" for t, p in ilif_points.items()) + ".")
        if "ilif-search" in net["curves"]:
            lines.append("iLIF with the clip search by T (the percentile it chose): " + ", ".join(
                f"T={p['timesteps']}: {100 * p['accuracy']:.2f} % ({p['percentile']:g})"
                for p in net["curves"]["ilif-search"]["points"]) + ".")
        rate = net["curves"]["rate-spikes"]["points"]
        marks = [t for t in (8, 16, 32, 64, 128, 256) if t <= len(rate)]
        lines.append("Classic rate IF (spike input) by T: " + ", ".join(
            f"T={t}: {100 * rate[t - 1]['accuracy']:.2f} %" for t in marks) + ".")
        lines.append("")
        lines += _sensitivity_lines(net)
        lines += _robustness_lines(net)
    lines += ["### Summary: iLIF vs. rate coding with spike inputs, within 1 point of the float ANN", ""]
    rows = []
    for ilif_method, ilif_label in ILIF_METHODS.items():
        for key, item in headline(result, ilif_method).items():
            ilif = item["ilif"]
            ratios = item["ratios"]
            goal = [r for r in ratios.values() if r is not None]
            verdict = "—" if not goal else ("yes" if min(goal) >= 4 else "no")
            margin = ""
            if ilif is not None:
                net = result["networks"][key]
                spare = (ilif["accuracy"] - (net["float_accuracy"] - 0.01)) * net["samples"]
                margin = f" ({spare:.1f} test samples above the bound)"
            rows.append([result["networks"][key]["title"], ilif_label,
                         "—" if ilif is None else f"T = {ilif['timesteps']}, {ilif['additions_per_sample']:,.0f}"
                                                  f"{margin}",
                         "—" if ratios["rate-spikes"] is None else f"{ratios['rate-spikes']:.1f}×",
                         "—" if ratios["rate-spikes-half"] is None else f"{ratios['rate-spikes-half']:.1f}×",
                         verdict])
    lines.append(markdown_table(["network", "iLIF conversion", "iLIF at parity (additions)", "classic rate IF / iLIF",
                                 "rate IF V0 = θ/2 / iLIF", "≥ 4× fewer (both baselines)"], rows))
    lines.append("")
    return "\n".join(lines)


def summary_lines(result: dict) -> list:
    lines = []
    for ilif_method in ILIF_METHODS:
        for key, item in headline(result, ilif_method).items():
            net = result["networks"][key]
            ilif = item["ilif"]
            ratios = ", ".join(f"{m}: {r:.1f}×" if r is not None else f"{m}: not reached"
                               for m, r in item["ratios"].items())
            lines.append(f"{key}: float {100 * net['float_accuracy']:.2f} %; {ilif_method} within 1 point at "
                         f"T = {ilif['timesteps'] if ilif else '—'}; additions ratio vs. rate coding ({ratios})")
    return lines
