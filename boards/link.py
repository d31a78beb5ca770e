"""The serial link between a host and the board: framing, its hardware, and its host-side codec.

Framing
=======

Both directions use SLIP byte stuffing (RFC 1055): a frame is sent as ``END payload END`` where
``END = 0xC0``; a payload byte ``0xC0`` is sent as ``ESC 0xDC`` and ``0xDB`` (``ESC``) as
``ESC 0xDD``. ``END`` therefore never occurs inside a frame, and a receiver that lost or gained a
byte is back in step at the next ``END``. Empty frames (``END END``) are ignored. Every payload ends
with a CRC-8 (polynomial 0x07, initial value 0, no reflection; "CRC-8/SMBUS") over the bytes before
it, except the one-byte info request.

Host -> board
-------------
``'S' seq pixel[0] .. pixel[N-1] crc``
    Classify one sample: ``seq`` is any byte (echoed back), ``pixel`` are the N raw input bytes
    (N = the network's ``in_features``, row-major). The pixels go to the accelerator as they arrive.
``'I'``
    Ask the board to describe itself (answered with an info frame).

Bytes of a frame that starts with anything else are ignored up to the next ``END``.

Board -> host
-------------
``'R' seq status label score[0] .. score[C-1] crc``
    One answer per sample frame, in order. ``status`` is one of :class:`Status`; ``label`` is the
    class index (argmax, lowest index on ties); each score is a little-endian two's-complement
    integer of ``score_bytes`` bytes, present only when the board was built with scores. When
    ``status`` is not ``OK`` the label and scores are meaningless and the host resends the sample.
``'I' 'SPKF' version in_features[2] classes score_bits score_bytes timesteps flags baud[4] clk[4] crc``
    The board description (multi-byte fields little-endian; ``flags`` bit 0: scores included).

Recovery
--------
* A lost byte inside a sample frame: the closing ``END`` comes early; the board completes the
  sample with zero pixels (the accelerator always sees whole samples) and answers ``SHORT``.
* An extra or corrupted byte: the CRC (or the length) does not match: ``BAD_CRC`` or ``LONG``.
* A lost ``END``: two frames merge into one ``LONG`` frame; the second sample gets no answer and the
  host resends it after its answer timeout.
* Nothing more arrives mid-frame for ``timeout`` seconds: the frame is closed as ``TIMEOUT``.

So every disturbance costs at most the samples whose frames it touched; the next frame is received
normally.
"""

import struct
from dataclasses import dataclass

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out
from spikeforge.ir.errors import ExternalToolError, InputError

__all__ = [
    "END", "ESC", "ESC_END", "ESC_ESC", "KIND_SAMPLE", "KIND_INFO", "KIND_RESULT", "MAGIC", "VERSION",
    "Status", "crc8", "slip_encode", "SlipStreamDecoder", "LinkConfig", "Result", "LinkError",
    "sample_frame", "info_request", "parse_frame",
    "LinkByte", "PixelLayout", "TagLayout",
    "SlipDecoder", "SlipEncoder", "LinkReceiver", "LinkTransmitter",
]

END, ESC, ESC_END, ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD
KIND_SAMPLE, KIND_INFO, KIND_RESULT = ord("S"), ord("I"), ord("R")
MAGIC = b"SPKF"
VERSION = 1


class Status(enum.Enum, shape=3):
    """The ``status`` byte of a result frame (3 bits in the gateware, a byte on the wire).

    An :mod:`amaranth.lib.enum` enum: a ``Signal(Status)`` holds one, and the host decodes the byte
    with ``Status(value)`` (an unknown value is a :class:`ValueError`).
    """
    OK = 0
    BAD_CRC = 1     #: the CRC did not match (a corrupted or extra byte)
    SHORT = 2       #: the frame ended before all pixels and the CRC arrived (a lost byte)
    LONG = 3        #: bytes after the CRC (an extra byte, or two frames merged by a lost END)
    TIMEOUT = 4     #: the frame stopped arriving mid-way


class LinkError(ExternalToolError):
    """A frame from the board that does not follow the protocol."""


# -- the protocol in Python (host side, tests) ----------------------------------------------------

def crc8(payload: bytes, crc: int = 0) -> int:
    """CRC-8/SMBUS (polynomial 0x07, init 0, no reflection, no final xor)."""
    for byte in payload:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def slip_encode(payload: bytes) -> bytes:
    """``END escaped(payload) END``."""
    out = bytearray([END])
    for byte in payload:
        if byte == END:
            out += bytes([ESC, ESC_END])
        elif byte == ESC:
            out += bytes([ESC, ESC_ESC])
        else:
            out.append(byte)
    out.append(END)
    return bytes(out)


class SlipStreamDecoder:
    """Incremental SLIP decoder: feed it bytes, get back the complete, non-empty frames."""

    def __init__(self):
        self._frame = bytearray()
        self._escaped = False

    def feed(self, chunk: bytes) -> list:
        frames = []
        for byte in chunk:
            if byte == END:
                if self._frame:
                    frames.append(bytes(self._frame))
                self._frame.clear()
                self._escaped = False
            elif byte == ESC:
                self._escaped = True
            else:
                if self._escaped:
                    byte = {ESC_END: END, ESC_ESC: ESC}.get(byte, byte)
                    self._escaped = False
                self._frame.append(byte)
        return frames


@dataclass(frozen=True)
class LinkConfig:
    """What both ends of the link must agree on (the board sends it in its info frame).

    Attributes
    ----------
    in_features : int
        Pixels per sample (N).
    classes : int
        Output classes (C).
    score_bits : int
        Width S of a signed score.
    scores : bool
        Whether result frames carry the scores.
    timesteps : int
    baud : int
    clk_freq : int
        The accelerator's clock in Hz.
    """

    in_features: int
    classes: int
    score_bits: int
    scores: bool = True
    timesteps: int = 0
    baud: int = 115200
    clk_freq: int = 0

    def __post_init__(self):
        if not 1 <= self.in_features <= 0xFFFF:
            raise InputError(f"in_features {self.in_features} is not in 1..65535")
        if not 1 <= self.classes <= 256:
            raise InputError(f"classes {self.classes} is not in 1..256 (labels are one byte)")
        if not 1 <= self.score_bits <= 64:
            raise InputError(f"score_bits {self.score_bits} is not in 1..64")

    @property
    def score_bytes(self) -> int:
        return (self.score_bits + 7) // 8

    @property
    def request_bytes(self) -> int:
        """Payload bytes of a sample frame (before stuffing)."""
        return 1 + 1 + self.in_features + 1

    @property
    def result_bytes(self) -> int:
        """Payload bytes of a result frame (before stuffing)."""
        return 4 + (self.classes * self.score_bytes if self.scores else 0) + 1

    def info_payload(self) -> bytes:
        """The info frame's payload without its CRC."""
        return (bytes([KIND_INFO]) + MAGIC
                + struct.pack("<BHBBBBBII", VERSION, self.in_features, self.classes, self.score_bits,
                              self.score_bytes, self.timesteps, int(self.scores), self.baud, self.clk_freq))

    @classmethod
    def from_info_payload(cls, payload: bytes) -> "LinkConfig":
        if payload[1:5] != MAGIC:
            raise LinkError(f"info frame does not start with {MAGIC!r}: {payload[:5]!r}; is this a spikeforge board?")
        version, in_features, classes, score_bits, _, timesteps, flags, baud, clk = \
            struct.unpack("<BHBBBBBII", payload[5:-1])
        if version != VERSION:
            raise LinkError(f"the board speaks link version {version}; this host speaks {VERSION}")
        return cls(in_features=in_features, classes=classes, score_bits=score_bits, scores=bool(flags & 1),
                   timesteps=timesteps, baud=baud, clk_freq=clk)


@dataclass(frozen=True)
class Result:
    """One decoded result frame."""
    seq: int
    status: Status
    label: int
    scores: tuple


def sample_frame(seq: int, pixels) -> bytes:
    """The bytes to send for one sample (SLIP-stuffed, CRC included)."""
    payload = bytes([KIND_SAMPLE, seq & 0xFF]) + bytes(bytearray(pixels))
    return slip_encode(payload + bytes([crc8(payload)]))


def info_request() -> bytes:
    return slip_encode(bytes([KIND_INFO]))


def parse_frame(payload: bytes, config: LinkConfig | None = None):
    """Decode one frame payload from the board: a :class:`Result` or a :class:`LinkConfig`.

    Raises
    ------
    LinkError
        On a CRC mismatch, an unknown kind or a wrong length.
    """
    if len(payload) < 2:
        raise LinkError(f"frame of {len(payload)} bytes is too short")
    if crc8(payload[:-1]) != payload[-1]:
        raise LinkError(f"frame CRC mismatch ({len(payload)} bytes, kind {payload[0]:#04x})")
    if payload[0] == KIND_INFO:
        return LinkConfig.from_info_payload(payload)
    if payload[0] != KIND_RESULT:
        raise LinkError(f"unknown frame kind {payload[0]:#04x}")
    if config is None:
        raise LinkError("a result frame needs the board's LinkConfig to decode")
    if len(payload) != config.result_bytes:
        raise LinkError(f"result frame has {len(payload)} bytes, expected {config.result_bytes}")
    seq, status, label = payload[1], payload[2], payload[3]
    try:
        status = Status(status)
    except ValueError:
        raise LinkError(f"unknown status {status}") from None
    scores = ()
    if config.scores:
        nb = config.score_bytes
        scores = tuple(int.from_bytes(payload[4 + j * nb:4 + (j + 1) * nb], "little", signed=True)
                       for j in range(config.classes))
    return Result(seq=seq, status=status, label=label, scores=scores)


# -- the hardware ---------------------------------------------------------------------------------

#: A byte of a decoded frame, or (``delimiter = 1``) a frame boundary.
LinkByte = data.StructLayout({"data": 8, "delimiter": 1})
#: The accelerator's input beat (DESIGN.md §3).
PixelLayout = data.StructLayout({"data": 8, "last": 1})
#: What the receiver tells the transmitter about each frame it answers.
TagLayout = data.StructLayout({"info": 1, "seq": 8, "status": Status})


def _crc8_matrix():
    # CRC-8 without an initial value is linear over GF(2) in (crc ^ byte): output bit i is the
    # XOR of the input bits in row i.
    rows = []
    for out_bit in range(8):
        rows.append([in_bit for in_bit in range(8) if (crc8(bytes([1 << in_bit])) >> out_bit) & 1])
    return rows


_CRC8_ROWS = _crc8_matrix()


def crc8_next(crc, byte):
    """The CRC-8 register after one more byte (an Amaranth expression, XORs only)."""
    value = crc ^ byte
    bits = []
    for row in _CRC8_ROWS:
        bit = value[row[0]]
        for in_bit in row[1:]:
            bit = bit ^ value[in_bit]
        bits.append(bit)
    return Cat(*bits)


class SlipDecoder(wiring.Component):
    """Removes SLIP stuffing: line bytes in, :data:`LinkByte` beats out (``END`` -> delimiter).

    Members
    -------
    line : In(stream.Signature(8))
    decoded : Out(stream.Signature(LinkByte))
    """

    line: In(stream.Signature(8))
    decoded: Out(stream.Signature(LinkByte))

    def elaborate(self, platform):
        m = Module()
        escaped = Signal()
        byte = self.line.payload
        with m.If(byte == ESC):
            m.d.comb += self.line.ready.eq(1)
            with m.If(self.line.valid):
                m.d.sync += escaped.eq(1)
        with m.Else():
            m.d.comb += [self.decoded.valid.eq(self.line.valid), self.line.ready.eq(self.decoded.ready),
                         self.decoded.payload.delimiter.eq(byte == END)]
            with m.If(escaped & (byte == ESC_END)):
                m.d.comb += self.decoded.payload.data.eq(END)
            with m.Elif(escaped & (byte == ESC_ESC)):
                m.d.comb += self.decoded.payload.data.eq(ESC)
            with m.Else():
                m.d.comb += self.decoded.payload.data.eq(byte)
            with m.If(self.line.valid & self.decoded.ready):
                m.d.sync += escaped.eq(0)
        return m


class SlipEncoder(wiring.Component):
    """Adds SLIP stuffing: :data:`LinkByte` beats in (delimiter -> ``END``), line bytes out.

    Members
    -------
    raw : In(stream.Signature(LinkByte))
    line : Out(stream.Signature(8))
    """

    raw: In(stream.Signature(LinkByte))
    line: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        second = Signal()           # the escape byte went out; the substitute is next
        byte, delimiter = self.raw.payload.data, self.raw.payload.delimiter
        special = ~delimiter & ((byte == END) | (byte == ESC))
        m.d.comb += self.line.valid.eq(self.raw.valid)
        with m.If(delimiter):
            m.d.comb += [self.line.payload.eq(END), self.raw.ready.eq(self.line.ready)]
        with m.Elif(special & ~second):
            m.d.comb += self.line.payload.eq(ESC)
            with m.If(self.line.valid & self.line.ready):
                m.d.sync += second.eq(1)
        with m.Elif(special):
            m.d.comb += [self.line.payload.eq(Mux(byte == END, ESC_END, ESC_ESC)),
                         self.raw.ready.eq(self.line.ready)]
            with m.If(self.line.valid & self.line.ready):
                m.d.sync += second.eq(0)
        with m.Else():
            m.d.comb += [self.line.payload.eq(byte), self.raw.ready.eq(self.line.ready)]
        return m


class LinkReceiver(wiring.Component):
    """Parses host frames: forwards sample pixels to the accelerator, tells the transmitter what to answer.

    Parameters
    ----------
    in_features : int
        Pixels per sample.
    timeout_cycles : int
        A frame that receives nothing for this many cycles is closed as ``TIMEOUT``.
    pixel_shape : shape
        The accelerator's pixel payload (a layout with ``data`` and ``last``), :data:`PixelLayout`
        by default.

    Members
    -------
    decoded : In(stream.Signature(LinkByte))
        Frame bytes and boundaries from the :class:`SlipDecoder`.
    pixels : Out(stream.Signature(PixelLayout))
        To the accelerator: exactly ``in_features`` beats per sample frame, ``last`` on the final one
        (zero-padded when the frame was cut short).
    tags : Out(stream.Signature(TagLayout))
        One per frame that needs an answer, in order: a sample frame (its ``seq`` and :class:`Status`)
        or an info request (``info = 1``).
    """

    def __init__(self, in_features: int, timeout_cycles: int, pixel_shape=PixelLayout):
        if in_features < 1:
            raise InputError(f"in_features {in_features} must be >= 1")
        if timeout_cycles < 2:
            raise InputError(f"timeout_cycles {timeout_cycles} must be >= 2")
        self.in_features = in_features
        self.timeout_cycles = timeout_cycles
        super().__init__({
            "decoded": In(stream.Signature(LinkByte)),
            "pixels": Out(stream.Signature(pixel_shape)),
            "tags": Out(stream.Signature(TagLayout)),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.in_features
        inp = self.decoded
        byte, delimiter = inp.payload.data, inp.payload.delimiter
        count = Signal(range(n + 1))
        crc = Signal(8)
        crc_received = Signal(8)
        seq = Signal(8)
        status = Signal(Status)
        idle = Signal(range(self.timeout_cycles + 1))
        timeout = Signal()

        in_frame = Signal()
        with m.If(inp.valid | ~in_frame):
            m.d.sync += idle.eq(0)
        with m.Else():
            m.d.sync += idle.eq(idle + 1)
        m.d.comb += timeout.eq(in_frame & ~inp.valid & (idle == self.timeout_cycles - 1))
        got_byte = inp.valid & ~delimiter
        got_end = inp.valid & delimiter
        error_end = Mux(timeout, Status.TIMEOUT, Status.SHORT)

        m.d.comb += [self.tags.payload.seq.eq(seq), self.tags.payload.status.eq(status)]
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += inp.ready.eq(1)
                with m.If(got_byte):
                    with m.If(byte == KIND_SAMPLE):
                        m.d.sync += [crc.eq(crc8_next(Const(0, 8), byte)), count.eq(0)]
                        m.next = "SEQ"
                    with m.Elif(byte == KIND_INFO):
                        m.next = "INFO"
                    with m.Else():
                        m.next = "SKIP"
            with m.State("SKIP"):
                m.d.comb += [in_frame.eq(1), inp.ready.eq(1)]
                with m.If(got_end | timeout):
                    m.next = "IDLE"
            with m.State("INFO"):
                m.d.comb += [in_frame.eq(1), inp.ready.eq(1)]
                with m.If(got_end):
                    m.next = "PUSH_INFO"
                with m.Elif(got_byte):
                    m.next = "SKIP"
                with m.Elif(timeout):
                    m.next = "IDLE"
            with m.State("PUSH_INFO"):
                m.d.comb += [self.tags.valid.eq(1), self.tags.payload.info.eq(1)]
                with m.If(self.tags.ready):
                    m.next = "IDLE"
            with m.State("SEQ"):
                m.d.comb += [in_frame.eq(1), inp.ready.eq(1)]
                with m.If(got_byte):
                    m.d.sync += [seq.eq(byte), crc.eq(crc8_next(crc, byte))]
                    m.next = "DATA"
                with m.Elif(got_end | timeout):
                    m.d.sync += [seq.eq(0), status.eq(error_end)]
                    m.next = "PAD"
            with m.State("DATA"):
                m.d.comb += in_frame.eq(1)
                with m.If(got_byte):
                    m.d.comb += [self.pixels.valid.eq(1), self.pixels.payload.data.eq(byte),
                                 self.pixels.payload.last.eq(count == n - 1),
                                 inp.ready.eq(self.pixels.ready)]
                    with m.If(self.pixels.ready):
                        m.d.sync += [crc.eq(crc8_next(crc, byte)), count.eq(count + 1)]
                        with m.If(count == n - 1):
                            m.next = "CRC"
                with m.Elif(got_end | timeout):
                    m.d.comb += inp.ready.eq(1)
                    m.d.sync += status.eq(error_end)
                    m.next = "PAD"
            with m.State("CRC"):
                m.d.comb += [in_frame.eq(1), inp.ready.eq(1)]
                with m.If(got_byte):
                    m.d.sync += crc_received.eq(byte)
                    m.next = "TAIL"
                with m.Elif(got_end | timeout):
                    m.d.sync += status.eq(error_end)
                    m.next = "PUSH"
            with m.State("TAIL"):
                m.d.comb += [in_frame.eq(1), inp.ready.eq(1)]
                with m.If(got_byte):
                    m.d.sync += status.eq(Status.LONG)
                    m.next = "LONG"
                with m.Elif(got_end | timeout):
                    m.d.sync += status.eq(Mux(crc == crc_received, Status.OK, Status.BAD_CRC))
                    m.next = "PUSH"
            with m.State("LONG"):
                m.d.comb += [in_frame.eq(1), inp.ready.eq(1)]
                with m.If(got_end | timeout):
                    m.next = "PUSH"
            with m.State("PAD"):
                # The accelerator always gets whole samples: finish this one with zeros.
                m.d.comb += [self.pixels.valid.eq(count != n), self.pixels.payload.data.eq(0),
                             self.pixels.payload.last.eq(count == n - 1)]
                with m.If(count == n):
                    m.next = "PUSH"
                with m.Elif(self.pixels.ready):
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == n - 1):
                        m.next = "PUSH"
            with m.State("PUSH"):
                m.d.comb += self.tags.valid.eq(1)
                with m.If(self.tags.ready):
                    m.next = "IDLE"
        return m


class LinkTransmitter(wiring.Component):
    """Builds the answer frames: pairs each sample tag with the accelerator's next result.

    Parameters
    ----------
    config : LinkConfig
        Fixes the frame layout and the info frame's contents.
    result_layout : StructLayout
        The accelerator's ``results`` payload: ``{label: unsigned, scores: ArrayLayout(signed(S), C)}``.

    Members
    -------
    tags : In(stream.Signature(TagLayout))
    results : In(stream.Signature(result_layout))
    raw : Out(stream.Signature(LinkByte))
        Frame bytes and delimiters for the :class:`SlipEncoder`.
    label : Out(8)
        The label of the last answered sample.
    error : Out(1)
        The last answered sample's status was not ``OK``.
    answered : Out(1)
        Pulses when a result frame is complete.
    """

    def __init__(self, config: LinkConfig, result_layout):
        self.config = config
        self.result_layout = result_layout
        super().__init__({
            "tags": In(stream.Signature(TagLayout)),
            "results": In(stream.Signature(self.result_layout)),
            "raw": Out(stream.Signature(LinkByte)),
            "label": Out(8),
            "error": Out(1),
            "answered": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        result = Signal(self.result_layout)
        tag = Signal(TagLayout)

        # The bytes of each frame kind, between its delimiters, CRC excluded.
        scores = []
        if cfg.scores:
            for j in range(cfg.classes):
                extended = Signal(signed(cfg.score_bytes * 8), name=f"score{j}")
                m.d.comb += extended.eq(result.scores[j])
                scores += [extended[8 * b:8 * (b + 1)] for b in range(cfg.score_bytes)]
        result_bytes = [Const(KIND_RESULT, 8), tag.seq, tag.status.as_value(), result.label] + scores
        info_bytes = [Const(b, 8) for b in cfg.info_payload()]
        assert len(result_bytes) + 1 == cfg.result_bytes

        index = Signal(range(max(len(result_bytes), len(info_bytes)) + 2))
        crc = Signal(8)
        is_info = Signal()
        body = Signal(8)
        body_length = Mux(is_info, len(info_bytes), len(result_bytes))
        for is_info_case, frame_bytes in ((0, result_bytes), (1, info_bytes)):
            with m.If(is_info == is_info_case):
                with m.Switch(index):
                    for i, value in enumerate(frame_bytes):
                        with m.Case(i):
                            m.d.comb += body.eq(value)

        m.d.sync += self.answered.eq(0)
        with m.FSM():
            with m.State("WAIT"):
                with m.If(self.tags.valid & self.tags.payload.info):
                    m.d.comb += self.tags.ready.eq(1)
                    m.d.sync += [tag.eq(self.tags.payload), is_info.eq(1)]
                    m.next = "OPEN"
                with m.Elif(self.tags.valid & self.results.valid):
                    m.d.comb += [self.tags.ready.eq(1), self.results.ready.eq(1)]
                    m.d.sync += [tag.eq(self.tags.payload), result.eq(self.results.payload), is_info.eq(0)]
                    m.next = "OPEN"
            with m.State("OPEN"):
                m.d.comb += [self.raw.valid.eq(1), self.raw.payload.delimiter.eq(1)]
                with m.If(self.raw.ready):
                    m.d.sync += [index.eq(0), crc.eq(0)]
                    m.next = "BODY"
            with m.State("BODY"):
                m.d.comb += [self.raw.valid.eq(1), self.raw.payload.data.eq(body)]
                with m.If(self.raw.ready):
                    m.d.sync += [crc.eq(crc8_next(crc, body)), index.eq(index + 1)]
                    with m.If(index == body_length - 1):
                        m.next = "CRC"
            with m.State("CRC"):
                m.d.comb += [self.raw.valid.eq(1), self.raw.payload.data.eq(crc)]
                with m.If(self.raw.ready):
                    m.next = "CLOSE"
            with m.State("CLOSE"):
                m.d.comb += [self.raw.valid.eq(1), self.raw.payload.delimiter.eq(1)]
                with m.If(self.raw.ready):
                    with m.If(~is_info):
                        m.d.sync += [self.label.eq(result.label), self.error.eq(tag.status != Status.OK),
                                     self.answered.eq(1)]
                    m.next = "WAIT"
        return m
