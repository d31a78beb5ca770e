"""The golden model: the bit-exact reference every other implementation is checked against.

Three models of the same :class:`~spikeforge.ir.network.Network`:

* :func:`run` — the vectorised closed form (DESIGN.md §1): per hidden layer
  ``q_out = clip(floor((W·q_in + b + v0) / θ), 0, 2^T - 1)``, scores ``W·q_in + b`` at the output,
  label = argmax (lowest index on ties). Fast, over whole batches: float BLAS where every value is
  provably exact (see :func:`_fast_dtype`), split over threads, int64 where nothing else is exact.
* :func:`run_timesteps` — the literal iLIF neuron with temporal separation: an accumulate phase
  (``V ← 2V + Σ W`` over the input spikes of each timestep, MSB first), then a fire phase
  (``V ← 2V``, spike and subtract ``θ·2^T`` when ``V >= θ·2^T``, soft reset). Returns the spike
  counts per layer and timestep, which is what the hardware's cycle model needs.
* :func:`run_rate_coded` — the classic rate-coded integrate-and-fire conversion (soft reset,
  accumulating and firing in the same timestep, no temporal separation), only as the baseline that
  measures SpikeConverter's timestep advantage.

Samples are raw bytes: an integer array of shape ``(N, *input_shape)`` or ``(N, in_features)``.

Convolution and max pooling (DESIGN.md §1b) run in all three models. Every layer's codes are kept
flattened in CHW order, shape ``(N, features)``, whatever the layer kind, so a consumer that counts
spikes or feeds codes to the hardware never needs to know the map shapes.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view
from threadpoolctl import ThreadpoolController       # scikit-learn's dependency: BLAS threads per call

from .errors import InputError

if TYPE_CHECKING:  # annotations only: the network module calls this one (Network.run)
    from .network import Network

__all__ = ["input_lut", "GoldenResult", "TimestepResult", "RateCodedResult", "encode", "run", "run_codes",
           "run_timesteps", "run_rate_coded", "rate_coded_steps", "argmax_lowest", "spike_driven_additions",
           "spike_fanout"]

def input_lut(input_max: float, timesteps: int) -> np.ndarray:
    """The uniform input encoder: raw byte -> code ``clip(round(raw / Δ_0), 0, 2^T - 1)``, ``Δ_0 = input_max / (2^T - 1)``."""
    code_max = (1 << timesteps) - 1
    step = input_max / code_max
    return np.clip(np.round(np.arange(256) / step), 0, code_max).astype(np.int64)


# float64 represents every integer below 2**53 exactly; below this bound a BLAS matmul is exact.
_EXACT_FLOAT_BOUND = 1 << 52
# The closed form works on chunks of samples whose largest intermediate (a conv's im2col matrix) stays
# under this many bytes, so a whole test split never needs gigabytes at once.
_CHUNK_BYTES = 1 << 25


@dataclass
class GoldenResult:
    """What the closed form computes for a batch of N samples.

    Attributes
    ----------
    codes : list of int64 arrays
        ``codes[0]`` is the input code (N, in_features); ``codes[l + 1]`` the output code of hidden
        layer ``l`` (N, out_features), CHW-flattened for conv and pool layers. (The closed form's fast
        engine keeps them in uint8/uint16 and writes these int64 arrays when first read.)
    scores : int64 array (N, classes)
    labels : int64 array (N,)
    """

    codes: list
    scores: np.ndarray
    labels: np.ndarray

    def input_spikes(self, per_feature: bool = False) -> list:
        """Number of input spikes (1 bits) each layer receives, per sample: a list of (N,) arrays.

        With ``per_feature=True`` the counts stay per input feature, (N, in_features) arrays: what
        :func:`spike_driven_additions` needs for a conv layer, whose fan-out depends on the position.
        """
        if per_feature:
            return [_popcount(codes) for codes in self.codes]
        return [_popcount(codes).sum(axis=1) for codes in self.codes]


class _NarrowCodesResult(GoldenResult):
    """The fast engine's result: it keeps the codes in uint8/uint16 and writes the public int64 ``codes``
    the first time they are read (once; most callers read only labels and scores)."""

    @property
    def codes(self) -> list:
        if self._wide is None:
            self._wide = [np.asarray(codes, dtype=np.int64) for codes in self._narrow]
        return self._wide

    @codes.setter
    def codes(self, value: list):
        self._narrow, self._wide = list(value), None

    def input_spikes(self, per_feature: bool = False) -> list:
        source = self._narrow if self._wide is None else self._wide     # once read, the public codes rule
        if per_feature:
            return [_popcount(codes) for codes in source]
        return [_popcount(codes).sum(axis=1) for codes in source]


@dataclass
class TimestepResult(GoldenResult):
    """The literal model's result, plus per-timestep spike counts.

    Attributes
    ----------
    spike_counts : list of int64 arrays
        ``spike_counts[0]`` (N, T): input spikes emitted by the encoder at each timestep (bit-plane
        MSB first); ``spike_counts[l + 1]`` (N, T): spikes fired by hidden layer ``l`` at each
        fire-phase timestep (for a max pool: the spikes it passes on).
    """

    spike_counts: list = None


@dataclass
class RateCodedResult:
    """The rate-coded baseline's result for a batch of N samples.

    Attributes
    ----------
    potentials : float64 array (N, classes)
        The output layer's accumulated potential after all timesteps.
    labels : int64 array (N,)
    spike_counts : list of int64 arrays
        ``spike_counts[l]`` (N,): spikes that layer ``l`` received over all timesteps (the input
        layer's are the encoder's spikes; with constant-current input they are 0).
    additions : int64 array (N,)
        The spike-driven additions of the whole run (events × fan-out, see :func:`spike_driven_additions`),
        counted per input position, so it is right for conv layers too.
    """

    potentials: np.ndarray
    labels: np.ndarray
    spike_counts: list
    additions: np.ndarray = None


def _popcount(codes: np.ndarray) -> np.ndarray:
    """1 bits of each code (int64, same shape); narrow codes are counted in their own type."""
    codes = np.asarray(codes)
    if codes.dtype not in (np.uint8, np.uint16):
        codes = codes.astype(np.int64, copy=False)
    count = np.zeros(codes.shape, dtype=np.uint8 if codes.dtype == np.uint8 else np.int64)
    for bit in range(8 * codes.itemsize if codes.dtype == np.uint8 else 16):
        count += (codes >> bit) & 1
    return count.astype(np.int64, copy=False)


def argmax_lowest(scores: np.ndarray) -> np.ndarray:
    """Index of the maximum score per row, the lowest index on ties (what the hardware does)."""
    return np.argmax(scores, axis=1).astype(np.int64)


def _accepted_shapes(net: Network) -> list:
    """The per-sample shapes a batch may have: the input shape, its flatten, and (1, H, W) <-> (H, W)."""
    shapes = [net.input_shape, (net.in_features,)]
    if len(net.input_shape) == 3 and net.input_shape[0] == 1:
        shapes.append(net.input_shape[1:])
    if len(net.input_shape) == 2:
        shapes.append((1,) + net.input_shape)
    return shapes


def _flatten_samples(net: Network, samples) -> np.ndarray:
    samples = np.asarray(samples)
    if samples.dtype.kind not in "iu":
        raise InputError(f"samples must be raw integer bytes (uint8), got dtype {samples.dtype}")
    if samples.ndim >= 2 and samples.shape[1:] in _accepted_shapes(net):
        samples = samples.reshape(len(samples), net.in_features)
    elif samples.ndim == 1 and samples.size == net.in_features:
        samples = samples.reshape(1, -1)
    if samples.ndim != 2 or samples.shape[1] != net.in_features:
        raise InputError(f"samples have shape {samples.shape}; expected (N, {net.in_features}) or "
                         f"(N, {', '.join(map(str, net.input_shape))})")
    if samples.size and (samples.min() < 0 or samples.max() > 255):
        raise InputError(f"sample values span {samples.min()}..{samples.max()}; raw inputs are bytes 0..255")
    return samples.astype(np.int64)


def encode(net: Network, samples) -> np.ndarray:
    """Raw bytes -> T-bit input codes through the network's lookup table, shape (N, in_features)."""
    samples = np.asarray(samples)
    if samples.dtype == np.uint8 and samples.ndim >= 2 and samples.shape[1:] in _accepted_shapes(net):
        return net.input_lut[samples.reshape(len(samples), net.in_features)]     # fast path: bytes need no checks
    return net.input_lut[_flatten_samples(net, samples)]


# -- the layer operations, shared by the three models -------------------------------------------------

def _is_pool(layer) -> bool:
    return layer.kind == "maxpool2d"


def _positions(layer) -> int:
    """Output positions per output channel: Ho·Wo for a conv, 1 for a dense layer."""
    return layer.out_shape[1] * layer.out_shape[2] if layer.kind == "conv2d" else 1


def _per_feature(layer, values: np.ndarray) -> np.ndarray:
    """A per-output-channel vector spread over the layer's CHW-flattened outputs."""
    return np.repeat(values, _positions(layer))


# The closed form and the rate-coded baseline keep maps as (N, C, H, W) arrays, so a layer's codes
# are its activity's plain reshape to (N, features) in CHW order. A conv is a batched matrix product
# W (Co, C·kh·kw) @ columns (N, C·kh·kw, Ho·Wo): the columns are built tap by tap from contiguous row
# runs of the (zero-padded) input, and the product is the next map in CHW order with no transpose.

@dataclass
class _Step:
    """One layer prepared for the engine: weight matrix, constant and threshold in the engine's dtype."""

    layer: object
    matrix: np.ndarray = None          # dense: W.T (in, out); conv: W reshaped (Co, C·kh·kw)
    bias: np.ndarray = None            # per output channel, shaped to broadcast over the layer's output
    threshold: np.ndarray = None


def _prepare(net: Network, dtype, bias_of, scale_of=None) -> list:
    """The layers of ``net`` as engine steps.

    ``bias_of(layer)`` gives the per-channel constant added to ``Σ W·q``; ``scale_of(layer)`` (per
    output channel, optional) divides the weights (the rate-coded baseline's ``W/θ``).
    """
    steps = []
    for layer in net.layers:
        if _is_pool(layer):
            steps.append(_Step(layer))
            continue
        weight = layer.weight.reshape(layer.weight.shape[0], -1)
        if scale_of is not None:
            weight = weight / scale_of(layer)[:, None]
        if layer.kind == "conv2d":      # constants broadcast over (Co, N, Ho, Wo)
            shape = (-1, 1, 1, 1)
            steps.append(_Step(layer, weight.astype(dtype), np.asarray(bias_of(layer)).astype(dtype).reshape(shape),
                               layer.threshold.astype(dtype).reshape(shape)))
        else:
            steps.append(_Step(layer, weight.T.astype(dtype), np.asarray(bias_of(layer)).astype(dtype),
                               layer.threshold.astype(dtype)))
    return steps


def _engine_input(net: Network, flat: np.ndarray) -> np.ndarray:
    """Flat CHW inputs (N, features) -> the first layer's input: (N, C, H, W) for a map."""
    first = net.layers[0]
    return flat if first.kind == "dense" else flat.reshape((len(flat),) + first.in_shape)


def _im2col(maps: np.ndarray, layer) -> np.ndarray:
    """(N, C, H, W) -> (C·kh·kw, N·Ho·Wo): column (n, p) holds sample n's zero-padded receptive field
    of output position p, rows in the weight's (ci, dy, dx) order."""
    n, channels = maps.shape[:2]
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.padding
    _, out_h, out_w = layer.out_shape
    maps = maps.transpose(1, 0, 2, 3)           # (C, N, H, W): a view, contiguous after a conv
    if ph or pw:
        maps = np.pad(maps, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    columns = np.empty((channels, kh, kw, n, out_h, out_w), dtype=maps.dtype)
    for dy in range(kh):
        for dx in range(kw):
            columns[:, dy, dx] = maps[:, :, dy:dy + (out_h - 1) * sh + 1:sh, dx:dx + (out_w - 1) * sw + 1:sw]
    return columns.reshape(channels * kh * kw, n * out_h * out_w)


def _linear(activity: np.ndarray, step: _Step) -> np.ndarray:
    """``Σ W·q`` (no constant) of every output: (N, out) for dense; for a conv (Co, N, Ho, Wo), one
    matrix product for the whole batch (its transpose view is the (N, Co, Ho, Wo) map). Exact in the
    activity's dtype whenever the layer's accumulator bound fits it."""
    if step.layer.kind == "dense":
        return activity.reshape(len(activity), -1) @ step.matrix
    n, (channels, out_h, out_w) = len(activity), step.layer.out_shape
    # Bound the im2col matrix: a long batch (the rate-coded baseline's) is done in slices.
    chunk = max(1, _CHUNK_BYTES // (activity.itemsize * step.matrix.shape[1] * out_h * out_w))
    if n <= chunk:
        return (step.matrix @ _im2col(activity, step.layer)).reshape(channels, n, out_h, out_w)
    result = np.empty((channels, n, out_h, out_w), dtype=np.result_type(step.matrix, activity))
    for start in range(0, n, chunk):
        piece = activity[start:start + chunk]
        result[:, start:start + chunk] = (step.matrix @ _im2col(piece, step.layer)).reshape(
            channels, len(piece), out_h, out_w)
    return result


def _as_map(activity: np.ndarray, layer) -> np.ndarray:
    """A conv's (Co, N, Ho, Wo) result as the (N, Co, Ho, Wo) map the next layer reads (a view)."""
    return activity.transpose(1, 0, 2, 3) if layer.kind == "conv2d" else activity


def _maxpool(maps: np.ndarray, layer) -> np.ndarray:
    """The largest value of each window, (N, C, H, W) -> (N, C, Ho, Wo); separable: rows, then columns."""
    (kh, kw), (sh, sw) = layer.kernel, layer.stride
    _, out_h, out_w = layer.out_shape
    rows = maps[:, :, 0:(out_h - 1) * sh + 1:sh].copy(order="K")
    for dy in range(1, kh):
        np.maximum(rows, maps[:, :, dy:dy + (out_h - 1) * sh + 1:sh], out=rows)
    pooled = rows[..., 0:(out_w - 1) * sw + 1:sw].copy(order="K")
    for dx in range(1, kw):
        np.maximum(pooled, rows[..., dx:dx + (out_w - 1) * sw + 1:sw], out=pooled)
    return pooled


def _tap_pairs(size: int, out_size: int, tap: int, stride: int, padding: int):
    """Along one axis, the (input index, output index) pairs that kernel tap ``tap`` connects,
    ``input = output·stride + tap - padding``, both inside their maps (padding holds no spikes)."""
    outputs = np.arange(out_size)
    inputs = outputs * stride + tap - padding
    inside = (inputs >= 0) & (inputs < size)
    return inputs[inside], outputs[inside]


def spike_fanout(layer) -> np.ndarray:
    """Additions one input spike causes, per input feature (in_features,), int64.

    Dense: ``out_features`` everywhere. Conv: ``out_channels ×`` the number of kernel taps whose
    output position lies inside the output map (DESIGN.md §3, the conv core visits exactly those),
    so border pixels reach fewer outputs than inner ones. Max pool: 0 (it compares, it adds nothing).
    """
    if layer.kind == "dense":
        return np.full(layer.in_features, layer.out_features, dtype=np.int64)
    if _is_pool(layer):
        return np.zeros(layer.in_features, dtype=np.int64)
    channels, height, width = layer.in_shape
    _, out_h, out_w = layer.out_shape
    reach = []
    for size, out_size, taps, stride, padding in zip((height, width), (out_h, out_w), layer.kernel,
                                                     layer.stride, layer.padding):
        count = np.zeros(size, dtype=np.int64)
        for tap in range(taps):
            count[_tap_pairs(size, out_size, tap, stride, padding)[0]] += 1
        reach.append(count)
    per_position = np.outer(reach[0], reach[1]).reshape(-1) * layer.out_channels
    return np.tile(per_position, channels)


# -- the closed form ----------------------------------------------------------------------------------

def _float_dtype(net: Network):
    """The narrowest float type in which every potential of ``net`` is an exact integer, or None."""
    bound = max(layer.accumulator_bound(net.timesteps) + int(layer.threshold.max())
                for layer in net.layers if not _is_pool(layer))
    if bound < (1 << 23):
        return np.float32
    if bound < _EXACT_FLOAT_BOUND:
        return np.float64
    return None


def _floor_divide(potential: np.ndarray, threshold: np.ndarray, exact_float: bool) -> np.ndarray:
    """``floor(potential / threshold)``, exact.

    For integer-valued floats below the bound :func:`_float_dtype` checks (``|V| + θ < 2^23`` in
    float32, ``< 2^52`` in float64) the correctly rounded quotient never reaches the next integer:
    ``floor(V/θ) = q`` means ``V/θ <= q + 1 - 1/θ``, and ``1/θ`` exceeds half an ulp of ``q + 1``
    because ``θ·(q + 1) <= V + θ`` is below the precision. So ``floor`` of the division is exact.
    """
    if not exact_float:
        return np.floor_divide(potential, threshold)
    quotient = np.divide(potential, threshold, out=potential)
    return np.floor(quotient, out=quotient)


def _chunk_size(net: Network) -> int:
    """Samples per chunk of the closed form, so the largest intermediate stays near _CHUNK_BYTES."""
    per_sample = max(layer.in_features + layer.out_features for layer in net.layers)
    for layer in net.layers:
        if layer.kind == "conv2d":
            per_sample = max(per_sample, layer.out_features // layer.out_channels * layer.weight[0].size)
    return max(16, _CHUNK_BYTES // (8 * per_sample))


def _closed_form(net: Network, steps: list, codes: np.ndarray, dtype, out_codes: list) -> np.ndarray:
    """Run one chunk: writes each layer's codes into ``out_codes[l + 1]`` (preallocated, int64) and
    returns the scores."""
    work = np.int64 if dtype is None else dtype
    activity = _engine_input(net, codes.astype(work))
    for step, layer_codes in zip(steps[:-1], out_codes[1:]):
        if _is_pool(step.layer):
            activity = _maxpool(activity, step.layer)
        else:
            potential = _linear(activity, step)
            potential += step.bias
            activity = np.clip(_floor_divide(potential, step.threshold, dtype is not None), 0, net.code_max,
                               out=potential)
            activity = _as_map(activity, step.layer)
        np.copyto(layer_codes.reshape(activity.shape), activity, casting="unsafe")
    scores = _linear(activity, steps[-1])
    scores += steps[-1].bias
    scores = _as_map(scores, steps[-1].layer)
    return scores.astype(np.int64, order="C").reshape(len(scores), -1)


# -- the closed form's fast engine: channels-last, float BLAS, narrow codes, two threads ----------------
#
# Maps are (N, H, W, C) float arrays, so a conv's columns (N, Ho, Wo, kh·kw·C + 1) are built by kh·kw
# copies of contiguous channel runs from a zero-bordered input, and the product columns @ matrix
# ((dy, dx, ci) rows + a bias row) is the next map, channels last, bias included. The division by θ
# is a multiplication by the rounded reciprocal, exact by the argument of :func:`_fast_dtype`, and the
# codes are kept in the narrowest unsigned type (uint8 for T <= 8, else uint16) until the public CHW
# int64 arrays are written.

# Largest potential bound |V| for which the reciprocal argument holds (see _fast_dtype): 2^21 in
# float32 (unit roundoff 2^-24), 2^50 in float64 (2^-53).
_FAST_BOUNDS = ((np.float32, 1 << 21), (np.float64, 1 << 50))
# Samples per chunk of the fast engine: its per-chunk buffers (reused) stay within the caches.
_FAST_CHUNK_BYTES = 1 << 22
#: Threads the fast engine splits a batch over by default (each runs BLAS single-threaded): the CPUs
#: this process may use, at most 8.
THREADS = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@functools.cache
def _blas() -> ThreadpoolController:
    """The BLAS thread pools of this process (found once, on first use: it takes tens of ms)."""
    return ThreadpoolController()


def _fast_dtype(net: Network):
    """The float type in which the fast engine is exact for ``net``, or None (then the exact engine runs).

    With ``|V| + 1 <= bound`` every partial sum of ``W·q + (b + v0 + 1/2)`` is an integer or a half
    below the bound, exact in the type, so the product is ``V + 1/2`` exactly. For ``V >= 0`` write
    ``V = qθ + r``, ``0 <= r < θ``: ``x = (V + 1/2)/θ`` lies in ``[q + 1/(2θ), q + 1 - 1/(2θ)]``. The
    computed ``y = fl(fl(V + 1/2) · fl(1/θ)) = x(1 + e1)(1 + e2)``, ``|ei| <= u``, is off by at most
    ``|x|·(2u + u²) < (V + 1/2)/θ · 2.001u``, which is below ``1/(2θ)`` whenever ``V + 1/2 < 1/(4.002u)``:
    2^21 in float32 (u = 2^-24) and 2^50 in float64 (u = 2^-53) leave room. So ``q < y < q + 1`` and
    truncating ``clip(y, 0, 2^T - 1)`` is ``clip(floor(V/θ), 0, 2^T - 1)``. For ``V < 0``, ``x < 0``, ``y < 0``:
    both clip to 0. The output layer has no division; its sums are exact integers below the bound.
    """
    bound = max(layer.accumulator_bound(net.timesteps) + 1 for layer in net.layers if not _is_pool(layer))
    for dtype, limit in _FAST_BOUNDS:
        if bound <= limit:
            return dtype
    return None


@dataclass
class _FastStep:
    """One layer of the fast engine.

    A conv's matrix has rows in its column order, ``(dy, dx, ci)``, plus a last row holding the
    constant ``b + v0 (+ 1/2)``; ``tap_major`` convs build their columns one kernel tap per row
    (few long copies, for few input channels, e.g. the first layer), the others one output
    position per row (runs of ``kw·C`` contiguous inputs). A dense layer's rows follow its input in
    HWC order when that is a map; its constant is added after the product.
    """

    layer: object
    matrix: np.ndarray = None
    constant: np.ndarray = None        # dense only
    reciprocal: np.ndarray = None      # fl(1/θ) per output channel (firing layers)
    tap_major: bool = False


def _code_dtype(net: Network):
    """The narrowest unsigned type that holds every T-bit code."""
    return np.uint8 if net.timesteps <= 8 else np.uint16


def _fast_prepare(net: Network, dtype) -> list:
    steps, shape = [], tuple(net.layers[0].in_shape)
    for layer in net.layers:
        in_shape, shape = shape, tuple(layer.out_shape)
        if _is_pool(layer):
            steps.append(_FastStep(layer))
            continue
        constant = (layer.bias + layer.v0).astype(np.float64) + (0.5 if layer.fires else 0.0)
        # Python's int / int is the correctly rounded quotient, whatever the size of θ.
        reciprocal = np.array([1 / int(t) for t in layer.threshold]).astype(dtype) if layer.fires else None
        if layer.kind == "conv2d":
            weight = layer.weight.transpose(2, 3, 1, 0).reshape(-1, layer.out_channels)     # (dy, dx, ci) rows
            matrix = np.concatenate([weight, constant[None, :]]).astype(dtype)
            tap_major = layer.kernel[1] * layer.in_shape[0] < layer.out_shape[2]
            steps.append(_FastStep(layer, np.ascontiguousarray(matrix.T) if tap_major else matrix, None,
                                   reciprocal, tap_major))
            continue
        weight = layer.weight
        if len(in_shape) == 3:                        # the input is a map, read channels last: rows in HWC order
            weight = weight.reshape((-1,) + in_shape).transpose(0, 2, 3, 1).reshape(len(weight), -1)
        steps.append(_FastStep(layer, weight.T.astype(dtype), constant.astype(dtype), reciprocal))
    return steps


class _FastBuffers:
    """A worker's scratch arrays for chunks of up to ``size`` samples, allocated once and reused.

    A tap-major conv keeps its padded input as (C, n, Hp, Wp), its columns as (K + 1, n, Ho, Wo) and
    its products as (Co, n·Ho·Wo); the others (n, Hp, Wp, C), (n, Ho, Wo, K + 1) and (n·Ho·Wo, Co).
    The columns' bias entry is a constant 1 and the padding border stays 0: both are written once.
    """

    def __init__(self, steps: list, dtype, size: int):
        self.padded, self.columns, self.products = [], [], []
        for step in steps:
            layer = step.layer
            padded = columns = products = None
            if layer.kind == "conv2d":
                channels, height, width = layer.in_shape
                (kh, kw), (ph, pw) = layer.kernel, layer.padding
                _, out_h, out_w = layer.out_shape
                rows, positions = kh * kw * channels + 1, (size, out_h, out_w)
                if step.tap_major:
                    padded = np.zeros((channels, size, height + 2 * ph, width + 2 * pw), dtype=dtype)
                    columns = np.empty((rows,) + positions, dtype=dtype)
                    columns[-1] = 1
                    products = np.empty((layer.out_channels, size * out_h * out_w), dtype=dtype)
                else:
                    padded = np.zeros((size, height + 2 * ph, width + 2 * pw, channels), dtype=dtype)
                    columns = np.empty(positions + (rows,), dtype=dtype)
                    columns[..., -1] = 1
                    products = np.empty((size * out_h * out_w, layer.out_channels), dtype=dtype)
            self.padded.append(padded)
            self.columns.append(columns)
            self.products.append(products)


def _fast_conv(maps: np.ndarray, step: _FastStep, index: int, buffers: _FastBuffers) -> np.ndarray:
    """Σ W·q + b + v0 (+ 1/2 if it fires) of a conv over maps read channels last, (n, H, W, C) (any
    dtype and memory order): the (n, Ho, Wo, Co) potentials, a channels-last view of a reused buffer."""
    layer, n = step.layer, len(maps)
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.padding
    channels, height, width = layer.in_shape
    _, out_h, out_w = layer.out_shape
    positions = n * out_h * out_w
    if step.tap_major:
        padded, columns = buffers.padded[index][:, :n], buffers.columns[index][:, :n]
        np.copyto(padded[:, :, ph:ph + height, pw:pw + width], maps.transpose(3, 0, 1, 2), casting="unsafe")
        # Row (dy, dx, ci) of the columns is padded[ci, :, dy::sh, dx::sw]: one copy of a strided view.
        s_c, s_n, s_y, s_x = padded.strides
        source = as_strided(padded, shape=(kh, kw, channels, n, out_h, out_w), writeable=False,
                            strides=(s_y, s_x, s_c, s_n, s_y * sh, s_x * sw))
        np.copyto(columns[:-1].reshape(source.shape), source)
        products = buffers.products[index][:, :positions]
        np.matmul(step.matrix, columns.reshape(len(columns), positions), out=products)
        return products.reshape(-1, n, out_h, out_w).transpose(1, 2, 3, 0)
    padded, columns = buffers.padded[index][:n], buffers.columns[index][:n]
    np.copyto(padded[:, ph:ph + height, pw:pw + width], maps, casting="unsafe")
    # Row (n, y, x) of the columns is kh runs of kw·C contiguous inputs, padded[n, y·sh + dy, x·sw:x·sw + kw, :]:
    # one copy from a strided view of the padded maps into a strided view of the columns (bias entry left out).
    run = kw * channels
    source = as_strided(padded, shape=(n, out_h, out_w, kh, run), writeable=False,
                        strides=(padded.strides[0], padded.strides[1] * sh, padded.strides[2] * sw,
                                 padded.strides[1], padded.strides[3]))
    target = as_strided(columns, shape=(n, out_h, out_w, kh, run),
                        strides=columns.strides[:3] + (run * columns.strides[3], columns.strides[3]))
    np.copyto(target, source)
    products = buffers.products[index][:positions]
    np.matmul(columns.reshape(positions, -1), step.matrix, out=products)
    return products.reshape(n, out_h, out_w, -1)


def _fast_fire(potential: np.ndarray, step: _FastStep, code_max: int, code_dtype) -> np.ndarray:
    """``clip(floor(V/θ), 0, 2^T - 1)`` from ``V + 1/2`` (in place; channels on the last axis), as narrow
    codes in the same memory order."""
    np.multiply(potential, step.reciprocal, out=potential)
    np.clip(potential, 0, code_max, out=potential)
    return potential.astype(code_dtype)               # truncation = floor on [0, 2^T - 1]


def _fast_pool(maps: np.ndarray, layer) -> np.ndarray:
    """Max pooling of maps read channels last (n, H, W, C), separable: rows, then columns."""
    (kh, kw), (sh, sw) = layer.kernel, layer.stride
    _, out_h, out_w = layer.out_shape
    rows = maps[:, 0:(out_h - 1) * sh + 1:sh].copy(order="K")
    for dy in range(1, kh):
        np.maximum(rows, maps[:, dy:dy + (out_h - 1) * sh + 1:sh], out=rows)
    pooled = rows[:, :, 0:(out_w - 1) * sw + 1:sw].copy(order="K")
    for dx in range(1, kw):
        np.maximum(pooled, rows[:, :, dx:dx + (out_w - 1) * sw + 1:sw], out=pooled)
    return pooled


def _to_chw(maps: np.ndarray, out: np.ndarray):
    """Write maps read channels last (n, H, W, C) (or flat (n, F)) into the CHW-flattened codes (n, C·H·W)."""
    if maps.ndim == 4:
        n, height, width, channels = maps.shape
        maps = maps.transpose(0, 3, 1, 2)
        out = out.reshape(n, channels, height, width)
    np.copyto(out, maps, casting="unsafe")


def _fast_chunk(net: Network, steps: list, dtype, buffers: _FastBuffers, codes: np.ndarray, out_codes: list,
                scores: np.ndarray):
    """Run one chunk: writes each hidden layer's codes into ``out_codes[l + 1]`` and the scores into ``scores``."""
    n, code_max, code_dtype = len(codes), net.code_max, _code_dtype(net)
    first = net.layers[0]
    activity = codes if first.kind == "dense" else \
        codes.reshape((n,) + tuple(first.in_shape)).transpose(0, 2, 3, 1)
    for index, step in enumerate(steps):
        layer = step.layer
        if _is_pool(layer):
            activity = _fast_pool(activity, layer)
        else:
            if layer.kind == "conv2d":
                potential = _fast_conv(activity, step, index, buffers)
            else:
                potential = activity.reshape(n, -1).astype(dtype, copy=False) @ step.matrix
                potential += step.constant
            if not layer.fires:
                _to_chw(potential, scores)
                return
            activity = _fast_fire(potential, step, code_max, code_dtype)
        _to_chw(activity, out_codes[index + 1])
    raise AssertionError("unreachable: the last layer never fires")


def _fast_run(net: Network, codes: np.ndarray, dtype, threads: int) -> tuple[list, np.ndarray]:
    n = len(codes)
    steps = _fast_prepare(net, dtype)
    all_codes = [codes] + [np.empty((n, layer.out_features), dtype=_code_dtype(net)) for layer in net.hidden_layers]
    scores = np.empty((n, net.layers[-1].out_features), dtype=np.int64)
    per_sample = max([1] + [buffer.nbytes for buffer in _FastBuffers(steps, dtype, 1).columns if buffer is not None])
    chunk = max(8, _FAST_CHUNK_BYTES // per_sample)
    workers = max(1, min(threads, -(-n // chunk)))
    bounds = np.linspace(0, n, workers + 1).astype(int)

    def work(start: int, stop: int):
        buffers = _FastBuffers(steps, dtype, min(chunk, stop - start))
        for begin in range(start, stop, chunk):
            end = min(begin + chunk, stop)
            _fast_chunk(net, steps, dtype, buffers, codes[begin:end], [c[begin:end] for c in all_codes],
                        scores[begin:end])

    if n < chunk:                   # one small chunk: not worth changing BLAS threads (~0.1 ms)
        work(0, n)
        return all_codes, scores
    # BLAS single-threaded throughout, also with threads=1: a multithreaded BLAS on these small
    # products mostly spins (measured: 3x the CPU time on a busy 2-core machine).
    with _blas().limit(limits=1, user_api="blas"):
        if workers == 1:
            work(0, n)
            return all_codes, scores
        with ThreadPoolExecutor(workers) as pool:
            for future in [pool.submit(work, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]:
                future.result()
    return all_codes, scores


def run_codes(net: Network, codes: np.ndarray, threads: int = None) -> GoldenResult:
    """The closed form from input codes (N, in_features) instead of raw bytes.

    When the worst-case potential bound allows (:func:`_fast_dtype`: ``|V| < 2^21``, always for
    realistic networks, or ``< 2^50``) the fast engine runs: float32/float64 BLAS, channels last,
    division by a rounded reciprocal (exact there), the batch split over ``threads`` threads
    (default :data:`THREADS`; BLAS single-threaded meanwhile). Otherwise the exact engine: float32 or
    float64 BLAS below 2^23 / 2^52, int64 beyond, floor of the exact quotient. The result is the same.
    Batches are cut into chunks that bound the memory either needs.
    """
    codes = np.asarray(codes)
    if codes.dtype not in (np.uint8, np.uint16):
        codes = codes.astype(np.int64, copy=False)
    n = len(codes)
    if threads is not None and not (isinstance(threads, (int, np.integer)) and threads >= 1):
        raise InputError(f"threads {threads!r} must be an integer >= 1")
    fast = _fast_dtype(net)
    if fast is not None:
        all_codes, scores = _fast_run(net, codes, fast, THREADS if threads is None else int(threads))
        return _NarrowCodesResult(codes=all_codes, scores=scores, labels=argmax_lowest(scores))
    dtype = _float_dtype(net)
    steps = _prepare(net, np.int64 if dtype is None else dtype, bias_of=lambda layer: layer.bias + layer.v0)
    all_codes = [codes] + [np.empty((n, layer.out_features), dtype=np.int64) for layer in net.hidden_layers]
    chunk = _chunk_size(net)
    scores = [_closed_form(net, steps, codes[start:start + chunk], dtype,
                           [layer_codes[start:start + chunk] for layer_codes in all_codes])
              for start in range(0, max(n, 1), chunk)]
    scores = scores[0] if len(scores) == 1 else np.concatenate(scores)
    return GoldenResult(codes=all_codes, scores=scores, labels=argmax_lowest(scores))


def run(net: Network, samples, threads: int = None) -> GoldenResult:
    """The vectorised closed form over a batch of raw samples (see :func:`run_codes` for ``threads``)."""
    codes = encode(net, samples)
    if _fast_dtype(net) is not None:
        codes = codes.astype(_code_dtype(net))              # every code fits; the fast engine keeps them narrow
    return run_codes(net, codes, threads)


# -- the literal model --------------------------------------------------------------------------------

def _bit_plane(codes: np.ndarray, timesteps: int, step: int) -> np.ndarray:
    """Spikes at timestep ``step`` (0 = first = most significant bit)."""
    return (codes >> (timesteps - 1 - step)) & 1


def _conv_spike_sums(spikes: np.ndarray, layer) -> np.ndarray:
    """One accumulate step of a conv, tap by tap: every input spike at (ci, y, x) adds ``W[:, ci, dy, dx]``
    to each output (y', x') with ``y = y'·sh + dy - ph`` and ``x = x'·sw + dx - pw`` (DESIGN.md §1b).

    Deliberately not the closed form's im2col: the taps are enumerated as the hardware visits them.
    """
    n = len(spikes)
    channels, height, width = layer.in_shape
    _, out_h, out_w = layer.out_shape
    maps = spikes.reshape(n, channels, height, width)
    sums = np.zeros((n, layer.out_channels, out_h, out_w), dtype=np.int64)
    for dy in range(layer.kernel[0]):
        rows_in, rows_out = _tap_pairs(height, out_h, dy, layer.stride[0], layer.padding[0])
        for dx in range(layer.kernel[1]):
            cols_in, cols_out = _tap_pairs(width, out_w, dx, layer.stride[1], layer.padding[1])
            if not (len(rows_in) and len(cols_in)):
                continue
            taps = maps[:, :, rows_in[:, None], cols_in[None, :]]                  # (N, C, h, w)
            added = np.einsum("nchw,oc->nohw", taps, layer.weight[:, :, dy, dx])
            sums[:, :, rows_out[:, None], cols_out[None, :]] += added              # distinct outputs per tap
    return sums.reshape(n, -1)


def _maxpool_bit_serial(codes: np.ndarray, layer, timesteps: int) -> tuple[np.ndarray, np.ndarray]:
    """Max pooling on spike trains, MSB first (DESIGN.md §1b), literally on bits.

    Every window member starts as a candidate. At each step the pooled neuron spikes if a candidate
    spikes; a candidate whose bit differs from the pooled spike drops out (its code is now known to be
    smaller). Returns the pooled codes and the pooled spikes per timestep (N, T).
    """
    n = len(codes)
    channels, height, width = layer.in_shape
    _, out_h, out_w = layer.out_shape
    (kh, kw), (sh, sw) = layer.kernel, layer.stride
    maps = codes.reshape(n, channels, height, width)
    windows = sliding_window_view(maps, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw][:, :, :out_h, :out_w]
    candidate = np.ones(windows.shape, dtype=bool)
    pooled = np.zeros((n, channels, out_h, out_w), dtype=np.int64)
    counts = np.zeros((n, timesteps), dtype=np.int64)
    for t in range(timesteps):
        bits = _bit_plane(windows, timesteps, t).astype(bool)
        spike = np.any(candidate & bits, axis=(4, 5))
        candidate &= bits == spike[..., None, None]
        pooled = 2 * pooled + spike
        counts[:, t] = spike.reshape(n, -1).sum(axis=1)
    return pooled.reshape(n, -1), counts


def _spike_sums(spikes: np.ndarray, layer) -> np.ndarray:
    """``Σ W`` over the input spikes of one timestep, for every output (N, out_features)."""
    if layer.kind == "dense":
        return spikes @ layer.weight.T
    return _conv_spike_sums(spikes, layer)


def run_timesteps(net: Network, samples) -> TimestepResult:
    """The literal iLIF model, timestep by timestep (k = 2, soft reset, temporal separation).

    Conv layers accumulate spike by spike over the kernel taps, max pools compare spike trains bit by
    bit (:func:`_maxpool_bit_serial`); neither shares code with the closed form.
    """
    T = net.timesteps
    codes = encode(net, samples)
    n = len(codes)
    all_codes = [codes]
    spike_counts = [np.stack([_bit_plane(codes, T, t).sum(axis=1) for t in range(T)], axis=1)]
    for layer in net.layers:
        if _is_pool(layer):
            codes, counts = _maxpool_bit_serial(codes, layer, T)
            all_codes.append(codes)
            spike_counts.append(counts)
            continue
        # Accumulate phase: V ← 2V + Σ_{i spiking at t} W[j, i], MSB first.
        potential = np.zeros((n, layer.out_features), dtype=np.int64)
        for t in range(T):
            potential = 2 * potential + _spike_sums(_bit_plane(codes, T, t), layer)
        if not layer.fires:
            scores = potential + _per_feature(layer, layer.bias)
            return TimestepResult(codes=all_codes, scores=scores, labels=argmax_lowest(scores),
                                  spike_counts=spike_counts)
        potential += _per_feature(layer, layer.bias + layer.v0)
        # Fire phase: V ← 2V; spike when V >= θ·2^T, then subtract it (soft reset).
        fire_level = _per_feature(layer, layer.threshold) << T
        out_codes = np.zeros_like(potential)
        counts = np.zeros((n, T), dtype=np.int64)
        for t in range(T):
            potential = 2 * potential
            spikes = potential >= fire_level
            potential = potential - spikes * fire_level
            out_codes = 2 * out_codes + spikes
            counts[:, t] = spikes.sum(axis=1)
        codes = out_codes
        all_codes.append(codes)
        spike_counts.append(counts)
    raise AssertionError("unreachable: the last layer never fires")


# -- the rate-coded baseline ----------------------------------------------------------------------------

def rate_coded_steps(net: Network, samples, timesteps: int, input_mode: str = "spikes", seed: int = 0,
                     initial_potential: float = 0.0, dtype=np.float64, with_additions: bool = False):
    """The rate-coded baseline one timestep at a time: yields ``(out_potential, spike_counts)``
    after each step (live arrays: copy what you keep); with ``with_additions=True``
    ``(out_potential, spike_counts, additions)``, the spike-driven additions so far (N,).
    See :func:`run_rate_coded` for the model.

    Input spikes are drawn step by step from one seeded generator, so the first ``t`` steps of a
    longer run are exactly a ``t``-step run: one pass gives the whole accuracy-vs.-T curve.
    """
    if input_mode not in ("spikes", "current"):
        raise InputError(f"input_mode {input_mode!r} is not supported; supported: 'spikes', 'current'")
    if not (isinstance(timesteps, (int, np.integer)) and timesteps >= 1):
        raise InputError(f"timesteps {timesteps!r} must be an integer >= 1")
    raw = _flatten_samples(net, samples)
    input_max = net.calibration.get("input_max")
    if input_max:
        rates = np.clip(raw / float(input_max), 0.0, 1.0)
    else:
        rates = net.input_lut[raw] / net.code_max
    rates = rates.astype(dtype)
    rng = np.random.default_rng(seed)
    n = len(raw)
    layers = net.layers

    def theta(layer):
        """The output layer does not fire: its threshold plays no part in its scores."""
        return layer.threshold if layer.fires else np.ones_like(layer.threshold)

    def engine_shape(layer):
        return (layer.out_channels, n) + layer.out_shape[1:] if layer.kind == "conv2d" else (n,) + layer.out_shape

    steps = _prepare(net, dtype, bias_of=lambda layer: layer.bias / (theta(layer) * net.code_max), scale_of=theta)
    potentials = [None if _is_pool(layer) else np.full(engine_shape(layer), initial_potential, dtype=dtype)
                  for layer in net.hidden_layers]
    out_potential = np.zeros(engine_shape(layers[-1]), dtype=dtype)
    spike_counts = [np.zeros(n, dtype=np.int64) for _ in layers]
    additions = np.zeros(n, dtype=np.int64)
    fanouts = [spike_fanout(layer).astype(np.float64) for layer in layers] if with_additions else None

    def received(index, activity):
        """Count the spikes layer ``index`` receives (binary activity only)."""
        spike_counts[index] += np.count_nonzero(activity, axis=tuple(range(1, activity.ndim)))
        if with_additions:
            additions[:] += np.rint(activity.reshape(n, -1) @ fanouts[index]).astype(np.int64)

    # A constant input current gives the same first-layer input every step: compute it once.
    constant = None
    if input_mode == "current" and not _is_pool(layers[0]):
        constant = _linear(_engine_input(net, rates), steps[0]) + steps[0].bias
    for _ in range(timesteps):
        if input_mode == "spikes":
            activity = _engine_input(net, (rng.random(rates.shape, dtype=np.float64) < rates).astype(dtype))
            received(0, activity)
        else:
            activity = _engine_input(net, rates)
        for index, step in enumerate(steps[:-1]):
            if _is_pool(step.layer):
                # Max pooling of spike trains, step by step: the pooled neuron spikes when any
                # neuron of its window spikes (OR); on the constant input current, the largest rate.
                activity = _maxpool(activity, step.layer)
            else:
                potential = potentials[index]
                if index == 0 and constant is not None:
                    potential += constant
                else:
                    potential += _linear(activity, step) + step.bias
                spikes = potential >= 1.0
                potential -= spikes
                activity = _as_map(spikes.astype(dtype), step.layer)
            if index > 0 or input_mode == "spikes" or not _is_pool(step.layer):
                received(index + 1, activity)
        out_potential += _linear(activity, steps[-1]) + steps[-1].bias
        scores = out_potential if out_potential.ndim == 2 else \
            np.ascontiguousarray(_as_map(out_potential, layers[-1])).reshape(n, -1)
        if with_additions:
            yield scores, spike_counts, additions
        else:
            yield scores, spike_counts


def run_rate_coded(net: Network, samples, timesteps: int, input_mode: str = "spikes", seed: int = 0,
                   initial_potential: float = 0.0, dtype=np.float64) -> RateCodedResult:
    """The classic rate-coded IF conversion of the same network (the baseline, not the hardware).

    Activations are rates in [0, 1]: hidden layer ``l`` sees the weights ``W/θ`` and a per-step bias
    ``b / (θ·(2^T_net - 1))``, i.e. exactly the integer network's scaling in rate units. Each timestep
    every layer integrates its input and fires at most one spike when ``V >= 1`` (soft reset:
    ``V ← V - 1``) — accumulation and firing in the same timestep, no temporal separation. The output
    layer only accumulates; its label is the argmax of the accumulated potential.

    Conv layers are IF neurons on the convolution of the spikes (the same ``W/θ`` scaling, per output
    channel). A max pool passes on, each timestep, the OR of its window's spikes (a spike if any
    member spiked) — the usual max pooling of rate-coded SNNs, which over-estimates the maximum rate
    when window members spike at different steps; with ``input_mode="current"`` a pool that comes
    first takes the largest input rate of its window.

    Parameters
    ----------
    timesteps : int
        Simulation length, >= 1 (classically hundreds).
    input_mode : ``"spikes"`` or ``"current"``
        ``"spikes"``: each input fires with probability ``rate`` per step (Bernoulli, seeded);
        ``"current"``: the input rate is injected as a constant current into the first layer.
    initial_potential : float
        ``V`` at t = 0 in threshold units (0 classically; 0.5 centres the rounding).
    """
    for out_potential, spike_counts, additions in rate_coded_steps(
            net, samples, timesteps, input_mode, seed, initial_potential, dtype, with_additions=True):
        pass
    return RateCodedResult(potentials=out_potential, labels=argmax_lowest(out_potential),
                           spike_counts=spike_counts, additions=additions)


def spike_driven_additions(net: Network, input_spikes) -> np.ndarray:
    """Additions the spikes cause (events × fan-out), per sample.

    ``input_spikes[l]`` is what layer ``l`` receives: the (N,) count of its input spikes (e.g.
    :meth:`GoldenResult.input_spikes` or :attr:`RateCodedResult.spike_counts`), or the
    (N, in_features) count per input feature (``input_spikes(per_feature=True)``). A dense layer's
    spike costs ``out_features`` additions wherever it comes from; a conv layer's spike at (ci, y, x)
    costs ``out_channels ×`` the output positions its kernel taps reach (:func:`spike_fanout`), so a
    conv layer needs the per-feature counts; a max pool adds nothing.
    """
    total = 0
    for index, (spikes, layer) in enumerate(zip(input_spikes, net.layers)):
        spikes = np.asarray(spikes, dtype=np.int64)
        if spikes.ndim == 2 and spikes.shape[1] == layer.in_features:
            total = total + spikes @ spike_fanout(layer)
        elif spikes.ndim == 1 and layer.kind != "conv2d":
            total = total + spikes * (layer.out_features if layer.kind == "dense" else 0)
        elif spikes.ndim == 1:
            raise InputError(f"layer {layer.name!r} is a conv2d, whose spikes reach a number of outputs that "
                             f"depends on their position: pass per-feature counts (N, {layer.in_features}), "
                             f"e.g. result.input_spikes(per_feature=True), not totals of shape {spikes.shape} (the "
                             f"rate-coded baseline counts them itself: RateCodedResult.additions)")
        else:
            raise InputError(f"input_spikes[{index}] has shape {spikes.shape}; layer {layer.name!r} takes "
                             f"(N,) totals or (N, {layer.in_features}) per-feature counts")
    return total
