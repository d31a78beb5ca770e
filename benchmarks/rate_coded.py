"""The rate-coded IF baseline at every T in one run: :func:`spikeforge.sim.golden.run_rate_coded` with checkpoints.

``golden.run_rate_coded(net, samples, T, ...)`` simulates T steps and reports the label after the last
one. Its random input spikes are drawn step by step from one seeded generator, so the first ``t``
steps of a ``T``-step run are exactly a ``t``-step run: one ``T_max``-step simulation that records
the labels and the spike counts after every step gives the whole accuracy-vs.-T curve for the cost of
its longest point. :func:`rate_coded_curve` does that, step for step the same arithmetic as the golden
model (``tests/benchmarks/test_rate_coded_curve.py`` checks it equals ``golden.run_rate_coded`` at
several T).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spikeforge.sim.golden import argmax_lowest

__all__ = ["RateCodedCurve", "rate_coded_curve"]


@dataclass
class RateCodedCurve:
    """Labels and spike counts after each step ``t = 1..T_max`` of a rate-coded run.

    Attributes
    ----------
    labels : int64 array (T_max, N)
        ``labels[t - 1]`` is what ``golden.run_rate_coded(..., timesteps=t)`` returns.
    spike_counts : int32 array (T_max, layers, N)
        ``spike_counts[t - 1, l]``: spikes layer ``l`` received in the first ``t`` steps.
    """

    labels: np.ndarray
    spike_counts: np.ndarray


def rate_coded_curve(net, samples, max_timesteps: int, input_mode: str = "spikes", seed: int = 0,
                     initial_potential: float = 0.0, dtype=np.float64) -> RateCodedCurve:
    """Run the rate-coded baseline for ``max_timesteps`` steps, recording every step.

    The arguments mean what they mean for ``golden.run_rate_coded``; ``samples`` are raw bytes.
    """
    if input_mode not in ("spikes", "current"):
        raise ValueError(f"input_mode {input_mode!r} is not supported; supported: 'spikes', 'current'")
    samples = np.asarray(samples)
    raw = samples.reshape(len(samples), -1).astype(np.int64)
    input_max = net.calibration.get("input_max")
    if input_max:
        rates = np.clip(raw / float(input_max), 0.0, 1.0)
    else:
        rates = net.input_lut[raw] / net.code_max
    rates = rates.astype(dtype)
    rng = np.random.default_rng(seed)
    n = len(raw)
    thresholds = [layer.threshold if layer.fires else np.ones(layer.out_features) for layer in net.layers]
    weights = [(layer.weight / theta[:, None]).T.astype(dtype) for layer, theta in zip(net.layers, thresholds)]
    biases = [(layer.bias / (theta * net.code_max)).astype(dtype) for layer, theta in zip(net.layers, thresholds)]
    potentials = [np.full((n, layer.out_features), initial_potential, dtype=dtype) for layer in net.hidden_layers]
    out_potential = np.zeros((n, net.num_classes), dtype=dtype)
    counts = np.zeros((len(net.layers), n), dtype=np.int64)
    labels = np.zeros((max_timesteps, n), dtype=np.int64)
    history = np.zeros((max_timesteps, len(net.layers), n), dtype=np.int32)
    # A constant input current gives the same first-layer input every step: compute it once (the
    # same floating-point operations on the same operands, so the same bits as recomputing it).
    constant = rates @ weights[0] + biases[0] if input_mode == "current" else None
    for step in range(max_timesteps):
        if input_mode == "spikes":
            activity = (rng.random(rates.shape, dtype=np.float64) < rates).astype(dtype)
            counts[0] += activity.sum(axis=1).astype(np.int64)
        else:
            activity = rates
        for index in range(len(net.hidden_layers)):
            potential = potentials[index]
            potential += constant if (index == 0 and constant is not None) else activity @ weights[index] + biases[index]
            spikes = potential >= 1.0
            potential -= spikes
            activity = spikes.astype(dtype)
            counts[index + 1] += spikes.sum(axis=1)
        out_potential += activity @ weights[-1] + biases[-1]
        labels[step] = argmax_lowest(out_potential)
        history[step] = counts
    return RateCodedCurve(labels=labels, spike_counts=history)
