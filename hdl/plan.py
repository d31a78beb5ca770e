"""The hardware plan: every width, depth and ROM image the RTL, the report and the cycle model share.

:func:`plan_network` turns a :class:`~spikeforge.ir.network.Network` and a
:class:`~spikeforge.hdl.folding.Folding` into an :class:`AcceleratorPlan`. Widths come from worst-case
bounds (DESIGN.md §1), so no register can overflow:

* ``accumulator_bound = max_j Σ_i |W[j,i]|·(2^T - 1) + |b_j| + |v0_j|`` bounds ``|V|`` at every point
  of the accumulate and fire phases (partial sums are sums over a subset of the same terms; the fire
  phase only subtracts while ``V >= θ·2^k > 0``, so ``V`` stays in ``[0, V_before]``);
* ``membrane_bits = bit_length(bound) + 1`` (signed); the output layer's membrane is the score, so
  ``score_bits`` is the output layer's ``membrane_bits`` and ``-2^(score_bits-1)`` is below every
  possible score (the argmax uses it as "no best yet").

ROM images (one integer per word, lane 0 in the least significant bits):

* ``weight``: depth ``in_features × chunks``, word ``lanes × weight_bits``; address
  ``in_index × chunks + chunk`` holds ``W[chunk·lanes + k, in_index]`` in lane ``k`` (0 for padding);
* ``bias``: depth ``chunks``, word ``lanes × bias_bits``: ``b + v0`` per neuron, as narrow as the
  biases need (``bias_bits = signed_bits(max |b + v0|)``, sign-extended to the membrane in the RTL) —
  the membrane bank is cleared *to* this value, so the accumulate phase starts from it;
* ``threshold`` (firing layers): depth ``chunks``, word ``lanes × threshold_bits``; padding neurons
  get θ = 1 so their constant zero potential never fires. When every θ of a layer is the same
  (the converter's default) ``uniform_threshold`` holds it and the RTL uses a constant instead of the
  ROM (no ROM, no per-lane shifter).

Encoder lanes (:func:`encoder_lanes_for`): the fewest that keep the encoder's emit sweep
(``T·ceil(in / lanes) + 2`` cycles) within a quarter of the slowest other stage's estimate, at most
:data:`ENCODER_MAX_LANES`; the first layer's event group is that many bits wide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .bitops import pack_lanes
from .folding import HALF_RATE_MEMORIES, Folding, check_membrane_banks, estimate_spikes_in, layer_cycles, pool_after
from .conv_plan import ConvLayerPlan, InputMap, event_index_to_chw, plan_conv_layer
from .layouts import label_bits, signed_bits
from .single_port import SPRAM_WORDS, membrane_bank_shapes
from spikeforge.ir.errors import InputError

__all__ = ["LayerPlan", "AcceleratorPlan", "plan_network", "check_dense", "signed_bits", "ENCODER_MAX_LANES",
           "encoder_lanes_for", "check_supported", "MULTIPLIERS", "check_multiplier", "multiplier_dsps",
           "choose_multiplier"]

#: The input encoder reads at most this many codes per cycle.
ENCODER_MAX_LANES = 16
#: The encoder's emit sweep is kept within this fraction of the slowest other stage's estimate (a
#: quarter: the estimate assumes T/2 ones per code, real inputs are sparser, and an encoder lane costs
#: only ``T`` buffer bits and a bit select, while an emit sweep near the bottleneck stalls it).
ENCODER_MARGIN = 0.25
#: How a dense lane scales a weight by ``2^(T-1-t)``: ``dsp`` multiplies by a one-hot register (one DSP
#: per lane where the device has them), ``logic`` shifts it (a log-depth shifter in LUTs, no DSP).
MULTIPLIERS = ("dsp", "logic")


def check_multiplier(multiplier, allow_auto: bool = False) -> str:
    """``multiplier`` if it is one of :data:`MULTIPLIERS` (or ``auto`` when ``allow_auto``).

    Raises
    ------
    InputError
        Naming the value and the accepted ones.
    """
    accepted = MULTIPLIERS + (("auto",) if allow_auto else ())
    if multiplier not in accepted:
        raise InputError(f"multiplier {multiplier!r} is not supported; accepted: {', '.join(accepted)}")
    return multiplier


def multiplier_dsps(net, folding) -> int:
    """The DSPs the design's adders use with ``multiplier='dsp'``: one per dense lane and one per conv
    adder (``lanes × taps``), :meth:`~spikeforge.hdl.folding.Folding.total_adders`; ``logic`` uses none."""
    return folding.total_adders()


def choose_multiplier(net, folding, dsp_budget, choice: str = "auto") -> str:
    """Resolve ``choice`` (``dsp``, ``logic`` or ``auto``) for a device with ``dsp_budget`` DSPs.

    ``auto`` takes ``dsp`` while every adder's multiplier fits the budget (``None``: unknown, no
    limit), and ``logic`` once the lanes would run the DSPs out.

    Raises
    ------
    InputError
        An unknown ``choice``.
    """
    check_multiplier(choice, allow_auto=True)
    if choice != "auto":
        return choice
    if dsp_budget is None:
        return "dsp"
    return "dsp" if multiplier_dsps(net, folding) <= dsp_budget else "logic"


def encoder_lanes_for(net, folding, spikes_in=None, membrane_banks: int = 2) -> int:
    """The fewest encoder lanes whose emit sweep stays within :data:`ENCODER_MARGIN` of the slowest other
    stage (estimated).

    The estimate is the one automatic folding uses (:func:`~spikeforge.hdl.folding.layer_cycles`,
    ``spikes_in`` default ``in_features × T / 2`` per layer); the encoder's load (``in + 1`` cycles)
    is a stage too. The cycle model calls this same function.
    """
    T, n_in = net.timesteps, net.in_features
    spikes = estimate_spikes_in(net, spikes_in)
    slowest = max([n_in + 1] + [layer_cycles(net, i, folding[layer.name], spikes, membrane_banks,
                                             folding.tap_lanes(layer.name), folding.half_rate(layer.name))
                                for i, layer in enumerate(net.layers) if layer.kind != "maxpool2d"])
    # A fraction of the estimate: the estimate assumes T/2 ones per code, real inputs (digits: about 2.3
    # of 8) are sparser, and the encoder's sweep costs the same whatever the data.
    allowed = list(range(1, min(n_in, ENCODER_MAX_LANES) + 1))
    if net.layers[0].kind == "conv2d":      # a chunk must stay inside one input row (InputMap.chw)
        width = net.layers[0].in_shape[2]
        allowed = [lanes for lanes in allowed if width % lanes == 0]
    for lanes in allowed:
        if T * math.ceil(n_in / lanes) + 2 <= ENCODER_MARGIN * slowest:
            return lanes
    return allowed[-1]


def check_dense(net, what: str = "the hardware generator") -> None:
    """Refuse a network with a layer that is not dense, for a flow that still requires it (``what``
    names it in the message; ``spikeforge build``: its resource estimate and placeholder ROMs describe
    dense layers only). The Accelerator, the plan, the cycle model and ``generate`` take conv networks
    (:func:`check_supported`).

    Raises
    ------
    InputError
        Naming the first such layer and its kind.
    """
    for layer in net.layers:
        if layer.kind != "dense":
            raise InputError(f"layer {layer.name!r} is a {layer.kind} layer; {what} supports "
                             f"dense layers only (conv hardware: issue 13)")


def check_supported(net) -> None:
    """Refuse a network the hardware generator has no core for: a max pool that does not directly follow
    a conv layer (pools are fused into the conv core's fire phase), or a conv output layer.

    Raises
    ------
    InputError
        Naming the first such layer.
    """
    for index, layer in enumerate(net.layers):
        if layer.kind == "maxpool2d" and (index == 0 or net.layers[index - 1].kind != "conv2d"):
            after = "is the first layer" if index == 0 else f"follows {net.layers[index - 1].name!r}, a {net.layers[index - 1].kind} layer"
            raise InputError(f"layer {layer.name!r} is a maxpool2d layer that {after}; the hardware fuses a max "
                             f"pool into the conv layer right before it, so a pool must directly follow a conv2d layer")
        if layer.kind == "conv2d" and not layer.fires:
            raise InputError(f"layer {layer.name!r} is a conv2d output layer; the hardware generator has no conv "
                             f"output core: end the network with a dense layer")


@dataclass(frozen=True, eq=False)
class LayerPlan:
    """One dense layer's hardware parameters.

    Attributes
    ----------
    name, in_features, out_features, weight_bits, fires, timesteps
        From the network.
    lanes, chunks
        Neurons per cycle and ``ceil(out_features / lanes)``.
    in_group, in_chunks
        The producer's lanes and chunks: an input event carries ``in_group`` spike bits of chunk
        ``0..in_chunks-1`` (after a conv: its lanes and ``P·chunks``, the weight ROM's rows then
        follow the conv's position-major event indices).
    accumulator_bound, membrane_bits, threshold_bits, bias_bits
        See the module docstring.
    uniform_threshold
        θ when every neuron of the layer has the same one (firing layers), else None.
    membrane_banks
        2: ping-pong banks (accumulate sample n+1 while the readout sweeps sample n); 1: one bank,
        the readout follows the accumulate phase.
    multiplier
        How the lanes scale a weight by ``2^(T-1-t)``: ``dsp`` or ``logic`` (:data:`MULTIPLIERS`).
    membrane_memory
        Where the membrane banks live: ``block`` (dual-port block RAM) or ``spram`` (single-port: the
        layer runs at half rate, :mod:`~spikeforge.hdl.single_port`).
    weight_words, bias_words, threshold_words
        ROM images (lists of ints).
    """

    name: str
    in_features: int
    out_features: int
    weight_bits: int
    fires: bool
    timesteps: int
    lanes: int
    chunks: int
    in_group: int
    in_chunks: int
    accumulator_bound: int
    membrane_bits: int
    threshold_bits: int
    weight_words: list
    bias_words: list
    threshold_words: list
    bias_bits: int = 0
    uniform_threshold: int | None = None
    membrane_banks: int = 2
    multiplier: str = "dsp"
    membrane_memory: str = "block"

    @property
    def half_rate(self) -> bool:
        """The layer runs at half rate: its membrane banks take one access a cycle."""
        return self.membrane_memory in HALF_RATE_MEMORIES

    def membrane_names(self) -> list:
        """Instance names of the membrane banks (``membrane`` with one bank, ``membrane0``, ``membrane1``
        with two), as :meth:`~spikeforge.hdl.conv_plan.ConvLayerPlan.membrane_names` gives a conv core's."""
        return ["membrane"] if self.membrane_banks == 1 else [f"membrane{i}" for i in range(self.membrane_banks)]

    @property
    def padded_features(self) -> int:
        return self.lanes * self.chunks

    @property
    def weight_rom_bits(self) -> int:
        return len(self.weight_words) * self.lanes * self.weight_bits

    @property
    def rom_bits(self) -> int:
        """All ROM bits of the layer: weights, biases, thresholds."""
        return (self.weight_rom_bits + self.chunks * self.lanes * self.bias_bits
                + (self.chunks * self.lanes * self.threshold_bits if self.threshold_rom else 0))

    @property
    def threshold_rom(self) -> bool:
        """The layer reads θ from a ROM (it fires and its neurons' θ differ)."""
        return self.fires and self.uniform_threshold is None

    @property
    def membrane_memory_bits(self) -> int:
        """All membrane banks."""
        return self.membrane_banks * self.chunks * self.lanes * self.membrane_bits


@dataclass(frozen=True, eq=False)
class AcceleratorPlan:
    """The whole accelerator: encoder parameters, one :class:`LayerPlan` per layer, I/O widths."""

    timesteps: int
    in_features: int
    input_lut: list
    encoder_lanes: int
    encoder_chunks: int
    layers: list
    classes: int
    folding: Folding
    membrane_banks: int = 2
    multiplier: str = "dsp"

    @property
    def output(self) -> LayerPlan:
        return self.layers[-1]

    @property
    def score_bits(self) -> int:
        return self.output.membrane_bits

    @property
    def label_bits(self) -> int:
        """``ceil(log2 C)``, at least 1 (one and two classes both need a 1-bit label)."""
        return label_bits(self.classes)


def plan_network(net, folding: Folding, membrane_banks: int = 2, multiplier: str = "dsp") -> AcceleratorPlan:
    """Derive every width, depth and ROM image of the accelerator for ``net`` folded by ``folding``.

    ``membrane_banks`` (2: ping-pong, default; 1: compact) and ``multiplier`` (``dsp`` or ``logic``,
    :data:`MULTIPLIERS`; dense layers only) are recorded in every dense layer plan.
    ``layers`` holds one plan per folded layer: a :class:`LayerPlan` for a dense layer, a
    :class:`~spikeforge.hdl.conv_plan.ConvLayerPlan` for a conv layer (fused with the max pool that
    follows it, if any; a pool has no plan of its own). The first conv reads the encoder's flat CHW
    events (:meth:`~spikeforge.hdl.conv_plan.InputMap.chw`, the encoder's lanes divide ``W``), a conv
    after a conv its position-major events; a dense layer after a conv takes ``in_group`` = the conv's
    lanes, ``in_chunks`` = its ``P·chunks``, and its weight-ROM rows are the event indices
    (:func:`~spikeforge.hdl.conv_plan.event_index_to_chw`, zero rows for padding channels).

    Raises
    ------
    InputError
        A network with a layer there is no core for, see :func:`check_supported`; an unknown
        ``multiplier``.
    """
    check_supported(net)
    banks = check_membrane_banks(membrane_banks)
    check_multiplier(multiplier)
    T = net.timesteps
    encoder_lanes = encoder_lanes_for(net, folding, membrane_banks=banks)
    group, group_chunks = encoder_lanes, math.ceil(net.in_features / encoder_lanes)
    layers = []
    for index, layer in enumerate(net.layers):
        if layer.kind == "maxpool2d":       # fused into the conv core before it
            continue
        lanes = folding[layer.name]
        previous = layers[-1] if layers else None
        if layer.kind == "conv2d":
            if previous is None:
                input_map = InputMap.chw(layer.in_shape, encoder_lanes)
            else:
                input_map = InputMap.position_major(previous.out_shape, previous.lanes)
            conv = plan_conv_layer(layer, lanes=lanes, timesteps=T, input_map=input_map,
                                   pool=pool_after(net, index), membrane_banks=banks,
                                   taps=folding.tap_lanes(layer.name), multiplier=multiplier,
                                   membrane_memory=folding.membrane_memory(layer.name))
            layers.append(conv)
            group, group_chunks = conv.lanes, conv.out_chunks
            continue
        chunks = math.ceil(layer.out_features / lanes)
        padded = lanes * chunks
        pad = padded - layer.out_features
        weight = np.pad(layer.weight, ((0, pad), (0, 0)))                      # (padded, in)
        if isinstance(previous, ConvLayerPlan):
            # The conv emits position-major events: ROM row = event index, column chw of it (0: padding).
            chw = event_index_to_chw(previous.out_shape, previous.lanes)
            permuted = np.zeros((padded, len(chw)), dtype=weight.dtype)
            permuted[:, chw >= 0] = weight[:, chw[chw >= 0]]
            weight = permuted
        weight_rows = weight.T.reshape(weight.shape[1] * chunks, lanes)       # address = i*chunks + c
        bound = layer.accumulator_bound(T)
        membrane_bits = signed_bits(bound)
        bias = np.pad(layer.bias + layer.v0, (0, pad)).reshape(chunks, lanes)
        threshold = np.pad(layer.threshold, (0, pad), constant_values=1).reshape(chunks, lanes)
        threshold_bits = max(1, int(layer.threshold.max()).bit_length())
        bias_bits = signed_bits(int(np.abs(bias).max()) if bias.size else 0)
        thresholds = np.unique(np.asarray(layer.threshold).reshape(-1))
        uniform = int(thresholds[0]) if layer.fires and len(thresholds) == 1 else None
        layers.append(LayerPlan(
            name=layer.name, in_features=layer.in_features, out_features=layer.out_features,
            weight_bits=layer.weight_bits, fires=layer.fires, timesteps=T, lanes=lanes, chunks=chunks,
            in_group=group, in_chunks=group_chunks, accumulator_bound=bound, membrane_bits=membrane_bits,
            threshold_bits=threshold_bits,
            weight_words=pack_lanes(weight_rows, layer.weight_bits),
            bias_words=pack_lanes(bias, bias_bits), bias_bits=bias_bits, uniform_threshold=uniform,
            membrane_banks=banks, multiplier=multiplier, membrane_memory=folding.membrane_memory(layer.name),
            threshold_words=pack_lanes(threshold, threshold_bits) if layer.fires else [],
        ))
        group, group_chunks = lanes, chunks
    for layer_plan in filter(lambda plan: plan.half_rate, layers):
        deepest = max(depth for columns in membrane_bank_shapes(layer_plan) for _width, depth in columns)
        if deepest > SPRAM_WORDS:
            raise InputError(f"layer {layer_plan.name!r}: a membrane bank of {deepest} words does not fit one "
                             f"{layer_plan.membrane_memory} block ({SPRAM_WORDS} words); give it more lanes or "
                             f"keep its banks in block RAM")
    return AcceleratorPlan(timesteps=T, in_features=net.in_features, input_lut=[int(v) for v in net.input_lut],
                           encoder_lanes=encoder_lanes, encoder_chunks=math.ceil(net.in_features / encoder_lanes),
                           layers=layers, classes=net.num_classes, folding=folding,
                           membrane_banks=banks, multiplier=multiplier)
