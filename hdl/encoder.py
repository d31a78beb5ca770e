"""The input encoder: raw bytes in, spike events out, bit-plane by bit-plane, MSB first.

Two halves share a ping-pong sample buffer (one memory, two banks of ``chunks`` words of
``lanes × T`` bits, written with a ``T``-bit granularity):

* the **loader** takes one ``pixels`` beat per cycle, looks its byte up in the 256-entry LUT ROM
  (synchronous read) and writes the code into the loading bank one cycle later. A sample ends at its
  ``in_features``-th value or at ``last``, whichever comes first. A short sample (``last`` early) is
  zero-padded: the positions it did not send have code 0 (no spikes), whatever the bank held before
  (the loader records where the sample ended; the emitter masks the lanes after it). A sample without
  ``last`` ends at its ``in_features``-th value and the next beat starts the next sample. It then waits
  until the emitter is idle and hands the bank over (one bubble cycle per sample), and goes on
  loading the next sample into the other bank while the emitter sweeps this one;
* the **emitter** sweeps the bank ``T`` times (step ``t = 0..T-1``), ``lanes`` codes per cycle, and
  emits one :func:`~spikeforge.hdl.layouts.spike_event_layout` beat per chunk with a spike (bit
  ``T-1-t`` of each code) plus the sample's ``last`` beat. Per sample it is busy ``T × chunks`` cycles
  (plus stalls from ``events.ready``). Four stages (issue the read; register the code word as read;
  select the step's bit of each code into a register; offer the beat), so the buffer's clock-to-out
  (5.8 ns on ECP5), the bit select and the handshake back into the sweep are in different cycles: a
  sample's first beat is offered four cycles after its sweep starts. The next sample's sweep starts
  once this one's final position has reached the offer stage.
"""

from __future__ import annotations

import math

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .layouts import index_shape, pixel_layout, spike_event_layout
from .sweep import SweepSequencer
from spikeforge.ir.errors import InputError

__all__ = ["SpikeEncoder"]


class SpikeEncoder(wiring.Component):
    """Raw input bytes -> spike events (DESIGN.md §3, input encoder).

    Parameters
    ----------
    in_features : int
        Values per sample.
    timesteps : int
        T; codes are T bits.
    lut : list of int
        256 codes, raw byte -> T-bit code.
    lanes : int
        Codes read per emitter cycle (1..in_features); the events' ``group``.

    Members
    -------
    pixels : In(stream.Signature(pixel_layout()))
        One raw byte per beat, ``last`` on a sample's final byte.
    events : Out(stream.Signature(spike_event_layout(lanes, chunks, T)))
        The sample's spike events, step 0 first.
    """

    def __init__(self, *, in_features: int, timesteps: int, lut, lanes: int):
        if not 1 <= lanes <= in_features:
            raise InputError(f"encoder lanes {lanes} is not in 1..{in_features}")
        self.in_features, self.timesteps, self.lanes = in_features, timesteps, lanes
        self.chunks = math.ceil(in_features / lanes)
        self.lut = [int(v) for v in lut]
        if len(self.lut) != 256 or min(self.lut) < 0 or max(self.lut) >= 1 << timesteps:
            raise InputError(f"the LUT needs 256 codes in 0..{(1 << timesteps) - 1}")
        super().__init__({
            "pixels": In(stream.Signature(pixel_layout())),
            "events": Out(stream.Signature(spike_event_layout(lanes, self.chunks, timesteps))),
        })

    def elaborate(self, platform):
        m = Module()
        timesteps, lanes, chunks = self.timesteps, self.lanes, self.chunks
        last_word, last_lane = (self.in_features - 1) // lanes, (self.in_features - 1) % lanes

        m.submodules.lut = lut = Memory(shape=unsigned(timesteps), depth=256, init=self.lut)
        m.submodules.buffer = buffer = Memory(shape=unsigned(lanes * timesteps), depth=2 * chunks, init=[])
        lut_rd = lut.read_port()
        buf_wr = buffer.write_port(granularity=timesteps)
        buf_rd = buffer.read_port()
        m.submodules.sweep = sweep = SweepSequencer(timesteps, chunks)

        # -- loader ------------------------------------------------------------------------------
        load_bank, load_full = Signal(), Signal()
        load_word, load_lane = Signal(index_shape(chunks)), Signal(index_shape(lanes))
        w_valid, w_word, w_lane = Signal(), Signal(index_shape(chunks)), Signal(index_shape(lanes))
        emit_bank = Signal()
        # Where the loading sample ended (its final value's word and lane), and the emitted sample's copy.
        load_end_word, load_end_lane = Signal(index_shape(chunks)), Signal(index_shape(lanes))
        emit_end_word = Signal(index_shape(chunks))
        handover = Signal()
        accept = Signal()
        r_valid = Signal()              # the code-word register (emitter stage 2b) holds a position
        m.d.comb += [
            handover.eq(load_full & ~w_valid & sweep.idle & ~r_valid),
            self.pixels.ready.eq(~load_full | handover),
            accept.eq(self.pixels.valid & self.pixels.ready),
            lut_rd.addr.eq(self.pixels.payload.data),
            buf_wr.addr.eq(Mux(load_bank, chunks + w_word, w_word)),
            buf_wr.data.eq(lut_rd.data.replicate(lanes)),
            buf_wr.en.bit_select(w_lane, 1).eq(w_valid),
            sweep.start.eq(handover),
        ]
        with m.If(handover):
            m.d.sync += [load_full.eq(0), load_bank.eq(~load_bank), emit_bank.eq(load_bank),
                         emit_end_word.eq(load_end_word)]
        m.d.sync += w_valid.eq(accept)
        with m.If(accept):
            m.d.sync += [w_word.eq(load_word), w_lane.eq(load_lane)]
            end = self.pixels.payload.last | ((load_word == last_word) & (load_lane == last_lane))
            with m.If(end):
                m.d.sync += [load_word.eq(0), load_lane.eq(0), load_full.eq(1),
                             load_end_word.eq(load_word), load_end_lane.eq(load_lane)]
            with m.Elif(load_lane == lanes - 1):
                m.d.sync += [load_lane.eq(0), load_word.eq(load_word + 1)]
            with m.Else():
                m.d.sync += load_lane.eq(load_lane + 1)

        # -- emitter -----------------------------------------------------------------------------
        # Four stages, so no path holds the buffer's clock-to-out and the stream handshake together:
        # (1) the sweep issues a read; (2) the code word is on the read port and goes into a register
        # with which lanes hold a value of this sample (from the bit index, the sample's end, registered
        # at the issue); (2b) each lane's bit of this step is selected and masked into a register; (3)
        # the registered beat is offered on ``events``. Stages 2, 2b and 3 move together when stage 3
        # is free or leaves this cycle (its beat taken, or without spikes and not the last: not sent),
        # so ``events.ready`` reaches the sweep through a few gates on registers only.
        m.d.comb += [buf_rd.addr.eq(Mux(emit_bank, chunks + sweep.chunk, sweep.chunk)), buf_rd.en.eq(sweep.issue)]
        codes = data.ArrayLayout(unsigned(timesteps), lanes)(buf_rd.data)
        # Lanes that hold a value of this sample: all before the chunk it ended in, up to its final lane
        # in that chunk, none after (a full sample ends at in_features - 1, a short one earlier).
        end_lanes = Signal(lanes)           # the lanes up to the emitted sample's final one
        with m.If(handover):
            m.d.sync += end_lanes.eq(Cat(Const(1, 1) if k == 0 else load_end_lane >= k for k in range(lanes)))
        s2_bit = Signal(index_shape(timesteps))
        s2_whole, s2_end = Signal(), Signal()   # stage 2's chunk is before / is the sample's final chunk
        with m.If(sweep.issue):
            m.d.sync += [s2_bit.eq(timesteps - 1 - sweep.step),
                         s2_whole.eq(sweep.chunk < emit_end_word), s2_end.eq(sweep.chunk == emit_end_word)]
        # Stage 2b: the code word as read, the lanes of this sample, the step's bit index and the position.
        r_codes = Signal(data.ArrayLayout(unsigned(timesteps), lanes))
        r_lanes, r_bit = Signal(lanes), Signal(index_shape(timesteps))
        r_chunk, r_step, r_final = Signal(index_shape(chunks)), Signal(index_shape(timesteps)), Signal()
        mask2 = Signal(lanes)
        m.d.comb += mask2.eq(Cat(r_codes[k].bit_select(r_bit, 1) & r_lanes[k] for k in range(lanes)))
        s3_valid, s3_mask = Signal(), Signal(lanes)
        s3_chunk, s3_step, s3_final = Signal(index_shape(chunks)), Signal(index_shape(timesteps)), Signal()
        s3_emit, s3_free = Signal(), Signal()
        m.d.comb += [
            s3_emit.eq((s3_mask != 0) | s3_final),
            s3_free.eq(~s3_valid | ~s3_emit | self.events.ready),
            self.events.valid.eq(s3_valid & s3_emit),
            self.events.payload.mask.eq(s3_mask),
            self.events.payload.chunk.eq(s3_chunk),
            self.events.payload.step.eq(s3_step),
            self.events.payload.last.eq(s3_final),
            sweep.advance.eq(s3_free),
        ]
        with m.If(s3_free):
            m.d.sync += [r_valid.eq(sweep.s2_valid), r_codes.eq(codes), r_bit.eq(s2_bit),
                         r_lanes.eq(Cat(s2_whole | (s2_end & end_lanes[k]) for k in range(lanes))),
                         r_chunk.eq(sweep.s2_chunk), r_step.eq(sweep.s2_step), r_final.eq(sweep.s2_final),
                         s3_valid.eq(r_valid), s3_mask.eq(mask2), s3_chunk.eq(r_chunk),
                         s3_step.eq(r_step), s3_final.eq(r_final)]
        return m
