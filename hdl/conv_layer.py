"""The event-driven conv core: weight sharing, kernel-tap walking, max pooling in the fire phase.

:class:`ConvILIF` is the dense core (:mod:`spikeforge.hdl.layer`) generalised to a conv2d layer
(DESIGN §1b, §3 "Conv core"), optionally fused with the max pool that follows it. The plan
(:class:`~spikeforge.hdl.conv_plan.ConvLayerPlan`) holds every width, ROM image and address map; its
docstring fixes the event conventions (flat CHW in from the encoder, position-major in and out
between conv cores).

Membrane banks (``plan.membrane_banks``) and column banks (``plan.taps``)
    A bank holds the kept conv map (``Hc·Wc`` positions, the part a pool window covers; the whole map
    without a pool) × ``chunks`` words of ``lanes × membrane_bits`` (lane ``k`` of word
    ``pos·chunks + cc`` is channel ``cc·lanes + k``). With ``taps`` tap lanes each bank is ``taps``
    memories, *column banks*: column bank ``b`` holds the outputs with ``ox mod taps = b`` at address
    ``(oy·Wb + ox // taps)·chunks + cc`` (``Wb = ceil(Wc / taps)``), so the up to ``taps`` consecutive
    output columns an input spike reaches in one output row are in different memories and are added
    in the same cycle. Two banks (default) ping-pong exactly as in the dense core: the accumulate half
    fills one while the readout fires the other; with one bank they take turns: the next sample's
    events wait until the readout is done with the bank — with a max pool (and ``T > 1``) that is the
    end of its step 0, after which it fires from the pooled residual store, so the accumulate of
    sample ``n+1`` overlaps steps ``1..T-1`` of sample ``n`` (*early release*). After reset every
    column bank of every bank is written with ``b + v0`` (one word per cycle, all memories at once, no
    event taken meanwhile).

Accumulate (event-driven)
    An input spike at ``(ci, y, x)`` of step ``t`` adds ``W[:, ci, dy, dx]·2^(T-1-t)`` to every kept
    output ``(oy, ox)`` with ``oy·sh + dy - ph = y`` and ``ox·sw + dx - pw = x`` (scaling by
    ``2^(T-1-t)`` instead of doubling V between steps, as the dense core does, makes the accumulate
    order-free). Three decode stages, each with its own ready (so bubbles compress and a decoded spike
    waits in the last one while the walker is busy), turn events into spike descriptors:

    A. the event register walks the set bits, lowest first, one per cycle, and reads the ``in_map``
       ROM at the event's chunk (the position ``(c0, y, x0)`` of its lane 0);
    B. lane ``k`` adds ``k`` to the channel or to ``x`` (the map's ``lane_axis``); the ``rows`` ROM is
       read at ``y`` and the ``cols`` ROM at ``x``; ``ci·kh·kw·chunks`` is registered;
    C. the descriptor: ``ny × nx`` reachable outputs, the weight address of the first tap, the
       membrane address of its output and its *rotation* ``r = ox0 mod taps`` (sums of the ROM
       fields). A spike that reaches no kept output is dropped here: it costs no cycle.

    The *walker* takes a descriptor in the cycle it issues its previous spike's last word and issues
    one word per cycle: for each reachable output row (kernel row ``dy`` falling by ``sh``), each
    *group* of up to ``taps`` reachable output columns (the group's first tap ``dx`` falling by
    ``taps·sw``), each chunk — weight address ``w_tap + cc``, membrane address ``m_pos + cc``, both
    stepped by constants (no multiplier, no divider). The weight word holds the group's ``taps`` kernel
    taps (slot ``i``: tap ``dx - i·sw``, :mod:`~spikeforge.hdl.conv_plan`); column bank ``b`` takes slot
    ``(b - r) mod taps``, enabled while that slot is among the row's columns not yet issued, at the
    group's column (+1 where ``b < r``: its column wrapped round). Then five registered stages: the
    group's enables and column-bank addresses (stage 2); the weight word registered off the ROM while
    the membrane words are read (3); each column bank's slot selected (4); the slot scaled by the
    one-hot ``2^(T-1-t)`` while the membrane words are registered off the ports (5: block RAM
    clock-to-out, the bank mux and the adder do not share a cycle), then added and written back. So a
    spike costs exactly ``ny·ceil(nx / taps) × chunks`` cycles once the decode pipeline is full, and a
    zero bit nothing; border groups leave some column banks idle. Successive words go to different
    addresses within a spike; across spikes a word may be read again one issue after its read (one
    chunk: the write-back is forwarded into stage 5, a bypass mux) or two issues after (two chunks: the
    read port is write-through for its own write); with three or more chunks the write has landed.

Hand-over
    As in the dense core: when the ``last`` event has been taken and every stage is empty and the
    readout is idle, the readout starts; with two banks the banks flip in the same cycle and the next
    sample's first event is taken at once.

Fire (with or without a max pool)
    The readout visits step ``t = 0..T-1``, emitted position ``p = 0..P-1`` (row-major), chunk
    ``cc``: a three-stage sweep (issue the read of one column bank — the position's column
    ``ox`` kept as the pair ``(ox // taps, ox mod taps)``, stepped without a divider; the data on the
    memory port, the column bank's selected; the *fire stage*, which
    registers the word, its bias and level and then computes — the block RAM's clock-to-out gets a
    cycle of its own), each stage moving on when the next is free or moving; then the *emit stage*,
    a register holding the beat offered on ``spikes`` (so the compare and max chains do not reach the
    next layer's FIFO in the same cycle). The fire stage stalls at each word that may emit while the
    emit stage holds a beat that is not taken. With ``level = θ·2^(T-1-t)``: ``d = V - level``,
    ``spike = d >= 0``, ``V ← spike ? d : V`` (restoring division, as in the dense core).

    * Without a pool ``V`` is the bank word itself: written back each step, ``b + v0`` at the last.
    * With a max pool (DESIGN §1b: ``maxpool(neuron(V)) == neuron(maxpool(V))``, θ and v0 being per
      channel) step 0 reads the ``kp_h × kp_w`` window members of ``(p, cc)`` one per cycle into a
      running per-lane maximum, fires once on the maximum and writes the *residual* into the pooled
      residual store (``P·chunks`` words, one per pooled neuron). Steps ``1..T-1`` fire from that
      store. So the soft reset acts on the max potential exactly as the golden model's pool of the
      fired codes. Each bank word is written back as ``b + v0`` at its last read in step 0 (member
      ``(wy, wx)`` of window ``(py, px)`` is the last reader when ``wy < sp_h or py = Hp-1`` and the
      same for ``x``), so overlapping windows read intact potentials and the bank is clean for the
      next sample without an extra sweep.

    A chunk with any spike (and the very last word, with ``last``) is one event whose ``chunk`` is the
    position-major ``p·chunks + cc``. The readout takes ``P·chunks·K + (T-1)·P·chunks`` cycles
    (``K`` = window size, 1 without a pool) plus four of pipeline, and stalls from ``spikes.ready``.

    A word is written back in its fire stage, two cycles after its read was issued. A map of more than
    two words is read again only after that write has landed; with two words the re-read comes in the
    write's cycle (the read port is write-through, *transparent*, for such maps), and with one word
    the re-read is issued the cycle before, so the fire stage's result is forwarded into it (a bypass
    mux, generated only for one-word maps).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .bitops import lowest_set_bit
from .conv_plan import ConvLayerPlan, early_release as plan_early_release
from .layouts import index_shape, spike_event_layout
from spikeforge.ir.errors import InputError

__all__ = ["ConvILIF"]


def _fields(value, widths):
    out, shift = [], 0
    for width in widths:
        out.append(value[shift:shift + width])
        shift += width
    return out


class ConvILIF(wiring.Component):
    """A hidden conv2d layer of iLIF neurons, optionally fused with the max pool after it.

    Parameters
    ----------
    plan : ConvLayerPlan
        Widths, folding, ROM images and address maps (:func:`~spikeforge.hdl.conv_plan.plan_conv_layer`).

    Members
    -------
    events : In(stream.Signature(spike_event_layout(plan.input_map.group, plan.input_map.chunks, T)))
        Input spikes of one sample after another (the producer's convention, see
        :class:`~spikeforge.hdl.conv_plan.InputMap`); ``last`` ends a sample.
    spikes : Out(stream.Signature(spike_event_layout(plan.lanes, plan.out_chunks, T)))
        The (pooled) output map's spikes, step by step, position-major: ``chunk = p·chunks + cc``,
        bit ``k`` = channel ``cc·lanes + k`` at emitted position ``p = y·Wout + x``; ``last`` on the
        final beat of a sample.

    membrane : list, optional
        The membrane (column) banks' ``(read, write)`` ports, ``membrane[s][b]``, when they live outside
        the core (:class:`~spikeforge.hdl.single_port.HalfRateLayer`); None: the core builds them in block RAM.

    Raises
    ------
    InputError
        For a plan that is not a :class:`ConvLayerPlan`.
    """

    def __init__(self, plan: ConvLayerPlan, *, membrane=None):
        if not isinstance(plan, ConvLayerPlan):
            raise InputError(f"ConvILIF takes a ConvLayerPlan, got {type(plan).__name__}")
        self.plan = plan
        self.membrane = membrane
        T = plan.timesteps
        super().__init__({
            "events": In(stream.Signature(spike_event_layout(plan.input_map.group, plan.input_map.chunks, T))),
            "spikes": Out(stream.Signature(spike_event_layout(plan.lanes, plan.out_chunks, T))),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.plan
        T, lanes, chunks = p.timesteps, p.lanes, p.chunks
        group = p.input_map.group
        kh, kw = p.kernel
        sh, sw = p.stride
        _, Hp, Wp = p.out_shape
        pooled = p.pooled
        pkh, pkw = p.pool_kernel if pooled else (1, 1)
        psh, psw = p.pool_stride if pooled else (1, 1)
        bank_depth = p.bank_words
        weight_depth = len(p.weight_words)
        bank_addr_shape, weight_addr_shape = index_shape(bank_depth), index_shape(weight_depth)
        word_bits = lanes * p.membrane_bits
        membrane = data.ArrayLayout(signed(p.membrane_bits), lanes)

        # -- memories ----------------------------------------------------------------------------
        # Depths are at least 2: a one-word memory would have a zero-width address port in Verilog.
        def rom(name, words, width):
            m.submodules[name] = memory = Memory(shape=unsigned(width), depth=max(2, len(words)), init=words)
            return memory.read_port()
        weight_rd = rom("weights", p.weight_words, p.taps * lanes * p.weight_bits)
        bias_rd = rom("biases", p.bias_words, lanes * p.bias_bits)
        in_map_rd = rom("in_map", p.in_map_words, sum(p.in_map_fields))
        rows_rd = rom("rows", p.row_words, sum(p.row_fields))
        cols_rd = rom("cols", p.col_words, sum(p.col_fields))
        # banks[s][b]: membrane bank s (ping-pong), column bank b (outputs with ox mod taps = b).
        taps = p.taps
        names = iter(p.membrane_names())
        banks = [list(columns) for columns in self.membrane] if self.membrane is not None else []
        for index in range(p.membrane_banks if self.membrane is None else 0):
            columns = []
            for column in range(taps):
                bank = Memory(shape=unsigned(word_bits), depth=max(2, bank_depth), init=[])
                m.submodules[next(names)] = bank
                wr = bank.write_port()
                # The accumulate re-reads a word in the cycle of its write only with one or two chunks; the
                # readout (no pool) with a map of one or two words (module docstring).
                transparent = chunks <= 2 or (not pooled and p.out_chunks <= 2)
                columns.append((bank.read_port(transparent_for=(wr,) if transparent else ()), wr))
            banks.append(columns)

        # -- clear after reset ---------------------------------------------------------------------
        clearing = Signal(init=1)
        clear_addr, clear_chunk = Signal(bank_addr_shape), Signal(index_shape(chunks))
        clear_wr, clear_wr_addr = Signal(), Signal(bank_addr_shape)
        m.d.sync += clear_wr.eq(clearing)
        with m.If(clearing):
            m.d.sync += [clear_wr_addr.eq(clear_addr), clear_addr.eq(clear_addr + 1),
                         clear_chunk.eq(Mux(clear_chunk == chunks - 1, 0, clear_chunk + 1))]
            with m.If(clear_addr == bank_depth - 1):
                m.d.sync += clearing.eq(0)

        # -- accumulate: stage A, the event register ---------------------------------------------------
        cur_valid, cur_last = Signal(), Signal()
        cur_mask, cur_chunk, cur_step = Signal(group), Signal(index_shape(p.input_map.chunks)), Signal(index_shape(T))
        low = Signal(index_shape(group))
        mask_empty, mask_single = Signal(init=1), Signal()
        next_mask = Signal(group)
        a_spike = Signal()
        b_ready, c_ready, d_ready = Signal(), Signal(), Signal()
        m.d.comb += [a_spike.eq(cur_valid & ~mask_empty),
                     in_map_rd.addr.eq(cur_chunk), in_map_rd.en.eq(b_ready)]

        # Stage B: the chunk's position (in_map data) and the lane.
        b_valid, b_lane, b_step = Signal(), Signal(index_shape(group)), Signal(index_shape(T))
        with m.If(b_ready):
            m.d.sync += [b_valid.eq(a_spike), b_lane.eq(low), b_step.eq(cur_step)]
        c0, y0, x0 = _fields(in_map_rd.data, p.in_map_fields)
        if p.input_map.lane_axis == "x":
            ci, y, x = c0, y0, x0 + b_lane
        else:
            ci, y, x = c0 + b_lane, y0, x0
        m.d.comb += [rows_rd.addr.eq(y), rows_rd.en.eq(c_ready), cols_rd.addr.eq(x), cols_rd.en.eq(c_ready)]

        # Stage C: the row/column reach (ROM data) and the channel's weight block.
        c_valid, c_step, c_ciw = Signal(), Signal(index_shape(T)), Signal(weight_addr_shape)
        with m.If(c_ready):
            m.d.sync += [c_valid.eq(b_valid), c_step.eq(b_step), c_ciw.eq(ci * (kh * kw * chunks))]
        ny, w_row_off, m_row_off = _fields(rows_rd.data, p.row_fields)
        nx, w_col_off, m_col_off, rotation = _fields(cols_rd.data, p.col_fields)

        # Stage D: the descriptor the walker takes.
        d_valid, d_step = Signal(), Signal(index_shape(T))
        d_ny, d_nx = Signal(len(ny)), Signal(len(nx))
        d_w, d_m = Signal(weight_addr_shape), Signal(bank_addr_shape)
        d_rotation = Signal(len(rotation))
        with m.If(d_ready):
            m.d.sync += [d_valid.eq(c_valid & (ny != 0) & (nx != 0)), d_step.eq(c_step),
                         d_ny.eq(ny), d_nx.eq(nx), d_w.eq(c_ciw + w_row_off + w_col_off),
                         d_m.eq(m_row_off + m_col_off), d_rotation.eq(rotation)]

        # The walker: one (output row, column group, chunk) word per cycle; a group is up to ``taps``
        # consecutive output columns, one per column bank. ``w_rem`` counts the row's columns not yet
        # issued; column bank b takes slot (b - rotation) mod taps of the group (``w_slot``).
        w_busy = Signal()
        w_i = Signal(len(ny))
        w_rem = Signal(len(nx))
        w_c = Signal(index_shape(chunks))
        w_ny, w_nx = Signal(len(ny)), Signal(len(nx))
        w_row, w_tap = Signal(weight_addr_shape), Signal(weight_addr_shape)
        m_row, m_pos = Signal(bank_addr_shape), Signal(bank_addr_shape)
        # The scale 2^(T-1-t) of the spike's step: a one-hot factor for a multiplier (``dsp``), or the
        # shift amount T-1-t for a shifter in logic (``logic``: no DSP).
        scale_shape = unsigned(T) if p.multiplier == "dsp" else index_shape(T)
        w_scale = Signal(scale_shape)
        w_rotation = Signal(len(rotation))
        w_slot = [Signal(index_shape(taps), name=f"w_slot{b}") for b in range(taps)]
        last_c, last_j, last_i, w_final, d_take = Signal(), Signal(), Signal(), Signal(), Signal()
        m.d.comb += [
            last_c.eq(w_c == chunks - 1), last_j.eq(w_rem <= taps), last_i.eq(w_i == w_ny - 1),
            w_final.eq(w_busy & last_c & last_j & last_i),
            d_take.eq(d_valid & (~w_busy | w_final)),
            d_ready.eq(~d_valid | d_take),
            c_ready.eq(~c_valid | d_ready),
            b_ready.eq(~b_valid | c_ready),
            weight_rd.addr.eq(w_tap + w_c),
        ]
        row_step_w, row_step_m = sh * kw * chunks, p.bank_columns * chunks
        with m.If(d_take):
            m.d.sync += [w_busy.eq(1), w_i.eq(0), w_rem.eq(d_nx), w_c.eq(0), w_ny.eq(d_ny), w_nx.eq(d_nx),
                         w_row.eq(d_w), w_tap.eq(d_w), m_row.eq(d_m), m_pos.eq(d_m),
                         w_scale.eq(Const(1 << (T - 1), T) >> d_step if p.multiplier == "dsp" else T - 1 - d_step),
                         w_rotation.eq(d_rotation)]
            m.d.sync += [slot.eq(Mux(d_rotation <= b, b - d_rotation, b + taps - d_rotation)[:len(slot)])
                         for b, slot in enumerate(w_slot)]
        with m.Elif(w_busy):
            with m.If(~last_c):
                m.d.sync += w_c.eq(w_c + 1)
            with m.Elif(~last_j):
                m.d.sync += [w_c.eq(0), w_rem.eq(w_rem - taps), w_tap.eq(w_tap - taps * sw * chunks),
                             m_pos.eq(m_pos + chunks)]
            with m.Elif(~last_i):
                m.d.sync += [w_c.eq(0), w_rem.eq(w_nx), w_i.eq(w_i + 1),
                             w_row.eq(w_row - row_step_w), w_tap.eq(w_row - row_step_w),
                             m_row.eq(m_row + row_step_m), m_pos.eq(m_row + row_step_m)]
            with m.Else():
                m.d.sync += w_busy.eq(0)

        # Stage 2: the weight word and the column banks' enables (slot < columns left in the row) and
        # group addresses. Stage 3: the weight word registered off the ROM; the membrane words are read.
        # Stage 4: each column bank's slot of the weight word selected (the rotation). Stage 5: scaled by
        # the one-hot 2^(T-1-t) while the membrane words are registered off the ports, then added and
        # written back.
        s2_valid, s2_addr, s2_scale = Signal(), Signal(bank_addr_shape), Signal(scale_shape)
        s2_rotation = Signal(len(rotation))
        s2_en = [Signal(name=f"s2_en{b}") for b in range(taps)]
        s2_slot = [Signal(index_shape(taps), name=f"s2_slot{b}") for b in range(taps)]
        m.d.sync += [s2_valid.eq(w_busy), s2_addr.eq(m_pos + w_c), s2_scale.eq(w_scale), s2_rotation.eq(w_rotation)]
        m.d.sync += [en.eq(w_busy & (slot < w_rem)) for en, slot in zip(s2_en, w_slot)]
        m.d.sync += [a.eq(b) for a, b in zip(s2_slot, w_slot)]
        s3_valid, s3_scale = Signal(), Signal(scale_shape)
        s3_en = [Signal(name=f"s3_en{b}") for b in range(taps)]
        s3_addr = [Signal(bank_addr_shape, name=f"s3_addr{b}") for b in range(taps)]
        s3_slot = [Signal(index_shape(taps), name=f"s3_slot{b}") for b in range(taps)]
        s3_weight = Signal(len(weight_rd.data))
        m.d.sync += [s3_valid.eq(s2_valid), s3_scale.eq(s2_scale), s3_weight.eq(weight_rd.data)]
        for b in range(taps):
            # Column bank b lies one column further on where its slot wrapped round (b < rotation).
            m.d.sync += [s3_en[b].eq(s2_valid & s2_en[b]), s3_slot[b].eq(s2_slot[b]),
                         s3_addr[b].eq(s2_addr + Mux(b < s2_rotation, chunks, 0) if taps > 1 else s2_addr)]
        slot_words = data.ArrayLayout(data.ArrayLayout(signed(p.weight_bits), lanes), taps)(s3_weight)
        weight_lanes = data.ArrayLayout(signed(p.weight_bits), lanes)
        s4_valid, s4_scale = Signal(), Signal(scale_shape)
        s4_en = [Signal(name=f"s4_en{b}") for b in range(taps)]
        s4_addr = [Signal(bank_addr_shape, name=f"s4_addr{b}") for b in range(taps)]
        s4_weight = [Signal(weight_lanes, name=f"s4_weight{b}") for b in range(taps)]
        m.d.sync += [s4_valid.eq(s3_valid), s4_scale.eq(s3_scale)]
        for b in range(taps):
            selected = slot_words[0]
            for i in range(1, taps):
                selected = Mux(s3_slot[b] == i, slot_words[i], selected)
            m.d.sync += [s4_en[b].eq(s3_en[b]), s4_addr[b].eq(s3_addr[b]), s4_weight[b].eq(selected)]

        def column_data(index):
            """The data ports of membrane bank ``index``'s column banks."""
            return [rd.data for rd, _wr in banks[index]]
        if p.membrane_banks == 1:
            acc_data = readout_columns = column_data(0)
        else:
            acc_bank = Signal()
            acc_data = [Mux(acc_bank, d1, d0) for d0, d1 in zip(column_data(0), column_data(1))]
            readout_columns = [Mux(acc_bank, d0, d1) for d0, d1 in zip(column_data(0), column_data(1))]
        # Stage 5: the membrane word registered off the memory port (its clock-to-out gets a cycle of
        # its own), then added and written back. A word re-read two issues after its read meets its write
        # in the same cycle (write-through port, chunks <= 2); re-read in the next issue (one chunk, the
        # same output for two successive spikes) it takes stage 5's sum instead of the port (the bypass).
        scaled_bits = p.weight_bits + T
        s5_valid = Signal()
        s5_en = [Signal(name=f"s5_en{b}") for b in range(taps)]
        s5_addr = [Signal(bank_addr_shape, name=f"s5_addr{b}") for b in range(taps)]
        s5_scaled = [Signal(data.ArrayLayout(signed(scaled_bits), lanes), name=f"s5_scaled{b}") for b in range(taps)]
        s5_word = [Signal(membrane, name=f"s5_word{b}") for b in range(taps)]
        acc_sum = [Signal(word_bits, name=f"acc_sum{b}") for b in range(taps)]
        m.d.sync += s5_valid.eq(s4_valid)
        for b in range(taps):
            m.d.sync += [s5_en[b].eq(s4_en[b]), s5_addr[b].eq(s4_addr[b])]
            if p.multiplier == "dsp":
                m.d.sync += s5_scaled[b].eq(Cat((s4_weight[b][k] * s4_scale)[:scaled_bits] for k in range(lanes)))
            else:
                # Each lane's element takes the shifted weight sign-extended or truncated to its width.
                m.d.sync += [s5_scaled[b][k].eq(s4_weight[b][k] << s4_scale) for k in range(lanes)]
            if chunks == 1:
                m.d.sync += s5_word[b].eq(Mux(s5_en[b] & (s5_addr[b] == s4_addr[b]), acc_sum[b], acc_data[b]))
            else:
                m.d.sync += s5_word[b].eq(acc_data[b])
            m.d.comb += acc_sum[b].eq(Cat((s5_word[b][k] + s5_scaled[b][k])[:p.membrane_bits] for k in range(lanes)))

        # -- event intake and hand-over ------------------------------------------------------------------
        ro_idle = Signal()
        # One bank: the accumulate may use it (``bank_free``) while the readout is idle, or — early
        # release, with a max pool and T > 1 — once the readout's step 0 has retired its last word.
        early_release = plan_early_release(p)
        bank_free = Signal()
        handover, done_with_event = Signal(), Signal()
        pipeline_empty = ~b_valid & ~c_valid & ~d_valid & ~w_busy & ~s2_valid & ~s3_valid & ~s4_valid & ~s5_valid
        m.d.comb += [
            done_with_event.eq(mask_empty | (mask_single & b_ready)),
            handover.eq(cur_valid & cur_last & mask_empty & pipeline_empty & ro_idle & ~clearing),
        ]
        if p.membrane_banks == 1:
            m.d.comb += self.events.ready.eq(~clearing & bank_free & (~cur_valid | (done_with_event & ~cur_last)))
        else:
            m.d.comb += self.events.ready.eq(~clearing & (~cur_valid | (done_with_event & ~cur_last) | handover))
            with m.If(handover):
                m.d.sync += acc_bank.eq(~acc_bank)
        with m.If(self.events.valid & self.events.ready):
            m.d.comb += next_mask.eq(self.events.payload.mask)
            m.d.sync += [cur_valid.eq(1), cur_chunk.eq(self.events.payload.chunk),
                         cur_step.eq(self.events.payload.step), cur_last.eq(self.events.payload.last)]
        with m.Else():
            m.d.comb += next_mask.eq(Mux(a_spike & b_ready, cur_mask & (cur_mask - 1), cur_mask))
            with m.If(cur_valid & done_with_event & ~cur_last | handover):
                m.d.sync += cur_valid.eq(0)
        m.d.sync += [cur_mask.eq(next_mask), low.eq(lowest_set_bit(next_mask)),
                     mask_empty.eq(next_mask == 0), mask_single.eq((next_mask & (next_mask - 1)) == 0)]

        # -- readout sequencer -----------------------------------------------------------------------------
        ro_busy = Signal()
        t = Signal(index_shape(T))
        py, px = Signal(index_shape(Hp)), Signal(index_shape(Wp))
        cc = Signal(index_shape(chunks))
        wy, wx = Signal(index_shape(pkh)), Signal(index_shape(pkw))
        # Rows in bank-address units (``win_row``: the window's first row, ``row_base``: the member's);
        # columns as (column-in-bank × chunks, column bank) pairs: the window's first column and the member's.
        win_row, row_base = Signal(bank_addr_shape, name="win_row"), Signal(bank_addr_shape, name="row_base")
        win_q, mem_q = Signal(bank_addr_shape, name="win_q"), Signal(bank_addr_shape, name="mem_q")
        win_r, mem_r = Signal(index_shape(taps), name="win_r"), Signal(index_shape(taps), name="mem_r")
        row_words_step = p.bank_columns * chunks

        def column_step(q, r, step):
            """``(q, r)`` moved on by ``step`` output columns: (new q·chunks, new column bank)."""
            dq, dr = divmod(step, taps)
            if taps == 1:
                return q + step * chunks, r
            wraps = r + dr >= taps
            return (q + Mux(wraps, (dq + 1) * chunks, dq * chunks),
                    Mux(wraps, r + dr - taps, r + dr)[:len(r)])
        out_chunk = Signal(index_shape(p.out_chunks))
        member_phase = Signal()
        last_member = Signal()
        s2r_valid, s2r_move, advance, issue = Signal(), Signal(), Signal(), Signal()
        f_valid, f_last_member = Signal(), Signal()
        # The emit stage: a beat registered off the fire stage (its compare and max chains do not reach
        # the next layer's FIFO and the performance counters in the same cycle); free or being taken.
        e_valid, e_ready = Signal(), Signal()
        m.d.comb += e_ready.eq(~e_valid | self.spikes.ready)
        m.d.comb += [
            member_phase.eq(Const(int(pooled), 1) & (t == 0)),
            last_member.eq(~member_phase | ((wy == pkh - 1) & (wx == pkw - 1))),
            # The fire stage retires (its beat, if any, is taken); stage 2 moves on into it; a word is
            # issued when stage 2 is empty or moving on.
            advance.eq(~f_last_member | e_ready),
            s2r_move.eq(s2r_valid & (~f_valid | advance)),
            issue.eq(ro_busy & (~s2r_valid | s2r_move)),
            ro_idle.eq(~ro_busy & ~s2r_valid & ~f_valid & ~e_valid),
        ]
        with m.If(handover):
            m.d.sync += ro_busy.eq(1)
        next_member_q, next_member_r = column_step(mem_q, mem_r, 1)
        next_win_q, next_win_r = column_step(win_q, win_r, psw)
        with m.If(issue):
            with m.If(~last_member):
                with m.If(wx != pkw - 1):
                    m.d.sync += [wx.eq(wx + 1), mem_q.eq(next_member_q), mem_r.eq(next_member_r)]
                with m.Else():
                    m.d.sync += [wx.eq(0), wy.eq(wy + 1), row_base.eq(row_base + row_words_step),
                                 mem_q.eq(win_q), mem_r.eq(win_r)]
            with m.Else():
                m.d.sync += [wx.eq(0), wy.eq(0), row_base.eq(win_row), mem_q.eq(win_q), mem_r.eq(win_r)]
                with m.If(cc != chunks - 1):
                    m.d.sync += [cc.eq(cc + 1), out_chunk.eq(out_chunk + 1)]
                with m.Else():
                    m.d.sync += [cc.eq(0), out_chunk.eq(out_chunk + 1)]
                    with m.If(px != Wp - 1):
                        m.d.sync += [px.eq(px + 1), win_q.eq(next_win_q), win_r.eq(next_win_r),
                                     mem_q.eq(next_win_q), mem_r.eq(next_win_r)]
                    with m.Else():
                        m.d.sync += [px.eq(0), win_q.eq(0), win_r.eq(0), mem_q.eq(0), mem_r.eq(0)]
                        with m.If(py != Hp - 1):
                            m.d.sync += [py.eq(py + 1), win_row.eq(win_row + psh * row_words_step),
                                         row_base.eq(win_row + psh * row_words_step)]
                        with m.Else():
                            m.d.sync += [py.eq(0), win_row.eq(0), row_base.eq(0), out_chunk.eq(0)]
                            with m.If(t != T - 1):
                                m.d.sync += t.eq(t + 1)
                            with m.Else():
                                m.d.sync += [t.eq(0), ro_busy.eq(0)]

        # Stage 2 of the readout: the read data is on the ports (held there until the stage moves on).
        s2r_t, s2r_out = Signal(index_shape(T)), Signal(index_shape(p.out_chunks))
        s2r_first_member, s2r_last_member = Signal(), Signal()
        s2r_member_phase, s2r_clear, s2r_final, s2r_step0_end = Signal(), Signal(), Signal(), Signal()
        s2r_addr = Signal(bank_addr_shape)
        s2r_column = Signal(index_shape(taps))
        ro_addr = Signal(bank_addr_shape)
        m.d.comb += ro_addr.eq(row_base + mem_q + cc)
        with m.If(s2r_move):
            m.d.sync += s2r_valid.eq(0)
        with m.If(issue):
            m.d.sync += [
                s2r_valid.eq(1), s2r_t.eq(t), s2r_out.eq(out_chunk), s2r_addr.eq(ro_addr), s2r_column.eq(mem_r),
                s2r_first_member.eq((wy == 0) & (wx == 0)), s2r_last_member.eq(last_member),
                s2r_member_phase.eq(member_phase),
                s2r_clear.eq(((wy < psh) | (py == Hp - 1)) & ((wx < psw) | (px == Wp - 1))),
                s2r_final.eq((t == T - 1) & (out_chunk == p.out_chunks - 1) & last_member),
                s2r_step0_end.eq((t == 0) & (out_chunk == p.out_chunks - 1) & last_member),
            ]

        # Stage 3, the fire stage: the word, its bias and level registered (the memory's clock-to-out
        # gets a cycle of its own), then max, compare, subtract, emit and write back.
        f_t, f_out = Signal(index_shape(T)), Signal(index_shape(p.out_chunks))
        f_first_member, f_member_phase, f_clear, f_final, f_step0_end = Signal(), Signal(), Signal(), Signal(), Signal()
        f_addr = Signal(bank_addr_shape)
        f_column = Signal(index_shape(taps))
        f_word, f_bias = Signal(membrane), Signal(data.ArrayLayout(signed(p.bias_bits), lanes))
        with m.If(f_valid & advance):
            m.d.sync += f_valid.eq(0)
        with m.If(s2r_move):
            m.d.sync += [
                f_valid.eq(1), f_t.eq(s2r_t), f_out.eq(s2r_out), f_addr.eq(s2r_addr), f_column.eq(s2r_column),
                f_first_member.eq(s2r_first_member), f_last_member.eq(s2r_last_member),
                f_member_phase.eq(s2r_member_phase), f_clear.eq(s2r_clear), f_final.eq(s2r_final),
                f_step0_end.eq(s2r_step0_end), f_bias.eq(bias_rd.data),
            ]

        # The readout's bank port (routed to the bank it owns below).
        ro_rd_en, ro_wr_en, ro_wr_addr, ro_wr_data = Signal(), Signal(), Signal(bank_addr_shape), Signal(word_bits)
        write = Signal()
        m.d.comb += write.eq(f_valid & advance)
        m.d.comb += [bias_rd.addr.eq(Mux(clearing, clear_chunk, cc)), bias_rd.en.eq(clearing | issue)]

        def bias_word(bias):
            return Cat(Cat(bias[k], bias[k][-1].replicate(p.membrane_bits - p.bias_bits)) for k in range(lanes))
        clear_word = bias_word(data.ArrayLayout(signed(p.bias_bits), lanes)(bias_rd.data))
        # A word read again within two issues of its write-back (a map of one or two words) needs the
        # write-through port; with one word, stage 2 may hold a read issued before the write landed, and
        # takes the fire stage's result instead (the bypass below).
        readout_data = readout_columns[0]
        for b in range(1, taps):
            readout_data = Mux(s2r_column == b, readout_columns[b], readout_data)
        if pooled and T > 1:
            m.submodules.pooled = store = Memory(shape=unsigned(word_bits), depth=max(2, p.out_chunks), init=[])
            store_wr = store.write_port()
            store_rd = store.read_port(transparent_for=(store_wr,) if p.out_chunks <= 2 else ())
            m.d.comb += [store_rd.addr.eq(out_chunk), store_rd.en.eq(issue & ~member_phase)]
            port_word = Mux(s2r_member_phase, readout_data, store_rd.data)
        else:
            store_wr = None
            port_word = readout_data
        m.d.comb += ro_rd_en.eq(issue & member_phase if pooled else issue)

        # Threshold levels θ·2^(T-1-t), registered with the fire stage.
        if p.uniform_threshold is not None:
            theta = p.uniform_threshold
            level = Signal(range((theta << (T - 1)) + 1))
            with m.If(s2r_move):
                with m.Switch(s2r_t):
                    for step in range(T):
                        with m.Case(step):
                            m.d.sync += level.eq(theta << (T - 1 - step))
            levels = [level] * lanes
        else:
            threshold_rd = rom("thresholds", p.threshold_words, lanes * p.threshold_bits)
            m.d.comb += [threshold_rd.addr.eq(cc), threshold_rd.en.eq(issue)]
            f_threshold = Signal(data.ArrayLayout(unsigned(p.threshold_bits), lanes))
            with m.If(s2r_move):
                m.d.sync += f_threshold.eq(threshold_rd.data)
            shift = Signal(range(T))
            m.d.comb += shift.eq(T - 1 - f_t)
            levels = [f_threshold[k] << shift for k in range(lanes)]

        running = Signal(membrane)
        fired, residual, maxima = [], [], []
        for k in range(lanes):
            value = f_word[k]
            if pooled:
                candidate = Signal(signed(p.membrane_bits), name=f"candidate{k}")
                m.d.comb += candidate.eq(Mux(f_first_member | (value > running[k]), value, running[k]))
                value = candidate
                maxima.append(candidate)
            difference = Signal(signed(max(p.membrane_bits, len(levels[k])) + 1), name=f"difference{k}")
            m.d.comb += difference.eq(value - levels[k])
            spike = Signal(name=f"spike{k}")
            m.d.comb += spike.eq(~difference[-1])
            fired.append(spike)
            residual.append(Mux(spike, difference, value)[:p.membrane_bits])
        if pooled:
            with m.If(write & ~f_last_member):
                m.d.sync += running.eq(Cat(maxima))
        if p.out_chunks == 1:
            # The bypass: the fire stage writes the map's only word while stage 2 holds its re-read.
            writes_word = write & (f_last_member if pooled else 1)
            reads_word = ~s2r_member_phase if pooled else 1
            with m.If(s2r_move):
                m.d.sync += f_word.eq(Mux(writes_word & reads_word, Cat(residual), port_word))
        else:
            with m.If(s2r_move):
                m.d.sync += f_word.eq(port_word)
        mask, emit = Signal(lanes), Signal()
        m.d.comb += [mask.eq(Cat(fired)), emit.eq(f_last_member & ((mask != 0) | f_final))]
        e_payload = Signal(spike_event_layout(lanes, p.out_chunks, T))
        with m.If(self.spikes.valid & self.spikes.ready):
            m.d.sync += e_valid.eq(0)
        with m.If(write & emit):
            m.d.sync += [e_valid.eq(1), e_payload.mask.eq(mask), e_payload.chunk.eq(f_out),
                         e_payload.step.eq(f_t), e_payload.last.eq(f_final)]
        m.d.comb += [self.spikes.valid.eq(e_valid), self.spikes.payload.eq(e_payload)]
        if pooled:
            # Step 0 clears each bank word at its last read; the residual goes to the pooled store.
            m.d.comb += [ro_wr_en.eq(write & f_member_phase & f_clear), ro_wr_addr.eq(f_addr),
                         ro_wr_data.eq(Mux(clear_wr, clear_word, bias_word(f_bias)))]
            if store_wr is not None:
                m.d.comb += [store_wr.en.eq(write & f_last_member), store_wr.addr.eq(f_out),
                             store_wr.data.eq(Cat(residual))]
        else:
            m.d.comb += [ro_wr_en.eq(write), ro_wr_addr.eq(f_addr),
                         ro_wr_data.eq(Mux(clear_wr, clear_word,
                                           Mux(f_t == T - 1, bias_word(f_bias), Cat(residual))))]

        if early_release:
            # Busy from the hand-over until the fire stage retires step 0's last word (its write-back).
            bank_busy = Signal()
            with m.If(handover):
                m.d.sync += bank_busy.eq(1)
            with m.Elif(write & f_step0_end):
                m.d.sync += bank_busy.eq(0)
            m.d.comb += bank_free.eq(~bank_busy)
        else:
            m.d.comb += bank_free.eq(ro_idle)

        # -- bank routing: the readout (or the clear after reset) and the accumulate half -------------------
        # The readout writes one column bank (its fire stage's); the clear writes all of them.
        ro_writes_column = [Signal(name=f"ro_writes{b}") for b in range(taps)]
        m.d.comb += [w.eq(ro_wr_en & (f_column == b)) for b, w in enumerate(ro_writes_column)]
        if p.membrane_banks == 1:
            for b, (bank_rd, bank_wr) in enumerate(banks[0]):
                ro_writes = Signal(name=f"ro_or_clear_writes{b}")
                m.d.comb += [
                    ro_writes.eq(ro_writes_column[b] | clear_wr),
                    bank_rd.addr.eq(Mux(bank_free, s3_addr[b], ro_addr)),
                    bank_rd.en.eq(bank_free | ro_rd_en),
                    bank_wr.addr.eq(Mux(clear_wr, clear_wr_addr, Mux(ro_writes_column[b], ro_wr_addr, s5_addr[b]))),
                    bank_wr.data.eq(Mux(ro_writes, ro_wr_data, acc_sum[b])),
                    bank_wr.en.eq(ro_writes | s5_en[b]),
                ]
        else:
            for index, columns in enumerate(banks):
                mine = Signal(name=f"acc_owns{index}")
                m.d.comb += mine.eq(acc_bank == index)
                for b, (bank_rd, bank_wr) in enumerate(columns):
                    m.d.comb += [
                        bank_rd.addr.eq(Mux(mine, s3_addr[b], ro_addr)),
                        bank_rd.en.eq(mine | ro_rd_en),
                        bank_wr.addr.eq(Mux(clear_wr, clear_wr_addr, Mux(mine, s5_addr[b], ro_wr_addr))),
                        bank_wr.data.eq(Mux(mine & ~clear_wr, acc_sum[b], ro_wr_data)),
                        bank_wr.en.eq(clear_wr | Mux(mine, s5_en[b], ro_writes_column[b])),
                    ]
        return m
