"""The demo network: the shipped digits MLP converted by the flow's convert step (cached per T).

`spikeforge demo` itself is :mod:`spikeforge.demo_flow`.
"""

from __future__ import annotations

import copy
import functools

from spikeforge.demo_model import load_digits_mlp
from spikeforge.flow import FlowConfig, convert_network
from spikeforge.ir.network import Network

__all__ = ["demo_network", "DEMO_TIMESTEPS"]

DEMO_TIMESTEPS = 8


@functools.lru_cache(maxsize=8)
def _demo_network_cached(timesteps: int, weight_bits: int) -> Network:
    return convert_network(load_digits_mlp(), FlowConfig(dataset="digits", timesteps=timesteps,
                                                          weight_bits=weight_bits))


def demo_network(timesteps: int = DEMO_TIMESTEPS, weight_bits: int = 8) -> Network:
    """The shipped digits MLP (64-64-32-10) converted at ``timesteps`` (a fresh copy each call)."""
    return copy.deepcopy(_demo_network_cached(timesteps, weight_bits))
