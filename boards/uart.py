"""A small 8N1 UART with stream interfaces (the Amaranth stdio package is not released).

* :class:`UARTReceiver`: the ``rx`` line in, received bytes out as a ``stream.Signature(8)``.
  The line is synchronised (two flip-flops), a start bit is recognised on a falling edge and checked
  again half a bit later (glitch filter), every bit is sampled at its middle, and a byte whose stop
  bit is low is dropped (``framing_error`` pulses). A byte that the consumer has not taken by the
  time the next one is complete is overwritten (``overrun`` pulses): size the consumer or put a FIFO
  behind the receiver.
* :class:`UARTTransmitter`: bytes in as a ``stream.Signature(8)``, the ``tx`` line out (idle high).

Both count ``divisor = round(clk_freq / baud)`` clock cycles per bit; :func:`baud_divisor` checks
that the rounding error is small enough for the link to work (sampling in the middle of each bit
tolerates a combined clock mismatch of about ±4 % over a 10-bit frame; we allow 2 % for ourselves).
"""


from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out
from spikeforge.ir.errors import InputError

__all__ = ["BaudError", "baud_divisor", "UARTReceiver", "UARTTransmitter"]

#: The largest relative error between the requested and the achieved baud rate we accept.
MAX_BAUD_ERROR = 0.02
#: Fewer clock cycles per bit than this leave no room to find the middle of a bit.
MIN_DIVISOR = 4


class BaudError(InputError):
    """A baud rate that the clock cannot produce accurately enough."""


def baud_divisor(clk_freq: float, baud: int) -> int:
    """Clock cycles per bit for ``baud`` at ``clk_freq`` Hz.

    Raises
    ------
    BaudError
        If the divisor is below :data:`MIN_DIVISOR` or the achieved rate is off by more than
        :data:`MAX_BAUD_ERROR`.
    """
    if not (isinstance(baud, int) and baud > 0):
        raise BaudError(f"baud rate {baud!r} is not a positive integer")
    divisor = round(clk_freq / baud)
    if divisor < MIN_DIVISOR:
        raise BaudError(f"baud rate {baud} is too high for a {clk_freq / 1e6:g} MHz clock "
                        f"(at most {int(clk_freq // MIN_DIVISOR)} baud: {MIN_DIVISOR} clock cycles per bit)")
    achieved = clk_freq / divisor
    error = abs(achieved - baud) / baud
    if error > MAX_BAUD_ERROR:
        raise BaudError(f"baud rate {baud} cannot be made from a {clk_freq / 1e6:g} MHz clock: the nearest is "
                        f"{achieved:.0f} baud ({error:.1%} off, at most {MAX_BAUD_ERROR:.0%} allowed)")
    return divisor


class UARTReceiver(wiring.Component):
    """8N1 receiver.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (see :func:`baud_divisor`).

    Members
    -------
    rx : In(1)
        The serial line (asynchronous; idle high).
    data : Out(stream.Signature(8))
        Received bytes; ``valid`` stays high until ``ready``.
    framing_error : Out(1)
        Pulses for one cycle when a byte is dropped because its stop bit was low.
    overrun : Out(1)
        Pulses for one cycle when a byte replaces one the consumer had not taken.
    """

    rx: In(1, init=1)
    data: Out(stream.Signature(8))
    framing_error: Out(1)
    overrun: Out(1)

    def __init__(self, divisor: int):
        if not (isinstance(divisor, int) and divisor >= MIN_DIVISOR):
            raise BaudError(f"divisor {divisor!r} must be an integer >= {MIN_DIVISOR}")
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        line = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, line, init=1)

        timer = Signal(range(self.divisor))
        bit = Signal(range(10))
        shift = Signal(8)

        with m.If(self.data.ready):
            m.d.sync += self.data.valid.eq(0)
        m.d.sync += [self.framing_error.eq(0), self.overrun.eq(0)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq(self.divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(line):                          # a glitch, not a start bit
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [timer.eq(self.divisor - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [timer.eq(self.divisor - 1), shift.eq((shift >> 1) | (line << 7)),
                                 bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    with m.If(line):
                        m.d.sync += [self.data.payload.eq(shift), self.data.valid.eq(1)]
                        m.d.sync += self.overrun.eq(self.data.valid & ~self.data.ready)
                    with m.Else():
                        m.d.sync += self.framing_error.eq(1)
                    # Resynchronise on the next falling edge; a low stop bit (break) waits for idle.
                    with m.If(line):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        return m


class UARTTransmitter(wiring.Component):
    """8N1 transmitter.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (see :func:`baud_divisor`).

    Members
    -------
    data : In(stream.Signature(8))
        Bytes to send, least significant bit first.
    tx : Out(1)
        The serial line (idle high).
    busy : Out(1)
        High while a byte is being shifted out.
    """

    data: In(stream.Signature(8))
    tx: Out(1, init=1)
    busy: Out(1)

    def __init__(self, divisor: int):
        if not (isinstance(divisor, int) and divisor >= MIN_DIVISOR):
            raise BaudError(f"divisor {divisor!r} must be an integer >= {MIN_DIVISOR}")
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.divisor))
        # start bit, 8 data bits, stop bit: shifted out LSB first
        frame = Signal(10, init=0x3FF)
        bits_left = Signal(range(11))

        m.d.comb += [self.tx.eq(frame[0]), self.busy.eq(bits_left != 0)]
        m.d.comb += self.data.ready.eq(bits_left == 0)
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += [frame.eq((1 << 9) | (self.data.payload << 1)), bits_left.eq(10),
                         timer.eq(self.divisor - 1)]
        with m.Elif(bits_left != 0):
            with m.If(timer != 0):
                m.d.sync += timer.eq(timer - 1)
            with m.Else():
                m.d.sync += [frame.eq((frame >> 1) | (1 << 9)), bits_left.eq(bits_left - 1),
                             timer.eq(self.divisor - 1)]
        return m
