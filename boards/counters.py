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

The counters are 32 bits and stop at their maximum rather than wrap. Per-layer counters would need
signals from inside the accelerator; these are the top level's.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .link import COUNTER_NAMES, CounterLayout

__all__ = ["PerformanceCounters"]

WIDTH = 32


class PerformanceCounters(wiring.Component):
    """Cycle counters over the accelerator's stream handshakes.

    Members
    -------
    pixel_valid, pixel_ready, pixel_last : In(1)
        The accelerator's ``pixels`` handshake and the ``last`` bit of its payload.
    result_valid, result_ready : In(1)
        The accelerator's ``results`` handshake.
    clear : In(1)
        Restart all counters (they start again at the next pixel taken).
    freeze : In(1)
        Hold every value (while the link sends them).
    values : Out(CounterLayout)
        The counters (:data:`~.link.COUNTER_NAMES`).
    """

    pixel_valid: In(1)
    pixel_ready: In(1)
    pixel_last: In(1)
    result_valid: In(1)
    result_ready: In(1)
    clear: In(1)
    freeze: In(1)
    values: Out(CounterLayout)

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

        def bump(counter):
            m.d.sync += counter.eq(counter + (counter != top))

        with m.If(self.clear):
            m.d.sync += [started.eq(0), cycle.eq(0), inside.eq(0), mid_sample.eq(0)]
            m.d.sync += [values[name].eq(0) for name in COUNTER_NAMES]
        with m.Elif(~self.freeze):
            now = cycle
            with m.If(started):
                bump(cycle)
            with m.Elif(pixel_taken):
                m.d.sync += [started.eq(1), cycle.eq(1)]
            with m.If(pixel_taken):
                m.d.sync += mid_sample.eq(~self.pixel_last)
            m.d.sync += inside.eq(inside + (pixel_taken & self.pixel_last) - result_taken)
            with m.If(result_taken):
                bump(values.samples)
                m.d.sync += values.last_result.eq(now)
                with m.If(values.samples == 0):
                    m.d.sync += values.first_result.eq(now)
            with m.If(started & ((inside != 0) | mid_sample)):
                bump(values.busy)
            with m.If(self.pixel_valid & ~self.pixel_ready):
                bump(values.input_stall)
            with m.If(self.result_valid & ~self.result_ready):
                bump(values.output_stall)
        return m
