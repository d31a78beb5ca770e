"""Calibration: per-layer activation scales from a calibration set (data-based normalisation).

The scale of hidden layer ``l`` is the activation value that maps to the largest spike code
``2^T - 1``: the maximum of the layer's positive activations (``method="max"``) or a percentile of
them (``method="percentile"``, 99.9 by default, Rueckauer et al. 2017), which trades a little
clipping of rare outliers for resolution everywhere else. The input's scale is the largest raw value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .torch_import import ConversionError, FloatLayer

__all__ = ["InputNormalization", "Calibration", "calibrate", "fold_normalization", "METHODS"]

METHODS = ("max", "percentile")


@dataclass(frozen=True)
class InputNormalization:
    """How the model's input was derived from raw bytes: ``x = (raw / scale - mean) / std``.

    ``mean`` and ``std`` are scalars or one value per input feature. The converter folds this into
    the first layer so the hardware is fed raw bytes.
    """

    scale: float = 1.0
    mean: object = 0.0
    std: object = 1.0

    def __post_init__(self):
        if not np.isfinite(self.scale) or self.scale <= 0:
            raise ConversionError(f"input normalisation scale {self.scale!r} must be a positive number")
        if np.any(~np.isfinite(np.asarray(self.std, dtype=float))) or np.any(np.asarray(self.std, dtype=float) <= 0):
            raise ConversionError(f"input normalisation std {self.std!r} must be positive")

    def apply(self, raw: np.ndarray) -> np.ndarray:
        return (raw / self.scale - np.asarray(self.mean, dtype=np.float64)) / np.asarray(self.std, dtype=np.float64)

    def as_dict(self) -> dict:
        def plain(v):
            return np.asarray(v, dtype=float).tolist()
        return {"scale": float(self.scale), "mean": plain(self.mean), "std": plain(self.std)}


def fold_normalization(layers: list[FloatLayer], normalization: InputNormalization) -> list[FloatLayer]:
    """Fold ``x = (raw/scale - mean)/std`` into the first layer: it then takes raw values."""
    first = layers[0]
    n_in = first.weight.shape[1]
    mean = np.broadcast_to(np.asarray(normalization.mean, dtype=np.float64).reshape(-1), (n_in,)) \
        if np.size(normalization.mean) in (1, n_in) else None
    std = np.broadcast_to(np.asarray(normalization.std, dtype=np.float64).reshape(-1), (n_in,)) \
        if np.size(normalization.std) in (1, n_in) else None
    if mean is None or std is None:
        raise ConversionError(f"input normalisation mean/std must have 1 or {n_in} values, got "
                              f"{np.size(normalization.mean)} and {np.size(normalization.std)}")
    weight = first.weight / (normalization.scale * std)[None, :]
    bias = first.bias - first.weight @ (mean / std)
    return [FloatLayer(first.path, weight, bias, first.relu)] + list(layers[1:])


@dataclass
class Calibration:
    """What calibration measured.

    Attributes
    ----------
    input_max : float
        Largest raw input value (maps to code ``2^T - 1``).
    activation_scales : list of float
        One per hidden layer.
    float_outputs : float64 array (N, classes)
        The float model's scores on the calibration set (through the folded layers).
    """

    input_max: float
    activation_scales: list
    float_outputs: np.ndarray
    method: str
    percentile: float


def to_numpy_raw(data) -> np.ndarray:
    """Calibration data as a float64 array of raw values: a tensor, an array, or a DataLoader."""
    if isinstance(data, torch.utils.data.DataLoader):
        batches = []
        for batch in data:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            batches.append(torch.as_tensor(x).detach().cpu().double().numpy())
        if not batches:
            raise ConversionError("the calibration DataLoader yielded no batches")
        return np.concatenate(batches)
    if isinstance(data, torch.Tensor):
        return data.detach().cpu().double().numpy()
    array = np.asarray(data)
    if array.dtype.kind not in "iuf":
        raise ConversionError(f"calibration data must be numeric, got dtype {array.dtype}")
    return array.astype(np.float64)


def calibrate(layers: list[FloatLayer], raw: np.ndarray, method: str = "percentile",
              percentile: float = 99.9) -> Calibration:
    """Run the (normalisation-folded) float layers on raw calibration inputs and measure the scales."""
    if method not in METHODS:
        raise ConversionError(f"calibration method {method!r} is not supported; supported: {', '.join(METHODS)}")
    if not (0 < percentile <= 100):
        raise ConversionError(f"percentile {percentile!r} is not in (0, 100]")
    if len(raw) == 0:
        raise ConversionError("the calibration set is empty")
    x = raw.reshape(len(raw), -1)
    if x.min() < 0 or x.max() > 255:
        raise ConversionError(f"calibration inputs span {x.min():g}..{x.max():g}; pass raw bytes (0..255) and "
                              f"give the model's normalisation separately (it is folded into the first layer)")
    input_max = float(x.max())
    if input_max <= 0:
        raise ConversionError("every calibration input is 0: cannot calibrate the input scale")
    scales = []
    for layer in layers[:-1]:
        x = layer.forward(x)
        positive = x[x > 0]
        if positive.size == 0:
            raise ConversionError(f"{layer.path!r}: no neuron is ever active on the calibration set; the layer "
                                  f"would never spike")
        scale = float(positive.max() if method == "max" else np.percentile(positive, percentile))
        scales.append(scale)
    outputs = layers[-1].forward(x)
    return Calibration(input_max, scales, outputs, method, float(percentile))
