"""The bank sweep sequencer shared by the encoder's emitter, the fire phase and the score readout.

A sweep visits ``(step, chunk)`` for ``step = 0..steps-1`` and ``chunk = 0..chunks-1``, one pair per
cycle. It is a two-stage pipeline around synchronous memory read ports:

* stage 1 *issues* a pair: the caller drives its read ports' ``addr`` from :attr:`chunk` and their
  ``en`` from :attr:`issue`;
* stage 2 holds the pair whose read data is now on the ports (:attr:`s2_valid`, :attr:`s2_step`,
  :attr:`s2_chunk`); the caller computes on it and drives :attr:`advance` when stage 2 may retire
  (its output was taken). While stage 2 waits, nothing is issued, so the read ports keep their data
  — the payload a stalled stream shows stays stable.

With ``advance`` always high a sweep takes ``steps × chunks`` cycles plus one cycle of latency.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .layouts import index_shape

__all__ = ["SweepSequencer"]


class SweepSequencer(wiring.Component):
    """Issues ``(step, chunk)`` pairs of one sweep.

    Parameters
    ----------
    steps, chunks : int
        The sweep visits ``steps × chunks`` pairs, chunk fastest.

    Members
    -------
    start : In(1)
        Begin a sweep; only honoured when :attr:`idle`.
    advance : In(1)
        Stage 2 retires its pair this cycle (ignored when stage 2 is empty).
    issue : Out(1)
        A pair is issued this cycle: the read ports' enable.
    step : Out(index_shape(steps)), chunk : Out(index_shape(chunks))
        The pair being issued (the read address); registers, so they hold the next pair while idle.
    s2_valid : Out(1)
        Stage 2 holds a pair: its read data is on the ports.
    s2_step : Out(index_shape(steps)), s2_chunk : Out(index_shape(chunks))
        Stage 2's pair.
    s2_first_step, s2_last_step, s2_final : Out(1)
        Stage 2 is at step 0, at step ``steps-1``, at the sweep's very last pair.
    idle : Out(1)
        No sweep in progress and stage 2 empty.
    """

    def __init__(self, steps: int, chunks: int):
        self.steps, self.chunks = steps, chunks
        super().__init__({
            "start": In(1),
            "advance": In(1),
            "issue": Out(1),
            "step": Out(index_shape(steps)),
            "chunk": Out(index_shape(chunks)),
            "s2_valid": Out(1),
            "s2_step": Out(index_shape(steps)),
            "s2_chunk": Out(index_shape(chunks)),
            "s2_first_step": Out(1),
            "s2_last_step": Out(1),
            "s2_final": Out(1),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        busy = Signal()
        m.d.comb += [
            self.issue.eq(busy & (~self.s2_valid | self.advance)),
            self.idle.eq(~busy & ~self.s2_valid),
            self.s2_first_step.eq(self.s2_step == 0),
            self.s2_last_step.eq(self.s2_step == self.steps - 1),
            self.s2_final.eq(self.s2_last_step & (self.s2_chunk == self.chunks - 1)),
        ]
        with m.If(self.s2_valid & self.advance):
            m.d.sync += self.s2_valid.eq(0)
        with m.If(self.issue):
            m.d.sync += [self.s2_valid.eq(1), self.s2_step.eq(self.step), self.s2_chunk.eq(self.chunk)]
            with m.If(self.chunk == self.chunks - 1):
                m.d.sync += self.chunk.eq(0)
                with m.If(self.step == self.steps - 1):
                    m.d.sync += [self.step.eq(0), busy.eq(0)]
                with m.Else():
                    m.d.sync += self.step.eq(self.step + 1)
            with m.Else():
                m.d.sync += self.chunk.eq(self.chunk + 1)
        with m.If(self.start & self.idle):
            m.d.sync += busy.eq(1)
        return m
