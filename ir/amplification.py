"""The iLIF neuron with a generic amplification factor k, for the paper's k-sweep (not the hardware).

The hardware and :mod:`.golden` fix k = 2, where a T-step spike train is an unsigned binary number.
SpikeConverter (Liu et al., AAAI 2022) argues that k = 2 is the best choice; this module measures
that claim by running the same integer :class:`~spikeforge.ir.network.Network` with any
``k >= 1``.

The neuron, with temporal separation as in DESIGN.md §1 but a real factor k:

* accumulate, t = 0..T-1: ``V ← k·V + Σ_{i spiking at t} W[j, i]``, then add ``b_k + v0``;
* fire, t = 0..T-1: ``V ← k·V``; spike when ``V >= θ·k^T``, then ``V ← V - θ·k^T`` (soft reset).

A spike at step t therefore carries the value ``k^(T-1-t)`` (first step most significant), a train
stands for ``x = Σ_t s_t·k^(T-1-t)`` in ``[0, x_max(k, T)]`` with ``x_max = (k^T - 1)/(k - 1)``
(``T`` for k = 1), and the fire phase is the greedy expansion of ``V/θ`` in those place values:

* k = 1 is a rate code: the neuron fires ``min(floor(V/θ), T)`` times, each spike worth 1;
* 1 < k < 2 is redundant: every value in range is reachable, but ``x_max`` is smaller than
  ``2^T - 1``, so the finest step is a larger fraction of the range (coarser resolution);
* k = 2 is exact binary: ``x = clip(floor(V/θ), 0, 2^T - 1)``, the golden model bit for bit;
* k > 2 leaves gaps: some values between two place values cannot be written with the later, smaller
  ones, so the greedy expansion falls short by up to ``k^t - x_max(k, t)``.

Because accumulation is linear, ``Σ_t k^(T-1-t)·(W·s_t) = W·x``: each layer is computed from the
decoded value of its input trains, and only the fire phase is simulated step by step.

Scaling. The integer network was quantised for k = 2 at its own T: a code ``q`` stands for the
activation ``Δ_l·q`` with ``Δ_l = scale_l / (2^T - 1)``. With another k (or T) the same calibrated
range ``scale_l`` maps onto ``x_max(k, T)``, so every step shrinks by ``c = x_max(k, T)/(2^T_net - 1)``:
weights and thresholds (ratios of steps) are unchanged, biases become ``b·c``, and the input value is
``raw/input_max · x_max(k, T)``. The input encoder rounds to nearest: for k = 2 through the
converter's lookup table, otherwise by the greedy expansion of ``value + 1/2``. At k = 2 and the
network's own T nothing changes and :func:`run` equals :func:`spikeforge.ir.golden.run` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .golden import argmax_lowest, input_lut
from .network import Network
from .errors import InputError

__all__ = ["AmplifiedResult", "place_values", "code_max", "greedy_spikes", "encoding_error", "run"]


def _check(amplification: float, timesteps: int):
    if not (np.isfinite(amplification) and amplification >= 1.0):
        raise InputError(f"amplification k = {amplification!r} must be a number >= 1")
    if not (isinstance(timesteps, (int, np.integer)) and timesteps >= 1):
        raise InputError(f"timesteps {timesteps!r} must be an integer >= 1")


def place_values(amplification: float, timesteps: int) -> np.ndarray:
    """The value of a spike at each step, first step first: ``k^(T-1-t)``, t = 0..T-1."""
    _check(amplification, timesteps)
    return float(amplification) ** np.arange(timesteps - 1, -1, -1, dtype=np.float64)


def code_max(amplification: float, timesteps: int) -> float:
    """The largest value a train can carry, ``Σ_t k^t = (k^T - 1)/(k - 1)`` (T for k = 1)."""
    return float(place_values(amplification, timesteps).sum())


def greedy_spikes(potential: np.ndarray, threshold, amplification: float, timesteps: int):
    """The fire phase: spike at step t when ``V >= θ·k^(T-1-t)``, then subtract it.

    This is the amplified neuron without the amplification (``V ← k·V`` against a fixed ``θ·k^T``
    is the same comparison), which keeps numbers small. Negative potentials never fire.

    Parameters
    ----------
    potential : array (..., neurons)
    threshold : θ, broadcastable to ``potential``

    Returns
    -------
    values : array, shape of ``potential``
        The decoded trains ``Σ_t s_t·k^(T-1-t)``: int64 for an integer k and integer potentials
        (exact), float64 otherwise.
    step_counts : int64 array (..., T)
        How many neurons (the last axis) fire at each step.
    """
    potential = np.asarray(potential)
    places = place_values(amplification, timesteps)
    if potential.dtype.kind in "iu" and float(amplification).is_integer():
        # Integer k on integer potentials: stay in exact int64 arithmetic (k = 2: the golden model).
        potential = potential.astype(np.int64)
        threshold = np.asarray(threshold, dtype=np.int64)
        places = [int(amplification) ** (timesteps - 1 - t) for t in range(timesteps)]
        values = np.zeros(potential.shape, dtype=np.int64)
    else:
        potential = potential.astype(np.float64)
        threshold = np.asarray(threshold, dtype=np.float64)
        values = np.zeros(potential.shape, dtype=np.float64)
    step_counts = np.zeros(potential.shape[:-1] + (timesteps,), dtype=np.int64)
    for step, place in enumerate(places):
        level = threshold * place
        fired = potential >= level
        potential = potential - fired * level
        values += fired * place
        step_counts[..., step] = fired.sum(axis=-1)
    return values, step_counts


def encoding_error(amplification: float, timesteps: int, values=None) -> float:
    """Mean ``|v - decoded(v)|`` of one neuron over ``values`` in [0, 1] (a fine uniform grid by default).

    ``v`` in units of the range is encoded as the train of ``v·x_max + 1/2`` (round to nearest) and
    decoded as ``x / x_max``: the error of the code alone, before any network is involved.
    """
    if values is None:
        values = np.linspace(0.0, 1.0, 100_001)
    values = np.asarray(values, dtype=np.float64)
    top = code_max(amplification, timesteps)
    decoded, _ = greedy_spikes(values * top + 0.5, 1.0, amplification, timesteps)
    return float(np.mean(np.abs(values - decoded / top)))


@dataclass
class AmplifiedResult:
    """The generic-k network's result for N samples.

    Attributes
    ----------
    values : list of float64 arrays
        ``values[0]`` the input trains' decoded values (N, in_features), ``values[l + 1]`` hidden layer
        ``l``'s (N, out_features); all in code units, in ``[0, code_max]`` (int64 codes when the network
        runs unchanged, k = 2 at its own T; float64 otherwise).
    code_max : float
        ``x_max(k, T)``: ``values[l] / code_max`` is the activation as a fraction of its calibrated range.
    scores, labels : the output layer's scores (N, classes) and argmax labels (lowest index on ties).
    spike_counts : list of int64 arrays
        ``spike_counts[l]`` (N, T): spikes layer ``l`` receives at each step (input trains first).
    """

    values: list
    code_max: float
    scores: np.ndarray
    labels: np.ndarray
    spike_counts: list

    def input_spikes(self) -> list:
        """Spikes each layer receives per sample, a list of (N,) arrays (for ``golden.spike_driven_additions``)."""
        return [counts.sum(axis=1) for counts in self.spike_counts]


def _raw_samples(net: Network, samples) -> np.ndarray:
    samples = np.asarray(samples)
    if samples.dtype.kind not in "iu":
        raise InputError(f"samples must be raw integer bytes (uint8), got dtype {samples.dtype}")
    samples = samples.reshape(len(samples), -1) if samples.ndim > 1 else samples.reshape(1, -1)
    if samples.shape[1] != net.in_features:
        raise InputError(f"samples have {samples.shape[1]} features; the network takes {net.in_features}")
    if samples.size and (samples.min() < 0 or samples.max() > 255):
        raise InputError(f"sample values span {samples.min()}..{samples.max()}; raw inputs are bytes 0..255")
    return samples.astype(np.int64)


def _exact_matmul(codes: np.ndarray, layer, timesteps: int) -> np.ndarray:
    """``codes @ W.T`` in exact integers: float64 BLAS while every partial sum is below 2^52."""
    if layer.accumulator_bound(timesteps) < (1 << 52):
        return np.rint(codes.astype(np.float64) @ layer.weight.T.astype(np.float64)).astype(np.int64)
    return codes @ layer.weight.T


def _input_values(net: Network, raw: np.ndarray, amplification: float, timesteps: int):
    top = code_max(amplification, timesteps)
    if amplification == 2.0:
        lut = net.input_lut if timesteps == net.timesteps else None
        if lut is None:
            input_max = net.calibration.get("input_max")
            if input_max:
                lut = input_lut(float(input_max), timesteps)
            else:
                # A hand-made network without calibration: rescale its own codes.
                lut = np.round(net.input_lut / net.code_max * top).astype(np.int64)
        codes = lut[raw]
        step_counts = np.stack([((codes >> (timesteps - 1 - t)) & 1).sum(axis=1) for t in range(timesteps)], axis=1)
        return codes.astype(np.float64), step_counts
    input_max = net.calibration.get("input_max")
    fraction = raw / float(input_max) if input_max else net.input_lut[raw] / net.code_max
    return greedy_spikes(np.clip(fraction, 0.0, 1.0) * top + 0.5, 1.0, amplification, timesteps)


def run(net: Network, samples, amplification: float = 2.0, timesteps: int | None = None) -> AmplifiedResult:
    """Run the integer network with iLIF neurons of amplification ``k`` for ``timesteps`` steps.

    Parameters
    ----------
    net : Network
        Quantised for k = 2 at ``net.timesteps``; rescaled as the module docstring explains.
    samples : raw integer bytes (N, in_features) or (N, *input_shape)
    amplification : float
        k >= 1.
    timesteps : int, optional
        T (the network's own by default).

    Raises
    ------
    ValueError
        For k < 1, T < 1, samples that are not raw bytes, or a network with conv or pool layers
        (the k-model is dense only).
    """
    if net.has_maps:
        kinds = sorted({layer.kind for layer in net.layers} - {"dense"})
        raise InputError(f"the amplification model runs dense networks only; this network has "
                         f"{', '.join(kinds)} layers (use spikeforge.ir.golden for k = 2)")
    timesteps = net.timesteps if timesteps is None else timesteps
    _check(amplification, timesteps)
    amplification = float(amplification)
    raw = _raw_samples(net, samples)
    top = code_max(amplification, timesteps)
    bias_scale = top / net.code_max
    # k = 2 at the network's own T: the integer network unchanged, computed in exact integers.
    exact = amplification == 2.0 and timesteps == net.timesteps
    values, counts = _input_values(net, raw, amplification, timesteps)
    if exact:
        values = values.astype(np.int64)
    all_values = [values]
    spike_counts = [counts]
    for layer in net.hidden_layers:
        if exact:
            potential = _exact_matmul(values, layer, timesteps) + layer.bias + layer.v0
        else:
            potential = values @ layer.weight.T.astype(np.float64) + layer.bias * bias_scale + layer.v0
        values, counts = greedy_spikes(potential, layer.threshold, amplification, timesteps)
        all_values.append(values)
        spike_counts.append(counts)
    out = net.output_layer
    if exact:
        scores = _exact_matmul(values, out, timesteps) + out.bias
    else:
        scores = values @ out.weight.T.astype(np.float64) + out.bias * bias_scale
    return AmplifiedResult(values=all_values, code_max=top, scores=scores, labels=argmax_lowest(scores),
                           spike_counts=spike_counts)
