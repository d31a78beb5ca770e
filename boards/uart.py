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
At the smallest divisor (:data:`MIN_DIVISOR` = 4 cycles per bit) the sample lands 2-3 cycles into a
4-cycle bit (the edge is seen to within a cycle), which still leaves ±2.6 % over a frame.

The board's own default (:func:`board_baud`) is the fastest rate its USB-serial bridge makes that the
FPGA clock also makes to within :data:`BOARD_BAUD_ERROR`: FTDI bridges divide a base clock by
``n + k/8`` (n >= 2), or by 1 and 1.5 (FTDI AN232B-05, "Configuring FT232R, FT2232 and FT232B Baud
Rates"; the FT231X datasheet's 3 Mbaud and the FT2232H datasheet's 12 Mbaud are ``base / 1``).
"""


from dataclasses import dataclass

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out
from spikeforge.ir.errors import InputError

__all__ = ["BaudError", "baud_divisor", "UARTReceiver", "UARTTransmitter", "USBBridge", "BRIDGES",
           "BOARD_BRIDGES", "board_baud", "FALLBACK_BAUD",
           "receiver_tolerance", "allowed_error"]

#: The largest relative error between the requested and the achieved baud rate we accept.
MAX_BAUD_ERROR = 0.02
#: Fewer clock cycles per bit than this leave no room to find the middle of a bit.
MIN_DIVISOR = 4


#: The default on a board without a known USB bridge.
FALLBACK_BAUD = 115200


def receiver_tolerance(divisor: int) -> float:
    """The rate mismatch :class:`UARTReceiver` survives at ``divisor``: its sample lands within a cycle
    of a bit's middle, and the stop bit's sample (9.5 bits in) must stay inside the stop bit."""
    return (0.5 - 1 / divisor) / 9.5


def allowed_error(divisor: int) -> float:
    """How far our rate may be from the requested one: half of :func:`receiver_tolerance` (the other
    half is the far end's), at most :data:`MAX_BAUD_ERROR`. 1.3 % at 4 cycles per bit."""
    return min(MAX_BAUD_ERROR, receiver_tolerance(divisor) / 2)


class BaudError(InputError):
    """A baud rate that the clock cannot produce accurately enough."""


@dataclass(frozen=True)
class USBBridge:
    """A USB-serial bridge: ``name``, and its ``base`` rate (the fastest; FTDI: 3 MHz or 12 MHz)."""
    name: str
    base: int

    def rates(self, slowest: int = FALLBACK_BAUD) -> list:
        """The integer baud rates it makes, fastest first, down to ``slowest``."""
        rates = {self.base, self.base * 2 // 3}
        eighths = 16
        while self.base * 8 // eighths >= slowest:
            if (self.base * 8) % eighths == 0:
                rates.add(self.base * 8 // eighths)
            eighths += 1
        return sorted((r for r in rates if r >= slowest), reverse=True)


BRIDGES = {"FT231X": USBBridge("FT231X", 3_000_000), "FT2232H": USBBridge("FT2232H", 12_000_000)}
#: The bridge on each amaranth-boards platform class we know (the ULX3S variants share the FT231X).
BOARD_BRIDGES = {"ICEBreakerPlatform": "FT2232H", "ULX3S_12F_Platform": "FT231X", "ULX3S_25F_Platform": "FT231X",
                 "ULX3S_45F_Platform": "FT231X", "ULX3S_85F_Platform": "FT231X"}


def board_baud(board: str, clk_freq: float) -> int:
    """The default baud rate of ``board`` (a platform class name) when its logic runs at ``clk_freq`` Hz.

    The fastest rate the board's USB bridge makes that the clock divides into at least
    :data:`MIN_DIVISOR` cycles per bit, within :func:`allowed_error`; :data:`FALLBACK_BAUD`
    on a board whose bridge is not known.

    Raises
    ------
    BaudError
        If not even the slowest rate can be made (a clock below ``4 * 115200`` Hz).
    """
    bridge = BRIDGES.get(BOARD_BRIDGES.get(board, ""))
    rates = bridge.rates() if bridge else [FALLBACK_BAUD]
    for rate in rates:
        divisor = round(clk_freq / rate)
        if divisor >= MIN_DIVISOR and abs(clk_freq / divisor - rate) / rate <= allowed_error(divisor):
            return rate
    raise BaudError(f"no baud rate {'of the ' + bridge.name + ' ' if bridge else ''}from {rates[0]} down to "
                    f"{rates[-1]} can be made from a {clk_freq / 1e6:g} MHz clock (at least {MIN_DIVISOR} clock "
                    f"cycles per bit, at most {MAX_BAUD_ERROR:.0%} off)")


def baud_divisor(clk_freq: float, baud: int) -> int:
    """Clock cycles per bit for ``baud`` at ``clk_freq`` Hz.

    Raises
    ------
    BaudError
        If the divisor is below :data:`MIN_DIVISOR` or the achieved rate is off by more than
        :func:`allowed_error` (:data:`MAX_BAUD_ERROR` at most).
    """
    if not (isinstance(baud, int) and baud > 0):
        raise BaudError(f"baud rate {baud!r} is not a positive integer")
    divisor = round(clk_freq / baud)
    if divisor < MIN_DIVISOR:
        raise BaudError(f"baud rate {baud} is too high for a {clk_freq / 1e6:g} MHz clock "
                        f"(at most {int(clk_freq // MIN_DIVISOR)} baud: {MIN_DIVISOR} clock cycles per bit)")
    achieved = clk_freq / divisor
    error = abs(achieved - baud) / baud
    if error > allowed_error(divisor):
        raise BaudError(f"baud rate {baud} cannot be made from a {clk_freq / 1e6:g} MHz clock: the nearest is "
                        f"{achieved:.0f} baud ({error:.1%} off, at most {allowed_error(divisor):.1%} allowed at "
                        f"{divisor} clock cycles per bit)")
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
