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
from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.lib import data, fifo, io, wiring
from amaranth.lib.wiring import In, Out

# The link and the accelerator behind it live in .serial (the link's owner); they are re-exported here
# because a board design is where people look for them.
from .serial import DEFAULT_TIMEOUT_S, SerialAccelerator, link_config_for, pixel_layout_of, result_layout_of
from spikeforge.ir.errors import InputError

__all__ = ["result_layout_of", "pixel_layout_of", "link_config_for", "SerialAccelerator", "BoardTop",
           "count_leds", "DEFAULT_TIMEOUT_S"]


class BoardTop(Elaboratable):
    """A :class:`SerialAccelerator` on an amaranth-boards platform: UART 0, all ``led`` resources.

    The ``sync`` domain is the platform's default clock (the platform adds the power-on reset that
    iCE40 block RAMs need).
    """

    def __init__(self, serial: SerialAccelerator):
        self.serial = serial

    def elaborate(self, platform):
        m = Module()
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


def count_leds(platform) -> int:
    """How many ``led`` resources a platform has."""
    return sum(1 for resource in platform.resources if resource[0] == "led")
