"""Random integer networks for tests, property checks and benchmarks (no training, no torch)."""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .network import Conv2dLayer, DenseLayer, MaxPool2dLayer, Network

__all__ = ["random_network", "random_conv_network"]


def _weights(rng, shape, weight_bits: int) -> np.ndarray:
    """Uniform weights over the full ``weight_bits`` range, with extra weight on both extremes."""
    low, high = -(1 << (weight_bits - 1)), (1 << (weight_bits - 1)) - 1
    weight = rng.integers(low, high + 1, size=shape)
    weight[rng.random(shape) < 0.05] = low
    weight[rng.random(shape) < 0.05] = high
    return weight


def _neurons(rng, count: int, fires: bool, per_neuron: bool, threshold_range, bias_range, round_v0: bool) -> dict:
    """Random ``bias``, ``threshold`` (one per neuron or one shared) and ``v0`` for ``count`` neurons."""
    if not fires:
        threshold = np.ones(count, dtype=np.int64)     # the output layer does not fire
    elif per_neuron:
        threshold = rng.integers(threshold_range[0], threshold_range[1] + 1, size=count)
    else:
        threshold = np.full(count, rng.integers(threshold_range[0], threshold_range[1] + 1))
    bias = rng.integers(bias_range[0], bias_range[1] + 1, size=count)
    v0 = threshold // 2 if (round_v0 and fires) else np.zeros(count, dtype=np.int64)
    return dict(bias=bias, threshold=threshold, v0=v0)


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
    lut = np.minimum(np.round(np.arange(256) * code_max / 255), code_max).astype(np.int64)
    if seed % 3 == 1:
        lut = rng.integers(0, code_max + 1, size=256)
    layers = []
    for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        fires = index < len(sizes) - 2
        weight = _weights(rng, (n_out, n_in), weight_bits)
        neurons = _neurons(rng, n_out, fires, per_neuron_threshold, threshold_range, bias_range, round_v0)
        layers.append(DenseLayer(name=f"fc{index + 1}", weight=weight, weight_bits=weight_bits, fires=fires,
                                 **neurons))
    return Network(timesteps=timesteps, input_shape=(sizes[0],), input_lut=lut, layers=layers,
                   classes=[f"class{i}" for i in range(sizes[-1])], calibration={"source": f"random seed {seed}"})


def random_conv_network(seed: int, input_shape=(1, 8, 8), stack=(("conv", 4, 3, 1, 1), ("pool", 2, 2),
                        ("dense", 6)), classes: int = 3, timesteps: int = 4, weight_bits: int = 8,
                        threshold_range=(1, 200), bias_range=(-500, 500), round_v0: bool = True,
                        per_channel_threshold: bool = True, output: str = "dense") -> Network:
    """A random stack of conv, max-pool and dense layers, weights over the full ``weight_bits`` range.

    ``stack`` lists the hidden layers in order, each a tuple:

    * ``("conv", out_channels, kernel, stride, padding)`` — a firing :class:`Conv2dLayer` (kernel,
      stride and padding an int or an (h, w) pair);
    * ``("pool", kernel, stride)`` — a :class:`MaxPool2dLayer`;
    * ``("dense", out_features)`` — a firing :class:`DenseLayer` (after it, only dense layers).

    The output layer is dense with ``classes`` outputs (``output="dense"``) or, with
    ``output=("conv", out_channels, kernel, stride, padding)``, a conv whose CHW flatten are the scores.
    """
    rng = np.random.default_rng(seed)
    code_max = (1 << timesteps) - 1
    lut = np.minimum(np.round(np.arange(256) * code_max / 255), code_max).astype(np.int64)
    if seed % 3 == 1:
        lut = rng.integers(0, code_max + 1, size=256)

    def weights(shape):
        return _weights(rng, shape, weight_bits)

    def neurons(channels, fires):
        return _neurons(rng, channels, fires, per_channel_threshold, threshold_range, bias_range, round_v0)

    layers = []
    shape = tuple(input_shape) if len(input_shape) == 3 else (1,) + tuple(input_shape)
    specs = list(stack) + [("dense", classes) if output == "dense" else tuple(output)]
    for index, spec in enumerate(specs):
        fires = index < len(specs) - 1
        kind, *args = spec
        name = f"{kind[0]}{index + 1}"
        if kind == "conv":
            out_channels, kernel, stride, padding = args
            kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
            layer = Conv2dLayer(name, weights((out_channels, shape[0]) + kernel), weight_bits=weight_bits,
                                in_shape=shape, stride=stride, padding=padding, fires=fires,
                                **neurons(out_channels, fires))
        elif kind == "pool":
            kernel, stride = args
            layer = MaxPool2dLayer(name, in_shape=shape, kernel=kernel, stride=stride)
        elif kind == "dense":
            (out_features,) = args
            layer = DenseLayer(name, weights((out_features, int(np.prod(shape)))), weight_bits=weight_bits,
                               fires=fires, **neurons(out_features, fires))
        else:
            raise InputError(f"layer spec {spec!r}: kind {kind!r} is not one of 'conv', 'pool', 'dense'")
        layers.append(layer)
        shape = layer.out_shape
    return Network(timesteps=timesteps, input_shape=tuple(input_shape), input_lut=lut, layers=layers,
                   classes=[f"class{i}" for i in range(layers[-1].out_features)],
                   calibration={"source": f"random conv seed {seed}"})
