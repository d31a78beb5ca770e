"""The accelerator behind a UART: the design that goes on a board (and into the simulated board).

:class:`SerialAccelerator` (in :mod:`.serial`, re-exported here) is platform-independent (ports
``rx``, ``tx``, ``leds``): it is what the cocotb simulated board runs. :class:`BoardTop` puts it on an amaranth-boards platform: it requests
the UART and the LEDs and drives the ``sync`` domain from the board clock, through a PLL when a
faster clock was asked for.

Data path::

    rx ─ UARTReceiver ─ FIFO ─ SlipDecoder ─ LinkReceiver ─ pixels ─▶ Accelerator
                                                   │ tags (FIFO)          │ results
    tx ◀ UARTTransmitter ◀ SlipEncoder ◀──── LinkTransmitter ◀────────────┘

LEDs (as many as the board has, in this order): 0 = the last answered sample had an error,
1 = activity (lit for 1/20 s after each answer), 2.. = the low bits of the last label.
"""

from __future__ import annotations

from amaranth.build import ResourceError
from amaranth.hdl import ClockDomain, Const, Elaboratable, Instance, Module, Signal
from amaranth.lib import data, fifo, io, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

# The link and the accelerator behind it live in .serial (the link's owner); they are re-exported here
# because a board design is where people look for them.
from .serial import DEFAULT_TIMEOUT_S, SerialAccelerator, link_config_for, pixel_layout_of, result_layout_of
from spikeforge.ir.errors import InputError

__all__ = ["result_layout_of", "pixel_layout_of", "link_config_for", "SerialAccelerator", "BoardTop",
           "count_leds", "DEFAULT_TIMEOUT_S"]


class BoardTop(Elaboratable):
    """A :class:`SerialAccelerator` on an amaranth-boards platform: UART 0, all ``led`` resources.

    Without ``pll`` the ``sync`` domain is the platform's default clock (the platform adds the
    power-on reset that iCE40 block RAMs need). With ``pll`` (:class:`~.pll.PLLSettings`, made for
    this board's oscillator) the board clock feeds the device PLL (ECP5 ``EHXPLLL``, iCE40
    ``SB_PLL40_PAD``) and ``sync`` runs at ``pll.output_hz``, constrained to that frequency for
    place and route. ``sync`` is held in reset until the PLL reports lock and for
    :meth:`reset_cycles` cycles after (15 µs: iCE40 block RAMs read zero for about 3 µs after
    configuration; the same margin as amaranth's own power-on reset); lock is lost -> reset again.
    ``serial`` must have been made for ``pll.output_hz`` (:func:`link_config_for` ``clk_freq``).
    ``constraint_hz`` (default ``pll.output_hz``) is the frequency the clock is constrained to: the
    build's clock search places and routes for its first, higher target while the PLL runs slower
    (nextpnr's placer works for the tighter goal; the timing report's Fmax is checked against the
    real clock).
    """

    #: Reset held after the PLL locks.
    RESET_SECONDS = 15e-6

    def __init__(self, serial: SerialAccelerator, pll=None, *, constraint_hz: float | None = None):
        self.serial = serial
        self.pll = pll
        self.constraint_hz = constraint_hz

    def reset_cycles(self) -> int:
        """Cycles of ``sync`` held in reset after the PLL locks."""
        return max(16, int(self.RESET_SECONDS * self.pll.output_hz)) if self.pll else 0

    def elaborate(self, platform):
        pll = self.pll
        if pll is not None and abs(platform.default_clk_frequency - pll.input_hz) > 1:
            raise InputError(f"the PLL settings are for a {pll.input_hz / 1e6:g} MHz input, the board clock "
                             f"{platform.default_clk!r} is {platform.default_clk_frequency / 1e6:g} MHz")
        m = Module()
        if pll is not None:
            self._clock_from_pll(m, platform)
        m.submodules.serial = serial = self.serial
        uart = platform.request("uart", 0, dir="-")     # every subsignal raw: the buffers are ours
        m.submodules.uart_rx_buffer = rx_buffer = io.Buffer("i", uart.rx)
        m.submodules.uart_tx_buffer = tx_buffer = io.Buffer("o", uart.tx)
        m.d.comb += [serial.rx.eq(rx_buffer.i), tx_buffer.o.eq(serial.tx)]
        for index in range(serial.led_count):
            try:
                led = platform.request("led", index, dir="-")
            except ResourceError:
                break
            m.submodules[f"led{index}_buffer"] = led_buffer = io.Buffer("o", led)
            m.d.comb += led_buffer.o.eq(serial.leds[index])
        return m

    def _clock_from_pll(self, m, platform):
        pll = self.pll
        clk_port = platform.request(platform.default_clk, dir="-")
        # ``keep``: yosys names the clock net after this signal (the one the constraint names).
        clock = Signal(name="pll_clk", attrs={"keep": 1})
        m.domains.sync = sync = ClockDomain("sync")
        m.d.comb += sync.clk.eq(clock)
        locked = Signal(name="pll_locked")
        if pll.family == "ice40":
            # The PAD variant takes the oscillator straight from its pin (the iCEBreaker's 12 MHz
            # input is a PLL pin): no input buffer.
            m.submodules.pll = Instance(
                "SB_PLL40_PAD", p_FEEDBACK_PATH="SIMPLE",
                p_DIVR=Const(pll.dividers["DIVR"], 4), p_DIVF=Const(pll.dividers["DIVF"], 7),
                p_DIVQ=Const(pll.dividers["DIVQ"], 3), p_FILTER_RANGE=Const(pll.dividers["FILTER_RANGE"], 3),
                i_PACKAGEPIN=clk_port.io, i_RESETB=Const(1), i_BYPASS=Const(0),
                o_PLLOUTGLOBAL=clock, o_LOCK=locked)
        elif pll.family == "ecp5":
            m.submodules.clk_buffer = clk_buffer = io.Buffer("i", clk_port)
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{pll.input_hz / 1e6:g}", a_FREQUENCY_PIN_CLKOP=f"{pll.output_hz / 1e6:.6g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
                p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD", p_CLKOP_ENABLE="ENABLED",
                p_CLKI_DIV=pll.dividers["CLKI_DIV"], p_CLKFB_DIV=pll.dividers["CLKFB_DIV"],
                p_CLKOP_DIV=pll.dividers["CLKOP_DIV"], p_CLKOP_CPHASE=pll.dividers["CLKOP_CPHASE"],
                p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
                i_CLKI=clk_buffer.i, i_CLKFB=clock, o_CLKOP=clock, o_LOCK=locked,
                i_RST=Const(0), i_STDBY=Const(0), i_PHASESEL0=Const(0), i_PHASESEL1=Const(0),
                i_PHASEDIR=Const(1), i_PHASESTEP=Const(1), i_PHASELOADREG=Const(1), i_PLLWAKESYNC=Const(0),
                i_ENCLKOP=Const(0))
        else:
            raise InputError(f"no PLL for FPGA family {pll.family!r}; supported: ice40, ecp5")
        platform.add_clock_constraint(clock, self.constraint_hz or pll.output_hz)

        # Power-on reset: a reset-less counter on the PLL clock, cleared while the PLL is not locked
        # (lock is asynchronous to it: two flip-flops first). It counts up because iCE40 flip-flops
        # cannot start at another value than zero.
        locked_sync = Signal()
        m.submodules.lock_synchronizer = FFSynchronizer(locked, locked_sync, o_domain="sync")
        delay = self.reset_cycles()
        timer = Signal(range(delay + 1), reset_less=True)
        with m.If(~locked_sync):
            m.d.sync += timer.eq(0)
        with m.Elif(timer != delay):
            m.d.sync += timer.eq(timer + 1)
        m.d.comb += sync.rst.eq(timer != delay)


def count_leds(platform) -> int:
    """How many ``led`` resources a platform has."""
    return sum(1 for resource in platform.resources if resource[0] == "led")
