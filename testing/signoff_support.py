"""Test support for the sign-off: a small reference accelerator with the real top-level ports.

:class:`ReferenceAccelerator` computes the golden closed form of a *one-layer* network (the output
layer only: ``scores = W·lut[x] + b``, ``label = argmax``) one pixel per cycle, with the ports of
DESIGN.md §3. It lets the testbench, the runner and the report be tested independently of the real
accelerator — and, with a deliberate ``bug``, proves that the sign-off catches mismatches and
deadlocks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from amaranth.back import verilog
from amaranth.hdl import Array, Const, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from spikeforge.ir.network import DenseLayer, Network
from spikeforge.hdl.generate import generate, network_fingerprint
from spikeforge.hdl.layouts import pixel_layout, result_layout


def one_layer_network(seed: int, in_features: int = 16, classes: int = 4, timesteps: int = 4,
                      weight_bits: int = 6) -> Network:
    rng = np.random.default_rng(seed)
    low, high = -(1 << (weight_bits - 1)), (1 << (weight_bits - 1)) - 1
    out = DenseLayer("fc1", weight=rng.integers(low, high + 1, size=(classes, in_features)),
                     bias=rng.integers(-50, 51, size=classes), threshold=np.ones(classes, dtype=int),
                     v0=np.zeros(classes, dtype=int), weight_bits=weight_bits, fires=False)
    code_max = (1 << timesteps) - 1
    lut = np.minimum(np.round(np.arange(256) * code_max / 255), code_max).astype(np.int64)
    return Network(timesteps=timesteps, input_shape=(in_features,), input_lut=lut, layers=[out],
                   classes=[f"c{i}" for i in range(classes)])


def BUG_PIXEL(in_features: int) -> int:
    """The pixel whose parity triggers the ``"score"`` bug (a central pixel: digits' corners are 0)."""
    return min(in_features - 1, in_features // 2 + 4)


def score_bits(net: Network) -> int:
    return net.score_bound().bit_length() + 1


class ReferenceAccelerator(wiring.Component):
    """The golden closed form of a one-layer network, one pixel per cycle.

    Parameters
    ----------
    net : Network
        One layer (the output layer).
    argmax_cycles : int
        Idle cycles between the last pixel and the result (so the input stalls meanwhile).
    bug : str or None
        ``"score"``: score 0 is off by one whenever pixel ``in_features // 2 + 4`` is odd; ``"deadlock"``:
        ``pixels.ready`` never rises again after the third sample.

    Members
    -------
    pixels : In(stream.Signature(pixel_layout()))
        One raw byte per beat, ``last`` on the final byte of a sample.
    results : Out(stream.Signature(result_layout(C, S)))
        ``label`` and the C scores of each sample.
    """

    def __init__(self, net: Network, *, argmax_cycles: int = 3, bug=None):
        if len(net.layers) != 1:
            raise ValueError(f"the reference accelerator computes one layer, the network has {len(net.layers)}")
        self.net = net
        self.argmax_cycles = argmax_cycles
        self.bug = bug
        self.score_bits = score_bits(net)
        super().__init__({
            "pixels": In(stream.Signature(pixel_layout())),
            "results": Out(stream.Signature(result_layout(net.num_classes, self.score_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        net, layer = self.net, self.net.output_layer
        S = self.score_bits
        lut = Array(Const(int(v), net.timesteps) for v in net.input_lut)
        weights = [Array(Const(int(w), signed(layer.weight_bits)) for w in row) for row in layer.weight]
        index = Signal(range(layer.in_features + 1))
        sums = [Signal(signed(S), name=f"sum{j}") for j in range(net.num_classes)]
        scores = [Signal(signed(S), name=f"score{j}") for j in range(net.num_classes)]
        label = Signal(self.results.payload.label.shape())
        countdown = Signal(range(self.argmax_cycles + 2))
        first_odd = Signal()       # the "score" bug's trigger: pixel BUG_PIXEL was odd
        samples_done = Signal(8)

        for j in range(net.num_classes):
            wrong = first_odd if (self.bug == "score" and j == 0) else 0
            m.d.comb += scores[j].eq(sums[j] + int(layer.bias[j]) + wrong)
        # argmax, lowest index on ties: a later score must be strictly greater to win.
        best_value, best_index = scores[0], Const(0, label.shape())
        for j in range(1, net.num_classes):
            better = scores[j] > best_value
            best_value = Mux(better, scores[j], best_value)
            best_index = Mux(better, j, best_index)

        with m.FSM():
            with m.State("ACCUMULATE"):
                blocked = (samples_done >= 3) if self.bug == "deadlock" else Const(0)
                m.d.comb += self.pixels.ready.eq(~blocked)
                with m.If(self.pixels.valid & ~blocked):
                    code = lut[self.pixels.payload.data]
                    for j in range(net.num_classes):
                        m.d.sync += sums[j].eq(sums[j] + weights[j][index] * code)
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == BUG_PIXEL(layer.in_features)):
                        m.d.sync += first_odd.eq(self.pixels.payload.data[0])
                    with m.If(self.pixels.payload.last):
                        m.d.sync += [index.eq(0), countdown.eq(self.argmax_cycles)]
                        m.next = "ARGMAX"
            with m.State("ARGMAX"):
                m.d.sync += countdown.eq(countdown - 1)
                with m.If(countdown == 0):
                    m.d.sync += label.eq(best_index)
                    m.next = "RESULT"
            with m.State("RESULT"):
                m.d.comb += self.results.valid.eq(1)
                m.d.comb += self.results.payload.label.eq(label)
                for j in range(net.num_classes):
                    m.d.comb += self.results.payload.scores[j].eq(scores[j])
                with m.If(self.results.ready):
                    m.d.sync += [s.eq(0) for s in sums]
                    m.d.sync += samples_done.eq(samples_done + 1)
                    m.next = "ACCUMULATE"
        return m


def write_reference_design(net: Network, out_dir, *, name: str = "reference_top", **kwargs) -> Path:
    """Emit the reference accelerator's Verilog and a ``design.json`` like ``hdl.generate`` writes."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    top = ReferenceAccelerator(net, **kwargs)
    text = verilog.convert(top, name=name, emit_src=False)
    (out_dir / f"{name}.v").write_text(text)
    results = result_layout(net.num_classes, top.score_bits)
    info = {"top": name, "verilog": f"{name}.v", "timesteps": net.timesteps, "classes": list(net.classes),
            "label_bits": results["label"].shape.width, "score_bits": top.score_bits,
            "pixels_payload_bits": pixel_layout().size, "results_payload_bits": results.size,
            "in_features": net.in_features, "layers": [l.name for l in net.layers], "folding": None,
            "network": network_fingerprint(net)}
    (out_dir / "design.json").write_text(json.dumps(info, indent=2) + "\n")
    return out_dir


def write_accelerator_design(net: Network, out_dir, **kwargs) -> Path:
    """The real accelerator's RTL directory, written by :func:`spikeforge.hdl.generate.generate`."""
    generate(net, out_dir, **kwargs)
    return Path(out_dir)
