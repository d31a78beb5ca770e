"""The accelerator behind its serial link: the platform-independent part of a board design.

:class:`SerialAccelerator` (ports ``rx``, ``tx``, ``leds``) is what the cocotb simulated board runs
and what :class:`~.top.BoardTop` puts on a board. Data path::

    rx ─ UARTReceiver ─ FIFO ─ SlipDecoder ─ LinkReceiver ─ CodeUnpacker ─ BatchBuffer ─ pixels ─▶ Accelerator
                                                  │ tags                      │ tags (FIFO)          │ results (FIFO)
    tx ◀ UARTTransmitter ◀ SlipEncoder ◀──── LinkTransmitter ◀────────────────┴──────────────────────┘
                                                  ▲ counters: PerformanceCounters (the accelerator's handshakes,
                                                                and each layer's: Accelerator.stage_probes)

LEDs (as many as the board has, in this order): 0 = the last answered sample had an error,
1 = activity (lit for 1/20 s after each answer), 2.. = the low bits of the last label.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .batch import BatchBuffer
from .counters import PerformanceCounters
from .leds import PulseStretcher
from .link import (MAX_CODE_BITS, CodeUnpacker, LinkConfig, LinkReceiver, LinkTransmitter, SlipDecoder,
                   SlipEncoder, PixelBeatLayout, TagLayout, representatives_of)
from .uart import UARTReceiver, UARTTransmitter, baud_divisor
from spikeforge.hdl.fifo import StreamFIFO
from spikeforge.ir.errors import InputError

__all__ = ["result_layout_of", "pixel_layout_of", "link_config_for", "SerialAccelerator", "DEFAULT_TIMEOUT_S",
           "batch_memories", "link_fifo_memories", "default_batch_depth", "MAX_DEFAULT_BATCH_DEPTH"]

DEFAULT_TIMEOUT_S = 0.05
#: Entries of the register stage after the unpacker, before the batch buffer or the accelerator (a buffered
#: FIFO: registered both ways, one pixel a cycle).
PIXEL_STAGE_DEPTH = 4


def result_layout_of(accelerator):
    """The payload layout of an accelerator's ``results`` stream."""
    return accelerator.signature.members["results"].signature.members["payload"].shape


def pixel_layout_of(accelerator):
    """The payload layout of an accelerator's ``pixels`` stream."""
    return accelerator.signature.members["pixels"].signature.members["payload"].shape


def link_config_for(accelerator, *, in_features: int, timesteps: int, clk_freq: float, baud: int,
                    scores: bool = True, batch_depth: int = 0, input_lut=None, compact: bool = True,
                    layer_counters: bool = True) -> LinkConfig:
    """The :class:`LinkConfig` of a board built around ``accelerator``.

    The compact mode is offered when ``compact`` and the input LUT (``input_lut``, else the
    accelerator's ``plan.input_lut``) is monotonic with ``timesteps`` <= 4. With ``layer_counters`` an
    accelerator that shows its layers' handshakes (:meth:`~spikeforge.hdl.top.Accelerator.stage_probes`)
    gets per-layer counters (``counted_layers``: its plan's layers).
    """
    layout = data.Layout.cast(result_layout_of(accelerator))
    score_array = data.Layout.cast(layout["scores"].shape)
    if input_lut is None and getattr(accelerator, "plan", None) is not None:
        input_lut = accelerator.plan.input_lut
    representatives = representatives_of(input_lut) if input_lut is not None and compact else None
    code_bits = timesteps if representatives and 1 <= timesteps <= MAX_CODE_BITS else 0
    counted = len(accelerator.plan.layers) if layer_counters and hasattr(accelerator, "stage_probes") else 0
    return LinkConfig(in_features=in_features, classes=score_array.length,
                      score_bits=score_array.elem_shape.width, scores=scores, timesteps=timesteps,
                      baud=baud, clk_freq=int(round(clk_freq)), batch_depth=batch_depth, code_bits=code_bits,
                      representatives=representatives if code_bits else (), counted_layers=counted)


def batch_memories(in_features: int, result_bits: int, depth: int) -> dict:
    """The memories a batch buffer of ``depth`` samples adds to a board, ``name -> (width, words)``: the
    sample buffer (:class:`~.batch.BatchBuffer`, one byte a pixel) and the result FIFO that holds a batch's
    results while the link sends them (a ``SyncFIFOBuffered`` of ``depth``: ``depth - 1`` words in memory,
    one in its output register). Empty for ``depth`` 0."""
    if not depth:
        return {}
    return {"batch": (8, depth * in_features), "results": (result_bits, max(2, depth) - 1)}


#: The link's FIFO depths by default (:class:`SerialAccelerator`): bytes from the UART, answer tags in flight.
RX_FIFO_DEPTH = 16
TAG_FIFO_DEPTH = 4


def link_fifo_memories(rx_fifo_depth: int = RX_FIFO_DEPTH, tag_fifo_depth: int = TAG_FIFO_DEPTH) -> dict:
    """The memories of the link's own FIFOs (:class:`SerialAccelerator`'s defaults), ``name -> (width, words)``:
    received bytes and answer tags (a ``SyncFIFOBuffered`` keeps one word in its output register)."""
    return {"rx_fifo": (8, rx_fifo_depth - 1), "tag_fifo": (TagLayout.size, tag_fifo_depth - 1)}


#: The largest batch buffer a build picks by itself (a batch of 64 already hides the link's latency).
MAX_DEFAULT_BATCH_DEPTH = 64


def default_batch_depth(largest: int) -> int:
    """The batch buffer a board build gets by itself when at most ``largest`` samples fit its spare block
    RAM: that many, at most :data:`MAX_DEFAULT_BATCH_DEPTH`; 0 (no batch mode) below 2 samples."""
    depth = min(MAX_DEFAULT_BATCH_DEPTH, max(0, largest))
    return depth if depth >= 2 else 0


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
        See :func:`link_config_for`; ``config.baud`` and ``config.clk_freq`` set the bit timing,
        ``config.batch_depth`` the batch buffer (0: none), ``config.code_bits`` the compact mode.
    timeout_cycles : int, optional
        Mid-frame silence that closes a frame as ``TIMEOUT``; default 50 ms of ``clk_freq``.
    led_count : int
        Width of ``leds`` (at least 2).
    rx_fifo_depth, tag_fifo_depth : int
        Bytes buffered between the UART and the link; answers in flight.
    result_depth : int, optional
        Results buffered between the accelerator and the link (default ``config.batch_depth``, so a
        batch runs without waiting for the link; 0: none).
    divisor : int, optional
        Clock cycles per bit (default from ``config``; the simulated board sets its own).

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
                 led_count: int = 2, rx_fifo_depth: int = RX_FIFO_DEPTH, tag_fifo_depth: int = TAG_FIFO_DEPTH,
                 result_depth: int | None = None, divisor: int | None = None):
        if led_count < 2:
            raise InputError(f"led_count {led_count} must be >= 2")
        self.accelerator = accelerator
        self.config = config
        self.divisor = divisor if divisor is not None else baud_divisor(config.clk_freq, config.baud)
        self.timeout_cycles = timeout_cycles if timeout_cycles is not None \
            else int(config.clk_freq * DEFAULT_TIMEOUT_S)
        self.rx_fifo_depth = rx_fifo_depth
        self.tag_fifo_depth = tag_fifo_depth
        self.result_depth = config.batch_depth if result_depth is None else result_depth
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
                                                        batch_depth=cfg.batch_depth, code_bits=cfg.code_bits)
        m.submodules.unpacker = unpacker = CodeUnpacker(cfg.in_features, cfg.code_bits, cfg.representatives)
        m.submodules.tag_fifo = tag_fifo = fifo.SyncFIFOBuffered(width=TagLayout.size, depth=self.tag_fifo_depth)
        m.submodules.transmitter = transmitter = LinkTransmitter(cfg, result_layout_of(accelerator))
        m.submodules.slip_encoder = slip_encoder = SlipEncoder()
        m.submodules.counters = counters = PerformanceCounters(cfg.counted_layers)
        if cfg.counted_layers:
            probes = accelerator.stage_probes()
            if len(probes) != cfg.counted_layers:
                raise InputError(f"the link counts {cfg.counted_layers} layers, the accelerator has {len(probes)}")
            m.d.comb += [counters.stages[i].eq(probe) for i, probe in enumerate(probes)]

        m.d.comb += uart_rx.rx.eq(self.rx)
        _connect_fifo_in(m, uart_rx.data, rx_fifo)
        _connect_fifo_out(m, rx_fifo, slip_decoder.line)
        wiring.connect(m, producer=slip_decoder.decoded, consumer=receiver.decoded)
        wiring.connect(m, producer=receiver.bytes, consumer=unpacker.bytes)
        # The unpacker's pixels go through a stage registered in both directions before the batch buffer
        # or the accelerator: without it the unpacker's code-to-byte pass ran combinationally into the
        # encoder and the performance counters (86.8 MHz on the ULX3S board), or into the batch buffer's
        # block RAM write port (91.7 MHz).
        m.submodules.pixel_stage = stage = StreamFIFO(PixelBeatLayout, PIXEL_STAGE_DEPTH)
        wiring.connect(m, producer=unpacker.pixels, consumer=stage.w)
        if cfg.batch_depth:
            m.submodules.batch = batch = BatchBuffer(cfg.in_features, cfg.batch_depth,
                                                     pixel_shape=pixel_layout_of(accelerator))
            wiring.connect(m, producer=stage.r, consumer=batch.beats)
            wiring.connect(m, producer=batch.pixels, consumer=accelerator.pixels)
            # A batch's tag starts its replay, so it waits until the batch's last pixels are out of the
            # stage and written (the tag comes after the frame's CRC byte, so it never waits long).
            tags_in = batch.tags_in
            m.d.comb += [tags_in.payload.eq(receiver.tags.payload),
                         tags_in.valid.eq(receiver.tags.valid & (stage.level == 0)),
                         receiver.tags.ready.eq(tags_in.ready & (stage.level == 0))]
            _connect_fifo_in(m, batch.tags_out, tag_fifo)
        else:
            m.d.comb += [accelerator.pixels.valid.eq(stage.r.valid),
                         accelerator.pixels.payload.data.eq(stage.r.payload.data),
                         accelerator.pixels.payload.last.eq(stage.r.payload.last),
                         stage.r.ready.eq(accelerator.pixels.ready)]
            _connect_fifo_in(m, receiver.tags, tag_fifo)
        _connect_fifo_out(m, tag_fifo, transmitter.tags)
        if self.result_depth:
            results = result_layout_of(accelerator)
            m.submodules.result_fifo = result_fifo = fifo.SyncFIFOBuffered(
                width=data.Layout.cast(results).size, depth=max(2, self.result_depth))
            _connect_fifo_in(m, accelerator.results, result_fifo)
            _connect_fifo_out(m, result_fifo, transmitter.results)
        else:
            wiring.connect(m, producer=accelerator.results, consumer=transmitter.results)
        wiring.connect(m, producer=transmitter.raw, consumer=slip_encoder.raw)
        wiring.connect(m, producer=slip_encoder.line, consumer=uart_tx.data)
        m.d.comb += self.tx.eq(uart_tx.tx)

        m.d.comb += [counters.pixel_valid.eq(accelerator.pixels.valid),
                     counters.pixel_ready.eq(accelerator.pixels.ready),
                     counters.pixel_last.eq(accelerator.pixels.payload.last),
                     counters.result_valid.eq(accelerator.results.valid),
                     counters.result_ready.eq(accelerator.results.ready),
                     counters.clear.eq(transmitter.clear_counters), counters.freeze.eq(transmitter.freeze_counters),
                     transmitter.counters.eq(counters.values)]

        m.submodules.activity = activity = PulseStretcher(max(1, int(cfg.clk_freq // 20)))
        m.d.comb += activity.trigger.eq(transmitter.answered)
        m.d.comb += [self.leds[0].eq(transmitter.error), self.leds[1].eq(activity.lit)]
        for i in range(2, self.led_count):
            if i - 2 < 8:
                m.d.comb += self.leds[i].eq(transmitter.label[i - 2])
        return m
