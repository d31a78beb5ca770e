"""The dense layer cores: event-driven accumulate into ping-pong membrane banks, then fire or score.

Both :class:`DenseILIF` (hidden layers) and :class:`OutputLayer` (scores + argmax) share the
accumulate half and the membrane banks (:class:`_AccumulatingLayer`); they differ in the *readout*
that sweeps the other bank.

Membrane banks
    Two memories of ``chunks`` words, ``lanes × membrane_bits`` wide (lane ``k`` of word ``c`` is
    neuron ``c·lanes + k``), each with one synchronous read port (transparent for its write port)
    and one write port. ``acc_bank`` says which bank the accumulate half owns; the readout owns the
    other. A bank is *cleared to* ``b + v0`` (the bias ROM) by the readout as it finishes with it,
    and both banks are cleared after reset (``chunks`` cycles during which no event is accepted), so a
    reset in the middle of a sample leaves no stale potential behind.

Accumulate (event-driven)
    An input event (:func:`~spikeforge.hdl.layouts.spike_event_layout`) carries up to ``in_group``
    spikes of step ``t``. For each set bit, lowest first, the core reads ``chunks`` weight-ROM words
    (address ``in_index × chunks + chunk``) and adds ``W << (T-1-t)`` to ``lanes`` potentials per
    cycle: read at cycle n, add and write back at n+1 (the transparent read port forwards a write to
    a read of the same word in the same cycle). So an input spike costs exactly ``chunks`` cycles, a
    zero bit costs nothing, and the next event is taken in the cycle the previous one issues its last
    word. An event without spikes (the ``last`` marker) costs one cycle.

Hand-over (ping-pong)
    When the ``last`` event has been accumulated, its final write has landed and the readout is
    idle, ``acc_bank`` flips in one cycle: the readout starts on the full bank and the accumulate half
    takes the next event into the cleared one in the same cycle (2 cycles per sample in all).

Fire (:class:`DenseILIF`)
    A :class:`~spikeforge.hdl.sweep.SweepSequencer` visits step ``t = 0..T-1``, chunk ``0..chunks-1``:
    ``spike_k = V_k >= θ_k << (T-1-t)``, ``V_k -= spike_k·(θ_k << (T-1-t))`` (soft reset; restoring
    division), and on the last step the word is written back as ``b + v0`` for the sample after
    next. A chunk with any spike (and the final chunk, with ``last``) becomes one event carrying the
    whole lane mask, so several lanes spiking in one cycle cost nothing extra here; the consumer
    walks the bits. The sweep takes ``T × chunks`` cycles plus stalls from ``events.ready``.

Score (:class:`OutputLayer`)
    One sweep over the chunks: scores into the result register, running argmax (strict ``>``, so
    the lowest index wins ties), bank cleared to ``b``. The result is offered on ``results`` and the
    next sweep waits until it is taken.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .layouts import index_shape, result_layout, spike_event_layout
from .plan import LayerPlan
from .sweep import SweepSequencer

__all__ = ["DenseILIF", "OutputLayer"]


def _lowest_set_bit(m: Module, mask) -> Signal:
    index = Signal(range(max(2, len(mask))))
    for k in reversed(range(len(mask))):      # the last assignment that applies wins: the lowest bit
        with m.If(mask[k]):
            m.d.comb += index.eq(k)
    return index


class _AccumulatingLayer(wiring.Component):
    """The accumulate half and the membrane banks; subclasses add ``_elaborate_readout``."""

    def __init__(self, plan: LayerPlan, members: dict):
        self.plan = plan
        members = {"events": In(stream.Signature(spike_event_layout(plan.in_group, plan.in_chunks,
                                                                     plan.timesteps))), **members}
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        p = self.plan
        T, C, G, L, MB = p.timesteps, p.chunks, p.in_group, p.lanes, p.membrane_bits
        membrane = data.ArrayLayout(signed(MB), L)

        # Depths are at least 2: a one-word memory would have a zero-width address port in Verilog.
        m.submodules.weights = weights = Memory(shape=unsigned(L * p.weight_bits),
                                                depth=max(2, len(p.weight_words)), init=p.weight_words)
        m.submodules.biases = biases = Memory(shape=unsigned(L * MB), depth=max(2, C), init=p.bias_words)
        weight_rd = weights.read_port()
        bias_rd = biases.read_port()
        banks = []
        for index in range(2):
            bank = Memory(shape=unsigned(L * MB), depth=max(2, C), init=p.bias_words)
            m.submodules[f"membrane{index}"] = bank
            wr = bank.write_port()
            banks.append((bank.read_port(transparent_for=(wr,)), wr))

        # The two halves' view of the banks; acc_bank routes them.
        acc_bank = Signal()
        acc = {"rd_addr": Signal(index_shape(C)), "wr_addr": Signal(index_shape(C)), "wr_data": Signal(L * MB),
                           "wr_en": Signal(), "rd_data": Signal(L * MB)}
        ro = {"rd_addr": Signal(index_shape(C)), "rd_en": Signal(), "wr_addr": Signal(index_shape(C)),
                         "wr_data": Signal(L * MB), "wr_en": Signal(), "rd_data": Signal(L * MB)}
        clearing = Signal(init=1)                   # after reset: write b + v0 into both banks
        clear_addr, clear_wr, clear_wr_addr = Signal(index_shape(C)), Signal(), Signal(index_shape(C))
        for index, (rd, wr) in enumerate(banks):
            mine = acc_bank == index
            m.d.comb += [
                rd.addr.eq(Mux(mine, acc["rd_addr"], ro["rd_addr"])),
                rd.en.eq(mine | ro["rd_en"]),
                wr.addr.eq(Mux(clear_wr, clear_wr_addr, Mux(mine, acc["wr_addr"], ro["wr_addr"]))),
                wr.data.eq(Mux(clear_wr, bias_rd.data, Mux(mine, acc["wr_data"], ro["wr_data"]))),
                wr.en.eq(clear_wr | Mux(mine, acc["wr_en"], ro["wr_en"])),
            ]
        m.d.comb += [
            acc["rd_data"].eq(Mux(acc_bank, banks[1][0].data, banks[0][0].data)),
            ro["rd_data"].eq(Mux(acc_bank, banks[0][0].data, banks[1][0].data)),
        ]
        m.d.sync += clear_wr.eq(clearing)
        with m.If(clearing):
            m.d.sync += clear_wr_addr.eq(clear_addr)
            with m.If(clear_addr == C - 1):
                m.d.sync += [clearing.eq(0), clear_addr.eq(0)]
            with m.Else():
                m.d.sync += clear_addr.eq(clear_addr + 1)

        # -- accumulate ----------------------------------------------------------------------------
        cur_valid, cur_last = Signal(), Signal()
        cur_mask, cur_chunk, cur_step = Signal(G), Signal(index_shape(p.in_chunks)), Signal(index_shape(T))
        count = Signal(index_shape(C))
        low = _lowest_set_bit(m, cur_mask)
        spike = Signal()
        mask_after = Signal(G)
        m.d.comb += [
            spike.eq(cur_valid & (cur_mask != 0)),
            mask_after.eq(Mux(spike & (count == C - 1), cur_mask & (cur_mask - 1), cur_mask)),
            weight_rd.addr.eq(cur_chunk * (G * C) + low * C + count),
            acc["rd_addr"].eq(count),
        ]
        with m.If(spike):
            m.d.sync += [count.eq(Mux(count == C - 1, 0, count + 1)), cur_mask.eq(mask_after)]
        s2_valid, s2_chunk, s2_shift = Signal(), Signal(index_shape(C)), Signal(index_shape(T))
        m.d.sync += [s2_valid.eq(spike), s2_chunk.eq(count), s2_shift.eq(T - 1 - cur_step)]
        weight = data.ArrayLayout(signed(p.weight_bits), L)(weight_rd.data)
        potential = membrane(acc["rd_data"])
        m.d.comb += [
            acc["wr_en"].eq(s2_valid),
            acc["wr_addr"].eq(s2_chunk),
            acc["wr_data"].eq(Cat((potential[k] + (weight[k] << s2_shift))[:MB] for k in range(L))),
        ]

        readout_idle, readout_start = Signal(), Signal()
        handover = Signal()
        m.d.comb += [
            handover.eq(cur_valid & cur_last & (cur_mask == 0) & ~s2_valid & readout_idle & ~clearing),
            readout_start.eq(handover),
            self.events.ready.eq(~clearing & (~cur_valid | ((mask_after == 0) & ~cur_last) | handover)),
        ]
        with m.If(handover):
            m.d.sync += acc_bank.eq(~acc_bank)
        with m.If(self.events.valid & self.events.ready):
            m.d.sync += [cur_valid.eq(1), cur_mask.eq(self.events.payload.mask),
                         cur_chunk.eq(self.events.payload.chunk), cur_step.eq(self.events.payload.step),
                         cur_last.eq(self.events.payload.last)]
        with m.Elif(cur_valid & (mask_after == 0) & ~cur_last | handover):
            m.d.sync += cur_valid.eq(0)

        # -- readout -------------------------------------------------------------------------------
        bias_issue = Signal()
        m.d.comb += [bias_rd.addr.eq(Mux(clearing, clear_addr, ro["rd_addr"])),
                     bias_rd.en.eq(clearing | bias_issue)]
        self._elaborate_readout(m, start=readout_start, idle=readout_idle, ro=ro, bias_rd=bias_rd,
                                bias_issue=bias_issue)
        return m

    def _elaborate_readout(self, m, *, start, idle, ro, bias_rd, bias_issue):
        raise NotImplementedError


class DenseILIF(_AccumulatingLayer):
    """A hidden layer of iLIF neurons (DESIGN.md §3, layer core).

    Parameters
    ----------
    plan : LayerPlan
        Widths, folding and ROM images (``plan.fires`` must be true).

    Members
    -------
    events : In(stream.Signature(spike_event_layout(plan.in_group, plan.in_chunks, T)))
        Input spikes of one sample after another; ``last`` ends a sample.
    spikes : Out(stream.Signature(spike_event_layout(plan.lanes, plan.chunks, T)))
        This layer's spikes, step by step, ``last`` on the final beat of a sample.
    """

    def __init__(self, plan: LayerPlan):
        if not plan.fires:
            raise ValueError(f"layer {plan.name!r} does not fire; use OutputLayer")
        super().__init__(plan, {"spikes": Out(stream.Signature(spike_event_layout(plan.lanes, plan.chunks,
                                                                                    plan.timesteps)))})

    def _elaborate_readout(self, m, *, start, idle, ro, bias_rd, bias_issue):
        p = self.plan
        T, C, L, MB = p.timesteps, p.chunks, p.lanes, p.membrane_bits
        m.submodules.thresholds = thresholds = Memory(shape=unsigned(L * p.threshold_bits), depth=max(2, C),
                                                      init=p.threshold_words)
        threshold_rd = thresholds.read_port()
        m.submodules.sweep = sweep = SweepSequencer(T, C)
        m.d.comb += [
            sweep.start.eq(start), idle.eq(sweep.idle),
            ro["rd_addr"].eq(sweep.chunk), ro["rd_en"].eq(sweep.issue),
            threshold_rd.addr.eq(sweep.chunk), threshold_rd.en.eq(sweep.issue),
            bias_issue.eq(sweep.issue),
        ]
        potential = data.ArrayLayout(signed(MB), L)(ro["rd_data"])
        threshold = data.ArrayLayout(unsigned(p.threshold_bits), L)(threshold_rd.data)
        bias = data.ArrayLayout(signed(MB), L)(bias_rd.data)
        shift = Signal(index_shape(T))
        m.d.comb += shift.eq(T - 1 - sweep.s2_step)
        fired, updated = [], []
        for k in range(L):
            level = threshold[k] << shift
            spike = Signal(name=f"spike{k}")
            m.d.comb += spike.eq(potential[k] >= level)
            fired.append(spike)
            after = Mux(spike, potential[k] - level, potential[k])
            updated.append(Mux(sweep.s2_last_step, bias[k], after)[:MB])
        mask, emit = Signal(L), Signal()
        m.d.comb += [
            mask.eq(Cat(fired)),
            emit.eq((mask != 0) | sweep.s2_final),
            self.spikes.valid.eq(sweep.s2_valid & emit),
            self.spikes.payload.mask.eq(mask),
            self.spikes.payload.chunk.eq(sweep.s2_chunk),
            self.spikes.payload.step.eq(sweep.s2_step),
            self.spikes.payload.last.eq(sweep.s2_final),
            sweep.advance.eq(~emit | self.spikes.ready),
            ro["wr_en"].eq(sweep.s2_valid & sweep.advance),
            ro["wr_addr"].eq(sweep.s2_chunk),
            ro["wr_data"].eq(Cat(updated)),
        ]


class OutputLayer(_AccumulatingLayer):
    """The output layer: accumulate only, then scores and argmax (lowest index on ties).

    Parameters
    ----------
    plan : LayerPlan
        Widths, folding and ROM images (``plan.fires`` must be false); scores are
        ``plan.membrane_bits`` wide.

    Members
    -------
    events : In(stream.Signature(spike_event_layout(plan.in_group, plan.in_chunks, T)))
        Input spikes; ``last`` ends a sample.
    results : Out(stream.Signature(result_layout(out_features, membrane_bits)))
        One beat per sample: the label and all scores.
    """

    def __init__(self, plan: LayerPlan):
        if plan.fires:
            raise ValueError(f"layer {plan.name!r} fires; use DenseILIF")
        super().__init__(plan, {"results": Out(stream.Signature(result_layout(plan.out_features,
                                                                                plan.membrane_bits)))})

    def _elaborate_readout(self, m, *, start, idle, ro, bias_rd, bias_issue):
        p = self.plan
        C, L, S, N = p.chunks, p.lanes, p.membrane_bits, p.out_features
        m.submodules.sweep = sweep = SweepSequencer(1, C)
        result_valid = Signal()
        m.d.comb += [
            sweep.start.eq(start), idle.eq(sweep.idle & ~result_valid),
            ro["rd_addr"].eq(sweep.chunk), ro["rd_en"].eq(sweep.issue),
            bias_issue.eq(sweep.issue),
            sweep.advance.eq(1),
            ro["wr_en"].eq(sweep.s2_valid),
            ro["wr_addr"].eq(sweep.s2_chunk),
            ro["wr_data"].eq(bias_rd.data),
            self.results.valid.eq(result_valid),
        ]
        score = data.ArrayLayout(signed(S), L)(ro["rd_data"])
        best_score, best_label = Signal(signed(S)), Signal(index_shape(max(2, N)))
        first = sweep.s2_chunk == 0
        running_score = Mux(first, Const(-(1 << (S - 1)), signed(S)), best_score)
        running_label = Mux(first, 0, best_label)
        last_lanes = N - (C - 1) * L                 # real neurons in the final chunk
        for k in range(L):
            index = sweep.s2_chunk * L + k
            present = (sweep.s2_chunk != C - 1) | Const(k < last_lanes)
            better = present & (score[k] > running_score)
            running_score = Mux(better, score[k], running_score)
            running_label = Mux(better, index, running_label)
        with m.If(self.results.valid & self.results.ready):
            m.d.sync += result_valid.eq(0)
        with m.If(sweep.s2_valid):
            m.d.sync += [best_score.eq(running_score), best_label.eq(running_label)]
            with m.Switch(sweep.s2_chunk):
                for c in range(C):
                    with m.Case(c):
                        for k in range(L):
                            if c * L + k < N:
                                m.d.sync += self.results.payload.scores[c * L + k].eq(score[k])
            with m.If(sweep.s2_final):
                m.d.sync += [result_valid.eq(1), self.results.payload.label.eq(running_label)]
