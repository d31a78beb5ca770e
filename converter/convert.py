"""The conversion pipeline: PyTorch model -> calibrated, quantised integer iLIF :class:`Network`.

    from spikeforge.converter.convert import convert
    net = convert(model, raw_samples, timesteps=8, weight_bits=8,
                  normalization=InputNormalization(scale=255.0))

Steps (each a function of :mod:`spikeforge.converter`): read the model's input shape, import
through torch.fx (BatchNorm, average pooling and in-forward input arithmetic folded), fold the
explicit input normalisation into the first layer, check the folded layers reproduce the model,
calibrate activation scales, quantise. The converter takes arrays: dataset names are resolved by
its callers (``spikeforge.convert``, the flow, the CLI). Nothing is written here: :meth:`Network.save`
writes.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from .calibrate import InputNormalization, calibrate, fold_normalization, to_numpy_raw
from .clip_search import search_percentile
from spikeforge.ir import golden
from spikeforge.ir.network import MAX_TIMESTEPS, MaxPool2dLayer, Network
from .quantize import V0_MODES, input_lut, integer_layer, quantize_layers
from .torch_import import (LINEAR_KINDS, ConversionError, float_forward, import_model, model_input_shape,
                           static_batch)

__all__ = ["convert", "ConversionError", "InputNormalization", "float_model_outputs"]

#: How activation scales are chosen: the maximum, a percentile, or a search over percentiles
#: (:mod:`.clip_search`).
METHODS = ("percentile", "max", "search")
#: The model and the float chain are run on this many samples at a time.
BATCH = 256


def _layer_names(paths) -> list[str]:
    names = []
    for index, path in enumerate(paths):
        name = re.sub(r"\W+", "_", str(path)).strip("_") or f"layer{index + 1}"
        if not name[0].isalpha():
            name = f"layer{name}"
        while name in names:
            name = f"{name}_{index}"
        names.append(name)
    return names


def _model_outputs(model, raw, input_shape, normalization) -> np.ndarray:
    """The model's own outputs on raw samples (normalised as the explicit normalisation says)."""
    outputs = []
    fixed = static_batch(model)            # a program exported without a dynamic batch takes only that size
    batch = fixed or BATCH
    with torch.no_grad():
        for start in range(0, len(raw), batch):
            chunk = raw[start:start + batch].reshape((-1,) + tuple(input_shape))
            model_input = torch.as_tensor(normalization.apply(chunk), dtype=torch.float32)
            if fixed and len(chunk) < fixed:
                padding = model_input.new_zeros((fixed - len(chunk),) + tuple(model_input.shape[1:]))
                model_input = torch.cat([model_input, padding])
            try:
                result = model(model_input)
            except Exception as error:  # the user's forward can raise anything
                raise ConversionError(f"running the model on calibration inputs of shape "
                                      f"{tuple(model_input.shape)} failed: {error}") from None
            if isinstance(result, (tuple, list)) and len(result) == 1:
                result = result[0]
            outputs.append(torch.as_tensor(result).double().numpy()[:len(chunk)].reshape(len(chunk), -1))
    return np.concatenate(outputs)


def _check_import(model, layers, raw, input_shape, normalization):
    """The folded float chain must reproduce the model's own output on the calibration inputs.

    A QuantReLU rounds: float32 (the model) and float64 (the chain) may round an activation that lies on
    a step's boundary differently, so with QuantReLU layers 1 % of the samples may differ.
    """
    x = float_forward(layers, raw)
    reference = _model_outputs(model, raw, input_shape, normalization)
    if reference.shape != x.shape:
        raise ConversionError(f"the model outputs shape {reference.shape}, the imported layers {x.shape}")
    tolerance = 1e-3 * (1.0 + np.abs(reference).max())
    per_sample = np.abs(reference - x).max(axis=1) if len(x) else np.zeros(0)
    rounding = any(getattr(layer, "quantized", None) is not None and layer.quantized.step is not None
                   for layer in layers)
    error = np.quantile(per_sample, 0.99) if (rounding and len(x)) else (per_sample.max() if len(x) else 0.0)
    if not error <= tolerance:
        raise ConversionError(f"the imported layers do not reproduce the model (max |difference| {error:.3g} > "
                              f"{tolerance:.3g}); the model may reshape or reorder its input in a way that is not "
                              f"a flatten")
    return x


def float_model_outputs(model, raw, *, normalization: InputNormalization | None = None, input_shape=None):
    """The folded float chain (what the converter quantises) on raw samples, and the folded layers.

    For tests and benchmarks: the chain's outputs match the model's own to float precision.
    """
    raw = to_numpy_raw(raw)
    normalization = normalization or InputNormalization()
    input_shape = model_input_shape(model, raw.shape[1:], input_shape)
    layers = fold_normalization(import_model(model, input_shape), normalization, input_shape)
    return float_forward(layers, raw), layers


def convert(model, calibration, *, timesteps: int = 8, weight_bits=8, method: str = "percentile",
            percentile: float = 99.9, v0: str = "round", per_channel: bool = False,
            normalization: InputNormalization | None = None, input_shape=None, classes=None, labels=None,
            layer_names=None, evaluation=None) -> Network:
    """Convert a trained PyTorch classifier into an integer spiking network.

    Parameters
    ----------
    model : torch.nn.Module
        A chain of the layers :mod:`.torch_import` accepts (Linear, Conv2d, BatchNorm, ReLU, MaxPool2d,
        AvgPool2d, Flatten, Dropout, input arithmetic), traceable by ``torch.fx`` or already a
        ``torch.export`` GraphModule.
    calibration : tensor, array or DataLoader
        Raw (byte-valued, 0..255, uint8 or float) calibration inputs of shape (N, ...). Image samples
        ``(N, H, W)`` are read as ``(N, 1, H, W)`` for a model whose first Conv2d takes one channel
        (see :func:`.torch_import.model_input_shape`).
    timesteps : int
        T in 1..16.
    weight_bits : int or list of int
        2..16, per layer with weights when a list.
    method, percentile : calibration method and percentile: ``"percentile"`` (of each layer's positive
        activations, 99.9 by default), ``"max"``, or ``"search"``: the percentile (one for all layers)
        whose integer network classifies the calibration set best (:mod:`.clip_search`; ``percentile``
        is then ignored).
    v0 : ``"round"`` (θ // 2) or ``"floor"`` (0).
    per_channel : bool
        One threshold per output neuron / output channel (per-channel weight scales) instead of one per layer.
    normalization : InputNormalization
        How the model's input was made from raw bytes; folded into the first layer. It applies first:
        arithmetic in the model's ``forward`` (``x / 255``) is part of the model and applies after it.
    input_shape : tuple, optional
        One model input's shape, when neither the samples nor the model say it.
    classes : list of str, optional
        Class names (default ``"0"``, ``"1"``, ...).
    labels : int array (N,), optional
        The calibration samples' labels: the clip search's reference (else the float model's predictions).
    evaluation : dict, optional
        ``{name: (raw_samples, labels)}``: the float model's accuracy on each is recorded in
        ``calibration["float_accuracy"]``.

    Raises
    ------
    ConversionError
        With a message naming the offending module, value or argument and what is accepted.
    """
    if not (isinstance(timesteps, (int, np.integer)) and 1 <= timesteps <= MAX_TIMESTEPS):
        raise ConversionError(f"timesteps {timesteps!r} is not in 1..{MAX_TIMESTEPS}")
    if method not in METHODS:
        raise ConversionError(f"calibration method {method!r} is not supported; supported: {', '.join(METHODS)}")
    if v0 not in V0_MODES:
        raise ConversionError(f"v0 mode {v0!r} is not supported; supported: {', '.join(V0_MODES)}")
    raw = to_numpy_raw(calibration)
    normalization = normalization or InputNormalization()
    if raw.ndim < 2:
        raise ConversionError(f"calibration data must be (N, *input_shape), got shape {raw.shape}")
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(raw):
            raise ConversionError(f"{len(labels)} labels for {len(raw)} calibration samples")
    input_shape = model_input_shape(model, raw.shape[1:], input_shape)

    float_layers = import_model(model, input_shape)
    folded = fold_normalization(float_layers, normalization, input_shape)
    logits = _check_import(model, folded, raw, input_shape, normalization)
    names = list(layer_names) if layer_names else _layer_names(layer.path for layer in float_layers)
    if len(names) != len(float_layers):
        raise ConversionError(f"{len(names)} layer names for {len(float_layers)} layers "
                              f"({', '.join(layer.path for layer in float_layers)})")
    n_classes = int(np.prod(folded[-1].out_shape))
    classes = list(classes) if classes is not None else [str(i) for i in range(n_classes)]
    if len(classes) != n_classes:
        raise ConversionError(f"{len(classes)} class names for a model with {n_classes} outputs")
    # A conv first layer fixes the map shape; element order is the same for any reshape of the input.
    network_shape = tuple(folded[0].in_shape) if folded[0].kind != "dense" else input_shape

    if folded[0].kind in LINEAR_KINDS and folded[0].quantized.encoder is not None:
        layers, lut, record = _finetuned_layers(folded, timesteps, weight_bits, names)
        net = Network(timesteps=timesteps, input_shape=network_shape, input_lut=lut, layers=layers, classes=classes,
                      calibration={})
        _check_finetuned(net, folded, raw)
        record.update({"samples": int(len(raw)), "normalization": normalization.as_dict(),
                       "source_layers": [layer.path for layer in float_layers]})
        if evaluation:
            record["float_accuracy"] = _float_accuracy(folded, evaluation)
        return Network(timesteps=timesteps, input_shape=network_shape, input_lut=lut, layers=layers, classes=classes,
                       calibration=record)
    code_max = (1 << timesteps) - 1
    learned = _learned_scales(folded, code_max)

    def build(calibration_method, at_percentile):
        measured = calibrate(folded, raw, method=calibration_method, percentile=at_percentile)
        scales = [measured.activation_scales[i] if scale is None else scale for i, scale in enumerate(learned)]
        layers, steps = quantize_layers(folded, measured.input_max, scales, timesteps,
                                        weight_bits, per_channel=per_channel, v0=v0, names=names)
        net = Network(timesteps=timesteps, input_shape=network_shape,
                      input_lut=input_lut(measured.input_max, timesteps), layers=layers, classes=classes,
                      calibration={})
        return net, measured, steps

    record = {}
    if method == "search":
        reference = labels if labels is not None else np.argmax(logits, axis=1)
        raw_bytes = np.clip(np.round(raw), 0, 255).astype(np.uint8)
        percentile, table = search_percentile(lambda at: build("percentile", at)[0], raw_bytes, reference, logits)
        record["search"] = {"reference": "calibration labels" if labels is not None else "float model predictions",
                            "candidates": table}
    net, measured, steps = build("percentile" if method == "search" else method, percentile)
    record.update({
        "method": method, "percentile": percentile if method in ("percentile", "search") else None,
        "learned_steps": [layer for layer, scale in zip(names, learned) if scale is not None],
        "samples": int(len(raw)), "input_max": measured.input_max,
        "activation_scales": [float(s) for s in measured.activation_scales],
        "activation_steps": [float(s) for s in steps],
        "normalization": normalization.as_dict(), "per_channel": bool(per_channel), "v0": v0,
        "weight_bits": [layer.weight_bits for layer in net.layers if layer.kind in LINEAR_KINDS],
        "source_layers": [layer.path for layer in float_layers],
    })
    if evaluation:
        record["float_accuracy"] = _float_accuracy(folded, evaluation)
    return Network(timesteps=timesteps, input_shape=network_shape, input_lut=net.input_lut, layers=net.layers,
                   classes=classes, calibration=record)


def _float_accuracy(folded, evaluation) -> dict:
    accuracy = {}
    for name, (samples, sample_labels) in evaluation.items():
        scores = float_forward(folded, to_numpy_raw(samples))
        accuracy[str(name)] = float(np.mean(np.argmax(scores, axis=1) == np.asarray(sample_labels).reshape(-1)))
    return accuracy


def _learned_scales(folded, code_max: int) -> list:
    """Per hidden linear layer: the activation scale a QuantReLU after it learned (step · (2^T - 1)), or None."""
    hidden = [layer for layer in folded if layer.kind in LINEAR_KINDS][:-1]
    scales = []
    for layer in hidden:
        quantized = layer.quantized
        if quantized.step is None:
            scales.append(None)
            continue
        if quantized.code_max != code_max:
            raise ConversionError(f"{layer.path!r}: its QuantReLU was trained for T = {_timesteps_of(quantized.code_max)}"
                                  f" (codes 0..{quantized.code_max}); convert with timesteps "
                                  f"{_timesteps_of(quantized.code_max)}")
        if quantized.step.size != 1:
            raise ConversionError(f"{layer.path!r}: a QuantReLU with one step per channel converts only as part of "
                                  f"a network spikeforge.finetune wrote; supported here: one step per layer")
        scales.append(float(quantized.step[0]) * code_max)
    return scales


def _timesteps_of(code_max: int) -> int:
    return int(code_max + 1).bit_length() - 1


def _integers(values, what: str, path: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if not np.array_equal(values, np.round(values)):
        raise ConversionError(f"{path!r}: the fine-tuned network's {what} are not integers")
    return np.round(values).astype(np.int64)


def _finetuned_layers(folded, timesteps: int, weight_bits, names):
    """The integer layers, input LUT and calibration record of a network :mod:`.qat` fine-tuned: its
    integers are taken as they are (nothing is calibrated or rounded)."""
    code_max = (1 << timesteps) - 1
    encoder = folded[0].quantized.encoder
    scale, offset = encoder["scale"], encoder["offset"]
    if not (np.allclose(scale, scale[0], rtol=1e-9, atol=0) and np.allclose(offset, offset[0], rtol=0,
                                                                            atol=1e-9 * (1 + abs(offset[0])))):
        raise ConversionError("the fine-tuned network's input encoder and the input normalisation given together map "
                              "raw bytes differently for different inputs; the hardware has one 256-entry LUT: give "
                              "the normalisation the network was fine-tuned with")
    raw_bytes = np.clip(np.round(np.arange(256) * scale[0] + offset[0]), 0, 255).astype(np.int64)
    lut = _integers(encoder["lut"][raw_bytes], "input codes", encoder["path"])
    linear = [index for index, layer in enumerate(folded) if layer.kind in LINEAR_KINDS]
    for layer in folded:
        neuron = layer.quantized.neuron if layer.kind in LINEAR_KINDS else None
        if neuron is not None and neuron["code_max"] != code_max:
            raise ConversionError(f"{layer.path!r}: the network was fine-tuned for T = "
                                  f"{_timesteps_of(neuron['code_max'])}; convert it with timesteps "
                                  f"{_timesteps_of(neuron['code_max'])} (asked: {timesteps})")
    if lut.min() < 0 or lut.max() > code_max:
        raise ConversionError(f"the fine-tuned network's input codes reach {lut.max()}, more than T = {timesteps} "
                              f"allows ({code_max}); convert it with the T it was fine-tuned for")
    bits = list(weight_bits) if isinstance(weight_bits, (list, tuple)) else [weight_bits] * len(linear)
    if len(bits) != len(linear):
        raise ConversionError(f"{len(bits)} weight_bits values for {len(linear)} layers with weights")
    layers, steps, order = [], [], 0
    for index, (layer, name) in enumerate(zip(folded, names)):
        if layer.kind == "maxpool2d":
            layers.append(MaxPool2dLayer(name=name, in_shape=layer.in_shape, kernel=layer.kernel, stride=layer.stride))
            continue
        wbits = bits[order]
        if not (isinstance(wbits, (int, np.integer)) and 2 <= wbits <= 16):
            raise ConversionError(f"weight_bits {wbits!r} is not in 2..16")
        weight = _integers(layer.weight, "weights", layer.path)
        bias = _integers(layer.bias, "biases", layer.path)
        top = (1 << (wbits - 1)) - 1
        if weight.max(initial=0) > top or weight.min(initial=0) < -top - 1:
            needed = int(max(weight.max(initial=0), -weight.min(initial=0) - 1)).bit_length() + 1
            raise ConversionError(f"{layer.path!r}: the fine-tuned weights need {needed} bits; weight_bits {wbits} "
                                  f"is too narrow (convert with the width it was fine-tuned for)")
        neuron = layer.quantized.neuron
        fires = index != linear[-1]
        if fires:
            threshold = _integers(neuron["threshold"], "thresholds", layer.path)
            v0 = _integers(neuron["v0"], "initial potentials", layer.path)
            if threshold.min() < 1:
                raise ConversionError(f"{layer.path!r}: a fine-tuned threshold is {threshold.min()}; thresholds are >= 1")
            steps.append(neuron["step"].tolist() if np.ptp(neuron["step"]) else float(neuron["step"][0]))
        else:
            threshold = np.ones(weight.shape[0], dtype=np.int64)
            v0 = np.zeros(weight.shape[0], dtype=np.int64)
        layers.append(integer_layer(layer, name, weight, bias, threshold, v0, wbits, fires))
        order += 1
    per_channel = any(np.ptp(layer.threshold) > 0 for layer in layers if layer.kind != "maxpool2d" and layer.fires)
    record = {"method": "finetuned", "percentile": None, "activation_steps": steps, "per_channel": bool(per_channel),
              "v0": "round", "weight_bits": [int(b) for b in bits]}
    return layers, lut, record


def _check_finetuned(net: Network, folded, raw: np.ndarray):
    """The integer network must give the fine-tuned chain's scores (up to its positive score unit) exactly."""
    raw_bytes = np.clip(np.round(raw), 0, 255)
    expected = float_forward(folded, raw_bytes)
    scores = golden.run(net, raw_bytes.reshape(len(raw_bytes), -1).astype(np.uint8)).scores * \
        folded[-1].quantized.score_scale
    if not np.allclose(scores, expected, rtol=1e-9, atol=1e-9 * (1 + np.abs(expected).max())):
        raise ConversionError("the integer network does not reproduce the fine-tuned model's scores; the model does "
                              "not follow the form spikeforge.finetune writes")
