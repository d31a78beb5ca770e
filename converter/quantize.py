"""Quantisation: float layers + calibration -> integer iLIF layers (DESIGN.md §1, §1b).

With ``C = 2^T - 1`` and step sizes ``Δ_0 = input_max / C`` (input) and ``Δ_l = scale_l / C``
(hidden layer ``l``), a spike code ``q_l`` stands for the activation ``a_l ≈ Δ_l · q_l``. The
float layer ``z = W a + b`` (a Linear, or a Conv2d: the same per output channel) becomes, with an
integer threshold ``θ`` and weight scale ``α = θ Δ_{l-1} / Δ_l``:

    θ · q_l ≈ α W · q_{l-1} + α b / Δ_{l-1}         →  W_int = round(α W),  b_int = round(α b / Δ_{l-1})

and the neuron computes ``q_l = clip(floor((W_int q + b_int + v0) / θ), 0, C)``. We pick the largest
θ for which the weights still fit ``weight_bits`` (per layer, or per output neuron / output channel
with ``per_channel``): ``θ = floor(α_max Δ_l / Δ_{l-1})`` with ``α_max = (2^(bits-1) - 1) / max|W|``.
θ then absorbs the layer's scale exactly and the weights keep all their bits. Should θ fall below 1
the layer's step grows instead (``θ = 1``, ``Δ_l = Δ_{l-1} / α_max``) so nothing overflows.
The output layer does not fire: ``scores = W_int q + b_int`` with ``α = α_max``.

A max pool passes its input's codes, so its step is its input layer's step: ``maxpool`` commutes
with the monotonic neuron (DESIGN.md §1b).
"""

from __future__ import annotations

import numpy as np

from spikeforge.ir.golden import input_lut
from spikeforge.ir.network import Conv2dLayer, DenseLayer, MaxPool2dLayer
from .torch_import import LINEAR_KINDS, ConversionError

__all__ = ["quantize_layers", "integer_layer", "input_lut", "V0_MODES"]

V0_MODES = ("round", "floor")


def _alpha_max(weight: np.ndarray, weight_bits: int, per_channel: bool) -> np.ndarray:
    top = (1 << (weight_bits - 1)) - 1
    rows = np.abs(weight).reshape(weight.shape[0], -1)
    magnitude = rows.max(axis=1) if per_channel else np.full(weight.shape[0], rows.max())
    magnitude = np.where(magnitude > 0, magnitude, 1.0)       # an all-zero row: any scale works
    return top / magnitude


def integer_layer(layer, name: str, weight, bias, threshold, v0, weight_bits, fires: bool):
    """The IR layer for a float ``layer`` (dense or conv2d, from the torch import) with its integer arrays."""
    if layer.kind == "conv2d":
        return Conv2dLayer(name=name, weight=weight, bias=bias, threshold=threshold, v0=v0,
                           weight_bits=int(weight_bits), in_shape=layer.in_shape, stride=layer.stride,
                           padding=layer.padding, fires=fires)
    return DenseLayer(name=name, weight=weight, bias=bias, threshold=threshold, v0=v0,
                      weight_bits=int(weight_bits), fires=fires)


def quantize_layers(layers: list, input_max: float, activation_scales: list, timesteps: int,
                    weight_bits, per_channel: bool = False, v0: str = "round", names=None):
    """Quantise folded float layers; returns ``(ir_layers, effective_steps)``.

    ``layers`` are :class:`~.torch_import.FloatLayer`, ``FloatConv`` and ``FloatMaxPool``;
    ``activation_scales`` has one entry per hidden linear layer; ``weight_bits`` is one int or one per
    linear layer (pools have no weights); ``names`` one per layer. ``effective_steps[l]`` is the
    activation step Δ that hidden linear layer ``l``'s codes really stand for (equal to
    ``scale_l / C`` unless θ hit its floor of 1).
    """
    if v0 not in V0_MODES:
        raise ConversionError(f"v0 mode {v0!r} is not supported; supported: {', '.join(V0_MODES)}")
    linear = [index for index, layer in enumerate(layers) if layer.kind in LINEAR_KINDS]
    bits = list(weight_bits) if isinstance(weight_bits, (list, tuple)) else [weight_bits] * len(linear)
    if len(bits) != len(linear):
        raise ConversionError(f"{len(bits)} weight_bits values for {len(linear)} layers with weights")
    for b in bits:
        if not (isinstance(b, (int, np.integer)) and 2 <= b <= 16):
            raise ConversionError(f"weight_bits {b!r} is not in 2..16")
    if len(activation_scales) != len(linear) - 1:
        raise ConversionError(f"{len(activation_scales)} activation scales for {len(linear) - 1} hidden layers")
    code_max = (1 << timesteps) - 1
    names = list(names) if names else [f"layer{i + 1}" for i in range(len(layers))]
    step_in = input_max / code_max
    out, steps = [], []
    order = 0                                  # index among the linear layers
    for index, (layer, name) in enumerate(zip(layers, names)):
        if layer.kind == "maxpool2d":
            out.append(MaxPool2dLayer(name=name, in_shape=layer.in_shape, kernel=layer.kernel, stride=layer.stride))
            continue
        wbits = bits[order]
        fires = index != linear[-1]
        top = (1 << (wbits - 1)) - 1
        alpha_max = _alpha_max(layer.weight, wbits, per_channel and fires)
        if fires:
            # Ratio of output to input step; raised if needed so every θ >= 1 (coarser, never overflowing).
            ratio = max(activation_scales[order] / code_max / step_in, 1.0 / float(alpha_max.min()))
            threshold = np.maximum(1, np.floor(alpha_max * ratio)).astype(np.int64)
            alpha = threshold / ratio
        else:
            alpha = alpha_max
            threshold = np.ones(layer.weight.shape[0], dtype=np.int64)
        scale = alpha.reshape((-1,) + (1,) * (layer.weight.ndim - 1))
        weight = np.clip(np.round(scale * layer.weight), -top - 1, top).astype(np.int64)
        bias = np.round(alpha * layer.bias / step_in).astype(np.int64)
        v0_values = threshold // 2 if (fires and v0 == "round") else np.zeros_like(threshold)
        out.append(integer_layer(layer, name, weight, bias, threshold, v0_values, wbits, fires))
        if fires:
            step_in = ratio * step_in
            steps.append(step_in)
        order += 1
    return out, steps
