"""The dense layer cores: event-driven accumulate into a membrane bank, then fire or score.

A layer has two ping-pong membrane banks (default) or one (``LayerPlan.membrane_banks``).

Both :class:`DenseILIF` (hidden layers) and :class:`OutputLayer` (scores + argmax) share the
accumulate half and the membrane bank (:class:`_AccumulatingLayer`); they differ in the *readout*
that sweeps the bank after a sample's last event.

Membrane banks (``plan.membrane_banks``)
    Each bank is one memory of ``chunks`` words, ``lanes × membrane_bits`` wide (lane ``k`` of word
    ``c`` is neuron ``c·lanes + k``) with one synchronous read port (transparent for its write port
    only in a one-chunk layer) and one write port. The readout sweeps a full bank (``T × chunks``
    cycles to fire, ``chunks`` to score) and writes every word back as ``b + v0`` (the bias ROM,
    stored only as wide as the biases need and sign-extended) for a later sample. The readout reaches
    the bank it owns through a :class:`MembranePort` interface (read address/enable/data, write
    address/data/enable); the layer routes it to a bank and shares its write path with the clear.

    * **Two banks (ping-pong, the default)**: ``acc_bank`` says which bank the accumulate half owns;
      the readout owns the other, so the layer accumulates sample n+1 while it fires sample n.
    * **One bank (compact)**: the accumulate half owns it until a sample's ``last`` event has been
      accumulated, then the readout does; the next sample's events wait for the sweep. This saves a
      bank, the per-bit routing muxes between two banks and their read-data muxes, at the cost of the
      readout sweep once per sample.

    After reset the readout's write path clears every bank (``chunks`` cycles during which no event
    is taken), so a reset in the middle of a sample leaves no stale potential behind.

Accumulate (event-driven)
    An input event (:func:`~spikeforge.hdl.layouts.spike_event_layout`) carries up to ``in_group``
    spikes of step ``t``. For each set bit, lowest first, the core reads ``chunks`` weight-ROM words
    (address ``in_index × chunks + chunk``) and adds ``W · 2^(T-1-t)`` to ``lanes`` potentials per
    cycle. ``plan.multiplier`` says how a lane scales its weight: ``dsp`` multiplies by a shared one-hot
    scale register (a DSP per lane where the device has them, no LUTs), ``logic`` shifts it left by the
    registered ``T-1-t`` (a log-depth shifter of ``ceil(log2 T)`` mux levels per lane in LUTs, no DSP:
    the iCE40UP5K has 8 DSPs, so its lanes are otherwise capped by them). Both are exact and take the
    same stage, so timing and the cycle model are the same. Four registered stages: the weight word is read at cycle n and registered
    at n+1; at n+2 it is scaled into a register while the membrane word is read; at n+3 the two are added
    and written back (ROM clock-to-out, multiply and add each get a cycle: together they set Fmax). So an
    input spike costs exactly
    ``chunks`` cycles, a zero bit costs nothing, and the next event is taken in the cycle the
    previous one issues its last word. An event without spikes (the ``last`` marker) costs one cycle.

Hand-over
    When the ``last`` event has been accumulated, its final write has landed and the readout may
    start, the readout starts in one cycle. With two banks ``acc_bank`` flips in that cycle and the
    next sample's first event is taken at once; with one bank it is taken once the readout is done.

Fire (:class:`DenseILIF`)
    A :class:`~spikeforge.hdl.sweep.SweepSequencer` visits step ``t = 0..T-1``, chunk ``0..chunks-1``:
    with ``level = θ · 2^(T-1-t)``, ``d = V - level`` is computed once per lane, ``spike = d >= 0``,
    ``V ← spike ? d : V`` (soft reset; restoring division), and on the last step the word is written
    back as ``b + v0``. When the layer's θ are all equal (the converter's default) ``level`` is a
    register (no threshold ROM, no shifter), one copy per :data:`LANES_PER_LEVEL` lanes (at most
    :data:`LEVEL_COPIES`) so no copy drives more than a few lanes' subtractors; otherwise θ comes from
    the threshold ROM and each lane shifts its own. A chunk with any spike (and the final chunk, with
    ``last``) becomes one event carrying the whole lane mask; the consumer walks the bits. The event is
    registered in a third stage before it is offered (the mask, an OR per group of
    :data:`LANES_PER_LEVEL` lanes, chunk, step, last), so neither the compare nor the mask's OR tree is
    on the FIFO's write path. Stage 3 takes stage 2's result whenever ``spikes.ready`` is high (it then
    hands its own beat, if any, to the FIFO), so the pipeline moves one position per ready cycle. The
    sweep takes ``T × chunks`` cycles plus stalls from ``spikes.ready`` (the FIFO's registered ready:
    the sweep stalls on it even for a beat it would not send, which keeps the bank data off the ready
    path); the first position is offered three cycles after the hand-over, and the bank is free (the
    sweep idle) once the final position is in stage 3.

Score (:class:`OutputLayer`)
    One sweep over the chunks: scores into the result register; each chunk's winner (a balanced tree
    over its lanes, lower index on ties) is registered, then compared with the running best (strict
    ``>``, so the lowest index wins ties); bank cleared to ``b``. The result is offered on
    ``results`` one cycle after the sweep, and the next sample's readout waits until it is taken.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .bitops import at_most_one_set, lowest_one_hot, lowest_set_bit, times_constant
from .layouts import index_shape, result_layout, spike_event_layout
from .plan import LayerPlan
from .sweep import SweepSequencer
from spikeforge.ir.errors import InputError

__all__ = ["DenseILIF", "OutputLayer", "MembranePort", "LANES_PER_LEVEL", "LEVEL_COPIES"]

#: Lanes per copy of a uniform-threshold layer's ``level`` register, and per registered OR of the spike
#: mask (a 64-lane layer's one shared level was its Fmax-limiting net: fanout 64 subtractors).
LANES_PER_LEVEL = 16
#: At most this many copies. yosys merges registers with equal next-state logic and equal initial value
#: (``opt_merge``; a ``keep`` attribute on the signal does not stop it), so the copies differ in their
#: initial value (all zeros / all ones) and in whether the reset reaches them: four kinds. Neither
#: matters: ``level`` is loaded whenever a position is issued, before stage 2 uses it.
LEVEL_COPIES = 4


def _sign_extend(value, width: int):
    return Cat(value, value[-1].replicate(width - len(value)))


def _resize_signed(value, width: int):
    """A signed ``value`` as ``width`` bits: truncated (it fits by construction) or sign-extended."""
    return value[:width] if len(value) >= width else _sign_extend(value, width)


class MembranePort(wiring.Signature):
    """The readout's access to the membrane bank it owns, seen from the readout.

    The accumulate half owns the other bank (two banks) or the bank until the readout starts (one
    bank); :class:`_AccumulatingLayer` routes this port to the right bank, and shares the write path
    with the clear after reset.

    Parameters
    ----------
    chunks, lanes, membrane_bits : int
        A bank holds ``chunks`` words of ``lanes`` signed ``membrane_bits``-bit potentials.

    Members
    -------
    rd_addr : Out(index_shape(chunks))
        The word to read; its data is on ``rd_data`` in the cycle after ``rd_en``.
    rd_en : Out(1)
        Read enable (the data holds while it is low).
    rd_data : In(data.ArrayLayout(signed(membrane_bits), lanes))
        The word read, lane ``k`` neuron ``chunk·lanes + k``.
    wr_addr : Out(index_shape(chunks))
    wr_data : Out(data.ArrayLayout(signed(membrane_bits), lanes))
    wr_en : Out(1)
        Write ``wr_data`` into word ``wr_addr`` at the end of the cycle.
    """

    def __init__(self, chunks: int, lanes: int, membrane_bits: int):
        word = data.ArrayLayout(signed(membrane_bits), lanes)
        super().__init__({
            "rd_addr": Out(index_shape(chunks)),
            "rd_en": Out(1),
            "rd_data": In(word),
            "wr_addr": Out(index_shape(chunks)),
            "wr_data": Out(word),
            "wr_en": Out(1),
        })


class _AccumulatingLayer(wiring.Component):
    """The accumulate half and the membrane bank; subclasses add ``_elaborate_readout``."""

    def __init__(self, plan: LayerPlan, members: dict, membrane=None):
        self.plan = plan
        #: The membrane banks' ``(read, write)`` ports (``membrane[s][0]``) when they live outside the core
        #: (:class:`~spikeforge.hdl.single_port.HalfRateLayer`); None: the core builds them in block RAM.
        self.membrane = membrane
        members = {"events": In(stream.Signature(spike_event_layout(plan.in_group, plan.in_chunks,
                                                                     plan.timesteps))), **members}
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        p = self.plan
        timesteps, chunks, group, lanes = p.timesteps, p.chunks, p.in_group, p.lanes
        membrane = data.ArrayLayout(signed(p.membrane_bits), lanes)

        # Depths are at least 2: a one-word memory would have a zero-width address port in Verilog.
        m.submodules.weights = weights = Memory(shape=unsigned(lanes * p.weight_bits),
                                                depth=max(2, len(p.weight_words)), init=p.weight_words)
        m.submodules.biases = biases = Memory(shape=unsigned(lanes * p.bias_bits), depth=max(2, chunks),
                                              init=p.bias_words)
        weight_rd = weights.read_port()
        bias_rd = biases.read_port()
        banks = [columns[0] for columns in self.membrane] if self.membrane is not None else []
        for name in p.membrane_names() if self.membrane is None else ():
            bank = Memory(shape=unsigned(lanes * p.membrane_bits), depth=max(2, chunks), init=[])
            m.submodules[name] = bank
            wr = bank.write_port()
            # With two or more chunks a word is never read in the cycle after it was written (a spike
            # or a sweep step walks all chunks first), so its write has landed: transparency (a bypass
            # mux per bit) is only needed for a one-chunk layer.
            banks.append((bank.read_port(transparent_for=(wr,) if chunks == 1 else ()), wr))

        # The readout's view of the bank it owns (while ``bank_busy`` with one bank; the bank the
        # accumulate half does not own with two).
        readout = MembranePort(chunks, lanes, p.membrane_bits).create(path=("readout",))
        clearing = Signal(init=1)                   # after reset: write b + v0 into the bank(s)
        clear_addr, clear_wr, clear_wr_addr = Signal(index_shape(chunks)), Signal(), Signal(index_shape(chunks))
        m.d.sync += clear_wr.eq(clearing)
        with m.If(clearing):
            m.d.sync += clear_wr_addr.eq(clear_addr)
            with m.If(clear_addr == chunks - 1):
                m.d.sync += [clearing.eq(0), clear_addr.eq(0)]
            with m.Else():
                m.d.sync += clear_addr.eq(clear_addr + 1)

        # -- accumulate ----------------------------------------------------------------------------
        # ``low`` (the spike being issued) is registered: it is computed from the mask the cycle before,
        # so the weight address does not wait for a priority encoder.
        cur_valid, cur_last = Signal(), Signal()
        # The scale 2^(T-1-t) of the event's step: a one-hot factor for a multiplier (``dsp``), or the
        # shift amount T-1-t for a shifter in logic (``logic``: no DSP, a log-depth mux per lane).
        scale_shape = unsigned(timesteps) if p.multiplier == "dsp" else index_shape(timesteps)
        cur_mask, cur_chunk, cur_scale = Signal(group), Signal(index_shape(p.in_chunks)), Signal(scale_shape)
        count = Signal(index_shape(chunks))
        low = Signal(index_shape(group))
        mask_empty, mask_single = Signal(init=1), Signal(init=1)  # of cur_mask, registered with it
        spike = Signal()
        last_word = Signal()
        next_mask = Signal(group)
        m.d.comb += [
            spike.eq(cur_valid & ~mask_empty),
            last_word.eq(count == chunks - 1),
            weight_rd.addr.eq(times_constant(times_constant(cur_chunk, group) + low, chunks) + count),
        ]
        # Four stages, each ending in a register, so no path holds more than one of: the ROM's
        # clock-to-out and output multiplexers (stage 2), the multiply by 2^(T-1-t) (stage 3), the
        # membrane add and write (stage 4). The membrane word is read in stage 3, so it meets the scaled
        # weight in stage 4 and a word is written one cycle after it is read.
        s2_valid, s2_chunk, s2_scale = Signal(), Signal(index_shape(chunks)), Signal(scale_shape)
        m.d.sync += [s2_valid.eq(spike), s2_chunk.eq(count), s2_scale.eq(cur_scale)]
        s3_valid, s3_chunk, s3_scale = Signal(), Signal(index_shape(chunks)), Signal(scale_shape)
        s3_weight = Signal(len(weight_rd.data))
        m.d.sync += [s3_valid.eq(s2_valid), s3_chunk.eq(s2_chunk), s3_scale.eq(s2_scale), s3_weight.eq(weight_rd.data)]
        weight = data.ArrayLayout(signed(p.weight_bits), lanes)(s3_weight)
        scaled_bits = p.weight_bits + timesteps
        scaled = data.ArrayLayout(signed(scaled_bits), lanes)
        s4_valid, s4_chunk, s4_scaled = Signal(), Signal(index_shape(chunks)), Signal(scaled)
        if p.multiplier == "dsp":
            lane_scaled = [(weight[k] * s3_scale)[:scaled_bits] for k in range(lanes)]
        else:
            # A shift by at most 2^n - 1 (n the amount's bits) may be narrower or wider than scaled_bits.
            lane_scaled = [_resize_signed(weight[k] << s3_scale, scaled_bits) for k in range(lanes)]
        m.d.sync += [s4_valid.eq(s3_valid), s4_chunk.eq(s3_chunk), s4_scaled.eq(Cat(lane_scaled))]
        word_bits = lanes * p.membrane_bits
        if p.membrane_banks == 1:
            acc_data = readout_data = banks[0][0].data
        else:
            acc_bank = Signal()                     # the bank the accumulate half owns
            acc_data, readout_data = Signal(word_bits), Signal(word_bits)
            m.d.comb += [acc_data.eq(Mux(acc_bank, banks[1][0].data, banks[0][0].data)),
                         readout_data.eq(Mux(acc_bank, banks[0][0].data, banks[1][0].data))]
        m.d.comb += readout.rd_data.eq(readout_data)
        potential = membrane(acc_data)
        acc_sum = Signal(word_bits)
        m.d.comb += acc_sum.eq(Cat((potential[k] + s4_scaled[k])[:p.membrane_bits] for k in range(lanes)))

        readout_may_start, readout_start, bank_busy = Signal(), Signal(), Signal()
        handover = Signal()
        done_with_event = Signal()          # the current event issues its last word (or has none)
        m.d.comb += [
            done_with_event.eq(mask_empty | (mask_single & last_word)),
            handover.eq(cur_valid & cur_last & mask_empty & ~s2_valid & ~s3_valid & ~s4_valid & readout_may_start & ~clearing),
            readout_start.eq(handover),
        ]
        if p.membrane_banks == 1:
            # The readout owns the only bank until it is done: no event meanwhile.
            m.d.comb += self.events.ready.eq(~clearing & ~bank_busy & (~cur_valid | (done_with_event & ~cur_last)))
        else:
            # Ping-pong: the hand-over flips the banks and takes the next sample's first event at once.
            m.d.comb += self.events.ready.eq(~clearing & (~cur_valid | (done_with_event & ~cur_last) | handover))
            with m.If(handover):
                m.d.sync += acc_bank.eq(~acc_bank)
        take = Signal()
        m.d.comb += take.eq(self.events.valid & self.events.ready)
        with m.If(take):
            m.d.sync += [cur_valid.eq(1), cur_chunk.eq(self.events.payload.chunk),
                         cur_last.eq(self.events.payload.last),
                         cur_scale.eq(Const(1 << (timesteps - 1), timesteps) >> self.events.payload.step
                                      if p.multiplier == "dsp" else timesteps - 1 - self.events.payload.step)]
        with m.Else():
            with m.If(cur_valid & done_with_event & ~cur_last | handover):
                m.d.sync += cur_valid.eq(0)
        with m.If(spike):
            m.d.sync += count.eq(Mux(last_word, 0, count + 1))
        # The next mask and its lowest set bit (index and one-hot), empty and single flags, for both
        # sources (a new event's mask; the current one with its issued bit cleared: ``low_hot``, the
        # one-hot of ``cur_mask``'s lowest set bit, is registered with it, so no decoder) and chosen
        # last: ``take`` (from ``events.ready``: the bank, the walk's state) is one mux before the
        # registers, not in front of the priority encoder (the 88 MHz path of a one-lane layer fed by a
        # 64-lane one; the decoder in front of the encoder was the 94 MHz one). ``m & -m`` isolates the
        # lowest set bit with one carry chain.
        incoming, rest, walk = self.events.payload.mask, Signal(group), Signal()
        low_hot = Signal(group)
        m.d.comb += [rest.eq(cur_mask & ~low_hot), walk.eq(spike & last_word),
                     next_mask.eq(Mux(take, incoming, Mux(walk, rest, cur_mask)))]
        m.d.sync += [
            cur_mask.eq(next_mask),
            low.eq(Mux(take, lowest_set_bit(incoming), Mux(walk, lowest_set_bit(rest), low))),
            low_hot.eq(Mux(take, lowest_one_hot(incoming), Mux(walk, lowest_one_hot(rest), low_hot))),
            mask_empty.eq(Mux(take, incoming == 0, Mux(walk, rest == 0, mask_empty))),
            mask_single.eq(Mux(take, at_most_one_set(incoming), Mux(walk, at_most_one_set(rest), mask_single))),
        ]

        # The banks: the readout (or the clear after reset, into every bank) writes through the same path.
        if p.membrane_banks == 1:
            (bank_rd, bank_wr), = banks
            ro_writes = Signal()
            m.d.comb += [
                ro_writes.eq(readout.wr_en | clear_wr),
                bank_rd.addr.eq(Mux(bank_busy, readout.rd_addr, s3_chunk)),
                bank_rd.en.eq(~bank_busy | readout.rd_en),
                bank_wr.addr.eq(Mux(clear_wr, clear_wr_addr, Mux(readout.wr_en, readout.wr_addr, s4_chunk))),
                bank_wr.data.eq(Mux(ro_writes, readout.wr_data, acc_sum)),
                bank_wr.en.eq(ro_writes | s4_valid),
            ]
        else:
            for index, (bank_rd, bank_wr) in enumerate(banks):
                mine = Signal(name=f"acc_owns{index}")
                m.d.comb += [
                    mine.eq(acc_bank == index),
                    bank_rd.addr.eq(Mux(mine, s3_chunk, readout.rd_addr)),
                    bank_rd.en.eq(mine | readout.rd_en),
                    bank_wr.addr.eq(Mux(clear_wr, clear_wr_addr, Mux(mine, s4_chunk, readout.wr_addr))),
                    bank_wr.data.eq(Mux(mine & ~clear_wr, acc_sum, readout.wr_data)),
                    bank_wr.en.eq(clear_wr | Mux(mine, s4_valid, readout.wr_en)),
                ]

        # -- readout -------------------------------------------------------------------------------
        bias_issue = Signal()
        m.d.comb += [bias_rd.addr.eq(Mux(clearing, clear_addr, readout.rd_addr)),
                     bias_rd.en.eq(clearing | bias_issue)]
        bias = data.ArrayLayout(signed(p.bias_bits), lanes)(bias_rd.data)
        self._elaborate_readout(m, start=readout_start, may_start=readout_may_start, busy=bank_busy,
                                bank=readout, bias=bias, bias_issue=bias_issue, clear_wr=clear_wr)
        return m

    def _elaborate_readout(self, m, *, start, may_start, busy, bank, bias, bias_issue, clear_wr):
        """Add the readout to ``m``.

        ``start`` (in): begin the sweep of a sample's bank; ``may_start`` (out): a start would be taken
        now; ``busy`` (out): the readout owns the bank (one bank only); ``bank``: a
        :class:`MembranePort` interface to the bank the readout owns; ``bias``: the bias ROM word read
        at ``bank.rd_addr`` when ``bias_issue`` (out) was high; ``clear_wr``: the clear after reset
        writes this cycle (write ``b + v0``).
        """
        raise NotImplementedError


class DenseILIF(_AccumulatingLayer):
    """A hidden layer of iLIF neurons (DESIGN.md §3, layer core).

    Parameters
    ----------
    plan : LayerPlan
        Widths, folding and ROM images (``plan.fires`` must be true).
    membrane : list, optional
        The membrane banks' ``(read, write)`` ports (``membrane[s][0]``) when they live outside the core
        (:class:`~spikeforge.hdl.single_port.HalfRateLayer`); None: the core builds them in block RAM.

    Members
    -------
    events : In(stream.Signature(spike_event_layout(plan.in_group, plan.in_chunks, T)))
        Input spikes of one sample after another; ``last`` ends a sample.
    spikes : Out(stream.Signature(spike_event_layout(plan.lanes, plan.chunks, T)))
        This layer's spikes, step by step, ``last`` on the final beat of a sample.
    """

    def __init__(self, plan: LayerPlan, *, membrane=None):
        if not plan.fires:
            raise InputError(f"layer {plan.name!r} does not fire; use OutputLayer")
        super().__init__(plan, {"spikes": Out(stream.Signature(spike_event_layout(plan.lanes, plan.chunks,
                                                                                    plan.timesteps)))},
                         membrane)

    def _elaborate_readout(self, m, *, start, may_start, busy, bank, bias, bias_issue, clear_wr):
        p = self.plan
        timesteps, lanes = p.timesteps, p.lanes
        potential = bank.rd_data
        m.submodules.sweep = sweep = SweepSequencer(timesteps, p.chunks)
        m.d.comb += [
            sweep.start.eq(start), may_start.eq(sweep.idle), busy.eq(~sweep.idle),
            bank.rd_addr.eq(sweep.chunk), bank.rd_en.eq(sweep.issue),
            bias_issue.eq(sweep.issue),
        ]
        if p.uniform_threshold is not None:
            # One level for all lanes, registered with stage 2's step: θ · 2^(T-1-t).
            theta = p.uniform_threshold
            level_bits = (theta << (timesteps - 1)).bit_length()
            copies = min(LEVEL_COPIES, -(-lanes // LANES_PER_LEVEL))
            copy_levels = []
            for index in range(copies):
                level = Signal(unsigned(level_bits), name=f"level{index}" if copies > 1 else "level",
                               init=(1 << level_bits) - 1 if index & 1 else 0, reset_less=bool(index & 2))
                with m.If(sweep.issue):
                    with m.Switch(sweep.step):
                        for t in range(timesteps):
                            with m.Case(t):
                                m.d.sync += level.eq(theta << (timesteps - 1 - t))
                copy_levels.append(level)
            levels = [copy_levels[k * copies // lanes] for k in range(lanes)]
        else:
            m.submodules.thresholds = thresholds = Memory(shape=unsigned(lanes * p.threshold_bits),
                                                          depth=max(2, p.chunks), init=p.threshold_words)
            threshold_rd = thresholds.read_port()
            m.d.comb += [threshold_rd.addr.eq(sweep.chunk), threshold_rd.en.eq(sweep.issue)]
            threshold = data.ArrayLayout(unsigned(p.threshold_bits), lanes)(threshold_rd.data)
            shift = Signal(range(timesteps))
            m.d.comb += shift.eq(timesteps - 1 - sweep.s2_step)
            levels = [threshold[k] << shift for k in range(lanes)]
        fired, updated = [], []
        write_bias = Signal()
        m.d.comb += write_bias.eq(sweep.s2_last_step | clear_wr)
        for k in range(lanes):
            difference = Signal(signed(max(p.membrane_bits, len(levels[k])) + 1), name=f"difference{k}")
            m.d.comb += difference.eq(potential[k] - levels[k])
            spike = Signal(name=f"spike{k}")
            m.d.comb += spike.eq(~difference[-1])
            fired.append(spike)
            after = Mux(spike, difference, potential[k])
            updated.append(Mux(write_bias, bias[k], after)[:p.membrane_bits])
        # Stage 3: the event, registered before it is offered; it moves with the sweep (on ready).
        groups = [Cat(fired[k:k + LANES_PER_LEVEL]).any() for k in range(0, lanes, LANES_PER_LEVEL)]
        s3_valid, s3_any, s3_final = Signal(), Signal(len(groups)), Signal()
        with m.If(sweep.advance):
            m.d.sync += [
                s3_valid.eq(sweep.s2_valid), s3_any.eq(Cat(groups)), s3_final.eq(sweep.s2_final),
                self.spikes.payload.mask.eq(Cat(fired)),
                self.spikes.payload.chunk.eq(sweep.s2_chunk),
                self.spikes.payload.step.eq(sweep.s2_step),
                self.spikes.payload.last.eq(sweep.s2_final),
            ]
        m.d.comb += [
            self.spikes.valid.eq(s3_valid & (s3_any.any() | s3_final)),
            sweep.advance.eq(self.spikes.ready),
            bank.wr_en.eq(sweep.s2_valid & sweep.advance),
            bank.wr_addr.eq(sweep.s2_chunk),
            bank.wr_data.eq(Cat(updated)),
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
            raise InputError(f"layer {plan.name!r} fires; use DenseILIF")
        super().__init__(plan, {"results": Out(stream.Signature(result_layout(plan.out_features,
                                                                                plan.membrane_bits)))})

    def _elaborate_readout(self, m, *, start, may_start, busy, bank, bias, bias_issue, clear_wr):
        p = self.plan
        chunks, lanes, score_bits, classes = p.chunks, p.lanes, p.membrane_bits, p.out_features
        m.submodules.sweep = sweep = SweepSequencer(1, chunks)
        result_valid = Signal()
        m.d.comb += [
            sweep.start.eq(start), busy.eq(~sweep.idle),
            bank.rd_addr.eq(sweep.chunk), bank.rd_en.eq(sweep.issue),
            bias_issue.eq(sweep.issue),
            sweep.advance.eq(1),
            bank.wr_en.eq(sweep.s2_valid),
            bank.wr_addr.eq(sweep.s2_chunk),
            bank.wr_data.eq(Cat(_sign_extend(bias[k], score_bits) for k in range(lanes))),
            self.results.valid.eq(result_valid),
        ]
        score = bank.rd_data
        label_shape = index_shape(max(2, classes))
        last_lanes = classes - (chunks - 1) * lanes     # real neurons in the final chunk

        # Stage 2: each chunk's winner by a balanced tree (lower index wins ties), registered.
        def winner(lanes):
            if len(lanes) == 1:
                return lanes[0]
            half = len(lanes) // 2
            (ls, li, lp), (hs, hi, hp) = winner(lanes[:half]), winner(lanes[half:])
            take_high = hp & (~lp | (hs > ls))
            return Mux(take_high, hs, ls), Mux(take_high, hi, li), lp | hp
        candidates = []
        for k in range(lanes):
            present = (sweep.s2_chunk != chunks - 1) | Const(k < last_lanes)
            candidates.append((score[k], Const(k, label_shape), present))
        chunk_score, chunk_lane, chunk_present = winner(candidates)
        s3_valid, s3_final, s3_first = Signal(), Signal(), Signal()
        s3_score, s3_label, s3_present = Signal(signed(score_bits)), Signal(label_shape), Signal()
        m.d.sync += [s3_valid.eq(sweep.s2_valid), s3_final.eq(sweep.s2_valid & sweep.s2_final),
                     s3_first.eq(sweep.s2_chunk == 0), s3_score.eq(chunk_score),
                     s3_label.eq(times_constant(sweep.s2_chunk, lanes) + chunk_lane), s3_present.eq(chunk_present)]
        # Stage 3: against the running best (strict >: the earlier chunk wins ties).
        best_score, best_label = Signal(signed(score_bits)), Signal(label_shape)
        m.d.comb += may_start.eq(sweep.idle & ~s3_valid & ~result_valid)
        better = s3_present & (s3_first | (s3_score > best_score))
        running_score = Mux(better, s3_score, best_score)
        running_label = Mux(better, s3_label, best_label)
        with m.If(self.results.valid & self.results.ready):
            m.d.sync += result_valid.eq(0)
        with m.If(s3_valid):
            m.d.sync += [best_score.eq(running_score), best_label.eq(running_label)]
            with m.If(s3_final):
                m.d.sync += [result_valid.eq(1), self.results.payload.label.eq(running_label)]
        with m.If(sweep.s2_valid):
            with m.Switch(sweep.s2_chunk):
                for chunk in range(chunks):
                    with m.Case(chunk):
                        for k in range(lanes):
                            if chunk * lanes + k < classes:
                                m.d.sync += self.results.payload.scores[chunk * lanes + k].eq(score[k])
