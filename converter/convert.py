"""The conversion pipeline: PyTorch model -> calibrated, quantised integer iLIF :class:`Network`.

    import spikeforge
    net = spikeforge.convert(model, "digits", timesteps=8, weight_bits=8)

Steps (each a function of :mod:`spikeforge.converter`): import through torch.fx (BN folded),
fold the input normalisation into the first layer, check the folded layers reproduce the model,
calibrate activation scales, quantise. Nothing is written here: :meth:`Network.save` writes.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from .calibrate import InputNormalization, calibrate, fold_normalization, to_numpy_raw
from .clip_search import search_percentile
from spikeforge.ir.network import MAX_TIMESTEPS, Network
from .quantize import V0_MODES, input_lut, quantize_layers
from .torch_import import ConversionError, import_model

__all__ = ["convert", "ConversionError", "InputNormalization"]

#: Calibration uses at most this many samples of a named dataset's training split.
MAX_CALIBRATION_SAMPLES = 5000
#: How activation scales are chosen: the maximum, a percentile, or a search over percentiles
#: (:mod:`.clip_search`).
METHODS = ("percentile", "max", "search")


def _layer_names(paths) -> list[str]:
    names = []
    for index, path in enumerate(paths):
        name = re.sub(r"\W+", "_", str(path)).strip("_") or f"fc{index + 1}"
        if not name[0].isalpha():
            name = f"layer{name}"
        while name in names:
            name = f"{name}_{index}"
        names.append(name)
    return names


def _forward(layers, raw: np.ndarray) -> np.ndarray:
    """The folded float chain's outputs (logits) for raw inputs."""
    x = raw.reshape(len(raw), -1).astype(np.float64)
    for layer in layers:
        x = layer.forward(x)
    return x


def _check_import(model, layers, raw, input_shape, normalization):
    """The folded float chain must reproduce the model's own output on the calibration inputs."""
    x = _forward(layers, raw)
    with torch.no_grad():
        model_input = torch.as_tensor(normalization.apply(raw.reshape(len(raw), -1)).reshape((len(raw),) + input_shape),
                                      dtype=torch.float32)
        try:
            reference = model(model_input)
        except Exception as error:  # the user's forward can raise anything
            raise ConversionError(f"running the model on calibration inputs of shape {tuple(model_input.shape)} "
                                  f"failed: {error}") from None
    reference = torch.as_tensor(reference).double().numpy().reshape(len(raw), -1)
    if reference.shape != x.shape:
        raise ConversionError(f"the model outputs shape {reference.shape}, the imported layers {x.shape}")
    error = np.abs(reference - x).max()
    tolerance = 1e-3 * (1.0 + np.abs(reference).max())
    if not error <= tolerance:
        raise ConversionError(f"the imported layers do not reproduce the model (max |difference| {error:.3g} > "
                              f"{tolerance:.3g}); the model may reshape or reorder its input in a way that is not "
                              f"a flatten")


def convert(model, calibration, *, timesteps: int = 8, weight_bits=8, method: str = "percentile",
            percentile: float = 99.9, v0: str = "round", per_channel: bool = False,
            normalization: InputNormalization | None = None, input_shape=None, classes=None,
            layer_names=None) -> Network:
    """Convert a trained PyTorch classifier into an integer spiking network.

    Parameters
    ----------
    model : torch.nn.Module
        A chain of Linear / ReLU / Flatten / Dropout / Identity / BatchNorm1d (see
        :mod:`.torch_import`), traceable by ``torch.fx`` or already a ``torch.export`` GraphModule.
    calibration : tensor, array, DataLoader or dataset name
        Raw (byte-valued, 0..255) calibration inputs of shape (N, *input_shape), or the name of a
        :mod:`spikeforge.datasets` dataset (its training split; its normalisation and class names are
        used unless given, and the float accuracy on its test split is recorded).
    timesteps : int
        T in 1..16.
    weight_bits : int or list of int
        2..16, per layer when a list.
    method, percentile : calibration method and percentile: ``"percentile"`` (of each layer's positive
        activations, 99.9 by default), ``"max"``, or ``"search"``: the percentile (one for all layers)
        whose integer network classifies the calibration set best (:mod:`.clip_search`; ``percentile``
        is then ignored).
    v0 : ``"round"`` (θ // 2) or ``"floor"`` (0).
    per_channel : bool
        One threshold per output neuron (per-channel weight scales) instead of one per layer.
    normalization : InputNormalization
        How the model's input was made from raw bytes; folded into the first layer.

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
    record = {}
    test_split = None
    labels = None
    if isinstance(calibration, str):
        from spikeforge.datasets import load as load_dataset
        train = load_dataset(calibration, "train")
        test_split = load_dataset(calibration, "test")
        raw = train.samples[:MAX_CALIBRATION_SAMPLES].astype(np.float64)
        labels = train.labels[:MAX_CALIBRATION_SAMPLES]
        normalization = normalization or InputNormalization(scale=train.input_scale)
        classes = classes or train.classes
        record["dataset"] = calibration
    else:
        raw = to_numpy_raw(calibration)
    normalization = normalization or InputNormalization()
    if raw.ndim < 2:
        raise ConversionError(f"calibration data must be (N, *input_shape), got shape {raw.shape}")
    input_shape = tuple(input_shape) if input_shape is not None else tuple(raw.shape[1:])
    if int(np.prod(input_shape)) != int(np.prod(raw.shape[1:])):
        raise ConversionError(f"input_shape {input_shape} does not match calibration samples of shape {raw.shape[1:]}")

    float_layers = import_model(model)
    if float_layers[0].weight.shape[1] != int(np.prod(input_shape)):
        raise ConversionError(f"{float_layers[0].path!r} takes {float_layers[0].weight.shape[1]} features but the "
                              f"input has {int(np.prod(input_shape))} ({'x'.join(map(str, input_shape))})")
    folded = fold_normalization(float_layers, normalization)
    _check_import(model, folded, raw, input_shape, normalization)
    names = list(layer_names) if layer_names else _layer_names(layer.path for layer in float_layers)
    n_classes = folded[-1].weight.shape[0]
    classes = list(classes) if classes is not None else [str(i) for i in range(n_classes)]
    if len(classes) != n_classes:
        raise ConversionError(f"{len(classes)} class names for a model with {n_classes} outputs")

    def build(calibration_method, at_percentile):
        measured = calibrate(folded, raw, method=calibration_method, percentile=at_percentile)
        dense, steps = quantize_layers(folded, measured.input_max, measured.activation_scales, timesteps,
                                       weight_bits, per_channel=per_channel, v0=v0, names=names)
        net = Network(timesteps=timesteps, input_shape=input_shape,
                      input_lut=input_lut(measured.input_max, timesteps), layers=dense, classes=classes,
                      calibration={})
        return net, measured, steps

    if method == "search":
        logits = _forward(folded, raw)
        reference = labels if labels is not None else np.argmax(logits, axis=1)
        raw_bytes = np.clip(np.round(raw), 0, 255).astype(np.uint8)
        percentile, table = search_percentile(lambda at: build("percentile", at)[0], raw_bytes, reference, logits)
        record["search"] = {"reference": "calibration labels" if labels is not None else "float model predictions",
                            "candidates": table}
    net, measured, steps = build("percentile" if method == "search" else method, percentile)
    dense = net.layers
    record.update({
        "method": method, "percentile": percentile if method in ("percentile", "search") else None,
        "samples": int(len(raw)), "input_max": measured.input_max,
        "activation_scales": [float(s) for s in measured.activation_scales],
        "activation_steps": [float(s) for s in steps],
        "normalization": normalization.as_dict(), "per_channel": bool(per_channel), "v0": v0,
        "weight_bits": [layer.weight_bits for layer in dense],
        "source_layers": [layer.path for layer in float_layers],
    })
    if test_split is not None:
        x = _forward(folded, test_split.samples)
        record["float_accuracy"] = {f"{test_split.name}/test": float(np.mean(np.argmax(x, axis=1) == test_split.labels))}
    return Network(timesteps=timesteps, input_shape=input_shape, input_lut=net.input_lut, layers=dense,
                   classes=classes, calibration=record)
