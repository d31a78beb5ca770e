"""Accuracy of an integer network on a dataset, beside the float ANN it came from."""

from __future__ import annotations

import time

import numpy as np

from spikeforge.ir.network import Network, raw_samples
from spikeforge.ir import golden

__all__ = ["evaluate", "format_evaluation"]


def evaluate(net: Network, dataset, float_accuracy: float | None = None, check_literal: bool = True) -> dict:
    """Run the golden model on a dataset split; returns a JSON-serialisable report.

    ``float_accuracy`` defaults to the one recorded at conversion for this dataset split, if any.
    With ``check_literal`` the literal timestep iLIF model is run too and must agree exactly.
    """
    samples = raw_samples(dataset.samples, f"the samples of {dataset.name}/{dataset.split}")
    key = f"{dataset.name}/{dataset.split}"
    if float_accuracy is None:
        float_accuracy = net.calibration.get("float_accuracy", {}).get(key)
    start = time.perf_counter()
    result = golden.run(net, samples)
    seconds = time.perf_counter() - start
    report = {
        "dataset": key, "samples": len(dataset), "timesteps": net.timesteps,
        "spiking_accuracy": float(np.mean(result.labels == dataset.labels)),
        "float_accuracy": float_accuracy,
        "golden_samples_per_second": len(dataset) / seconds if seconds > 0 else None,
    }
    spikes = result.input_spikes()
    report["spikes_per_sample"] = {name: float(np.mean(s)) for name, s in
                                   zip(["input"] + [l.name for l in net.hidden_layers], spikes)}
    # per-feature counts: a conv spike's fan-out depends on its position
    report["additions_per_sample"] = float(np.mean(golden.spike_driven_additions(
        net, result.input_spikes(per_feature=True))))
    if check_literal:
        literal = golden.run_timesteps(net, samples)
        report["literal_matches_closed_form"] = bool(
            np.array_equal(literal.scores, result.scores) and np.array_equal(literal.labels, result.labels))
    report["labels"] = result.labels.tolist()
    return report


def format_evaluation(report: dict) -> str:
    """The report as a table for people."""
    lines = [f"dataset {report['dataset']}, {report['samples']} samples, T = {report['timesteps']}", ""]
    lines.append(f"  {'model':<22} {'accuracy':>9} {'vs float':>9}")
    float_acc = report["float_accuracy"]
    if float_acc is not None:
        lines.append(f"  {'float ANN':<22} {100 * float_acc:>8.2f}% {'':>9}")
    spiking = report["spiking_accuracy"]
    delta = f"{100 * (spiking - float_acc):+8.2f}" if float_acc is not None else f"{'n/a':>8}"
    lines.append(f"  {'spiking iLIF (k = 2)':<22} {100 * spiking:>8.2f}% {delta:>9}")
    lines.append("")
    spikes = ", ".join(f"{name} {value:.1f}" for name, value in report["spikes_per_sample"].items())
    lines.append(f"  spikes per sample: {spikes}")
    lines.append(f"  spike-driven additions per sample: {report['additions_per_sample']:.0f}")
    if "literal_matches_closed_form" in report:
        verdict = "agree on every sample" if report["literal_matches_closed_form"] else "DISAGREE"
        lines.append(f"  golden closed form and literal timestep iLIF: {verdict}")
    return "\n".join(lines)
