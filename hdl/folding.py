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
folding key (fold its conv instead). A conv input spike costs ``taps × chunks`` words (the kernel taps
whose output is kept, about ``kh·kw / (sh·sw)`` away from the border) and its fire sweep
``P·chunks·K + (T-1)·P·chunks`` (``P`` emitted positions, ``K`` the pool window, 1 without a pool).

Without measured spike counts the estimate assumes every input code has ``T/2`` ones on average
(uniform codes), so layers are balanced by ``in_features × out_features``; pass ``spikes_in`` (mean
input spikes per sample and layer, e.g. from :func:`spikeforge.ir.golden.run`) for a better balance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from spikeforge.ir.errors import InputError

__all__ = ["FoldingError", "Folding", "parse_lanes", "estimate_spikes_in", "auto_folding",
           "resolve_folding", "DEFAULT_LANES_BUDGET", "layer_cycles", "MEMBRANE_BANKS", "check_membrane_banks",
           "max_lanes", "folded_layers", "pool_after"]

#: Lanes budget of the automatic default (``Accelerator(net)`` / ``spikeforge generate`` without options).
DEFAULT_LANES_BUDGET = 64
#: Membrane banks per layer: 2 (ping-pong, the default) or 1 (compact, no accumulate/readout overlap).
MEMBRANE_BANKS = (2, 1)


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


def _conv_cost(net, index: int, lanes: int, spikes: float):
    """(accumulate, sweep) estimate of conv layer ``index``."""
    layer = net.layers[index]
    chunks = math.ceil(layer.out_channels / lanes)
    (kh, kw), (sh, sw) = layer.kernel, layer.stride
    pool = pool_after(net, index)
    positions = (pool.out_shape[1] * pool.out_shape[2]) if pool is not None else layer.out_shape[1] * layer.out_shape[2]
    window = pool.kernel[0] * pool.kernel[1] if pool is not None else 1
    accumulate = spikes * (kh * kw) / (sh * sw) * chunks
    sweep = positions * chunks * window + (net.timesteps - 1) * positions * chunks
    return accumulate, sweep


@dataclass(frozen=True)
class Folding:
    """Lanes per layer, validated against a network.

    Parameters
    ----------
    lanes : dict of str -> int
        One entry per folded layer of the network (every layer but the max pools), in layer order;
        ``1 <= lanes <= out_features`` (a conv layer: ``1..out_channels``).

    Raises
    ------
    FoldingError
        On an unknown layer name, a max pool's name, a missing layer, or a lanes value out of range.
    """

    lanes: dict

    @classmethod
    def for_network(cls, net, config) -> "Folding":
        """Validate a complete ``{layer name: lanes}`` mapping against ``net``."""
        config = dict(config)
        names = [layer.name for layer in folded_layers(net)]
        for name, lanes in config.items():
            if name not in names:
                _refuse_pool_key(net, name)
                raise FoldingError(f"folding names layer {name!r}, which does not exist; layers: {', '.join(names)}")
            layer = net.layer(name)
            if isinstance(lanes, bool) or not isinstance(lanes, int) or not 1 <= lanes <= max_lanes(layer):
                what = "its output channels" if layer.kind == "conv2d" else "its out_features"
                raise FoldingError(f"layer {name!r}: lanes {lanes!r} is not in 1..{max_lanes(layer)} "
                                   f"({what})")
        missing = [name for name in names if name not in config]
        if missing:
            raise FoldingError(f"folding does not give lanes for layer(s) {', '.join(missing)}")
        return cls({name: int(config[name]) for name in names})

    def __getitem__(self, name: str) -> int:
        return self.lanes[name]

    def total_lanes(self) -> int:
        return sum(self.lanes.values())

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
    """``"fc1=8,fc2=4"`` -> ``{"fc1": 8, "fc2": 4}``; a malformed entry is a :class:`FoldingError`."""
    config = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value.lstrip("-").isdigit():
            raise FoldingError(f"lanes entry {item!r} is not NAME=INTEGER (e.g. fc1=8,fc2=4)")
        if name in config:
            raise FoldingError(f"lanes entry for layer {name!r} is given twice")
        config[name] = int(value)
    return config


def estimate_spikes_in(net, spikes_in=None) -> list:
    """Mean input spikes per sample for each layer: measured (``spikes_in``) or ``in_features × T / 2``."""
    if spikes_in is None:
        return [layer.in_features * net.timesteps / 2 for layer in net.layers]
    spikes_in = [float(s) for s in spikes_in]
    if len(spikes_in) != len(net.layers):
        raise FoldingError(f"spikes_in has {len(spikes_in)} entries, the network has {len(net.layers)} layers")
    return spikes_in


def layer_cycles(net, index: int, lanes: int, spikes_in: list, membrane_banks: int = 2) -> float:
    """Estimated cycles per sample of layer ``index`` with ``lanes``.

    Two membrane banks: the larger of accumulate and fire (or score) sweep, which overlap on
    consecutive samples. One bank: their sum, the readout sweep follows the accumulate phase.
    """
    layer = net.layers[index]
    if layer.kind == "conv2d":
        accumulate, sweep = _conv_cost(net, index, lanes, spikes_in[index])
        return max(accumulate, sweep) if check_membrane_banks(membrane_banks) == 2 else accumulate + sweep
    chunks = math.ceil(layer.out_features / lanes)
    accumulate = spikes_in[index] * chunks
    sweep = net.timesteps * chunks if layer.fires else chunks
    return max(accumulate, sweep) if check_membrane_banks(membrane_banks) == 2 else accumulate + sweep


_layer_cost = layer_cycles


def _lanes_for(net, index: int, target: float, spikes_in: list, membrane_banks: int = 2):
    """The fewest lanes for layer ``index`` whose cost is <= target, or None."""
    out = max_lanes(net.layers[index])
    for chunks in range(out, 0, -1):
        lanes = math.ceil(out / chunks)
        if _layer_cost(net, index, lanes, spikes_in, membrane_banks) <= target:
            return lanes
    return None


def auto_folding(net, *, lanes_budget=None, target_cycles=None, spikes_in=None, fixed=None,
                 membrane_banks: int = 2) -> Folding:
    """Balance the pipeline: the fewest lanes per layer for a cycle target, or the best target for a budget.

    Parameters
    ----------
    lanes_budget : int, optional
        Total lanes over all layers (>= number of layers not in ``fixed``).
    target_cycles : int, optional
        Estimated cycles per sample each layer must meet. Exactly one of the two, or neither
        (then ``DEFAULT_LANES_BUDGET`` capped at the total of ``out_features``).
    spikes_in : list of float, optional
        Mean input spikes per sample per layer (default: :func:`estimate_spikes_in`).
    fixed : dict, optional
        Lanes already chosen for some layers; only the others are chosen.
    membrane_banks : int
        2 (ping-pong, default) or 1: how a layer's accumulate and sweep combine (:func:`layer_cycles`).

    Raises
    ------
    FoldingError
        When the budget is smaller than the number of layers or the target cannot be met even with
        ``lanes = out_features`` (the message names the layer and its best possible cycles).
    """
    if lanes_budget is not None and target_cycles is not None:
        raise FoldingError("give either a lanes budget or a cycle target, not both")
    spikes_in = estimate_spikes_in(net, spikes_in)
    banks = check_membrane_banks(membrane_banks)
    fixed = dict(fixed or {})
    if fixed:   # validates names and ranges of the fixed part
        Folding.for_network(net, {**{layer.name: 1 for layer in folded_layers(net)}, **fixed})
    free = [i for i, layer in enumerate(net.layers) if layer.name not in fixed and layer.kind != "maxpool2d"]

    def solve(target):
        lanes = dict(fixed)
        for i in free:
            chosen = _lanes_for(net, i, target, spikes_in, banks)
            if chosen is None:
                return None
            lanes[net.layers[i].name] = chosen
        return lanes

    if target_cycles is not None:
        if not isinstance(target_cycles, (int, float)) or target_cycles <= 0:
            raise FoldingError(f"target cycles {target_cycles!r} must be a positive number")
        lanes = solve(target_cycles)
        if lanes is None:
            worst = max(free, key=lambda i: _layer_cost(net, i, max_lanes(net.layers[i]), spikes_in, banks))
            best = _layer_cost(net, worst, max_lanes(net.layers[worst]), spikes_in, banks)
            raise FoldingError(f"target {target_cycles} cycles per sample is not reachable: layer "
                               f"{net.layers[worst].name!r} needs about {best:.0f} cycles even with lanes = "
                               f"{'output channels' if net.layers[worst].kind == 'conv2d' else 'out_features'} = "
                               f"{max_lanes(net.layers[worst])}")
        return Folding.for_network(net, lanes)

    if lanes_budget is None:
        lanes_budget = min(DEFAULT_LANES_BUDGET, sum(max_lanes(layer) for layer in folded_layers(net)))
        lanes_budget = max(lanes_budget, len(folded_layers(net)))
    if isinstance(lanes_budget, bool) or not isinstance(lanes_budget, int):
        raise FoldingError(f"lanes budget {lanes_budget!r} must be an integer")
    budget_left = lanes_budget - sum(fixed.values())
    if budget_left < len(free):
        raise FoldingError(f"lanes budget {lanes_budget} is too small: it needs at least {len(free) + sum(fixed.values())} "
                           f"(one lane per layer{' plus the fixed lanes' if fixed else ''})")
    # Candidate targets: every cost some layer can have; the answer is one of them.
    candidates = sorted({_layer_cost(net, i, math.ceil(max_lanes(net.layers[i]) / c), spikes_in, banks)
                         for i in free for c in range(1, max_lanes(net.layers[i]) + 1)})
    low, high = 0, len(candidates) - 1
    best = solve(candidates[high])
    while low <= high:
        mid = (low + high) // 2
        lanes = solve(candidates[mid])
        if lanes is not None and sum(lanes[net.layers[i].name] for i in free) <= budget_left:
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
        return Folding.for_network(net, folding.lanes)
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
        target_cycles = max(_layer_cost(net, all_names.index(name), lanes, spikes, membrane_banks)
                            for name, lanes in folding.items())
    return auto_folding(net, lanes_budget=lanes_budget, target_cycles=target_cycles, spikes_in=spikes_in,
                        fixed=folding, membrane_banks=membrane_banks)
