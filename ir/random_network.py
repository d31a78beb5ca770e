"""Random integer networks for tests, property checks and benchmarks (no training, no torch)."""

from __future__ import annotations

import numpy as np

from .network import DenseLayer, Network

__all__ = ["random_network"]


def random_network(seed: int, sizes=(16, 12, 8, 4), timesteps: int = 4, weight_bits: int = 8,
                   threshold_range=(1, 200), bias_range=(-500, 500), round_v0: bool = True,
                   per_neuron_threshold: bool = True) -> Network:
    """A network with random integer weights, biases and thresholds over the full legal ranges.

    ``sizes`` lists the feature counts: input, hidden..., classes. Weights span the whole
    ``weight_bits`` range (negative weights and the extreme values included), so saturation, negative
    potentials and exact-threshold potentials all occur.
    """
    rng = np.random.default_rng(seed)
    code_max = (1 << timesteps) - 1
    low, high = -(1 << (weight_bits - 1)), (1 << (weight_bits - 1)) - 1
    lut = np.minimum(np.round(np.arange(256) * code_max / 255), code_max).astype(np.int64)
    if seed % 3 == 1:
        lut = rng.integers(0, code_max + 1, size=256)
    layers = []
    for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        fires = index < len(sizes) - 2
        weight = rng.integers(low, high + 1, size=(n_out, n_in))
        weight[rng.random(weight.shape) < 0.05] = low
        weight[rng.random(weight.shape) < 0.05] = high
        if not fires:
            threshold = np.ones(n_out, dtype=np.int64)     # the output layer does not fire
        elif per_neuron_threshold:
            threshold = rng.integers(threshold_range[0], threshold_range[1] + 1, size=n_out)
        else:
            threshold = np.full(n_out, rng.integers(threshold_range[0], threshold_range[1] + 1))
        bias = rng.integers(bias_range[0], bias_range[1] + 1, size=n_out)
        v0 = threshold // 2 if (round_v0 and fires) else np.zeros(n_out, dtype=np.int64)
        layers.append(DenseLayer(name=f"fc{index + 1}", weight=weight, bias=bias, threshold=threshold,
                                 v0=v0, weight_bits=weight_bits, fires=fires))
    return Network(timesteps=timesteps, input_shape=(sizes[0],), input_lut=lut, layers=layers,
                   classes=[f"class{i}" for i in range(sizes[-1])], calibration={"source": f"random seed {seed}"})
