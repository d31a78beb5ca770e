"""A stream FIFO for struct payloads (the event queues between the pipeline stages)."""

from __future__ import annotations

from amaranth.hdl import Module, Shape
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

__all__ = ["StreamFIFO"]


class StreamFIFO(wiring.Component):
    """``SyncFIFOBuffered`` (block-RAM friendly) with typed stream ports.

    Parameters
    ----------
    layout : ShapeLike
        The payload layout of both ports.
    depth : int
        Entries (the buffered FIFO adds one cycle of latency when empty).

    Members
    -------
    w : In(stream.Signature(layout))
        Beats in.
    r : Out(stream.Signature(layout))
        The same beats, in order.
    level : Out(range(depth + 1))
        Beats held (0: empty).
    """

    def __init__(self, layout, depth: int):
        self.layout, self.depth = layout, depth
        super().__init__({"w": In(stream.Signature(layout)), "r": Out(stream.Signature(layout)),
                          "level": Out(range(depth + 1))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=Shape.cast(self.layout).width, depth=self.depth)
        m.d.comb += [
            fifo.w_data.eq(self.w.payload), fifo.w_en.eq(self.w.valid), self.w.ready.eq(fifo.w_rdy),
            self.r.payload.eq(fifo.r_data), self.r.valid.eq(fifo.r_rdy), fifo.r_en.eq(self.r.ready),
            self.level.eq(fifo.level),
        ]
        return m
