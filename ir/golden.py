"""The golden model: the bit-exact reference every other implementation is checked against.

Three models of the same :class:`~spikeforge.ir.network.Network`:

* :func:`run` — the vectorised closed form (DESIGN.md §1): per hidden layer
  ``q_out = clip(floor((W·q_in + b + v0) / θ), 0, 2^T - 1)``, scores ``W·q_in + b`` at the output,
  label = argmax (lowest index on ties). Fast, over whole batches.
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

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

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
        layer ``l`` (N, out_features), CHW-flattened for conv and pool layers.
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
    codes = np.asarray(codes, dtype=np.int64)
    count = np.zeros_like(codes)
    for bit in range(16):
        count += (codes >> bit) & 1
    return count


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
        samples = samples.reshape(len(samples), -1)
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
        return net.input_lut[samples.reshape(len(samples), -1)]     # fast path: bytes need no checks
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


def _weight_matrix(layer, dtype, scale=None) -> np.ndarray:
    """The weights as a (fan-in, out_channels) matrix: ``W.T`` for dense, the im2col kernel for conv.

    ``scale`` (one per output channel) divides the weights (the rate-coded baseline's ``W/θ``).
    """
    weight = layer.weight.reshape(layer.weight.shape[0], -1)
    if scale is not None:
        weight = weight / scale[:, None]
    return weight.T.astype(dtype)


def _im2col(activity: np.ndarray, layer) -> np.ndarray:
    """(N, C·H·W) -> (N·Ho·Wo, C·kh·kw): each row is one output position's receptive field, zero-padded."""
    n = len(activity)
    (ph, pw), (sh, sw) = layer.padding, layer.stride
    _, out_h, out_w = layer.out_shape
    maps = activity.reshape((n,) + layer.in_shape)
    if ph or pw:
        maps = np.pad(maps, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    windows = sliding_window_view(maps, layer.kernel, axis=(2, 3))[:, :, ::sh, ::sw][:, :, :out_h, :out_w]
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * out_h * out_w, -1)


def _linear(activity: np.ndarray, layer, weight_matrix: np.ndarray) -> np.ndarray:
    """``Σ W·q`` for every output (no bias), (N, out_features), CHW order for a conv; exact in the
    activity's dtype whenever the accumulator bound fits it."""
    if layer.kind == "dense":
        return activity @ weight_matrix
    n, positions = len(activity), _positions(layer)
    products = _im2col(activity, layer) @ weight_matrix                       # (N·Ho·Wo, Co)
    return products.reshape(n, positions, -1).transpose(0, 2, 1).reshape(n, -1)


def _maxpool(activity: np.ndarray, layer) -> np.ndarray:
    """The largest value of each window, (N, C·Ho·Wo) in CHW order."""
    n = len(activity)
    channels, height, width = layer.in_shape
    _, out_h, out_w = layer.out_shape
    (kh, kw), (sh, sw) = layer.kernel, layer.stride
    maps = activity.reshape(n, channels, height, width)
    if (kh, kw) == (sh, sw):     # tiling windows: a reshape, no window copies
        tiles = maps[:, :, :out_h * kh, :out_w * kw].reshape(n, channels, out_h, kh, out_w, kw)
        return tiles.max(axis=(3, 5)).reshape(n, -1)
    windows = sliding_window_view(maps, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw][:, :, :out_h, :out_w]
    return windows.max(axis=(4, 5)).reshape(n, -1)


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


def _floor_divide_exact(potential: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """``floor(potential / threshold)`` for integer-valued floats, corrected to be exact."""
    quotient = np.floor(potential / threshold)
    quotient -= quotient * threshold > potential
    quotient += (quotient + 1) * threshold <= potential
    return quotient


def _chunk_size(net: Network) -> int:
    """Samples per chunk of the closed form, so the largest intermediate stays near _CHUNK_BYTES."""
    per_sample = sum(layer.out_features for layer in net.layers) + net.in_features     # the kept codes
    for layer in net.layers:
        if layer.kind == "conv2d":
            per_sample = max(per_sample, layer.out_features // layer.out_channels * layer.weight[0].size)
    return max(64, _CHUNK_BYTES // (8 * per_sample))


def _closed_form(net: Network, codes: np.ndarray, dtype) -> tuple[list, np.ndarray]:
    work = np.int64 if dtype is None else dtype
    all_codes = [codes]
    activity = codes.astype(work)
    for layer in net.hidden_layers:
        if _is_pool(layer):
            activity = _maxpool(activity, layer)
        else:
            potential = (_linear(activity, layer, _weight_matrix(layer, work))
                         + _per_feature(layer, layer.bias + layer.v0).astype(work))
            threshold = _per_feature(layer, layer.threshold)
            if dtype is None:
                quotient = np.floor_divide(potential, threshold)
            else:
                quotient = _floor_divide_exact(potential, threshold.astype(dtype))
            activity = np.clip(quotient, 0, net.code_max)
        all_codes.append(activity.astype(np.int64))
    out = net.output_layer
    scores = _linear(activity, out, _weight_matrix(out, work)) + _per_feature(out, out.bias).astype(work)
    return all_codes, scores.astype(np.int64)


def run_codes(net: Network, codes: np.ndarray) -> GoldenResult:
    """The closed form from input codes (N, in_features) instead of raw bytes.

    Runs in float32/float64 BLAS when the worst-case potential bound makes every value an exact
    integer there (always, for realistic networks), in int64 otherwise; the result is the same.
    A conv is an im2col matrix product; batches are cut into chunks that bound the memory it needs.
    """
    codes = np.asarray(codes, dtype=np.int64)
    dtype = _float_dtype(net)
    chunk = _chunk_size(net)
    if len(codes) <= chunk:
        all_codes, scores = _closed_form(net, codes, dtype)
    else:
        pieces = [_closed_form(net, codes[start:start + chunk], dtype) for start in range(0, len(codes), chunk)]
        all_codes = [np.concatenate(layer_codes) for layer_codes in zip(*(piece[0] for piece in pieces))]
        scores = np.concatenate([piece[1] for piece in pieces])
    return GoldenResult(codes=all_codes, scores=scores, labels=argmax_lowest(scores))


def run(net: Network, samples) -> GoldenResult:
    """The vectorised closed form over a batch of raw samples."""
    return run_codes(net, encode(net, samples))


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
    # The output layer does not fire: its threshold plays no part in its scores.
    thresholds = [None if _is_pool(layer) else layer.threshold if layer.fires else np.ones(layer.out_channels
                  if layer.kind == "conv2d" else layer.out_features) for layer in layers]
    weights = [None if theta is None else _weight_matrix(layer, dtype, scale=theta)
               for layer, theta in zip(layers, thresholds)]
    biases = [None if theta is None else _per_feature(layer, layer.bias / (theta * net.code_max)).astype(dtype)
              for layer, theta in zip(layers, thresholds)]
    potentials = [None if _is_pool(layer) else np.full((n, layer.out_features), initial_potential, dtype=dtype)
                  for layer in net.hidden_layers]
    out_potential = np.zeros((n, net.num_classes), dtype=dtype)
    spike_counts = [np.zeros(n, dtype=np.int64) for _ in layers]
    fanouts = [spike_fanout(layer).astype(np.float64) for layer in layers] if with_additions else None
    additions = np.zeros(n, dtype=np.int64)

    def received(index, activity):
        """Count the spikes layer ``index`` receives (binary activity only)."""
        spike_counts[index] += np.count_nonzero(activity, axis=1)
        if with_additions:
            additions[:] += np.rint(activity.astype(np.float64) @ fanouts[index]).astype(np.int64)

    # A constant input current gives the same first-layer input every step: compute it once.
    constant = None
    if input_mode == "current" and not _is_pool(layers[0]):
        constant = _linear(rates, layers[0], weights[0]) + biases[0]
    for _ in range(timesteps):
        if input_mode == "spikes":
            activity = (rng.random(rates.shape, dtype=np.float64) < rates).astype(dtype)
            received(0, activity)
        else:
            activity = rates
        for index, layer in enumerate(net.hidden_layers):
            if _is_pool(layer):
                # Max pooling of spike trains, step by step: the pooled neuron spikes when any
                # neuron of its window spikes (OR); on the constant input current, the largest rate.
                activity = _maxpool(activity, layer)
            else:
                potential = potentials[index]
                if index == 0 and constant is not None:
                    potential += constant
                else:
                    potential += _linear(activity, layer, weights[index]) + biases[index]
                spikes = potential >= 1.0
                potential -= spikes
                activity = spikes.astype(dtype)
            if index > 0 or input_mode == "spikes" or not _is_pool(layer):
                received(index + 1, activity)
        out_potential += _linear(activity, layers[-1], weights[-1]) + biases[-1]
        if with_additions:
            yield out_potential, spike_counts, additions
        else:
            yield out_potential, spike_counts


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
                             f"e.g. result.input_spikes(per_feature=True), not totals of shape {spikes.shape}")
        else:
            raise InputError(f"input_spikes[{index}] has shape {spikes.shape}; layer {layer.name!r} takes "
                             f"(N,) totals or (N, {layer.in_features}) per-feature counts")
    return total
