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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from .errors import InputError

if TYPE_CHECKING:  # annotations only: the network module calls this one (Network.run)
    from .network import Network

__all__ = ["input_lut", "GoldenResult", "TimestepResult", "RateCodedResult", "encode", "run", "run_codes",
           "run_timesteps", "run_rate_coded", "rate_coded_steps", "argmax_lowest", "spike_driven_additions"]

def input_lut(input_max: float, timesteps: int) -> np.ndarray:
    """The uniform input encoder: raw byte -> code ``clip(round(raw / Δ_0), 0, 2^T - 1)``, ``Δ_0 = input_max / (2^T - 1)``."""
    code_max = (1 << timesteps) - 1
    step = input_max / code_max
    return np.clip(np.round(np.arange(256) / step), 0, code_max).astype(np.int64)


# float64 represents every integer below 2**53 exactly; below this bound a BLAS matmul is exact.
_EXACT_FLOAT_BOUND = 1 << 52


@dataclass
class GoldenResult:
    """What the closed form computes for a batch of N samples.

    Attributes
    ----------
    codes : list of int64 arrays
        ``codes[0]`` is the input code (N, in_features); ``codes[l + 1]`` the output code of hidden
        layer ``l`` (N, out_features).
    scores : int64 array (N, classes)
    labels : int64 array (N,)
    """

    codes: list
    scores: np.ndarray
    labels: np.ndarray

    def input_spikes(self) -> list:
        """Number of input spikes (1 bits) each layer receives, per sample: a list of (N,) arrays."""
        return [_popcount(codes).sum(axis=1) for codes in self.codes]


@dataclass
class TimestepResult(GoldenResult):
    """The literal model's result, plus per-timestep spike counts.

    Attributes
    ----------
    spike_counts : list of int64 arrays
        ``spike_counts[0]`` (N, T): input spikes emitted by the encoder at each timestep (bit-plane
        MSB first); ``spike_counts[l + 1]`` (N, T): spikes fired by hidden layer ``l`` at each
        fire-phase timestep.
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
    """

    potentials: np.ndarray
    labels: np.ndarray
    spike_counts: list


def _popcount(codes: np.ndarray) -> np.ndarray:
    codes = np.asarray(codes, dtype=np.int64)
    count = np.zeros_like(codes)
    for bit in range(16):
        count += (codes >> bit) & 1
    return count


def argmax_lowest(scores: np.ndarray) -> np.ndarray:
    """Index of the maximum score per row, the lowest index on ties (what the hardware does)."""
    return np.argmax(scores, axis=1).astype(np.int64)


def _flatten_samples(net: Network, samples) -> np.ndarray:
    samples = np.asarray(samples)
    if samples.dtype.kind not in "iu":
        raise InputError(f"samples must be raw integer bytes (uint8), got dtype {samples.dtype}")
    if samples.shape[1:] == net.input_shape:
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
    if samples.dtype == np.uint8 and samples.shape[1:] in (net.input_shape, (net.in_features,)):
        return net.input_lut[samples.reshape(len(samples), -1)]     # fast path: bytes need no checks
    return net.input_lut[_flatten_samples(net, samples)]


def _float_dtype(net: Network):
    """The narrowest float type in which every potential of ``net`` is an exact integer, or None."""
    bound = max(layer.accumulator_bound(net.timesteps) + int(layer.threshold.max()) for layer in net.layers)
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


def run_codes(net: Network, codes: np.ndarray) -> GoldenResult:
    """The closed form from input codes (N, in_features) instead of raw bytes.

    Runs in float32/float64 BLAS when the worst-case potential bound makes every value an exact
    integer there (always, for realistic networks), in int64 otherwise; the result is the same.
    """
    codes = np.asarray(codes, dtype=np.int64)
    dtype = _float_dtype(net)
    all_codes = [codes]
    if dtype is None:
        for layer in net.hidden_layers:
            potential = codes @ layer.weight.T + layer.bias + layer.v0
            codes = np.clip(np.floor_divide(potential, layer.threshold), 0, net.code_max)
            all_codes.append(codes)
        scores = codes @ net.output_layer.weight.T + net.output_layer.bias
        return GoldenResult(codes=all_codes, scores=scores, labels=argmax_lowest(scores))
    activity = codes.astype(dtype)
    for layer in net.hidden_layers:
        potential = activity @ layer.weight.T.astype(dtype) + (layer.bias + layer.v0).astype(dtype)
        activity = np.clip(_floor_divide_exact(potential, layer.threshold.astype(dtype)), 0, net.code_max)
        all_codes.append(activity.astype(np.int64))
    out = net.output_layer
    scores = (activity @ out.weight.T.astype(dtype) + out.bias.astype(dtype)).astype(np.int64)
    return GoldenResult(codes=all_codes, scores=scores, labels=argmax_lowest(scores))


def run(net: Network, samples) -> GoldenResult:
    """The vectorised closed form over a batch of raw samples."""
    return run_codes(net, encode(net, samples))


def _bit_plane(codes: np.ndarray, timesteps: int, step: int) -> np.ndarray:
    """Spikes at timestep ``step`` (0 = first = most significant bit)."""
    return (codes >> (timesteps - 1 - step)) & 1


def run_timesteps(net: Network, samples) -> TimestepResult:
    """The literal iLIF model, timestep by timestep (k = 2, soft reset, temporal separation)."""
    T = net.timesteps
    codes = encode(net, samples)
    n = len(codes)
    all_codes = [codes]
    spike_counts = [np.stack([_bit_plane(codes, T, t).sum(axis=1) for t in range(T)], axis=1)]
    for layer in net.layers:
        weight_t = layer.weight.T
        # Accumulate phase: V ← 2V + Σ_{i spiking at t} W[j, i], MSB first.
        potential = np.zeros((n, layer.out_features), dtype=np.int64)
        for t in range(T):
            potential = 2 * potential + _bit_plane(codes, T, t) @ weight_t
        if not layer.fires:
            scores = potential + layer.bias
            return TimestepResult(codes=all_codes, scores=scores, labels=argmax_lowest(scores),
                                  spike_counts=spike_counts)
        potential += layer.bias + layer.v0
        # Fire phase: V ← 2V; spike when V >= θ·2^T, then subtract it (soft reset).
        fire_level = layer.threshold << T
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


def rate_coded_steps(net: Network, samples, timesteps: int, input_mode: str = "spikes", seed: int = 0,
                     initial_potential: float = 0.0, dtype=np.float64):
    """The rate-coded baseline one timestep at a time: yields ``(out_potential, spike_counts)``
    after each step (live arrays: copy what you keep). See :func:`run_rate_coded` for the model.

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
    # The output layer does not fire: its threshold plays no part in its scores.
    thresholds = [layer.threshold if layer.fires else np.ones(layer.out_features) for layer in net.layers]
    weights = [(layer.weight / theta[:, None]).T.astype(dtype) for layer, theta in zip(net.layers, thresholds)]
    biases = [(layer.bias / (theta * net.code_max)).astype(dtype) for layer, theta in zip(net.layers, thresholds)]
    potentials = [np.full((n, layer.out_features), initial_potential, dtype=dtype) for layer in net.hidden_layers]
    out_potential = np.zeros((n, net.num_classes), dtype=dtype)
    spike_counts = [np.zeros(n, dtype=np.int64) for _ in net.layers]
    # A constant input current gives the same first-layer input every step: compute it once.
    constant = rates @ weights[0] + biases[0] if input_mode == "current" else None
    for _ in range(timesteps):
        if input_mode == "spikes":
            activity = (rng.random(rates.shape, dtype=np.float64) < rates).astype(dtype)
            spike_counts[0] += activity.sum(axis=1).astype(np.int64)
        else:
            activity = rates
        for index in range(len(net.hidden_layers)):
            potential = potentials[index]
            if index == 0 and constant is not None:
                potential += constant
            else:
                potential += activity @ weights[index] + biases[index]
            spikes = potential >= 1.0
            potential -= spikes
            activity = spikes.astype(dtype)
            spike_counts[index + 1] += spikes.sum(axis=1)
        out_potential += activity @ weights[-1] + biases[-1]
        yield out_potential, spike_counts


def run_rate_coded(net: Network, samples, timesteps: int, input_mode: str = "spikes", seed: int = 0,
                   initial_potential: float = 0.0, dtype=np.float64) -> RateCodedResult:
    """The classic rate-coded IF conversion of the same network (the baseline, not the hardware).

    Activations are rates in [0, 1]: hidden layer ``l`` sees the weights ``W/θ`` and a per-step bias
    ``b / (θ·(2^T_net - 1))``, i.e. exactly the integer network's scaling in rate units. Each timestep
    every layer integrates its input and fires at most one spike when ``V >= 1`` (soft reset:
    ``V ← V - 1``) — accumulation and firing in the same timestep, no temporal separation. The output
    layer only accumulates; its label is the argmax of the accumulated potential.

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
    for out_potential, spike_counts in rate_coded_steps(net, samples, timesteps, input_mode, seed,
                                                        initial_potential, dtype):
        pass
    return RateCodedResult(potentials=out_potential, labels=argmax_lowest(out_potential),
                           spike_counts=spike_counts)


def spike_driven_additions(net: Network, input_spikes) -> np.ndarray:
    """Additions the spikes cause (events × fan-out), per sample.

    ``input_spikes[l]`` is the (N,) count of spikes layer ``l`` receives (e.g.
    :meth:`GoldenResult.input_spikes` or :attr:`RateCodedResult.spike_counts`); each costs
    ``out_features`` additions.
    """
    return sum(np.asarray(spikes, dtype=np.int64) * layer.out_features
               for spikes, layer in zip(input_spikes, net.layers))
