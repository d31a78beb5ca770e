"""The rate-coded IF baseline at every T in one run: :func:`spikeforge.ir.golden.run_rate_coded` with checkpoints.

``golden.rate_coded_steps`` yields the state after every step, and the first ``t`` steps of a longer
run are exactly a ``t``-step run: one ``T_max``-step simulation that records the labels and the spike
counts after every step gives the whole accuracy-vs.-T curve for the cost of its longest point
(``tests/benchmarks/test_rate_coded_curve.py`` checks it equals ``golden.run_rate_coded`` at several T).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spikeforge.ir.golden import argmax_lowest, rate_coded_steps

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
    labels = np.zeros((max_timesteps, len(samples)), dtype=np.int64)
    history = np.zeros((max_timesteps, len(net.layers), len(samples)), dtype=np.int32)
    steps = rate_coded_steps(net, samples, max_timesteps, input_mode, seed, initial_potential, dtype)
    for step, (out_potential, spike_counts) in enumerate(steps):
        labels[step] = argmax_lowest(out_potential)
        history[step] = np.stack(spike_counts)
    return RateCodedCurve(labels=labels, spike_counts=history)
