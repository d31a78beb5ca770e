"""The analytical cycle model of the accelerator: per-layer cycles, latency and throughput from spike counts.

Notation: ``T`` timesteps, ``in`` input values per sample, ``Ce`` encoder chunks (``ceil(in / lanes_enc)``),
``C_l = ceil(out_l / lanes_l)``, ``S_l(n)`` the input spikes layer ``l`` receives for sample ``n``
(the encoder's spikes for the first layer). The RTL's stage costs (cycles, back-to-back input,
results always taken) are:

========================  ===============================  ============================================
stage                     cycles per sample                why
========================  ===============================  ============================================
encoder load              ``in + 1``                       one byte per cycle, one hand-over bubble
encoder emit              ``T·Ce + 3``                     one chunk per cycle per step, pipeline + idle
layer accumulate          ``S_l·C_l + 4``                  a spike reads ``C_l`` words; 3 stages + hand-over
hidden layer fire         ``T·C_l + 2``                    one chunk per cycle per step
output score sweep        ``C_L + 3``                      one chunk per cycle, winner, result release
========================  ===============================  ============================================

Stages are joined as in the RTL (a max-plus recurrence, evaluated per sample): node ``l``'s
hand-over ``h_l(n)`` (its readout starts on sample ``n``) waits for its accumulate to finish ``n``
and its readout to finish ``n-1`` (the output layer: and its result register to be released, one
more cycle). The accumulate of ``n`` starts once its membrane bank is free — with two (ping-pong)
banks, the default, at the hand-over of ``n-1`` (``B_l(n) = h_l(n-1)``); with one bank
(``membrane_banks=1``) only after the readout of ``n-1`` (``B_l(n) = e_l(n-1)``; a conv core with a max
pool and ``T > 1`` releases it after the readout's step 0, ``h_l(n-1) + P·chunks·K + 3``, stretched when
the consumer stalls that step's beats, as below) — and the producer's
first beat is through (5 = a fire sweep's three stages and the buffered FIFO; 6 after the encoder's four
stages, 5 after a conv core, whose fire sweep offers from its emit stage); it cannot end before the
producer's last beat arrives::

    h_0(n)   = max(h_0(n-1) + in + 1, e_0(n-1))                      h_0(-1) = 0, e(-1) = 0
    s_l(n)   = max(B_l(n), h_{l-1}(n) + 5 [+ 1 after the encoder])
    a_l(n)   = max(s_l(n) + S_l(n)·C_l, e_{l-1}(n) + 2 [- 1 after a conv core]) + 4
    h_l(n)   = max(a_l(n), e_l(n-1) [+ 1 for the output layer])
    e_l(n)   = h_l(n) + R_l                    R = T·Ce+3 (encoder), T·C_l+2 (hidden), C_L+2 (output)
    e_{l-1}(n) = max(e_{l-1}(n), s_l(n) + (beats - D)·c̄)  when the producer's beats for n exceed the FIFO depth D
    result(n) = h_L(n) + C_L + 3

(``c̄`` is the consumer's mean cycles per beat.) That per-sample form is what the model falls back to
when it has only spike counts (a list of numbers per layer, or per-sample counts) or a conv layer.

**Beat by beat** (dense networks, given raw samples or a golden result: every layer's codes are known).
The FIFO term above cannot see *where* in a sweep the spikes are: the encoder's sweep runs over the
image in order, and its spikes bunch up (the centre of an image, a step's bit plane), so the FIFO fills
in the dense part (the sweep stalls) and drains in the sparse part (the consumer starves). When the
encoder's emit sweep and the first layer's accumulate take similar time per sample, the two add up
far beyond ``max`` (Fashion-MNIST 784-200-100-10 with a one-lane encoder: 4,225 measured vs 3,823 the
per-sample form). So with codes the model runs every link (producer sweep -> buffered FIFO of depth
``D`` -> dense consumer) beat by beat (:class:`_Link`, the beats from :func:`sweep_beats`): a beat at
sweep position ``q`` with ``k`` spikes is offered ``dq`` cycles after the producer's previous beat was
written (one position per cycle; from the hand-over: :data:`ENCODER_OFFER` for the encoder,
:data:`FIRE_OFFER` for a fire sweep), written once the inner FIFO (``D-1`` words) has room
(``w_g >= ir_{g-D+1} + 1``; a fire sweep holds *every* position while the FIFO is full, the encoder only
a beat), moved to the FIFO's output register at ``ir_g = max(w_g + 1, r_{g-1})``, taken by the consumer
at ``r_g = max(ir_g + 1, ready)`` and keeps it ``k × C_l`` cycles. The consumer's hand-over is
``max(r_last + 1, last word + 4, its readout of n-1 done [+1 for the output layer])``; the first beat of
a sample waits for a free bank (two banks: the hand-over of ``n-1``; one: its readout's end); a
producer's sweep (fire or encoder) ends once its final position is in the stage that offers it. This is the RTL's schedule cycle for cycle: every result beat of the tests' random
networks and of the Fashion-MNIST MLP in Verilator lands on its predicted cycle (0 cycles off, 1 and 2
banks, FIFOs filling). It costs a Python loop over the beats (about 1-2 s per 1,000 Fashion-MNIST samples).

Steady-state cycles per sample is the mean spacing
of ``result(n)``; the per-stage means show the bottleneck. For a constant workload and two banks this
reduces to ``max(in + 1, T·Ce + 3, max_l max(S_l·C_l + 4, T·C_l + 2), C_L + 3)``: the slowest stage,
not the sum; with one bank a layer's accumulate and readout add up (``S_l·C_l + T·C_l + 6``).

Conv layers (:mod:`spikeforge.hdl.conv_plan`, a max pool fused into its conv: no stage of its own) are
stages of the same recurrence with three changes: the accumulate work is ``Σ words × C_l`` over the input
spikes (``words = ny·ceil(nx / taps)``, :meth:`~spikeforge.hdl.conv_plan.ConvLayerPlan.words`: kernel rows
reached times column groups of ``taps`` tap lanes; :func:`~spikeforge.hdl.conv_plan.spike_work`; from
per-feature input codes, so the golden model's CHW codes of the layer's input), the first word comes
:data:`CONV_DECODE` cycles later (decode stages B-D) and the drain is :data:`CONV_DRAIN` cycles; the
readout is :func:`~spikeforge.hdl.conv_plan.readout_words` ``+ 4``. Given only a count per layer, a
conv's work is the count times the mean words over its input positions times ``C_l``.

A layer at half rate (its membrane banks in single-port RAM, ``NAME=LANES:spram``,
:mod:`spikeforge.hdl.single_port`) runs its core on every other cycle: its accumulate work, decode, drain and
readout count twice (its FIFOs run at full rate). A network with such a layer takes the per-sample form, not the
beat-by-beat one.

Adders and utilisation: a layer has ``lanes × taps`` adders (taps = 1 for dense layers); a conv's useful
additions are ``Σ ny·nx × Co`` over its input spikes (the outputs each spike reaches, padding channels
and the idle column banks of border groups not counted). ``adder_utilisation`` is the useful additions
over ``total adders × cycles_per_sample``; each layer's ``utilisation`` is its own useful additions
over ``its adders × cycles_per_sample``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .conv_plan import ConvLayerPlan, bank_release, early_release, readout_words
from .folding import check_membrane_banks, resolve_folding
from .plan import check_supported, encoder_lanes_for, plan_network
from .top import DEFAULT_FIFO_DEPTH
from spikeforge.ir import golden
from spikeforge.ir.errors import InputError

__all__ = ["CyclePrediction", "predict", "spike_counts_per_layer", "sweep_beats", "FIFO_LATENCY"]

#: Cycles from a dense fire sweep's hand-over to its first beat being taken by the consumer (issue, data
#: on the port, the event registered and offered, then two through the buffered FIFO; a conv core's
#: too); the encoder offers :data:`ENCODER_OFFER` cycles after its hand-over instead of :data:`FIRE_OFFER`.
FIFO_LATENCY = 5
#: Cycles from a hand-over to the sweep's first position being offered on the stream: a dense fire sweep
#: offers from its stage 3 (issue, data on the port and compared, the event registered), and so does a conv
#: core's (issue, data on the port, the fire stage, then its emit stage); the encoder from its fourth (issue,
#: the code word registered, bit select into a register, offer).
FIRE_OFFER = 3
ENCODER_OFFER = 4
#: Cycles from a beat written into a (buffered) FIFO to the consumer taking it, the FIFO empty.
FIFO_THROUGH = 2
#: Cycles from the output layer's bank being free to its next readout (the result register).
RESULT_RELEASE = 1
#: Cycles a layer's accumulate adds to its spikes' words: the weight-register, scale and membrane-write
#: stages draining after the last word, and the hand-over.
ACCUMULATE_DRAIN = 4
#: A conv core's extra decode latency before its first word (stages B-D of its spike decoder).
CONV_DECODE = 3
#: A conv core's drain after its last word (one more registered stage than the dense core's).
CONV_DRAIN = 5


@dataclass
class CyclePrediction:
    """What :func:`predict` returns.

    Attributes
    ----------
    cycles_per_sample : float
        Steady-state cycles per sample of a back-to-back stream (mean result spacing; for one sample,
        the slowest stage).
    latency : float
        The latency, one definition everywhere (generate, report, verify, build): cycles from the first
        sample's first byte being taken to its result beat, that sample alone in an idle pipeline
        (``spikeforge verify`` measures it in its ``alone`` phase). In a saturated stream a sample
        also waits behind the ones ahead of it: that queueing is throughput, not latency.
    slowest_stage_cycles : float
        The largest per-stage mean cycles per sample (what the pipeline should run at); with one
        membrane bank a layer's accumulate and readout count as one stage (their sum).
    sum_of_stages : float
        What an unpipelined design would need: the sum of the per-layer times.
    stages : dict of str -> float
        Mean cycles per sample of every stage (``encoder.load``, ``fc1.accumulate``, ``fc1.fire``...).
    layers : list of dict
        Per layer: ``name, lanes, taps, adders, chunks, spikes_in, accumulate_cycles, fire_cycles,
        useful_additions, utilisation`` (means per sample).
    useful_additions : float
        Mean ``Σ_l S_l · out_l`` per sample (a conv: ``Σ ny·nx × Co`` over its input spikes).
    adder_utilisation : float
        ``useful_additions / (total adders × cycles_per_sample)`` (adders = ``Σ lanes × taps``).
    result_cycles : ndarray
        Predicted cycle of every result beat.
    """

    cycles_per_sample: float
    latency: float
    slowest_stage_cycles: float
    sum_of_stages: float
    stages: dict
    layers: list
    useful_additions: float
    adder_utilisation: float
    result_cycles: np.ndarray = field(repr=False)

    def as_dict(self) -> dict:
        return {"cycles_per_sample": self.cycles_per_sample, "latency": self.latency,
                "slowest_stage_cycles": self.slowest_stage_cycles, "sum_of_stages": self.sum_of_stages,
                "stages": self.stages, "layers": self.layers, "useful_additions": self.useful_additions,
                "adder_utilisation": self.adder_utilisation}


def spike_counts_per_layer(net, counts) -> tuple:
    """Normalise spike counts to ``(S, steps)``: S (N, L) input spikes per sample and layer, steps a
    list of (N, T) arrays or None.

    ``counts`` may be raw samples (uint8 array, run through :func:`spikeforge.ir.golden.run_timesteps`),
    a golden ``TimestepResult`` (its ``spike_counts``) or ``GoldenResult`` (``input_spikes()``), a list of
    one (N,) or (N, T) array per layer, or a list of one number per layer (one typical sample).
    """
    L = len(net.layers)
    if isinstance(counts, np.ndarray) and counts.dtype.kind in "iu" \
            and counts.shape[1:] in (net.input_shape, (net.in_features,)):
        counts = golden.run_timesteps(net, counts)
    if isinstance(counts, golden.TimestepResult):
        counts = counts.spike_counts
    elif isinstance(counts, golden.GoldenResult):
        counts = counts.input_spikes()
    counts = list(counts)
    if len(counts) != L:
        raise InputError(f"spike counts for {len(counts)} layers; the network has {L} "
                         f"({', '.join(l.name for l in net.layers)})")
    if all(np.ndim(c) == 0 for c in counts):
        return np.array([[float(c) for c in counts]]), None
    arrays = [np.asarray(c, dtype=np.float64) for c in counts]
    if all(a.ndim == 2 for a in arrays):
        return np.stack([a.sum(axis=1) for a in arrays], axis=1), arrays
    if all(a.ndim == 1 for a in arrays):
        return np.stack(arrays, axis=1), None
    raise InputError("spike counts must be one (N,) or (N, T) array per layer, all of the same kind")


def sweep_beats(codes, lanes: int, timesteps: int) -> np.ndarray:
    """Spikes at every position of a producer's sweep: an (N, T × chunks) int array.

    ``codes`` (N, F) are the producer's T-bit codes (the encoder's input codes or a hidden layer's
    output codes), ``lanes`` its lanes (``chunks = ceil(F / lanes)``). Position ``t·chunks + c`` (the
    order the sweep visits them) holds the set bits of chunk ``c`` at step ``t`` (bit ``T-1-t`` of each
    code): a beat is sent there when it is not 0, and at the final position always.
    """
    codes = np.asarray(codes)
    n, features = codes.shape
    chunks = -(-features // lanes)
    padded = np.zeros((n, chunks * lanes), dtype=np.int64)
    padded[:, :features] = codes
    shifts = (timesteps - 1 - np.arange(timesteps))[None, :, None]
    bits = (padded[:, None, :] >> shifts) & 1
    return bits.reshape(n, timesteps, chunks, lanes).sum(axis=3).reshape(n, timesteps * chunks)


def _beat_lists(codes, lanes: int, timesteps: int, batch: int = 256) -> list:
    """Per sample, ``(positions, spikes)`` of the beats a producer sends (:func:`sweep_beats`; the
    final position is always a beat)."""
    out = []
    for start in range(0, len(codes), batch):
        table = sweep_beats(codes[start:start + batch], lanes, timesteps)
        final = table.shape[1] - 1
        for row in table:
            where = np.flatnonzero(row[:final])
            out.append((where.tolist() + [final], row[where].tolist() + [int(row[final])]))
    return out


class _Link:
    """A producer's sweep, the buffered FIFO and a dense consumer's accumulate, beat by beat.

    The recurrence, per beat ``g`` (position ``q``, ``k`` spikes) in stream order: the producer offers
    it at ``o`` (its previous beat left ``dq`` positions earlier, one position a cycle; a fire sweep
    also holds every empty position between while the FIFO is full, the encoder only a beat; a beat at
    the next position, ``dq = 1``, is offered as soon as the previous one is written, full FIFO or not:
    that is when a fire sweep's final beat frees its bank), writes it at
    ``w = max(o, ir[g-D+1] + 1)`` (the inner FIFO of ``D-1`` words has room), the FIFO moves it to its
    output register at ``ir = max(w + 1, r[g-1])`` and the consumer takes it at
    ``r = max(ir + 1, ready)``; a beat with ``k`` spikes keeps the consumer ``k × chunks`` cycles (it
    takes the next one in the cycle it issues the last word).
    """

    def __init__(self, depth: int, fire: bool):
        self.fire = fire
        self.inner = deque(maxlen=max(1, depth - 1))
        self.full = max(1, depth - 1)
        self.r_prev = -math.inf          # the consumer took the previous beat
        self.w_prev = -math.inf          # the producer wrote its previous beat

    def sample(self, anchor, positions, spikes, cost, ready):
        """One sample's beats; the producer's sweep is at position -1 at ``anchor`` (its hand-over plus
        the offer latency minus one), the consumer may take the first beat at ``ready``. Returns
        ``(o, w, r, issue_end, r_first)`` of the final beat: offered, written, taken, the consumer's last
        word issued (-inf without spikes), the first beat taken."""
        prev_w, prev_q = max(anchor, self.w_prev), -1
        r_prev, inner, full, fire = self.r_prev, self.inner, self.full, self.fire
        issue_end, r_first = -math.inf, None
        o = w = r = None
        for q, k in zip(positions, spikes):
            dq = q - prev_q
            room = inner[0] + 1 if len(inner) == full else -math.inf
            o = prev_w + dq
            # The empty positions before the beat wait for room; the beat itself enters the offering stage
            # as the previous position leaves it.
            if fire and dq > 1 and room + dq - 1 > o:
                o = room + dq - 1
            w = o if o >= room else room
            moved = w + 1 if w + 1 > r_prev else r_prev         # max() costs a call per beat
            r = moved + 1 if moved + 1 > ready else ready
            inner.append(moved)
            if r_first is None:
                r_first = r
            if k:
                ready = issue_end = r + k * cost
            else:
                ready = r + 1
            r_prev, prev_w, prev_q = r, w, q
        self.r_prev, self.w_prev = r_prev, prev_w
        return o, w, r, issue_end, r_first


def _beats(steps_row, S, T, chunks):
    """Beats a producer with ``chunks`` chunks sends for one sample (upper estimate per step)."""
    if steps_row is None:
        return min(T * chunks, S) + 1
    return float(np.minimum(steps_row, chunks).sum()) + 1


def predict(net, folding=None, spike_counts_or_samples=None, *, fifo_depth: int = DEFAULT_FIFO_DEPTH,
            repeat: int = 8, membrane_banks: int = 2) -> CyclePrediction:
    """Predict cycles for a back-to-back stream of samples with the given spike counts.

    Parameters
    ----------
    net : Network
    folding : dict, Folding or None
        As for :class:`~spikeforge.hdl.Accelerator` (``None``: the automatic default).
    spike_counts_or_samples
        See :func:`spike_counts_per_layer`. A single typical sample is streamed ``repeat`` times. Raw
        samples or a golden result of a dense network are followed beat by beat (exact); counts only
        give the per-sample form (see the module docstring).
    membrane_banks : int
        As for :class:`~spikeforge.hdl.Accelerator`: 2 (ping-pong) or 1.

    Raises
    ------
    InputError
        For a network with a layer there is no core for (see
        :func:`~spikeforge.hdl.plan.check_supported`), bad spike counts.
    """
    check_supported(net)
    banks = check_membrane_banks(membrane_banks)
    folding = resolve_folding(net, folding, membrane_banks=banks)
    has_conv = net.has_conv
    counts = spike_counts_or_samples
    if has_conv and isinstance(counts, np.ndarray) and counts.dtype.kind in "iu" \
            and counts.shape[1:] in (net.input_shape, (net.in_features,)):
        counts = golden.run_timesteps(net, counts)      # kept: a conv's work needs per-feature codes
    elif not has_conv and isinstance(counts, np.ndarray) and counts.dtype.kind in "iu" \
            and counts.shape[1:] in (net.input_shape, (net.in_features,)):
        counts = golden.run(net, counts)                # kept: the beats need every layer's codes
    per_feature = counts.input_spikes(per_feature=True) if has_conv and isinstance(counts, golden.GoldenResult) \
        else None
    # Dense networks with every layer's codes: the FIFOs beat by beat (:class:`_Link`).
    layer_codes = counts.codes if not has_conv and isinstance(counts, golden.GoldenResult) \
        and not any(folding.half_rate(name) for name in folding.lanes) else None
    S_all, steps_all = spike_counts_per_layer(net, counts)
    # One stage per folded layer (a max pool is fused into its conv).
    kept = [i for i, layer in enumerate(net.layers) if layer.kind != "maxpool2d"]
    layer_plans = plan_network(net, folding, membrane_banks=banks).layers if has_conv else [None] * len(kept)
    stage_layers = [net.layers[i] for i in kept]
    S = S_all[:, kept]
    steps = None if steps_all is None else [steps_all[i] for i in kept]
    N, L, T = len(S), len(kept), net.timesteps
    chunks = [math.ceil(layer.out_features / folding[layer.name]) if layer.kind != "conv2d"
              else plan.chunks for layer, plan in zip(stage_layers, layer_plans)]
    # Accumulate work per sample and stage (words issued).
    work_all = np.zeros((len(S_all), L))
    useful_all = np.zeros((len(S_all), L))
    for l, (i, plan) in enumerate(zip(kept, layer_plans)):
        if isinstance(plan, ConvLayerPlan):
            words = _conv_per_feature(plan, plan.words) * plan.chunks    # words per spike, per CHW input feature
            reached = _conv_per_feature(plan, plan.taps_reached) * stage_layers[l].out_channels
            if per_feature is not None:
                codes = np.asarray(per_feature[i], dtype=np.float64)
                work_all[:, l], useful_all[:, l] = codes @ words, codes @ reached
            else:
                work_all[:, l] = S_all[:, i] * float(words.mean())
                useful_all[:, l] = S_all[:, i] * float(reached.mean())
        else:
            work_all[:, l] = S_all[:, i] * chunks[l]
            useful_all[:, l] = S_all[:, i] * stage_layers[l].out_features
    if len(S) == 1:
        S = np.repeat(S, repeat, axis=0)
        work_all = np.repeat(work_all, repeat, axis=0)
        useful_all = np.repeat(useful_all, repeat, axis=0)
        steps = None if steps is None else [np.repeat(s, repeat, axis=0) for s in steps]
        layer_codes = None if layer_codes is None else [np.repeat(c, repeat, axis=0) for c in layer_codes]
    N = len(S)
    n_in = net.in_features
    enc_lanes = encoder_lanes_for(net, folding, membrane_banks=banks)
    enc_chunks = math.ceil(n_in / enc_lanes)
    out_chunks = [plan.out_chunks if isinstance(plan, ConvLayerPlan) else c for plan, c in zip(layer_plans, chunks)]
    producer_chunks = [enc_chunks] + out_chunks[:-1]
    readout = [T * enc_chunks + 3] + [readout_words(plan) + 4 if isinstance(plan, ConvLayerPlan) else T * c + 2
                                      for plan, c in zip(layer_plans[:-1], chunks[:-1])] + [chunks[-1] + 2]
    decode = [CONV_DECODE if isinstance(plan, ConvLayerPlan) else 0 for plan in layer_plans]
    drain = [CONV_DRAIN if isinstance(plan, ConvLayerPlan) else ACCUMULATE_DRAIN for plan in layer_plans]
    # A layer at half rate (membrane banks in single-port RAM, hdl/single_port.py) runs its core on every
    # other cycle: its accumulate, drain and readout take twice the cycles.
    rate = [2 if folding.half_rate(layer.name) else 1 for layer in stage_layers]
    for l, factor in enumerate(rate):
        work_all[:, l] *= factor
        decode[l] *= factor
        drain[l] *= factor
        readout[l + 1] *= factor

    h = np.zeros(L + 1)          # hand-over of node j (0 = encoder) for the previous sample
    e = np.zeros(L + 1)          # end of node j's readout for the previous sample
    free = np.zeros(L + 1)       # node j's bank free for the next sample (one bank; two: the hand-over)
    # One bank and early release (a pooled conv, T > 1): free after the readout's step 0, not its end.
    released = [isinstance(plan, ConvLayerPlan) and early_release(plan) for plan in layer_plans]
    for l, plan in enumerate(layer_plans):
        if isinstance(plan, ConvLayerPlan):     # a conv core clears its bank(s) after reset first
            h[l + 1] = e[l + 1] = free[l + 1] = plan.bank_words
    first_byte = np.zeros(N)
    results = np.zeros(N)
    acc_time = np.zeros((N, L))
    if layer_codes is not None:
        producer_lanes = [enc_lanes] + [folding[layer.name] for layer in stage_layers[:-1]]
        beats = [_beat_lists(layer_codes[l], producer_lanes[l], T) for l in range(L)]
        links = [_Link(fifo_depth, fire=l > 0) for l in range(L)]
        offer = [ENCODER_OFFER] + [FIRE_OFFER] * (L - 1)
    for n in range(N):
        first_byte[n] = h[0]
        h_new, e_new, free_new = np.zeros(L + 1), np.zeros(L + 1), np.zeros(L + 1)
        h_new[0] = max(h[0] + n_in + 1, e[0])
        e_new[0] = h_new[0] + readout[0]
        for l in range(L):
            j = l + 1
            if layer_codes is not None:     # beat by beat
                acc_time[n, l] = work_all[n, l] + drain[l]
                positions, spikes = beats[l][n]
                # The first beat waits for a free bank: two banks, the hand-over of n-1; one, its readout.
                o, w, r, issue_end, _ = links[l].sample(h_new[j - 1] + offer[l] - 1, positions, spikes, chunks[l],
                                                        h[j] if banks == 2 else free[j])
                # The producer's sweep is idle once its final position is in the stage that offers it.
                e_new[j - 1] = o
                h_new[j] = max(r + 1, issue_end + drain[l], e[j] + (RESULT_RELEASE if j == L else 0))
            else:                           # per sample, from counts
                work = work_all[n, l]
                acc_time[n, l] = work + decode[l] + drain[l]
                # Two banks: the hand-over of n-1 frees the other bank at once; one bank: the readout of
                # n-1 must be done (early release: its step 0).
                # The producer's first beat is offered ``offer`` cycles after its hand-over (a conv core's
                # emit stage as late as a dense sweep's); its last is taken two cycles after its sweep ends
                # (one after a conv core's, which ends a cycle later).
                conv_producer = l > 0 and isinstance(layer_plans[l - 1], ConvLayerPlan)
                extra = ENCODER_OFFER - FIRE_OFFER if l == 0 else 0
                start = max(h[j] if banks == 2 else free[j], h_new[j - 1] + FIFO_LATENCY + extra)
                a = max(start + decode[l] + work, e_new[j - 1] + (1 if conv_producer else 2) + decode[l]) + drain[l]
                count = _beats(None if steps is None else steps[l][n], S[n, l], T, producer_chunks[l])
                if count > fifo_depth:
                    # The producer's sweep stalls on the full FIFO until the consumer has D beats left.
                    e_new[j - 1] = max(e_new[j - 1], start + (count - fifo_depth) * work / count)
                if l > 0 and released[l - 1] and steps is not None and S[n, l] > 0:
                    # The same for the producer's step 0 (its bank reads) and the consumer's share of it.
                    row = steps[l][n]
                    count0 = float(min(row[0], producer_chunks[l]))
                    if count0 > fifo_depth:
                        free_new[j - 1] = max(free_new[j - 1],
                                              start + (count0 - fifo_depth) * work * row[0] / S[n, l] / count0)
                h_new[j] = max(a, e[j] + (RESULT_RELEASE if j == L else 0))
            e_new[j] = h_new[j] + readout[j]
            if released[l]:     # step 0's words, at the layer's rate
                free_new[j] = h_new[j] + rate[l] * (bank_release(layer_plans[l], h_new[j], e_new[j]) - h_new[j])
        # Otherwise one bank is free when the readout ends, which the consumer's FIFO may have stretched
        # in the next layer's iteration: taken once every layer is done.
        for l in range(L):
            if not released[l]:
                free_new[l + 1] = e_new[l + 1]
        results[n] = h_new[L] + chunks[-1] + 3
        h, e, free = h_new, e_new, free_new

    stages = {"encoder.load": float(n_in + 1), "encoder.emit": float(readout[0])}
    cycles = float((results[-1] - results[0]) / (N - 1)) if N > 1 else None
    layers = []
    for l, layer in enumerate(stage_layers):
        stages[f"{layer.name}.accumulate"] = float(acc_time[:, l].mean())
        stages[f"{layer.name}.{'fire' if layer.fires else 'score'}"] = float(readout[l + 1])
        layers.append({"name": layer.name, "lanes": folding[layer.name], "taps": folding.tap_lanes(layer.name),
                       "adders": folding.adders(layer.name), "chunks": chunks[l],
                       "spikes_in": float(S[:, l].mean()), "accumulate_cycles": float(acc_time[:, l].mean()),
                       "fire_cycles": float(readout[l + 1]),
                       "useful_additions": float(useful_all[:, l].mean())})
    if cycles is None:
        cycles = max(stages.values())
    for entry in layers:
        entry["utilisation"] = entry["useful_additions"] / (entry["adders"] * cycles) if cycles else 0.0
    useful = sum(layer["useful_additions"] for layer in layers)
    total_lanes = folding.total_adders()
    slowest = max(stages.values())
    if banks == 1:      # a layer's accumulate and readout (early release: its step 0) take turns on its bank
        slowest = max([slowest] + [acc_time[:, l].mean() + (rate[l] * bank_release(layer_plans[l], 0, readout[l + 1])
                                                            if released[l] else readout[l + 1]) for l in range(L)])
    slowest = float(slowest)
    sum_of_stages = float(sum(acc_time.mean(axis=0)) + sum(readout[1:]) + n_in + 1)
    return CyclePrediction(cycles_per_sample=cycles, latency=float(results[0] - first_byte[0]),
                           slowest_stage_cycles=slowest, sum_of_stages=sum_of_stages, stages=stages,
                           layers=layers, useful_additions=useful,
                           adder_utilisation=useful / (total_lanes * cycles) if cycles else 0.0,
                           result_cycles=results)


def _conv_per_feature(plan: ConvLayerPlan, per_position) -> np.ndarray:
    """``per_position(y, x)`` (walker words or kept outputs reached) per CHW-flat input feature of ``plan``."""
    C, H, W = plan.in_shape
    table = np.array([[per_position(y, x) for x in range(W)] for y in range(H)], dtype=np.float64)
    return np.broadcast_to(table, (C, H, W)).reshape(-1)
