"""Calibration: per-layer activation scales from a calibration set (data-based normalisation).

The scale of hidden layer ``l`` (a Linear or a Conv2d that fires) is the activation value that maps
to the largest spike code ``2^T - 1``: the maximum of the layer's positive activations
(``method="max"``) or a percentile of them (``method="percentile"``, 99.9 by default, Rueckauer et
al. 2017), which trades a little clipping of rare outliers for resolution everywhere else. For a
conv layer the activations are taken over all positions and channels, before any max pool (a pool
passes its input's codes). The input's scale is the largest raw value.

Two input normalisations may apply, in this order: the explicit :class:`InputNormalization` maps raw
bytes to the model's input (``--input-scale/-mean/-std``); arithmetic written in the model's
``forward`` (``x / 255``, ``(x - mean) / std``) is part of the model and was already folded into its
first layer by the import. Both end up in the first layer, so the hardware is fed raw bytes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from .torch_import import LINEAR_KINDS, ConversionError, fold_input_affine

__all__ = ["InputNormalization", "Calibration", "calibrate", "fold_normalization", "to_numpy_raw", "METHODS",
           "MAX_PERCENTILE_VALUES"]

METHODS = ("max", "percentile")
#: A percentile is estimated from at most this many positive activations per layer (a uniform random
#: subset, fixed seed); the maximum is always exact. Dense networks on small sets never reach it.
MAX_PERCENTILE_VALUES = 4_000_000


@dataclass(frozen=True)
class InputNormalization:
    """How the model's input was derived from raw bytes: ``x = (raw / scale - mean) / std``.

    ``mean`` and ``std`` are scalars, one value per input channel (for an image input ``(C, H, W)``),
    or one value per input feature. The converter folds this into the first layer so the hardware is
    fed raw bytes.
    """

    scale: float = 1.0
    mean: object = 0.0
    std: object = 1.0

    def __post_init__(self):
        if not np.isfinite(self.scale) or self.scale <= 0:
            raise ConversionError(f"input normalisation scale {self.scale!r} must be a positive number")
        if np.any(~np.isfinite(np.asarray(self.std, dtype=float))) or np.any(np.asarray(self.std, dtype=float) <= 0):
            raise ConversionError(f"input normalisation std {self.std!r} must be positive")
        if np.any(~np.isfinite(np.asarray(self.mean, dtype=float))):
            raise ConversionError(f"input normalisation mean {self.mean!r} must be finite")

    def _expand(self, value, shape, what) -> np.ndarray:
        values = np.asarray(value, dtype=np.float64).reshape(-1)
        count = int(np.prod(shape))
        if values.size == 1:
            return np.full(count, values[0])
        if values.size == count:
            return values.copy()
        if len(shape) == 3 and values.size == shape[0]:
            return np.repeat(values, count // shape[0])
        channels = f", {shape[0]} (one per channel)" if len(shape) == 3 else ""
        raise ConversionError(f"input normalisation {what} has {values.size} values; supported for an input of "
                              f"shape {tuple(shape)}: 1{channels} or {count} (one per feature)")

    def affine(self, shape) -> tuple[np.ndarray, np.ndarray]:
        """``(a, b)`` flat over an input of ``shape`` with ``x = a * raw + b``."""
        mean, std = self._expand(self.mean, shape, "mean"), self._expand(self.std, shape, "std")
        return 1.0 / (self.scale * std), -mean / std

    def apply(self, raw: np.ndarray, shape=None) -> np.ndarray:
        """The model input for raw samples ``(N, ...)`` (shape: one sample's, default ``raw.shape[1:]``)."""
        raw = np.asarray(raw, dtype=np.float64)
        shape = tuple(raw.shape[1:]) if shape is None else tuple(shape)
        a, b = self.affine(shape)
        return (raw.reshape(len(raw), -1) * a + b).reshape(raw.shape)

    def is_identity(self) -> bool:
        return self.scale == 1.0 and not np.any(np.asarray(self.mean, dtype=float)) and \
            np.all(np.asarray(self.std, dtype=float) == 1.0)

    def as_dict(self) -> dict:
        def plain(v):
            return np.asarray(v, dtype=float).tolist()
        return {"scale": float(self.scale), "mean": plain(self.mean), "std": plain(self.std)}


def fold_normalization(layers: list, normalization: InputNormalization, input_shape=None) -> list:
    """Fold ``x = (raw/scale - mean)/std`` into the first layer: it then takes raw values.

    ``input_shape`` is the raw sample's shape; a ``(C, H, W)`` shape lets ``mean``/``std`` hold one
    value per channel even when the first layer is a Linear.
    """
    first = layers[0]
    shape = tuple(first.in_shape)
    if first.kind == "dense" and input_shape is not None and len(input_shape) == 3 \
            and int(np.prod(input_shape)) == int(np.prod(shape)):
        shape = tuple(input_shape)           # the dense layer takes the image's CHW flatten
    if normalization.is_identity():
        return list(layers)
    a, b = normalization.affine(shape)
    encoder = first.quantized.encoder
    if encoder is not None:
        # A fine-tuned network recovers the raw byte from its input itself: compose, keep the integer weights.
        composed = copy.copy(first)
        composed.quantized = copy.copy(first.quantized)
        composed.quantized.encoder = {**encoder, "scale": encoder["scale"] * a, "offset": encoder["scale"] * b +
                                      encoder["offset"]}
        return [composed] + list(layers[1:])
    return [fold_input_affine(first, a, b, "normalisation")] + list(layers[1:])


@dataclass
class Calibration:
    """What calibration measured.

    Attributes
    ----------
    input_max : float
        Largest raw input value (maps to code ``2^T - 1``).
    activation_scales : list of float
        One per hidden linear layer (Linear or Conv2d that fires), in order.
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
    if isinstance(data, (str, bytes)):
        raise ConversionError(f"calibration data {data!r} is a name: the converter takes arrays of raw samples; "
                              f"dataset names are resolved by spikeforge.convert, the flow and the CLI")
    array = np.asarray(data)
    if array.dtype.kind not in "iuf":
        raise ConversionError(f"calibration data must be numeric, got dtype {array.dtype}")
    return array.astype(np.float64)


class _Positives:
    """The positive activations of one layer: the exact maximum and a capped uniform sample for percentiles."""

    def __init__(self, total_samples: int, seed: int):
        self.total = total_samples
        self.maximum = 0.0
        self.kept = []
        self.count = 0
        self.rng = np.random.default_rng(seed)

    def add(self, activations: np.ndarray):
        positive = activations[activations > 0]
        if positive.size == 0:
            return
        self.count += positive.size
        self.maximum = max(self.maximum, float(positive.max()))
        quota = -(-MAX_PERCENTILE_VALUES * len(activations) // self.total)
        if positive.size > quota:
            positive = self.rng.choice(positive, size=quota, replace=False)
        self.kept.append(positive)

    def scale(self, method: str, percentile: float) -> float:
        if method == "max":
            return self.maximum
        return float(np.percentile(np.concatenate(self.kept), percentile))


def calibrate(layers: list, raw: np.ndarray, method: str = "percentile", percentile: float = 99.9,
              batch: int = 256) -> Calibration:
    """Run the (normalisation-folded) float layers on raw calibration inputs and measure the scales."""
    if method not in METHODS:
        raise ConversionError(f"calibration method {method!r} is not supported; supported: {', '.join(METHODS)}")
    if not (0 < percentile <= 100):
        raise ConversionError(f"percentile {percentile!r} is not in (0, 100]")
    if len(raw) == 0:
        raise ConversionError("the calibration set is empty")
    x = np.asarray(raw, dtype=np.float64).reshape(len(raw), -1)
    if x.min() < 0 or x.max() > 255:
        raise ConversionError(f"calibration inputs span {x.min():g}..{x.max():g}; pass raw bytes (0..255) and "
                              f"give the model's normalisation separately (it is folded into the first layer)")
    input_max = float(x.max())
    if input_max <= 0:
        raise ConversionError("every calibration input is 0: cannot calibrate the input scale")
    linear = [i for i, layer in enumerate(layers) if layer.kind in LINEAR_KINDS]
    hidden = linear[:-1]
    seen = {index: _Positives(len(x), seed=index) for index in hidden}
    outputs = []
    for start in range(0, len(x), batch):
        y = x[start:start + batch]
        for index, layer in enumerate(layers):
            y = layer.forward(y)
            if index in seen:
                seen[index].add(y)
        outputs.append(y)
    scales = []
    for index in hidden:
        if seen[index].count == 0:
            raise ConversionError(f"{layers[index].path!r}: no neuron is ever active on the calibration set; the "
                                  f"layer would never spike")
        scales.append(seen[index].scale(method, percentile))
    return Calibration(input_max, scales, np.concatenate(outputs), method, float(percentile))

