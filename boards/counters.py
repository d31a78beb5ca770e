"""On-chip performance counters: what the accelerator did, in clock cycles, read over the link.

:class:`PerformanceCounters` watches the handshakes of the accelerator's two streams (it costs the
accelerator nothing: no signal inside it is touched) and counts, since it was last cleared and from
the first pixel the accelerator took after that:

* ``samples``: results the accelerator produced;
* ``first_result``, ``last_result``: the cycle of the first and of the latest result (the first
  pixel's cycle is 0), so a batch run back-to-back measures ``(last - first) / (samples - 1)``
  cycles per sample in steady state, exactly as the Verilator sign-off measures result spacing;
* ``busy``: cycles with at least one sample inside the accelerator (its first pixel taken, its
  result not yet);
* ``input_stall``: cycles a pixel was offered and the accelerator did not take it (it was full);
* ``output_stall``: cycles a result waited because the link (or the result buffer) did not take it.

**Per layer** (``layers`` > 0: the accelerator's :meth:`~spikeforge.hdl.top.Accelerator.stage_probes`,
each layer's input and output handshakes), each of the ``busy`` cycles above is one of three for every
layer:

* ``stalled``: the layer's output is offered and the next stage (the next layer's FIFO, or the link for
  the output layer) does not take it;
* ``starved``: otherwise, when the layer has nothing to do: it would take an input beat and none is
  offered, and it holds no sample whose input is complete and whose last output beat has not gone;
* ``busy``: the rest: the layer accumulates (it takes a beat, or is not ready for the next because it
  works on this one), drains, waits to hand over to its fire phase, or fires.

A layer at half rate (its membrane banks in single-port RAM) has its handshakes held off every other cycle
(the probe's ``gated``); such a cycle takes the class of the cycle before, when the layer's core last ran.

So ``busy + stalled + starved`` is the top-level ``busy`` for each layer, and in a back-to-back run the
slowest layer is the one that is busy nearly all the time. A beat with ``k`` spikes keeps a dense layer
``k · ceil(out / lanes)`` cycles, so a layer's busy cycles per sample are about the cycle model's
accumulate cycles plus its fire sweep, less the part of the two that overlap (two membrane banks).

The counters are 32 bits and stop at their maximum rather than wrap. What they watch (samples inside the
accelerator, samples held by each layer) is tracked all the time, also while the counters are cleared or
held still for a reading.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .link import COUNTER_NAMES, LAYER_COUNTER_NAMES, counter_layout
from spikeforge.hdl.top import StageProbeLayout

__all__ = ["PerformanceCounters"]

WIDTH = 32
#: Samples a layer may hold between its last input beat and its last output beat (two banks: one firing,
#: one waiting to hand over, one whose last beat waits in the output register): room to spare.
_HELD = 8


class PerformanceCounters(wiring.Component):
    """Cycle counters over the accelerator's stream handshakes (and, with ``layers``, its layers').

    Parameters
    ----------
    layers : int
        Layers to count (0: the top level only); ``stages`` must then carry their probes.

    Members
    -------
    pixel_valid, pixel_ready, pixel_last : In(1)
        The accelerator's ``pixels`` handshake and the ``last`` bit of its payload.
    result_valid, result_ready : In(1)
        The accelerator's ``results`` handshake.
    stages : In(ArrayLayout(StageProbeLayout, layers))
        Each layer's handshakes (only with ``layers`` > 0).
    clear : In(1)
        Restart all counters (they start again at the next pixel taken).
    freeze : In(1)
        Hold every value (while the link sends them).
    values : Out(counter_layout(layers))
        The counters (:data:`~.link.COUNTER_NAMES`, then :data:`~.link.LAYER_COUNTER_NAMES` per layer).
    """

    def __init__(self, layers: int = 0):
        self.layers = layers
        members = {"pixel_valid": In(1), "pixel_ready": In(1), "pixel_last": In(1),
                   "result_valid": In(1), "result_ready": In(1), "clear": In(1), "freeze": In(1),
                   "values": Out(counter_layout(layers))}
        if layers:
            members["stages"] = In(data.ArrayLayout(StageProbeLayout, layers))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        top = (1 << WIDTH) - 1
        started = Signal()
        cycle = Signal(WIDTH)
        inside = Signal(16)             # samples whose last pixel went in and whose result did not come out
        mid_sample = Signal()           # some pixels of the next sample went in
        pixel_taken = self.pixel_valid & self.pixel_ready
        result_taken = self.result_valid & self.result_ready
        values = self.values
        busy = Signal()                 # a sample inside the accelerator, since the first pixel after the clear
        m.d.comb += busy.eq(started & ((inside != 0) | mid_sample))

        def bump(counter):
            m.d.sync += counter.eq(counter + (counter != top))

        # What the counters watch is tracked whatever they do.
        with m.If(pixel_taken):
            m.d.sync += mid_sample.eq(~self.pixel_last)
        m.d.sync += inside.eq(inside + (pixel_taken & self.pixel_last) - result_taken)
        kinds = []                      # per layer: (stalled, starved) this cycle
        for index in range(self.layers):
            probe = self.stages[index]
            held = Signal(range(_HELD), name=f"held{index}")
            took_last = probe.in_valid & probe.in_ready & probe.in_last
            gave_last = probe.out_valid & probe.out_ready & probe.out_last
            m.d.sync += held.eq(held + took_last - gave_last)
            stalled, starved = Signal(name=f"stalled{index}"), Signal(name=f"starved{index}")
            seen_stalled = probe.out_valid & ~probe.out_ready
            seen_starved = ~seen_stalled & probe.in_ready & ~probe.in_valid & (held == 0)
            # A gated cycle (a half-rate layer's core idle, its handshakes held off) repeats the class of the last
            # cycle the core ran.
            was_stalled, was_starved = Signal(name=f"was_stalled{index}"), Signal(name=f"was_starved{index}")
            with m.If(~probe.gated):
                m.d.sync += [was_stalled.eq(seen_stalled), was_starved.eq(seen_starved)]
            m.d.comb += [stalled.eq(Mux(probe.gated, was_stalled, seen_stalled)),
                         starved.eq(Mux(probe.gated, was_starved, seen_starved))]
            kinds.append((stalled, starved))

        with m.If(self.clear):
            m.d.sync += [started.eq(0), cycle.eq(0)]
            m.d.sync += [values[name].eq(0) for name in COUNTER_NAMES]
            m.d.sync += [values.layers[i][name].eq(0) for i in range(self.layers) for name in LAYER_COUNTER_NAMES]
        with m.Elif(~self.freeze):
            now = cycle
            with m.If(started):
                bump(cycle)
            with m.Elif(pixel_taken):
                m.d.sync += [started.eq(1), cycle.eq(1)]
            with m.If(result_taken):
                bump(values.samples)
                m.d.sync += values.last_result.eq(now)
                with m.If(values.samples == 0):
                    m.d.sync += values.first_result.eq(now)
            with m.If(busy):
                bump(values.busy)
                for index, (stalled, starved) in enumerate(kinds):
                    counters = values.layers[index]
                    with m.If(stalled):
                        bump(counters.stalled)
                    with m.Elif(starved):
                        bump(counters.starved)
                    with m.Else():
                        bump(counters.busy)
            with m.If(self.pixel_valid & ~self.pixel_ready):
                bump(values.input_stall)
            with m.If(self.result_valid & ~self.result_ready):
                bump(values.output_stall)
        return m
