"""`spikeforge demo`: the whole flow on the embedded default (digits), and the demo network.

convert -> evaluate -> generate -> verify -> report, everything under ``build/demo/``.
"""

from __future__ import annotations

import functools
import json


from spikeforge.ir.network import Network

__all__ = ["demo_network", "DEMO_TIMESTEPS"]

DEMO_TIMESTEPS = 8


@functools.lru_cache(maxsize=8)
def _demo_network_cached(timesteps: int, weight_bits: int) -> Network:
    from .converter.convert import convert
    from .demo_model import load_digits_mlp
    return convert(load_digits_mlp(), "digits", timesteps=timesteps, weight_bits=weight_bits)


def demo_network(timesteps: int = DEMO_TIMESTEPS, weight_bits: int = 8) -> Network:
    """The shipped digits MLP (64-64-32-10) converted at ``timesteps`` (a fresh copy each call)."""
    net = _demo_network_cached(timesteps, weight_bits)
    return Network(timesteps=net.timesteps, input_shape=net.input_shape, input_lut=net.input_lut.copy(),
                   layers=[type(l)(l.name, l.weight.copy(), l.bias.copy(), l.threshold.copy(), l.v0.copy(),
                                   l.weight_bits, l.fires) for l in net.layers],
                   classes=list(net.classes), calibration=json.loads(json.dumps(net.calibration)))
