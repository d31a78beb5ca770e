"""Folding: how many neurons (``lanes``) each layer updates per cycle, by hand or balanced automatically.

A layer with ``out_features`` neurons and ``lanes`` lanes splits its neurons into
``chunks = ceil(out_features / lanes)`` groups of ``lanes`` (the last group may be partly padding).
One input spike then costs ``chunks`` accumulate cycles and one fire step costs ``chunks`` sweep
cycles (see :mod:`spikeforge.hdl.cycle_model`).

Automatic folding balances the pipeline: it picks, per layer, the fewest lanes whose estimated
per-sample time stays within a cycle target: with two (ping-pong) membrane banks, the default, the larger
of ``spikes_in × chunks`` (accumulate) and the fire sweep ``T × chunks`` (they overlap on different
samples); with one bank (``membrane_banks=1``, the compact layer) their sum, since the sweep follows the
accumulate phase. With a lanes budget instead of a target it binary-searches the
smallest target that fits the budget. Only lane counts that are the smallest for their chunk count
(``lanes = ceil(out / chunks)``) are ever chosen: any more lanes would only add padding.

Conv layers (issue 13): the lanes of a conv layer are output channels (``1..Co``); the max pool that
follows a conv is fused into the conv's core and takes no lanes, so a pool's name is refused as a
folding key (fold its conv instead). A conv layer also has *tap lanes* (``1..kw``, default 1): kernel
taps of one kernel row updated in the same cycle, each in its own column bank
(:mod:`spikeforge.hdl.conv_plan`). Written ``conv2=32x3`` (32 channel lanes × 3 tap lanes), a
``(lanes, taps)`` pair or the string ``"32x3"`` in a dict. A conv input spike costs about
``(kh/sh)·groups × chunks`` words with ``groups = kw/sw`` for one tap lane and ``ceil(kw / (sw·taps))``
for more (border spikes cost less; the cycle model counts them exactly) and its fire sweep
``P·chunks·K + (T-1)·P·chunks`` (``P`` emitted positions, ``K`` the pool window, 1 without a pool).
A layer's *adders* are ``lanes × taps``; a lanes budget counts adders, and the balancer picks, per
layer, the fewest adders that meet the target (fewer tap lanes on a tie: channel lanes waste nothing
at the border and need no extra memories), so tap lanes come in only where channel lanes are used up
or cost more.

Without measured spike counts the estimate assumes every input code has ``T/2`` ones on average
(uniform codes), so layers are balanced by ``in_features × out_features``; pass ``spikes_in`` (mean
input spikes per sample and layer, e.g. from :func:`spikeforge.ir.golden.run`) for a better balance.
A balance on measured ``spikes_in`` (with a lanes budget) is kept only when the cycle model says it is
clearly faster than the default folding for the same budget (:func:`auto_folding`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from spikeforge.ir.errors import InputError

__all__ = ["FoldingError", "Folding", "parse_lanes", "estimate_spikes_in", "auto_folding",
           "resolve_folding", "DEFAULT_LANES_BUDGET", "layer_cycles", "MEMBRANE_BANKS", "check_membrane_banks",
           "max_lanes", "max_taps", "tap_choices", "split_entry", "split_memory", "folded_layers", "pool_after",
           "MEMBRANE_MEMORIES", "HALF_RATE_MEMORIES"]

#: Lanes budget of the automatic default (``Accelerator(net)`` / ``spikeforge generate`` without options).
DEFAULT_LANES_BUDGET = 64
#: Membrane banks per layer: 2 (ping-pong, the default) or 1 (compact, no accumulate/readout overlap).
MEMBRANE_BANKS = (2, 1)
#: Where a layer's membrane banks live: ``block`` (block RAM or logic, dual-port: a word read and another
#: written each cycle; the default) or ``spram`` (single-port RAM, the iCE40UP5K's 4 x 256 kbit SPRAM:
#: one access a cycle, so the layer runs at half rate, see :mod:`spikeforge.hdl.single_port`). Written
#: ``conv1=2:spram`` (``NAME=LANES[xTAPS][:MEMORY]``).
MEMBRANE_MEMORIES = ("block", "spram")
#: The memories whose layers run at half rate (one bank access a cycle).
HALF_RATE_MEMORIES = ("spram",)


def check_membrane_banks(membrane_banks) -> int:
    """``membrane_banks`` as an int, or a ValueError unless it is 1 or 2."""
    if isinstance(membrane_banks, bool) or membrane_banks not in MEMBRANE_BANKS:
        raise InputError(f"membrane_banks must be 1 or 2, got {membrane_banks!r}")
    return int(membrane_banks)


class FoldingError(InputError):
    """A folding config names an unknown layer, an out-of-range lanes value, or an unreachable target."""


def max_lanes(layer) -> int:
    """The most lanes a layer can use: output channels for a conv, ``out_features`` for a dense layer."""
    return layer.out_channels if layer.kind == "conv2d" else layer.out_features


def folded_layers(net) -> list:
    """The layers that take lanes (every layer but the max pools, which are fused into their conv)."""
    return [layer for layer in net.layers if layer.kind != "maxpool2d"]


def pool_after(net, index: int):
    """The max pool directly after layer ``index`` (fused into its core), or None."""
    following = net.layers[index + 1] if index + 1 < len(net.layers) else None
    return following if following is not None and following.kind == "maxpool2d" else None


def max_taps(layer) -> int:
    """The most tap lanes a layer can use: the kernel width for a conv, 1 for a dense layer."""
    return layer.kernel[1] if layer.kind == "conv2d" else 1


def tap_choices(layer) -> list:
    """Tap lane counts worth choosing for ``layer``: the smallest for each number of column groups a
    kernel row takes (``ceil(ceil(kw/sw) / taps)``); 1 for a dense layer."""
    if layer.kind != "conv2d":
        return [1]
    reach = min(layer.kernel[1], math.ceil(layer.kernel[1] / layer.stride[1]))
    return sorted({math.ceil(reach / groups) for groups in range(1, reach + 1)})


def _conv_cost(net, index: int, lanes: int, spikes: float, taps: int = 1):
    """(accumulate, sweep) estimate of conv layer ``index``."""
    layer = net.layers[index]
    chunks = math.ceil(layer.out_channels / lanes)
    (kh, kw), (sh, sw) = layer.kernel, layer.stride
    pool = pool_after(net, index)
    positions = (pool.out_shape[1] * pool.out_shape[2]) if pool is not None else layer.out_shape[1] * layer.out_shape[2]
    window = pool.kernel[0] * pool.kernel[1] if pool is not None else 1
    groups = kw / sw if taps == 1 else math.ceil(kw / (sw * taps))
    accumulate = spikes * kh / sh * groups * chunks
    sweep = positions * chunks * window + (net.timesteps - 1) * positions * chunks
    return accumulate, sweep


def split_memory(name: str, value) -> tuple:
    """A folding value -> ``(value without its memory, memory)``: ``"2x3:spram"`` -> ``("2x3", "spram")``;
    a value without ``:MEMORY`` has ``block``. An unknown memory is a :class:`FoldingError` naming the layer."""
    if not isinstance(value, str) or ":" not in value:
        return value, "block"
    lanes, _, memory = value.partition(":")
    memory = memory.strip().lower()
    if memory not in MEMBRANE_MEMORIES:
        raise FoldingError(f"layer {name!r}: membrane memory {memory!r} in {value!r} is not one of "
                           f"{', '.join(MEMBRANE_MEMORIES)} (write e.g. {name}=2:spram)")
    return lanes.strip(), memory


def split_entry(name: str, value) -> tuple:
    """A folding value -> ``(lanes, taps)``: an int (one tap lane), a ``(lanes, taps)`` pair, or the
    string ``"LxT"`` / ``"L"``, with or without a ``:MEMORY`` suffix (:func:`split_memory`; a malformed
    string is a :class:`FoldingError` naming the layer; the numbers are checked by
    :meth:`Folding.for_network`)."""
    value, _memory = split_memory(name, value)
    if isinstance(value, str):
        text = value.strip().lower()
        parts = text.split("x")
        if len(parts) in (1, 2) and all(part.strip().isdigit() for part in parts):
            value = tuple(int(part) for part in parts) if len(parts) == 2 else int(parts[0])
        else:
            raise FoldingError(f"layer {name!r}: lanes {value!r} is not LANES or LANESxTAPS, with or without :MEMORY "
                               f"(e.g. 32, 32x3 or 2:spram)")
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return tuple(value)
    return value, 1


def _whole(number) -> bool:
    return isinstance(number, int) and not isinstance(number, bool)


@dataclass(frozen=True)
class Folding:
    """Lanes (and, for conv layers, tap lanes) per layer, validated against a network.

    Parameters
    ----------
    lanes : dict of str -> int
        One entry per folded layer of the network (every layer but the max pools), in layer order;
        ``1 <= lanes <= out_features`` (a conv layer: ``1..out_channels``).
    taps : dict of str -> int
        Tap lanes per layer (``1..kw`` for a conv layer, 1 for a dense one); missing layers have 1.
    memory : dict of str -> str
        Membrane memory per layer (:data:`MEMBRANE_MEMORIES`); missing layers have ``block``.

    Raises
    ------
    FoldingError
        On an unknown layer name, a max pool's name, a missing layer, a lanes or tap lanes value out
        of range (tap lanes on a dense layer included), an unknown membrane memory, or ``spram`` for the
        output layer (its bank is a few words: it stays in block RAM).
    """

    lanes: dict
    taps: dict = field(default_factory=dict)
    memory: dict = field(default_factory=dict)

    @classmethod
    def for_network(cls, net, config) -> "Folding":
        """Validate a complete ``{layer name: lanes}`` mapping against ``net`` (a value may be an int, a
        ``(lanes, taps)`` pair or ``"LxT"``, see :func:`split_entry`)."""
        config = dict(config)
        names = [layer.name for layer in folded_layers(net)]
        split, memories = {}, {}
        for name, value in config.items():
            if name not in names:
                _refuse_pool_key(net, name)
                raise FoldingError(f"folding names layer {name!r}, which does not exist; layers: {', '.join(names)}")
            layer = net.layer(name)
            _, memory = split_memory(name, value)
            if memory != "block" and not layer.fires:
                raise FoldingError(f"layer {name!r}: the output layer's membrane bank ({layer.out_features} "
                                   f"potentials) stays in block RAM; {memory} is for hidden layers' banks")
            if memory != "block":
                memories[name] = memory
            lanes, taps = split_entry(name, value)
            if not _whole(lanes) or not 1 <= lanes <= max_lanes(layer):
                what = "its output channels" if layer.kind == "conv2d" else "its out_features"
                raise FoldingError(f"layer {name!r}: lanes {lanes!r} is not in 1..{max_lanes(layer)} "
                                   f"({what})")
            if not _whole(taps) or not 1 <= taps <= max_taps(layer):
                if layer.kind != "conv2d":
                    raise FoldingError(f"layer {name!r}: tap lanes {taps!r} given for a {layer.kind} layer; only "
                                       f"conv layers take tap lanes (write {name}={lanes}"
                                       + (f":{memory})" if memory != "block" else ")"))
                raise FoldingError(f"layer {name!r}: tap lanes {taps!r} is not in 1..{max_taps(layer)} "
                                   f"(its kernel width)")
            split[name] = (lanes, taps)
        missing = [name for name in names if name not in config]
        if missing:
            raise FoldingError(f"folding does not give lanes for layer(s) {', '.join(missing)}")
        return cls({name: split[name][0] for name in names},
                   {name: split[name][1] for name in names if split[name][1] != 1},
                   {name: memories[name] for name in names if name in memories})

    def __getitem__(self, name: str) -> int:
        return self.lanes[name]

    def tap_lanes(self, name: str) -> int:
        """Tap lanes of layer ``name`` (1 unless given)."""
        return self.taps.get(name, 1)

    def membrane_memory(self, name: str) -> str:
        """Where layer ``name``'s membrane banks live (:data:`MEMBRANE_MEMORIES`; ``block`` unless given)."""
        return self.memory.get(name, "block")

    def half_rate(self, name: str) -> bool:
        """Layer ``name`` runs at half rate: its membrane memory takes one access a cycle (``spram``)."""
        return self.membrane_memory(name) in HALF_RATE_MEMORIES

    def adders(self, name: str) -> int:
        """Membrane adders of layer ``name``: ``lanes × taps``."""
        return self.lanes[name] * self.tap_lanes(name)

    def total_lanes(self) -> int:
        """Channel lanes over all layers (tap lanes not counted; see :meth:`total_adders`)."""
        return sum(self.lanes.values())

    def total_adders(self) -> int:
        """Adders over all layers: ``Σ lanes × taps`` (what a lanes budget counts)."""
        return sum(self.adders(name) for name in self.lanes)

    def config(self) -> dict:
        """``{name: lanes}``, or ``"LxT"`` for a layer with tap lanes and ``"L[xT]:MEMORY"`` for one whose
        membrane banks are not in block RAM: what :meth:`for_network` takes back and ``design.json`` records."""
        out = {}
        for name, lanes in self.lanes.items():
            value = f"{lanes}x{self.taps[name]}" if name in self.taps else lanes
            out[name] = f"{value}:{self.memory[name]}" if name in self.memory else value
        return out

    def chunks(self, net) -> dict:
        return {layer.name: math.ceil(max_lanes(layer) / self.lanes[layer.name]) for layer in folded_layers(net)}


def _refuse_pool_key(net, name: str) -> None:
    """A folding key that names a max pool: refused, naming the conv it is fused into."""
    names = [layer.name for layer in net.layers]
    if name in names and net.layer(name).kind == "maxpool2d":
        index = names.index(name)
        conv = net.layers[index - 1].name if index else None
        raise FoldingError(f"layer {name!r} is a max pool: it is fused into the core of {conv!r} and takes no "
                           f"lanes; give lanes for {conv!r} instead")


def parse_lanes(text: str) -> dict:
    """``"fc1=8,conv2=32x3,conv1=2:spram"`` -> ``{"fc1": 8, "conv2": "32x3", "conv1": "2:spram"}`` (``LxT``:
    channel lanes × tap lanes, conv layers only; ``:MEMORY``: where the membrane banks live,
    :data:`MEMBRANE_MEMORIES`; kept as the strings :class:`Folding` takes and ``design.json`` records); a
    malformed entry is a :class:`FoldingError`."""
    config = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        value, colon, memory = value.partition(":")
        lanes, x, taps = value.lower().partition("x")
        lanes, taps, memory = lanes.strip(), taps.strip(), memory.strip().lower()
        if not sep or not name or not lanes.lstrip("-").isdigit() or (x and not taps.lstrip("-").isdigit()) \
                or (colon and not memory):
            raise FoldingError(f"lanes entry {item!r} is not NAME=LANES, NAME=LANESxTAPS or either with :MEMORY "
                               f"(e.g. fc1=8,conv2=32x3,conv1=2:spram)")
        if name in config:
            raise FoldingError(f"lanes entry for layer {name!r} is given twice")
        entry = f"{int(lanes)}x{int(taps)}" if x else int(lanes)
        if colon:
            split_memory(name, f"{entry}:{memory}")         # an unknown memory is refused here
            entry = f"{entry}:{memory}" if memory != "block" else entry
        config[name] = entry
    return config


def estimate_spikes_in(net, spikes_in=None) -> list:
    """Mean input spikes per sample for each layer: measured (``spikes_in``) or ``in_features × T / 2``."""
    if spikes_in is None:
        return [layer.in_features * net.timesteps / 2 for layer in net.layers]
    spikes_in = [float(s) for s in spikes_in]
    if len(spikes_in) != len(net.layers):
        raise FoldingError(f"spikes_in has {len(spikes_in)} entries, the network has {len(net.layers)} layers")
    return spikes_in


def layer_cycles(net, index: int, lanes: int, spikes_in: list, membrane_banks: int = 2, taps: int = 1,
                 half_rate: bool = False) -> float:
    """Estimated cycles per sample of layer ``index`` with ``lanes`` (and ``taps`` tap lanes, conv only);
    twice as many for a layer at half rate (``half_rate``: its membrane banks in single-port RAM).

    Two membrane banks: the larger of accumulate and fire (or score) sweep, which overlap on
    consecutive samples. One bank: their sum, the readout sweep follows the accumulate phase.
    """
    layer = net.layers[index]
    if layer.kind == "conv2d":
        accumulate, sweep = _conv_cost(net, index, lanes, spikes_in[index], taps)
    else:
        chunks = math.ceil(layer.out_features / lanes)
        accumulate = spikes_in[index] * chunks
        sweep = net.timesteps * chunks if layer.fires else chunks
    cycles = max(accumulate, sweep) if check_membrane_banks(membrane_banks) == 2 else accumulate + sweep
    return 2 * cycles if half_rate else cycles


_layer_cost = layer_cycles


def _choices(layer) -> list:
    """Every ``(lanes, taps)`` worth choosing for ``layer``, fewest adders first (fewer taps on a tie)."""
    out = max_lanes(layer)
    pairs = {(math.ceil(out / chunks), taps) for chunks in range(1, out + 1) for taps in tap_choices(layer)}
    return sorted(pairs, key=lambda pair: (pair[0] * pair[1], pair[1]))


def _lanes_for(net, index: int, target: float, spikes_in: list, membrane_banks: int = 2):
    """The ``(lanes, taps)`` with the fewest adders for layer ``index`` whose cost is <= target, or None."""
    for lanes, taps in _choices(net.layers[index]):
        if _layer_cost(net, index, lanes, spikes_in, membrane_banks, taps) <= target:
            return lanes, taps
    return None


def _best_cost(net, index: int, spikes_in: list, membrane_banks: int) -> float:
    layer = net.layers[index]
    return min(_layer_cost(net, index, lanes, spikes_in, membrane_banks, taps) for lanes, taps in _choices(layer))


def auto_folding(net, *, lanes_budget=None, target_cycles=None, spikes_in=None, fixed=None,
                 membrane_banks: int = 2) -> Folding:
    """Balance the pipeline: the fewest lanes per layer for a cycle target, or the best target for a budget.

    Parameters
    ----------
    lanes_budget : int, optional
        Total adders (``Σ lanes × taps``) over all layers (>= number of layers not in ``fixed``).
    target_cycles : int, optional
        Estimated cycles per sample each layer must meet. Exactly one of the two, or neither
        (then ``DEFAULT_LANES_BUDGET`` capped at the total of ``out_features``).
    spikes_in : list of float, optional
        Mean input spikes per sample per layer (default: :func:`estimate_spikes_in`).
    fixed : dict, optional
        Lanes (ints, ``(lanes, taps)`` pairs or ``"LxT"``) already chosen for some layers; only the
        others are chosen.
    membrane_banks : int
        2 (ping-pong, default) or 1: how a layer's accumulate and sweep combine (:func:`layer_cycles`).

    This balances each layer alone on the counts; it cannot see the encoder, whose lanes follow the
    estimate, nor a producer and a consumer stalling each other through a FIFO. With measured counts, use
    :func:`spikeforge.hdl.balance.balanced_folding`, which asks the cycle model and is never slower than the
    default folding.

    Raises
    ------
    FoldingError
        When the budget is smaller than the number of layers or the target cannot be met even with
        ``lanes = out_features`` and, for a conv, ``taps = kw`` (the message names the layer and its best
        possible cycles).
    """
    if lanes_budget is not None and target_cycles is not None:
        raise FoldingError("give either a lanes budget or a cycle target, not both")
    spikes_in = estimate_spikes_in(net, spikes_in)
    banks = check_membrane_banks(membrane_banks)
    fixed = dict(fixed or {})
    if fixed:   # validates names and ranges of the fixed part
        Folding.for_network(net, {**{layer.name: 1 for layer in folded_layers(net)}, **fixed})
    free = [i for i, layer in enumerate(net.layers) if layer.name not in fixed and layer.kind != "maxpool2d"]

    fixed_adders = sum(lanes * taps for lanes, taps in (split_entry(n, v) for n, v in fixed.items()))

    def solve(target):
        lanes = dict(fixed)
        for i in free:
            chosen = _lanes_for(net, i, target, spikes_in, banks)
            if chosen is None:
                return None
            lanes[net.layers[i].name] = chosen
        return lanes

    def adders(lanes):
        return sum(lanes[net.layers[i].name][0] * lanes[net.layers[i].name][1] for i in free)

    if target_cycles is not None:
        if not isinstance(target_cycles, (int, float)) or target_cycles <= 0:
            raise FoldingError(f"target cycles {target_cycles!r} must be a positive number")
        lanes = solve(target_cycles)
        if lanes is None:
            worst = max(free, key=lambda i: _best_cost(net, i, spikes_in, banks))
            best = _best_cost(net, worst, spikes_in, banks)
            conv = net.layers[worst].kind == "conv2d"
            raise FoldingError(f"target {target_cycles} cycles per sample is not reachable: layer "
                               f"{net.layers[worst].name!r} needs about {best:.0f} cycles even with lanes = "
                               f"{'output channels' if conv else 'out_features'} = "
                               f"{max_lanes(net.layers[worst])}"
                               + (f" and tap lanes = {max(tap_choices(net.layers[worst]))}" if conv else ""))
        return Folding.for_network(net, lanes)

    if lanes_budget is None:
        lanes_budget = min(DEFAULT_LANES_BUDGET, sum(max_lanes(layer) for layer in folded_layers(net)))
        lanes_budget = max(lanes_budget, len(folded_layers(net)))
    if isinstance(lanes_budget, bool) or not isinstance(lanes_budget, int):
        raise FoldingError(f"lanes budget {lanes_budget!r} must be an integer")
    budget_left = lanes_budget - fixed_adders
    if budget_left < len(free):
        raise FoldingError(f"lanes budget {lanes_budget} is too small: it needs at least {len(free) + fixed_adders} "
                           f"(one lane per layer{' plus the fixed lanes' if fixed else ''})")
    # Candidate targets: every cost some layer can have; the answer is one of them.
    candidates = sorted({_layer_cost(net, i, lanes, spikes_in, banks, taps)
                         for i in free for lanes, taps in _choices(net.layers[i])})
    low, high = 0, len(candidates) - 1
    best = solve(candidates[high])
    while low <= high:
        mid = (low + high) // 2
        lanes = solve(candidates[mid])
        if lanes is not None and adders(lanes) <= budget_left:
            best, high = lanes, mid - 1
        else:
            low = mid + 1
    return Folding.for_network(net, best)


def resolve_folding(net, folding=None, *, lanes_budget=None, target_cycles=None, spikes_in=None,
                    membrane_banks: int = 2) -> Folding:
    """A :class:`Folding` from ``None`` (automatic), a partial or full ``{name: lanes}`` dict, or a Folding.

    Layers a partial dict leaves out are balanced to the slowest layer it names.
    """
    if isinstance(folding, Folding):
        return Folding.for_network(net, folding.config())
    if folding is None or not folding:
        return auto_folding(net, lanes_budget=lanes_budget, target_cycles=target_cycles, spikes_in=spikes_in,
                            membrane_banks=membrane_banks)
    if not isinstance(folding, dict):
        raise FoldingError(f"folding must be a dict of layer name -> lanes or a Folding, got {type(folding).__name__}")
    if lanes_budget is not None or target_cycles is not None:
        if len(folding) == len(folded_layers(net)):
            raise FoldingError("every layer's lanes are given; a lanes budget or cycle target has nothing to choose")
    names = [layer.name for layer in folded_layers(net)]
    if all(name in folding for name in names) or any(name not in names for name in folding):
        return Folding.for_network(net, folding)
    # Validate the given part (names and ranges) before balancing the rest.
    Folding.for_network(net, {**{n: 1 for n in names}, **folding})
    spikes = estimate_spikes_in(net, spikes_in)
    all_names = [layer.name for layer in net.layers]
    if target_cycles is None and lanes_budget is None:
        given = {name: (*split_entry(name, value), split_memory(name, value)[1]) for name, value in folding.items()}
        target_cycles = max(_layer_cost(net, all_names.index(name), lanes, spikes, membrane_banks, taps,
                                        memory in HALF_RATE_MEMORIES)
                            for name, (lanes, taps, memory) in given.items())
    return auto_folding(net, lanes_budget=lanes_budget, target_cycles=target_cycles, spikes_in=spikes_in,
                        fixed=folding, membrane_banks=membrane_banks)
