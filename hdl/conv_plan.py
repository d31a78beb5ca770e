"""The conv core's plan: widths, ROM images, address maps, event conventions and its cycle model.

:func:`plan_conv_layer` turns a :class:`~spikeforge.ir.network.Conv2dLayer` (and the
:class:`~spikeforge.ir.network.MaxPool2dLayer` that follows it, if any), a number of lanes and the
producer's :class:`InputMap` into a :class:`ConvLayerPlan` for :class:`~spikeforge.hdl.conv_layer.ConvILIF`.

Event conventions (the payload is :func:`~spikeforge.hdl.layouts.spike_event_layout` everywhere)
    An event's bit ``k`` of ``chunk`` is the producer's *event index* ``chunk·group + k``.

    * **Flat CHW** (the encoder): event index = CHW-flat index ``(ci·H + y)·W + x``. The conv core
      needs ``group`` to divide ``W`` (a chunk then lies inside one row, its lanes step along ``x``):
      :meth:`InputMap.chw`.
    * **Position-major** (what a conv core emits): ``chunk = pos·chunks + cc`` with ``pos = y·Wout + x``
      of the (pooled) output map and ``cc`` the channel chunk; bit ``k`` is channel ``cc·lanes + k``.
      So the event index is ``pos·(chunks·lanes) + channel`` (HWC with channels padded to
      ``chunks·lanes``; padding channels never spike): :meth:`InputMap.position_major`.
      :func:`event_index_to_chw` maps it back, which a dense layer after a conv uses to permute its
      weight-ROM rows (row ``event index`` holds column ``chw`` of its weight matrix, zero for padding).

    A conv core decodes an event's chunk with a ROM of ``in_chunks`` words ``(c0, y, x0)`` (the chunk's
    lane 0), then lane ``k`` adds ``k`` to the channel or to ``x``: no divider anywhere.

Tap lanes (``taps``, the column banks)
    With ``taps = u > 1`` the core updates ``u`` kernel taps of one kernel row per cycle as well as
    ``lanes`` channels: each membrane bank is split into ``u`` *column banks*, column bank ``b`` holding
    the conv outputs with ``ox mod u = b`` (``Wb = ceil(Wc / u)`` columns each). An input spike reaches
    the outputs ``ox0 .. ox0 + nx - 1`` of each reachable output row (consecutive columns for any
    stride, kernel columns ``dx0, dx0 - sw, ...``), so any ``u`` consecutive ones lie in ``u`` different
    column banks: the walker issues them as ``ceil(nx / u)`` *groups* of ``u``. Output ``i`` of a group
    (``ox = ox_s + i``) goes to column bank ``(r + i) mod u`` with ``r = ox0 mod u`` (the spike's
    *rotation*, the same for all its groups) at column ``ox_s // u`` (+1 where ``r + i >= u``).
    ``taps = 1`` is one column bank: the plain core.

ROM images (one integer per word, lane 0 in the least significant bits)
    * ``weight``: depth ``C·kh·kw·chunks``, word ``taps × lanes × weight_bits``; address
      ``((ci·kh + dy)·kw + dx)·chunks + cc`` holds, in slot ``i`` (lanes ``i·lanes .. i·lanes + lanes-1``),
      ``W[cc·lanes + k, ci, dy, dx - i·sw]`` (0 where ``dx - i·sw < 0``): the weights of a group whose
      first output uses tap ``dx``, so one read feeds every adder. With ``taps = 1`` this is the IR's ROM
      order with the output channel split into chunks;
    * ``bias`` (``b + v0``) and ``threshold``: depth ``chunks``, as in the dense plan;
    * ``in_map``: depth ``in_chunks``, word ``(c0, y, x0)`` packed ``c0 | y << cb | x0 << (cb + yb)``;
    * ``rows``: depth ``H`` (input rows), word ``(ny, w_row, m_row)``: the input row ``y`` reaches output
      rows ``oy0 .. oy0 + ny - 1`` with kernel rows ``dy0, dy0 - sh, ...``; ``w_row = dy0·kw·chunks`` and
      ``m_row = oy0·Wb·chunks`` are the weight and membrane address offsets of the first one;
    * ``cols``: depth ``W``, word ``(nx, w_col, m_col, r)`` likewise with ``w_col = dx0·chunks``,
      ``m_col = (ox0 // taps)·chunks`` and the rotation ``r = ox0 mod taps``.

Membrane address map
    A bank word is ``lanes`` channels at one conv output position: in column bank ``ox mod taps``,
    address ``(oy·Wb + ox // taps)·chunks + cc`` (``Wb = Wc`` for one tap lane).
    With a max pool only the *covered* part of the conv map is kept (``Hc = (Hp-1)·sp + kp`` rows,
    ``Wc`` likewise; floor mode drops the rest, so those outputs are never accumulated); without one
    ``Hc, Wc = Ho, Wo``. The pooled residual store (pool only) holds ``Hp·Wp·chunks`` words, address
    ``(py·Wp + px)·chunks + cc`` = the output event's chunk index.

Widths (DESIGN §1): ``membrane_bits = signed_bits(layer.accumulator_bound(T))`` — a window's max is one
of its potentials, so the residual store needs no more.

Cycle model
    An input spike at ``(y, x)`` issues ``ny·ceil(nx / taps) × chunks`` words (:meth:`ConvLayerPlan.words`,
    from the ``rows``/``cols`` ROMs; ``ny·nx`` = :meth:`ConvLayerPlan.taps_reached` are the kept outputs it reaches,
    its useful additions per channel); a spike that reaches none costs nothing beyond
    its cycle in the decode pipeline. The fire sweep issues :func:`readout_words` words. For the layer on
    its own (back-to-back input, output always ready) :func:`conv_layer_schedule` gives the exact cycle of
    every sample's hand-over and final beat; the RTL test checks it cycle for cycle. In the accelerator's
    max-plus recurrence (:mod:`spikeforge.hdl.cycle_model`) a conv layer is a stage with accumulate work
    ``Σ words × chunks`` (:func:`spike_work`) instead of ``S·C``, three more cycles of decode latency
    before its first word (stages B-D), a 5-cycle drain after its last (one more than the dense core's)
    word, and readout ``readout_words + 4`` instead of ``T·C + 2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .bitops import pack_lanes
from .folding import HALF_RATE_MEMORIES
from .layouts import signed_bits
from spikeforge.ir.errors import InputError
from spikeforge.ir.network import Conv2dLayer, MaxPool2dLayer

__all__ = ["InputMap", "ConvLayerPlan", "plan_conv_layer", "event_index_to_chw", "spike_work",
           "readout_words", "step0_words", "early_release", "bank_release", "ConvSchedule",
           "conv_layer_schedule"]


def _pack_fields(values, widths) -> int:
    word, shift = 0, 0
    for value, width in zip(values, widths):
        assert 0 <= int(value) < (1 << width), (value, width)
        word |= int(value) << shift
        shift += width
    return word


def _bits(count: int) -> int:
    """Unsigned bits for values ``0..count-1`` (at least 1)."""
    return max(1, (max(count, 1) - 1).bit_length())


@dataclass(frozen=True)
class InputMap:
    """How the producer's event chunks map to input positions.

    Attributes
    ----------
    group, chunks : int
        The producer's lanes (an event's mask width) and chunk count.
    lane_axis : str
        ``"x"``: lane ``k`` of a chunk is ``x0 + k`` (flat CHW producer); ``"channel"``: lane ``k`` is
        channel ``c0 + k`` (position-major producer).
    entries : tuple of (c0, y, x0)
        One per chunk: the position of its lane 0.
    """

    group: int
    chunks: int
    lane_axis: str
    entries: tuple

    @classmethod
    def chw(cls, shape, group: int) -> "InputMap":
        """The encoder's flat CHW events with ``group`` lanes (``group`` must divide ``W``)."""
        C, H, W = (int(v) for v in shape)
        if group < 1 or W % group:
            raise InputError(f"input group {group} does not divide the input width {W}; a conv core after a "
                             f"flat CHW producer needs a group that divides W (one of "
                             f"{[g for g in range(1, W + 1) if W % g == 0]})")
        entries = []
        for index in range(0, C * H * W, group):
            ci, rest = divmod(index, H * W)
            y, x = divmod(rest, W)
            entries.append((ci, y, x))
        return cls(group=group, chunks=len(entries), lane_axis="x", entries=tuple(entries))

    @classmethod
    def position_major(cls, shape, lanes: int) -> "InputMap":
        """A conv (or pooled conv) producer of map ``shape`` = (C, H, W) with ``lanes`` channel lanes."""
        C, H, W = (int(v) for v in shape)
        if not 1 <= lanes <= C:
            raise InputError(f"producer lanes {lanes} is not in 1..{C}")
        chunks = math.ceil(C / lanes)
        entries = tuple((cc * lanes, y, x) for y in range(H) for x in range(W) for cc in range(chunks))
        return cls(group=lanes, chunks=len(entries), lane_axis="channel", entries=entries)


def event_index_to_chw(shape, lanes: int) -> np.ndarray:
    """For a position-major producer of map ``shape`` with ``lanes`` lanes: the CHW-flat index of every
    event index ``chunk·lanes + k`` (``-1`` for padding channels)."""
    C, H, W = (int(v) for v in shape)
    padded = math.ceil(C / lanes) * lanes
    index = np.full(H * W * padded, -1, dtype=np.int64)
    for pos in range(H * W):
        for ch in range(C):
            index[pos * padded + ch] = ch * H * W + pos
    return index


def _window_lut(size: int, out_size: int, kernel: int, stride: int, padding: int):
    """Per input coordinate: (count, first tap, first output) of the outputs it reaches (< out_size)."""
    rows = []
    for coord in range(size):
        outs = [o for o in range(out_size) if 0 <= coord + padding - o * stride < kernel]
        if outs:
            rows.append((len(outs), coord + padding - outs[0] * stride, outs[0]))
        else:
            rows.append((0, 0, 0))
    return rows


@dataclass(frozen=True, eq=False)
class ConvLayerPlan:
    """One conv layer's hardware parameters (optionally with the max pool that follows it).

    Attributes
    ----------
    name, timesteps, weight_bits, fires
        From the network (``fires`` is true: a conv output layer is not built yet).
    in_shape, conv_shape, out_shape
        ``(C, H, W)`` in, the conv map ``(Co, Ho, Wo)``, and the emitted map (pooled or the conv map).
    kernel, stride, padding
        The conv's.
    pool_kernel, pool_stride
        The max pool's, or None.
    cover
        ``(Hc, Wc)``: the part of the conv map kept in the membrane banks.
    lanes, chunks
        Output channels per cycle and ``ceil(Co / lanes)``.
    taps
        Tap lanes: kernel taps of one kernel row per cycle (column banks per membrane bank, ``1..kw``).
    input_map
        The producer's :class:`InputMap`.
    accumulator_bound, membrane_bits, bias_bits, threshold_bits, uniform_threshold
        As for the dense plan.
    membrane_banks
        2 (ping-pong, default) or 1 (compact).
    multiplier
        How an adder scales its weight by ``2^(T-1-t)``: ``dsp`` (a multiply by a one-hot factor: a DSP
        per adder where the device has them) or ``logic`` (a shift in LUTs, no DSP).
    membrane_memory
        Where the membrane (column) banks live: ``block`` or ``spram`` (single-port, half rate), as for the
        dense plan.
    weight_words, bias_words, threshold_words, in_map_words, row_words, col_words
        ROM images; field widths in ``in_map_fields``, ``row_fields``, ``col_fields``.
    """

    name: str
    timesteps: int
    weight_bits: int
    fires: bool
    in_shape: tuple
    conv_shape: tuple
    out_shape: tuple
    kernel: tuple
    stride: tuple
    padding: tuple
    pool_kernel: tuple | None
    pool_stride: tuple | None
    cover: tuple
    lanes: int
    chunks: int
    taps: int
    input_map: InputMap
    accumulator_bound: int
    membrane_bits: int
    bias_bits: int
    threshold_bits: int
    uniform_threshold: int | None
    membrane_banks: int
    weight_words: list
    bias_words: list
    threshold_words: list
    in_map_words: list
    in_map_fields: tuple
    row_words: list
    row_fields: tuple
    col_words: list
    col_fields: tuple
    multiplier: str = "dsp"
    membrane_memory: str = "block"

    @property
    def half_rate(self) -> bool:
        """The layer runs at half rate: its membrane banks take one access a cycle."""
        return self.membrane_memory in HALF_RATE_MEMORIES

    @property
    def pooled(self) -> bool:
        return self.pool_kernel is not None

    @property
    def bank_columns(self) -> int:
        """Columns of one column bank: ``Wb = ceil(Wc / taps)``."""
        return -(-self.cover[1] // self.taps)

    @property
    def bank_words(self) -> int:
        """Words of one column bank of one membrane bank: ``Hc·Wb·chunks`` (``Wb = Wc`` for one tap lane)."""
        return self.cover[0] * self.bank_columns * self.chunks

    @property
    def adders(self) -> int:
        """Membrane adders: ``lanes × taps`` (a border group leaves some idle; they still count)."""
        return self.lanes * self.taps

    @property
    def out_positions(self) -> int:
        return self.out_shape[1] * self.out_shape[2]

    @property
    def out_chunks(self) -> int:
        """Chunks of the emitted events: ``out positions × chunks`` (position-major)."""
        return self.out_positions * self.chunks

    @property
    def window(self) -> int:
        """Conv positions per emitted neuron: the pool window's size (1 without a pool)."""
        return self.pool_kernel[0] * self.pool_kernel[1] if self.pooled else 1

    @property
    def threshold_rom(self) -> bool:
        return self.uniform_threshold is None

    @property
    def memory_bits(self) -> dict:
        """Bits of every memory: ROMs and RAMs, by name (the sums over :meth:`memories`)."""
        word = self.lanes * self.membrane_bits
        bits = {
            "weight": len(self.weight_words) * self.taps * self.lanes * self.weight_bits,
            "bias": self.chunks * self.lanes * self.bias_bits,
            "threshold": self.chunks * self.lanes * self.threshold_bits if self.threshold_rom else 0,
            "in_map": len(self.in_map_words) * sum(self.in_map_fields),
            "rows": len(self.row_words) * sum(self.row_fields),
            "cols": len(self.col_words) * sum(self.col_fields),
            "membrane": self.membrane_banks * self.taps * self.bank_words * word,
            "pooled_residual": self.out_chunks * word if self.pooled and self.timesteps > 1 else 0,
        }
        return bits

    def memories(self) -> list:
        """Every memory of the core as ``{"name", "kind", "width", "depth"}`` (``kind`` ``"rom"`` or
        ``"ram"``; ``name`` as the Verilog instance names it), for block-RAM estimates: the ROMs, each
        column bank of each membrane bank (``membrane{i}_{b}``; ``membrane_{b}`` with one membrane bank,
        no ``_{b}`` with one tap lane) and the pooled residual store. Depths as planned (the RTL makes
        a one-word memory two words deep)."""
        word = self.lanes * self.membrane_bits
        out = [{"name": "weights", "kind": "rom", "width": self.taps * self.lanes * self.weight_bits,
                "depth": len(self.weight_words)},
               {"name": "biases", "kind": "rom", "width": self.lanes * self.bias_bits, "depth": self.chunks}]
        if self.threshold_rom:
            out.append({"name": "thresholds", "kind": "rom", "width": self.lanes * self.threshold_bits,
                        "depth": self.chunks})
        out += [{"name": "in_map", "kind": "rom", "width": sum(self.in_map_fields), "depth": len(self.in_map_words)},
                {"name": "rows", "kind": "rom", "width": sum(self.row_fields), "depth": len(self.row_words)},
                {"name": "cols", "kind": "rom", "width": sum(self.col_fields), "depth": len(self.col_words)}]
        out += [{"name": name, "kind": "spram" if self.membrane_memory == "spram" else "ram", "width": word,
                 "depth": self.bank_words} for name in self.membrane_names()]
        if self.pooled and self.timesteps > 1:
            out.append({"name": "pooled", "kind": "ram", "width": word, "depth": self.out_chunks})
        return out

    def membrane_names(self) -> list:
        """Instance names of the membrane memories, membrane bank major, column bank minor."""
        names = []
        for index in range(self.membrane_banks):
            base = "membrane" if self.membrane_banks == 1 else f"membrane{index}"
            names += [base] if self.taps == 1 else [f"{base}_{b}" for b in range(self.taps)]
        return names

    def reach(self, y: int, x: int) -> tuple:
        """``(ny, nx)``: kept output rows and columns an input spike at row ``y``, column ``x`` reaches."""
        return _unpack(self.row_words[y], self.row_fields)[0], _unpack(self.col_words[x], self.col_fields)[0]

    def taps_reached(self, y: int, x: int) -> int:
        """Output positions (in the kept map) an input spike at ``(y, x)`` reaches: ``ny·nx``."""
        ny, nx = self.reach(y, x)
        return ny * nx

    def words(self, y: int, x: int) -> int:
        """Walker steps per chunk of an input spike at ``(y, x)``: ``ny·ceil(nx / taps)``."""
        ny, nx = self.reach(y, x)
        return ny * -(-nx // self.taps)


def _unpack(word: int, widths) -> list:
    out = []
    for width in widths:
        out.append(word & ((1 << width) - 1))
        word >>= width
    return out


def plan_conv_layer(layer: Conv2dLayer, *, lanes: int, timesteps: int, input_map: InputMap,
                    pool: MaxPool2dLayer | None = None, membrane_banks: int = 2, taps: int = 1,
                    multiplier: str = "dsp", membrane_memory: str = "block") -> ConvLayerPlan:
    """Derive the widths, ROM images and address maps of ``layer`` folded to ``lanes`` channel lanes and
    ``taps`` tap lanes (column banks, see the module docstring).

    Raises
    ------
    InputError
        A conv output layer (``fires`` false), lanes outside ``1..Co``, taps outside ``1..kw``, a bank
        count other than 1 or 2,
        a pool whose input is not this conv's output map, or an input map for a different shape.
    """
    if not isinstance(layer, Conv2dLayer):
        raise InputError(f"plan_conv_layer takes a Conv2dLayer, got {type(layer).__name__}")
    if not layer.fires:
        raise InputError(f"layer {layer.name!r}: a conv output layer is not supported by the conv core yet; "
                         "end the network with a dense layer")
    Co, Ho, Wo = layer.out_shape
    C, H, W = layer.in_shape
    if not isinstance(lanes, int) or not 1 <= lanes <= Co:
        raise InputError(f"layer {layer.name!r}: lanes {lanes!r} is not in 1..{Co} (its output channels)")
    if isinstance(taps, bool) or not isinstance(taps, int) or not 1 <= taps <= layer.kernel[1]:
        raise InputError(f"layer {layer.name!r}: tap lanes {taps!r} is not in 1..{layer.kernel[1]} (its kernel width)")
    if membrane_banks not in (1, 2):
        raise InputError(f"membrane_banks {membrane_banks!r} is not supported; use 2 (ping-pong) or 1 (compact)")
    if multiplier not in ("dsp", "logic"):
        raise InputError(f"multiplier {multiplier!r} is not supported; accepted: dsp, logic")
    if pool is not None:
        if not isinstance(pool, MaxPool2dLayer):
            raise InputError(f"the pool after {layer.name!r} must be a MaxPool2dLayer, got {type(pool).__name__}")
        if tuple(pool.in_shape) != tuple(layer.out_shape):
            raise InputError(f"pool {pool.name!r} takes {tuple(pool.in_shape)}, but {layer.name!r} makes "
                             f"{tuple(layer.out_shape)}")
    expected_chunks = (math.ceil(C * H * W / input_map.group) if input_map.lane_axis == "x"
                       else H * W * math.ceil(C / input_map.group))
    if input_map.chunks != expected_chunks or len(input_map.entries) != expected_chunks:
        raise InputError(f"layer {layer.name!r}: the input map has {input_map.chunks} chunks, the input "
                         f"{tuple(layer.in_shape)} in groups of {input_map.group} needs {expected_chunks}")
    T = timesteps
    chunks = math.ceil(Co / lanes)
    kh, kw = layer.kernel
    sh, sw = layer.stride
    ph, pw = layer.padding
    if pool is not None:
        (pkh, pkw), (psh, psw) = pool.kernel, pool.stride
        _, Hp, Wp = pool.out_shape
        cover = ((Hp - 1) * psh + pkh, (Wp - 1) * psw + pkw)
        out_shape = tuple(pool.out_shape)
    else:
        cover = (Ho, Wo)
        out_shape = tuple(layer.out_shape)
    Hc, Wc = cover

    # Weight ROM: IR order (tap-major, output channel minor), channels padded and cut into chunks; slot
    # i of the word at tap dx holds tap dx - i·sw (zero before the kernel's first column).
    padded = lanes * chunks
    pad = padded - Co
    weight = np.pad(np.asarray(layer.weight, dtype=np.int64), ((0, pad), (0, 0), (0, 0), (0, 0)))  # (P, C, kh, kw)
    slots = []
    for i in range(taps):
        shifted = np.zeros_like(weight)
        if i * sw < kw:
            shifted[..., i * sw:] = weight[..., :kw - i * sw]
        slots.append(shifted.transpose(1, 2, 3, 0).reshape(C * kh * kw * chunks, lanes))   # (C, kh, kw, P)
    rom = np.concatenate(slots, axis=1)                    # slot i in lanes i·lanes .. i·lanes + lanes-1
    bias = np.pad(np.broadcast_to(layer.bias + layer.v0, (Co,)), (0, pad)).reshape(chunks, lanes)
    threshold_values = np.broadcast_to(np.asarray(layer.threshold), (Co,))
    threshold = np.pad(threshold_values, (0, pad), constant_values=1).reshape(chunks, lanes)
    threshold_bits = max(1, int(threshold_values.max()).bit_length())
    bias_bits = signed_bits(int(np.abs(bias).max()) if bias.size else 0)
    unique = np.unique(threshold_values)
    bound = layer.accumulator_bound(T)

    # Input decode ROMs.
    in_fields = (_bits(C), _bits(H), _bits(W))
    in_words = [_pack_fields(entry, in_fields) for entry in input_map.entries]
    weight_depth = C * kh * kw * chunks
    Wb = -(-Wc // taps)
    bank_depth = Hc * Wb * chunks
    row_lut = _window_lut(H, Hc, kh, sh, ph)
    col_lut = _window_lut(W, Wc, kw, sw, pw)
    row_fields = (_bits(kh + 1), _bits(weight_depth), _bits(bank_depth))
    col_fields = (_bits(kw + 1), _bits(weight_depth), _bits(bank_depth), _bits(taps))
    row_words = [_pack_fields((n, dy * kw * chunks, oy * Wb * chunks), row_fields) for n, dy, oy in row_lut]
    col_words = [_pack_fields((n, dx * chunks, (ox // taps) * chunks, ox % taps), col_fields)
                 for n, dx, ox in col_lut]

    return ConvLayerPlan(
        name=layer.name, timesteps=T, weight_bits=layer.weight_bits, fires=True,
        in_shape=tuple(layer.in_shape), conv_shape=tuple(layer.out_shape), out_shape=out_shape,
        kernel=(kh, kw), stride=(sh, sw), padding=(ph, pw),
        pool_kernel=None if pool is None else tuple(pool.kernel),
        pool_stride=None if pool is None else tuple(pool.stride),
        cover=cover, lanes=lanes, chunks=chunks, taps=taps, input_map=input_map,
        accumulator_bound=bound, membrane_bits=signed_bits(bound), bias_bits=bias_bits,
        threshold_bits=threshold_bits, uniform_threshold=int(unique[0]) if len(unique) == 1 else None,
        membrane_banks=membrane_banks,
        weight_words=pack_lanes(rom, layer.weight_bits), bias_words=pack_lanes(bias, bias_bits),
        threshold_words=pack_lanes(threshold, threshold_bits),
        in_map_words=in_words, in_map_fields=in_fields,
        row_words=row_words, row_fields=row_fields, col_words=col_words, col_fields=col_fields,
        multiplier=multiplier, membrane_memory=membrane_memory,
    )


# -- the cycle model ----------------------------------------------------------------------------------

def spike_work(plan: ConvLayerPlan, beats) -> list:
    """Per input event beat ``(mask, chunk, step, last)``: the words each of its spikes issues
    (``words × chunks``, :meth:`ConvLayerPlan.words`; 0 for a spike that reaches no kept output), lowest
    bit first."""
    imap = plan.input_map
    work = []
    for mask, chunk, _step, _last in beats:
        c0, y, x = imap.entries[chunk]
        spikes = []
        for k in range(imap.group):
            if (mask >> k) & 1:
                spikes.append(plan.words(y, x + k if imap.lane_axis == "x" else x) * plan.chunks)
        work.append(spikes)
    return work


def readout_words(plan: ConvLayerPlan) -> int:
    """Words the fire sweep issues per sample: ``P·chunks·K`` in step 0, ``P·chunks`` in each later step."""
    return step0_words(plan) + (plan.timesteps - 1) * plan.out_positions * plan.chunks


def step0_words(plan: ConvLayerPlan) -> int:
    """Words the fire sweep issues in step 0 (``P·chunks·K``): with a max pool, the bank reads."""
    return plan.out_positions * plan.chunks * plan.window


def early_release(plan: ConvLayerPlan) -> bool:
    """Whether the one-bank core hands its bank back to the accumulate after the readout's step 0 (a max
    pool and ``T > 1``: later steps fire from the pooled residual store)."""
    return plan.membrane_banks == 1 and plan.pooled and plan.timesteps > 1


def bank_release(plan: ConvLayerPlan, handover, readout_idle):
    """With one bank, the first cycle the next sample's first event can be taken: step 0's last word
    retired (issued ``step0_words`` cycles after the hand-over, fired two later) under early release,
    else the readout idle. Without output stalls."""
    return handover + step0_words(plan) + 3 if early_release(plan) else readout_idle


@dataclass
class ConvSchedule:
    """What :func:`conv_layer_schedule` returns (cycles counted from the end of reset).

    Attributes
    ----------
    handover : list of int
        Per sample: the cycle the readout starts (the sample's accumulate is done).
    final_beat : list of int
        Per sample: the cycle its ``last`` spike beat is offered (and, the output never stalling, taken).
    issued : list of int
        Per sample: words the accumulate issued (``Σ words × chunks``).
    spikes : list of int
        Per sample: input spikes.
    cycles_per_sample : float
        Mean spacing of the final beats (the single sample's span for one sample).
    """

    handover: list
    final_beat: list
    issued: list
    spikes: list
    cycles_per_sample: float


def conv_layer_schedule(plan: ConvLayerPlan, samples) -> ConvSchedule:
    """The core's exact schedule for a back-to-back stream: every input beat offered from cycle 0, the
    output always ready.

    ``samples`` is a list of per-sample beat lists ``(mask, chunk, step, last)`` in the producer's
    convention. The model follows the RTL stage by stage (module docstring of
    :mod:`spikeforge.hdl.conv_layer`): stage A takes one spike per cycle and the next event in the
    cycle its last spike moves on; stages B, C, D hold one spike each and move when the next stage is
    free or moving; the walker takes a descriptor in the cycle it issues its previous spike's last word
    and issues ``words × chunks`` words; the hand-over comes five cycles after the last word is issued
    (four write stages, then the hand-over itself) once the readout is idle; the readout issues one
    word per cycle from the next cycle and offers a sample's final beat three cycles after issuing its
    last word (the read, the fire stage and the emit stage), and is idle the cycle after that. After reset the banks are cleared (``Hc·Wc·chunks``
    cycles) before the first event is taken.
    """
    R = readout_words(plan)
    start = plan.bank_words                 # the first event is taken after the clear
    ro_idle_at = 0                          # the first cycle the readout is idle
    handovers, finals, issued, spikes = [], [], [], []
    for beats in samples:
        work = spike_work(plan, beats)
        flat = [n for event in work for n in event]
        a_prev = start                      # stage A: the previous spike's cycle (or the event's take)
        leave_b = leave_c = dfree = wfree = -1
        last_issue = None
        for n in flat:
            a = max(a_prev + 1, leave_b)    # B must be free or moving on
            leave_b = max(a + 1, leave_c)
            leave_c = max(leave_b + 1, dfree)
            if n:
                leave_d = max(leave_c + 1, wfree)
                dfree, wfree = leave_d, leave_d + n
                last_issue = wfree
            a_prev = a
        end = a_prev + 1 if flat else start + 1
        if flat:
            end = max(end, leave_c + 1)
        if last_issue is not None:
            end = max(end, last_issue + 5)
        handover = max(end, ro_idle_at)
        final = handover + R + 3
        ro_idle_at = final + 1
        handovers.append(handover)
        finals.append(final)
        issued.append(sum(flat))
        spikes.append(len(flat))
        start = handover if plan.membrane_banks == 2 else bank_release(plan, handover, ro_idle_at)
    spacing = (finals[-1] - finals[0]) / (len(finals) - 1) if len(finals) > 1 else finals[0] - plan.bank_words
    return ConvSchedule(handover=handovers, final_beat=finals, issued=issued, spikes=spikes,
                        cycles_per_sample=float(spacing))
