"""A stand-in accelerator with the real one's ports (DESIGN.md §3), for link and board tests.

It sums the pixels of a sample: ``score[j] = sum - 100 * j`` and ``label = sum % classes``. It
holds one sample at a time (``pixels.ready`` is low while its result waits) and answers after a
configurable latency, so back-pressure on both streams is exercised.
"""

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out


def standin_reference(pixels, classes):
    total = int(sum(pixels))
    return total % classes, tuple(total - 100 * j for j in range(classes))


class StandInAccelerator(wiring.Component):
    def __init__(self, classes=10, score_bits=20, latency=37):
        self.classes = classes
        self.latency = latency
        pixel = data.StructLayout({"data": 8, "last": 1})
        result = data.StructLayout({"label": range(classes),
                                    "scores": data.ArrayLayout(signed(score_bits), classes)})
        super().__init__({"pixels": In(stream.Signature(pixel)), "results": Out(stream.Signature(result))})

    def elaborate(self, platform):
        m = Module()
        total = Signal(20)
        wait = Signal(range(self.latency + 1))
        busy = Signal()
        m.d.comb += self.pixels.ready.eq(~busy)
        with m.If(self.pixels.valid & self.pixels.ready):
            with m.If(self.pixels.payload.last):
                m.d.sync += [busy.eq(1), wait.eq(self.latency)]
                final = total + self.pixels.payload.data
                m.d.sync += self.results.payload.label.eq(final % self.classes)
                for j in range(self.classes):
                    m.d.sync += self.results.payload.scores[j].eq(final - 100 * j)
                m.d.sync += total.eq(0)
            with m.Else():
                m.d.sync += total.eq(total + self.pixels.payload.data)
        with m.If(busy & (wait != 0)):
            m.d.sync += wait.eq(wait - 1)
        m.d.comb += self.results.valid.eq(busy & (wait == 0))
        with m.If(self.results.valid & self.results.ready):
            m.d.sync += busy.eq(0)
        return m
