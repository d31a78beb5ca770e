"""Membrane banks in single-port RAM (the iCE40UP5K's SPRAM), and the half-rate layer that uses them.

A layer core reads one membrane word and writes another in the same cycle (the accumulate reads the word
of stage 3 while it writes the sum of stage 4; the fire sweep reads a position while it writes one back).
Block RAM has a read port and a write port, so that costs nothing. The iCE40UP5K's block RAM is small (30
EBR x 4 kbit = 120 kbit, ROMs included), but it has 4 SPRAMs of 16,384 x 16 bits (1 Mbit) beside it:
single-port (one read *or* one write a cycle) and not initialisable from the bitstream, which a membrane
bank does not need (a core clears its banks after reset).

So a layer whose banks are in SPRAM (``conv1=2:spram``, :data:`~spikeforge.hdl.folding.MEMBRANE_MEMORIES`)
runs at **half rate**: :class:`HalfRateLayer` runs the unchanged core with a clock enable that is high every
other cycle (``phase``), and each bank (:class:`SinglePortBank`) serves the core's two accesses of an
enabled cycle in two clock cycles::

    cycle     phase  core (enabled)                 bank
    2n        1      issues read R_n and write W_n  writes W_n; latches R_n's address
    2n+1      0      (held)                         reads R_n
    2n+2      1      sees R_n's data, issues ...    R_n's data out (and held until the next read's data)

The write of an enabled cycle lands before that cycle's read, so a read of the word being written sees
the new value: what the cores' transparent read ports give (they need it only where a word is re-read in
the cycle of its write, and never rely on the old value). The core sees exactly the memory behaviour it
has at full rate, on a clock of half the frequency: it is bit-exact by construction, and every core (dense,
conv, pooled) works unchanged. Its streams are gated with ``phase`` (a beat moves only in an enabled
cycle), so the FIFOs around it work at full rate and the neighbouring layers do not slow down.

SPRAM's data output is not held through a write (it changes in a write cycle), so the bank keeps the last
word read in a register and shows it until the next read's data arrives (``rd_data`` holds while no read
is issued, as a block RAM read port's does).

On an iCE40UP device (``platform.family`` ``iCE40``, device ``iCE40UP*``) a bank of ``W`` bits is
``ceil(W / 16)`` ``SB_SPRAM256KA`` instances side by side, at most 16,384 words deep. Elsewhere (Verilog for
simulation and sign-off, other devices) it is an :class:`amaranth.lib.memory.Memory` used the same way:
one access a cycle, written in the enabled cycle, read in the next.

Cost: the layer's accumulate and fire take twice the cycles (the cycle model doubles the layer's stage
times), and each bank adds a read-address register, the held word and a mux per data bit.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

from amaranth.hdl import ClockSignal, Const, EnableInserter, Instance, Module, Mux, ResetSignal, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .conv_plan import ConvLayerPlan
from .layouts import index_shape
from spikeforge.ir.errors import InputError

__all__ = ["SinglePortBank", "HalfRateLayer", "membrane_bank_shapes", "SPRAM_WORDS", "SPRAM_BITS", "SPRAM_BLOCKS",
           "sprams_for", "uses_spram_primitive"]

#: One iCE40UP SPRAM (``SB_SPRAM256KA``): 16,384 words of 16 bits; the iCE40UP5K has 4.
SPRAM_WORDS, SPRAM_BITS, SPRAM_BLOCKS = 16384, 16, 4


def sprams_for(width: int, depth: int) -> int:
    """SPRAMs a ``width`` x ``depth`` bank takes (``depth`` at most :data:`SPRAM_WORDS`)."""
    return math.ceil(width / SPRAM_BITS) * math.ceil(depth / SPRAM_WORDS)


def uses_spram_primitive(platform) -> bool:
    """Whether banks elaborated for ``platform`` are ``SB_SPRAM256KA`` instances (an iCE40UP device)."""
    family, device = str(getattr(platform, "family", "")), str(getattr(platform, "device", ""))
    return family.lower() == "ice40" and device.startswith("iCE40UP")


def membrane_bank_shapes(plan) -> list:
    """``[[(width, depth), ...] per column bank] per membrane bank`` of a layer plan: what its core's
    membrane memories are (a dense core: one memory a bank; a conv core: ``taps`` column banks a bank).
    Depths as the cores build them (at least 2)."""
    if isinstance(plan, ConvLayerPlan):
        column = (plan.lanes * plan.membrane_bits, max(2, plan.bank_words))
        return [[column] * plan.taps for _ in range(plan.membrane_banks)]
    return [[(plan.lanes * plan.membrane_bits, max(2, plan.chunks))] for _ in range(plan.membrane_banks)]


class SinglePortBank(wiring.Component):
    """One membrane bank (or column bank) in single-port RAM, serving a core that runs at half rate.

    Parameters
    ----------
    width, depth : int
        Bits of a word and words (``depth`` at most :data:`SPRAM_WORDS`).

    Members
    -------
    phase : In(1)
        High in the core's enabled cycles (every other cycle).
    rd_addr, rd_en : In(index_shape(depth)), In(1)
        The core's read, sampled in an enabled cycle and performed in the next cycle.
    rd_data : Out(unsigned(width))
        The word read, from the next enabled cycle on, held until the next read's data.
    wr_addr, wr_data, wr_en : In(index_shape(depth)), In(unsigned(width)), In(1)
        The core's write, performed in the enabled cycle.

    Attributes
    ----------
    read, write
        The ports as the cores use a memory's read and write ports (``addr``, ``en``, ``data``).

    Raises
    ------
    InputError
        ``depth`` above :data:`SPRAM_WORDS` (a bank spread over SPRAMs in depth is not built).
    """

    def __init__(self, width: int, depth: int):
        if depth > SPRAM_WORDS:
            raise InputError(f"a single-port membrane bank of {depth} words is deeper than one SPRAM "
                             f"({SPRAM_WORDS} words); use more lanes (fewer words) or block RAM")
        self.width, self.depth = width, depth
        super().__init__({"phase": In(1), "rd_addr": In(index_shape(depth)), "rd_en": In(1),
                          "rd_data": Out(unsigned(width)), "wr_addr": In(index_shape(depth)),
                          "wr_data": In(unsigned(width)), "wr_en": In(1)})
        self.read = SimpleNamespace(addr=self.rd_addr, en=self.rd_en, data=self.rd_data)
        self.write = SimpleNamespace(addr=self.wr_addr, data=self.wr_data, en=self.wr_en)

    def elaborate(self, platform):
        m = Module()
        reading = Signal()              # this cycle performs the read latched in the enabled cycle before
        fresh = Signal()                # the read's data is on ``raw`` this cycle
        read_addr = Signal.like(self.rd_addr)
        held = Signal(self.width)
        raw = Signal(self.width)
        writing = Signal()
        addr = Signal.like(self.rd_addr)
        m.d.sync += [reading.eq(self.phase & self.rd_en), fresh.eq(reading), held.eq(self.rd_data)]
        with m.If(self.phase):
            m.d.sync += read_addr.eq(self.rd_addr)
        m.d.comb += [writing.eq(self.phase & self.wr_en), addr.eq(Mux(self.phase, self.wr_addr, read_addr)),
                     self.rd_data.eq(Mux(fresh, raw, held))]
        if uses_spram_primitive(platform):
            address = Signal(14)        # SB_SPRAM256KA's ADDRESS: 14 bits
            m.d.comb += address.eq(addr)
            for index in range(math.ceil(self.width / SPRAM_BITS)):
                low, high = index * SPRAM_BITS, min(self.width, (index + 1) * SPRAM_BITS)
                data_in = Signal(SPRAM_BITS, name=f"spram{index}_in")
                data_out = Signal(SPRAM_BITS, name=f"spram{index}_out")
                m.d.comb += [data_in.eq(self.wr_data[low:high]), raw[low:high].eq(data_out[:high - low])]
                m.submodules[f"spram{index}"] = Instance(
                    "SB_SPRAM256KA", i_ADDRESS=address,
                    i_DATAIN=data_in, i_MASKWREN=Const(0b1111, 4), i_WREN=writing, i_CHIPSELECT=writing | reading,
                    i_CLOCK=ClockSignal(), i_STANDBY=Const(0, 1), i_SLEEP=Const(0, 1), i_POWEROFF=Const(1, 1),
                    o_DATAOUT=data_out)
        else:
            m.submodules.memory = memory = Memory(shape=unsigned(self.width), depth=self.depth, init=[])
            wr, rd = memory.write_port(), memory.read_port()
            # Like SPRAM's output, ``raw`` is defined only in the cycle after a read (here: zero otherwise), so
            # simulation shows any use of it outside that cycle; after ``rd_data``'s mux this costs no logic.
            m.d.comb += [wr.addr.eq(addr), wr.data.eq(self.wr_data), wr.en.eq(writing),
                         rd.addr.eq(addr), rd.en.eq(reading), raw.eq(Mux(fresh, rd.data, 0))]
        return m


class HalfRateLayer(wiring.Component):
    """A layer core at half rate, its membrane banks in :class:`SinglePortBank` s.

    Parameters
    ----------
    core_class : type
        :class:`~spikeforge.hdl.layer.DenseILIF` or :class:`~spikeforge.hdl.conv_layer.ConvILIF`: built as
        ``core_class(plan, membrane=banks)``, its membrane ports given from outside.
    plan : LayerPlan or ConvLayerPlan

    Members
    -------
    The core's own (``events`` in, ``spikes`` out): a beat moves only in the core's enabled cycles.
    enabled : Out(1)
        High in the cycles the core runs (every other one). In the others both streams' handshakes are gated
        off, so what they show then is not the core's state: a watcher (the performance counters) takes the
        enabled cycle before.
    """

    def __init__(self, core_class, plan):
        self.plan = plan
        self.banks = [[SinglePortBank(width, depth) for width, depth in columns]
                      for columns in membrane_bank_shapes(plan)]
        self.core = core_class(plan, membrane=[[(bank.read, bank.write) for bank in columns] for columns in self.banks])
        super().__init__({**self.core.signature.members, "enabled": Out(1)})

    def elaborate(self, platform):
        m = Module()
        phase = Signal()                # high in the core's enabled cycles
        m.d.sync += phase.eq(~phase)
        m.d.comb += self.enabled.eq(phase)
        # The reset reaches the core whatever the phase.
        m.submodules.core = EnableInserter(phase | ResetSignal())(self.core)
        names = iter(self.plan.membrane_names())
        for columns in self.banks:
            for bank in columns:
                m.submodules[next(names)] = bank
                m.d.comb += bank.phase.eq(phase)
        for name, member in self.core.signature.members.items():
            outer, inner = getattr(self, name), getattr(self.core, name)
            if member.flow == In:       # a stream into the core
                m.d.comb += [inner.payload.eq(outer.payload), inner.valid.eq(outer.valid & phase),
                             outer.ready.eq(inner.ready & phase)]
            else:
                m.d.comb += [outer.payload.eq(inner.payload), outer.valid.eq(inner.valid & phase),
                             inner.ready.eq(outer.ready & phase)]
        return m
