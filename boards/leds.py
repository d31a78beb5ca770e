"""What a board's LEDs show: :class:`PulseStretcher` keeps a one-cycle event visible to an eye."""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["PulseStretcher"]


class PulseStretcher(wiring.Component):
    """Lights ``lit`` for at least ``cycles`` clock cycles after each ``trigger`` (and less than
    2.2 times that: the tick is a power of two).

    A plain countdown of ``cycles`` (clk/20 for an activity LED: 20 bits at 24 MHz) is a wide
    decrement, a load and a zero test in series; on the iCEBreaker it was the board's slowest path
    (47 ns, 21 MHz). Here a free-running prescaler (an increment feeding only itself: one carry
    chain) ticks with its carry out every ``2^k`` cycles, and a 4-bit countdown counts
    :attr:`TICKS` - 1 ticks (the first may come a cycle after the trigger: at least ``TICKS - 2``
    whole ticks).

    Parameters
    ----------
    cycles : int
        The shortest time ``lit`` stays high after a trigger (>= 1).

    Members
    -------
    trigger : In(1)
        An event (high for a cycle, or longer: the time restarts while it is high).
    lit : Out(1)
        High from the cycle after a trigger until the time has passed.
    """

    TICKS = 16

    def __init__(self, cycles: int):
        if cycles < 1:
            raise ValueError(f"cycles {cycles} must be >= 1")
        self.tick_cycles = 1 << max(1, ceil_log2(-(-cycles // (self.TICKS - 2))))
        super().__init__({"trigger": In(1), "lit": Out(1)})

    def elaborate(self, platform):
        m = Module()
        prescaler = Signal(ceil_log2(self.tick_cycles))
        tick = Signal()
        remaining = Signal(range(self.TICKS))
        m.d.sync += Cat(prescaler, tick).eq(prescaler + 1)
        with m.If(self.trigger):
            m.d.sync += remaining.eq(self.TICKS - 1)
        with m.Elif(tick & (remaining != 0)):
            m.d.sync += remaining.eq(remaining - 1)
        m.d.comb += self.lit.eq(remaining != 0)
        return m
