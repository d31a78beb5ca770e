"""The accelerator behind a UART: the design that goes on a board (and into the simulated board).

:class:`SerialAccelerator` is platform-independent (ports ``rx``, ``tx``, ``leds``): it is what the
cocotb simulated board runs. :class:`BoardTop` puts it on an amaranth-boards platform: it requests
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

from .link import LinkConfig, LinkReceiver, LinkTransmitter, SlipDecoder, SlipEncoder, TagLayout
from .uart import UARTReceiver, UARTTransmitter, baud_divisor
from spikeforge.ir.errors import InputError

__all__ = ["result_layout_of", "pixel_layout_of", "link_config_for", "SerialAccelerator", "BoardTop",
           "count_leds"]

DEFAULT_TIMEOUT_S = 0.05


def result_layout_of(accelerator):
    """The payload layout of an accelerator's ``results`` stream."""
    return accelerator.signature.members["results"].signature.members["payload"].shape


def pixel_layout_of(accelerator):
    """The payload layout of an accelerator's ``pixels`` stream."""
    return accelerator.signature.members["pixels"].signature.members["payload"].shape


def link_config_for(accelerator, *, in_features: int, timesteps: int, clk_freq: float, baud: int,
                    scores: bool = True) -> LinkConfig:
    """The :class:`LinkConfig` of a board built around ``accelerator``."""
    layout = data.Layout.cast(result_layout_of(accelerator))
    score_array = data.Layout.cast(layout["scores"].shape)
    return LinkConfig(in_features=in_features, classes=score_array.length,
                      score_bits=score_array.elem_shape.width, scores=scores, timesteps=timesteps,
                      baud=baud, clk_freq=int(round(clk_freq)))


def _connect_fifo_in(m, producer, buffer):
    m.d.comb += [buffer.w_data.eq(producer.payload), buffer.w_en.eq(producer.valid),
                 producer.ready.eq(buffer.w_rdy)]


def _connect_fifo_out(m, buffer, consumer):
    m.d.comb += [consumer.payload.eq(buffer.r_data), consumer.valid.eq(buffer.r_rdy),
                 buffer.r_en.eq(consumer.ready)]


class SerialAccelerator(wiring.Component):
    """An accelerator with the serial link around it.

    Parameters
    ----------
    accelerator : wiring.Component
        Has ``pixels`` (In stream of ``{data: 8, last: 1}``) and ``results`` (Out stream of
        ``{label, scores}``), DESIGN.md §3.
    config : LinkConfig
        See :func:`link_config_for`; ``config.baud`` and ``config.clk_freq`` set the bit timing.
    timeout_cycles : int, optional
        Mid-frame silence that closes a frame as ``TIMEOUT``; default 50 ms of ``clk_freq``.
    led_count : int
        Width of ``leds`` (at least 2).
    rx_fifo_depth, tag_fifo_depth : int
        Bytes buffered between the UART and the link; answers in flight.

    Members
    -------
    rx : In(1)
        UART receive line (from the host).
    tx : Out(1)
        UART transmit line (to the host).
    leds : Out(led_count)
        Status LEDs, active high (see the module docstring).
    """

    def __init__(self, accelerator, config: LinkConfig, *, timeout_cycles: int | None = None,
                 led_count: int = 2, rx_fifo_depth: int = 16, tag_fifo_depth: int = 4,
                 divisor: int | None = None):
        if led_count < 2:
            raise InputError(f"led_count {led_count} must be >= 2")
        self.accelerator = accelerator
        self.config = config
        self.divisor = divisor if divisor is not None else baud_divisor(config.clk_freq, config.baud)
        self.timeout_cycles = timeout_cycles if timeout_cycles is not None \
            else int(config.clk_freq * DEFAULT_TIMEOUT_S)
        self.rx_fifo_depth = rx_fifo_depth
        self.tag_fifo_depth = tag_fifo_depth
        self.led_count = led_count
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "leds": Out(led_count)})

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        m.submodules.accelerator = accelerator = self.accelerator
        m.submodules.uart_rx = uart_rx = UARTReceiver(self.divisor)
        m.submodules.uart_tx = uart_tx = UARTTransmitter(self.divisor)
        m.submodules.rx_fifo = rx_fifo = fifo.SyncFIFOBuffered(width=8, depth=self.rx_fifo_depth)
        m.submodules.slip_decoder = slip_decoder = SlipDecoder()
        m.submodules.receiver = receiver = LinkReceiver(cfg.in_features, self.timeout_cycles,
                                                          pixel_shape=pixel_layout_of(accelerator))
        m.submodules.tag_fifo = tag_fifo = fifo.SyncFIFOBuffered(width=TagLayout.size, depth=self.tag_fifo_depth)
        m.submodules.transmitter = transmitter = LinkTransmitter(cfg, result_layout_of(accelerator))
        m.submodules.slip_encoder = slip_encoder = SlipEncoder()

        m.d.comb += uart_rx.rx.eq(self.rx)
        _connect_fifo_in(m, uart_rx.data, rx_fifo)
        _connect_fifo_out(m, rx_fifo, slip_decoder.line)
        wiring.connect(m, producer=slip_decoder.decoded, consumer=receiver.decoded)
        wiring.connect(m, producer=receiver.pixels, consumer=accelerator.pixels)
        _connect_fifo_in(m, receiver.tags, tag_fifo)
        _connect_fifo_out(m, tag_fifo, transmitter.tags)
        wiring.connect(m, producer=accelerator.results, consumer=transmitter.results)
        wiring.connect(m, producer=transmitter.raw, consumer=slip_encoder.raw)
        wiring.connect(m, producer=slip_encoder.line, consumer=uart_tx.data)
        m.d.comb += self.tx.eq(uart_tx.tx)

        stretch = max(2, int(cfg.clk_freq // 20))
        activity = Signal(range(stretch + 1))
        with m.If(transmitter.answered):
            m.d.sync += activity.eq(stretch)
        with m.Elif(activity != 0):
            m.d.sync += activity.eq(activity - 1)
        m.d.comb += [self.leds[0].eq(transmitter.error), self.leds[1].eq(activity != 0)]
        for i in range(2, self.led_count):
            if i - 2 < 8:
                m.d.comb += self.leds[i].eq(transmitter.label[i - 2])
        return m


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
