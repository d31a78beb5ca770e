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

Without measured spike counts the estimate assumes every input code has ``T/2`` ones on average
(uniform codes), so layers are balanced by ``in_features × out_features``; pass ``spikes_in`` (mean
input spikes per sample and layer, e.g. from :func:`spikeforge.ir.golden.run`) for a better balance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from spikeforge.ir.errors import InputError

__all__ = ["FoldingError", "Folding", "parse_lanes", "estimate_spikes_in", "auto_folding",
           "resolve_folding", "DEFAULT_LANES_BUDGET", "layer_cycles", "MEMBRANE_BANKS", "check_membrane_banks"]

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


@dataclass(frozen=True)
class Folding:
    """Lanes per layer, validated against a network.

    Parameters
    ----------
    lanes : dict of str -> int
        One entry per layer of the network, in layer order; ``1 <= lanes <= out_features``.

    Raises
    ------
    FoldingError
        On an unknown layer name, a missing layer, or a lanes value outside ``1..out_features``.
    """

    lanes: dict

    @classmethod
    def for_network(cls, net, config) -> "Folding":
        """Validate a complete ``{layer name: lanes}`` mapping against ``net``."""
        config = dict(config)
        names = [layer.name for layer in net.layers]
        for name, lanes in config.items():
            if name not in names:
                raise FoldingError(f"folding names layer {name!r}, which does not exist; layers: {', '.join(names)}")
            layer = net.layer(name)
            if isinstance(lanes, bool) or not isinstance(lanes, int) or not 1 <= lanes <= layer.out_features:
                raise FoldingError(f"layer {name!r}: lanes {lanes!r} is not in 1..{layer.out_features} "
                                   f"(its out_features)")
        missing = [name for name in names if name not in config]
        if missing:
            raise FoldingError(f"folding does not give lanes for layer(s) {', '.join(missing)}")
        return cls({name: int(config[name]) for name in names})

    def __getitem__(self, name: str) -> int:
        return self.lanes[name]

    def total_lanes(self) -> int:
        return sum(self.lanes.values())

    def chunks(self, net) -> dict:
        return {layer.name: math.ceil(layer.out_features / self.lanes[layer.name]) for layer in net.layers}


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
    chunks = math.ceil(layer.out_features / lanes)
    accumulate = spikes_in[index] * chunks
    sweep = net.timesteps * chunks if layer.fires else chunks
    return max(accumulate, sweep) if check_membrane_banks(membrane_banks) == 2 else accumulate + sweep


_layer_cost = layer_cycles


def _lanes_for(net, index: int, target: float, spikes_in: list, membrane_banks: int = 2):
    """The fewest lanes for layer ``index`` whose cost is <= target, or None."""
    out = net.layers[index].out_features
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
        Folding.for_network(net, {**{layer.name: 1 for layer in net.layers}, **fixed})
    free = [i for i, layer in enumerate(net.layers) if layer.name not in fixed]

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
            worst = max(free, key=lambda i: _layer_cost(net, i, net.layers[i].out_features, spikes_in, banks))
            best = _layer_cost(net, worst, net.layers[worst].out_features, spikes_in, banks)
            raise FoldingError(f"target {target_cycles} cycles per sample is not reachable: layer "
                               f"{net.layers[worst].name!r} needs about {best:.0f} cycles even with lanes = "
                               f"out_features = {net.layers[worst].out_features}")
        return Folding.for_network(net, lanes)

    if lanes_budget is None:
        lanes_budget = min(DEFAULT_LANES_BUDGET, sum(layer.out_features for layer in net.layers))
        lanes_budget = max(lanes_budget, len(net.layers))
    if isinstance(lanes_budget, bool) or not isinstance(lanes_budget, int):
        raise FoldingError(f"lanes budget {lanes_budget!r} must be an integer")
    budget_left = lanes_budget - sum(fixed.values())
    if budget_left < len(free):
        raise FoldingError(f"lanes budget {lanes_budget} is too small: it needs at least {len(free) + sum(fixed.values())} "
                           f"(one lane per layer{' plus the fixed lanes' if fixed else ''})")
    # Candidate targets: every cost some layer can have; the answer is one of them.
    candidates = sorted({_layer_cost(net, i, math.ceil(net.layers[i].out_features / c), spikes_in, banks)
                         for i in free for c in range(1, net.layers[i].out_features + 1)})
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
        if len(folding) == len(net.layers):
            raise FoldingError("every layer's lanes are given; a lanes budget or cycle target has nothing to choose")
    names = [layer.name for layer in net.layers]
    if all(name in folding for name in names) or any(name not in names for name in folding):
        return Folding.for_network(net, folding)
    # Validate the given part (names and ranges) before balancing the rest.
    Folding.for_network(net, {**{n: 1 for n in names}, **folding})
    spikes = estimate_spikes_in(net, spikes_in)
    if target_cycles is None and lanes_budget is None:
        target_cycles = max(_layer_cost(net, names.index(name), lanes, spikes, membrane_banks)
                            for name, lanes in folding.items())
    return auto_folding(net, lanes_budget=lanes_budget, target_cycles=target_cycles, spikes_in=spikes_in,
                        fixed=folding, membrane_banks=membrane_banks)
