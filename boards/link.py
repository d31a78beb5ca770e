"""The serial link between a host and the board: framing, its hardware, and its host-side codec.

Framing
=======

Both directions use SLIP byte stuffing (RFC 1055): a frame is sent as ``END payload END`` where
``END = 0xC0``; a payload byte ``0xC0`` is sent as ``ESC 0xDC`` and ``0xDB`` (``ESC``) as
``ESC 0xDD``. ``END`` therefore never occurs inside a frame, and a receiver that lost or gained a
byte is back in step at the next ``END``. Empty frames (``END END``) are ignored. Every payload ends
with a CRC-8 (polynomial 0x07, initial value 0, no reflection; "CRC-8/SMBUS") over the bytes before
it, except the one-byte info and counter requests.

Host -> board
-------------
``'S' seq pixel[0] .. pixel[N-1] crc``
    Classify one sample: ``seq`` is any byte (echoed back), ``pixel`` are the N raw input bytes
    (N = the network's ``in_features``, row-major). The pixels go to the accelerator as they arrive.
``'P' seq packed[0] .. packed[B-1] crc``  (version 2, boards with ``code_bits`` != 0)
    One sample in the compact form: the T-bit spike codes of the input LUT (``code_bits`` = T <= 4),
    ``k = 8 // T`` codes a byte, code i of the sample in bits ``T*(i % k)`` up of byte ``i // k``
    (so ``B = ceil(N / k)``). The board turns each code back into a raw byte the LUT maps to it (the
    info frame's ``representatives``), so the accelerator computes exactly what the raw sample gives.
``'B' seq count sample[0] .. sample[count-1] crc`` and ``'Q' seq count ...``  (version 2, ``batch_depth`` != 0)
    A batch of ``count`` (1..``batch_depth``) samples, raw (``'B'``, N bytes each) or compact
    (``'Q'``, B bytes each). The board stores them in block RAM; only when the whole frame checks OK
    does it run them back-to-back through the accelerator (results buffered on chip) and answer
    ``count`` result frames with sequence numbers ``seq, seq+1, ...`` (mod 256). A damaged batch
    frame gets one result frame with its error status and runs nothing; a ``count`` of 0 or above
    ``batch_depth`` (or a kind the board was built without) is answered ``REFUSED``.
``'I'``
    Ask the board to describe itself (answered with an info frame).
``'C'``  (version 2)
    Read the performance counters (answered with a counter frame, in order with the other answers)
    and clear them: they start again at the next pixel. The host reads them when all answers are
    back (before a run to clear them, after each batch or run to read it), so a reading covers
    exactly the samples between two readings.

Bytes of a frame that starts with anything else are ignored up to the next ``END``.

Board -> host
-------------
``'R' seq status label score[0] .. score[C-1] crc``
    One answer per sample, in order. ``status`` is one of :class:`Status`; ``label`` is the
    class index (argmax, lowest index on ties); each score is a little-endian two's-complement
    integer of ``score_bytes`` bytes, present only when the board was built with scores. When
    ``status`` is not ``OK`` the label and scores are meaningless and the host resends the sample.
``'I' 'SPKF' version in_features[2] classes score_bits score_bytes timesteps flags baud[4] clk[4] ...``
    The board description (multi-byte fields little-endian; ``flags`` bit 0: scores included;
    ``clk`` the clock the design was compiled for, in Hz). Version 2 goes on with
    ``batch_depth[2] code_bits lut_top representatives[2**code_bits]`` then the CRC: the batch buffer
    in samples (0: no batch mode), the compact mode's T (0: none), the largest code of the LUT, and
    for each code c <= lut_top the smallest raw byte whose code is >= c (the LUT is monotonic, so the
    host rebuilds it: ``code(r) = max(c : representatives[c] <= r)``). A board with per-layer counters
    adds one more byte before the CRC: ``layers``, how many layers it counts (absent: none; hosts that
    do not know it read the fixed fields and stop, so it changes nothing for them).
``'C' samples[4] first_result[4] last_result[4] busy[4] input_stall[4] output_stall[4] crc``  (version 2)
    Performance counters, all in clock cycles (32 bits, little-endian) since they were last cleared,
    counted from the first pixel the accelerator took after that: results produced; the cycle of the
    first and the last result; cycles with a sample inside the accelerator; cycles a pixel waited for
    the accelerator; cycles a result waited for the link. Cycles per sample in steady state are
    ``(last_result - first_result) / (samples - 1)``; samples/s ``clk`` over that. A board that counts
    ``layers`` layers (its info frame) follows the six with ``busy[4] stalled[4] starved[4]`` per layer, in
    pipeline order (:data:`LAYER_COUNTER_NAMES`): of the cycles counted as ``busy`` above, each layer's are
    split into busy (working on a sample: accumulating or firing, or holding a finished one until its last
    output beat goes), stalled (its output offered and the next stage not taking it) and starved (nothing to
    do: no input offered, nothing held), so the three add up to ``busy`` for every layer. The first six
    fields are where they always were.

Recovery
--------
* A lost byte inside a sample frame: the closing ``END`` comes early; the board completes the
  sample with zero pixels (the accelerator always sees whole samples) and answers ``SHORT``.
* An extra or corrupted byte: the CRC (or the length) does not match: ``BAD_CRC`` or ``LONG``.
* A lost ``END``: two frames merge into one ``LONG`` frame; the second sample gets no answer and the
  host resends it after its answer timeout.
* Nothing more arrives mid-frame for ``timeout`` seconds: the frame is closed as ``TIMEOUT``.
* A damaged batch frame runs nothing: one answer with the status, and the host resends the batch.

So every disturbance costs at most the samples whose frames it touched; the next frame is received
normally.
"""

import math
import struct
from dataclasses import dataclass

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out
from spikeforge.ir.errors import ExternalToolError, InputError

__all__ = [
    "END", "ESC", "ESC_END", "ESC_ESC", "KIND_SAMPLE", "KIND_PACKED", "KIND_BATCH", "KIND_PACKED_BATCH",
    "KIND_INFO", "KIND_COUNTERS", "KIND_RESULT", "MAGIC", "VERSION", "COUNTER_NAMES", "LAYER_COUNTER_NAMES",
    "Status", "TagKind", "crc8", "slip_encode", "SlipStreamDecoder", "LinkConfig", "Result", "Counters",
    "LayerCounters", "LinkError", "counter_layout",
    "sample_frame", "packed_sample_frame", "batch_frame", "info_request", "counters_request", "parse_frame",
    "representatives_of", "lut_from_representatives", "pack_codes",
    "LinkByte", "PixelLayout", "FrameByteLayout", "PixelBeatLayout", "TagLayout",
    "SlipDecoder", "SlipEncoder", "LinkReceiver", "CodeUnpacker", "LinkTransmitter",
]

END, ESC, ESC_END, ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD
KIND_SAMPLE, KIND_PACKED, KIND_BATCH, KIND_PACKED_BATCH = ord("S"), ord("P"), ord("B"), ord("Q")
KIND_INFO, KIND_COUNTERS, KIND_RESULT = ord("I"), ord("C"), ord("R")
MAGIC = b"SPKF"
#: 2: compact samples, batches, counters, and the info frame's batch/compact fields. A version 1
#: board (sample and info frames only) is still understood by the host.
VERSION = 2
#: The fields of a counter frame, in order.
COUNTER_NAMES = ("samples", "first_result", "last_result", "busy", "input_stall", "output_stall")
#: Each counted layer's fields in a counter frame, after :data:`COUNTER_NAMES`.
LAYER_COUNTER_NAMES = ("busy", "stalled", "starved")
#: Layers a board counts at most (a byte in the info frame).
MAX_COUNTED_LAYERS = 255
#: The largest T for which the compact mode packs two or more codes a byte.
MAX_CODE_BITS = 4


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
    REFUSED = 5     #: a batch of 0 or more than ``batch_depth`` samples, or a mode the board lacks


class TagKind(enum.Enum, shape=2):
    """What an answer is for (the receiver tells the transmitter)."""
    SAMPLE = 0      #: a sample, or (``count`` > 0) a batch of ``count`` samples
    INFO = 1
    COUNTERS = 2


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


def representatives_of(lut) -> tuple | None:
    """For each code c up to the LUT's largest, the smallest raw byte whose code is >= c; ``None`` when
    the LUT is not monotonic (the compact mode then cannot be offered)."""
    lut = [int(v) for v in lut]
    if len(lut) != 256 or any(b < a for a, b in zip(lut, lut[1:])) or lut[0] != 0:
        return None
    return tuple(next(r for r in range(256) if lut[r] >= c) for c in range(lut[-1] + 1))


def lut_from_representatives(representatives) -> list:
    """The monotonic LUT (raw byte -> code) that :func:`representatives_of` describes."""
    lut, code = [], 0
    for raw in range(256):
        while code + 1 < len(representatives) and representatives[code + 1] <= raw:
            code += 1
        lut.append(code)
    return lut


def codes_per_byte(code_bits: int) -> int:
    return 8 // code_bits


def pack_codes(codes, code_bits: int) -> bytes:
    """One sample's codes, ``8 // code_bits`` a byte, the first in the low bits."""
    k = codes_per_byte(code_bits)
    codes = [int(c) for c in codes]
    out = bytearray()
    for start in range(0, len(codes), k):
        byte = 0
        for j, code in enumerate(codes[start:start + k]):
            byte |= code << (code_bits * j)
        out.append(byte)
    return bytes(out)


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
        The accelerator's clock in Hz (compiled in).
    batch_depth : int
        Samples the on-chip batch buffer holds (0: no batch mode).
    code_bits : int
        T of the compact mode (0: none; at most :data:`MAX_CODE_BITS`).
    representatives : tuple
        For the compact mode: per code, a raw byte the board feeds the accelerator (see the framing).
    counted_layers : int
        Layers whose busy, stalled and starved cycles the board counts (0: the top level's only).
    version : int
        The link version the board speaks.
    """

    in_features: int
    classes: int
    score_bits: int
    scores: bool = True
    timesteps: int = 0
    baud: int = 115200
    clk_freq: int = 0
    batch_depth: int = 0
    code_bits: int = 0
    representatives: tuple = ()
    counted_layers: int = 0
    version: int = VERSION

    def __post_init__(self):
        if not 1 <= self.in_features <= 0xFFFF:
            raise InputError(f"in_features {self.in_features} is not in 1..65535")
        if not 1 <= self.classes <= 256:
            raise InputError(f"classes {self.classes} is not in 1..256 (labels are one byte)")
        if not 1 <= self.score_bits <= 64:
            raise InputError(f"score_bits {self.score_bits} is not in 1..64")
        if not 0 <= self.batch_depth <= 255:
            raise InputError(f"batch_depth {self.batch_depth} is not in 0..255 (a batch's count is one byte)")
        if not 0 <= self.code_bits <= MAX_CODE_BITS:
            raise InputError(f"code_bits {self.code_bits} is not in 0..{MAX_CODE_BITS}")
        if self.code_bits and not 1 <= len(self.representatives) <= 1 << self.code_bits:
            raise InputError(f"the compact mode needs 1..{1 << self.code_bits} representatives, "
                             f"got {len(self.representatives)}")
        if not 0 <= self.counted_layers <= MAX_COUNTED_LAYERS:
            raise InputError(f"counted_layers {self.counted_layers} is not in 0..{MAX_COUNTED_LAYERS}")

    @property
    def score_bytes(self) -> int:
        return (self.score_bits + 7) // 8

    @property
    def packed_bytes(self) -> int:
        """Bytes of one sample in the compact form (0 without the compact mode)."""
        return math.ceil(self.in_features / codes_per_byte(self.code_bits)) if self.code_bits else 0

    @property
    def request_bytes(self) -> int:
        """Payload bytes of a sample frame (before stuffing)."""
        return 1 + 1 + self.in_features + 1

    @property
    def result_bytes(self) -> int:
        """Payload bytes of a result frame (before stuffing)."""
        return 4 + (self.classes * self.score_bytes if self.scores else 0) + 1

    def lut(self) -> list:
        """The board's input LUT (raw byte -> code), rebuilt from the representatives (compact mode only)."""
        return lut_from_representatives(self.representatives)

    def info_payload(self) -> bytes:
        """The info frame's payload without its CRC."""
        body = (bytes([KIND_INFO]) + MAGIC
                + struct.pack("<BHBBBBBII", self.version, self.in_features, self.classes, self.score_bits,
                              self.score_bytes, self.timesteps, int(self.scores), self.baud, self.clk_freq))
        if self.version >= 2:
            top = len(self.representatives) - 1 if self.code_bits else 0
            body += struct.pack("<HBB", self.batch_depth, self.code_bits, top)
            body += bytes(self.representatives) if self.code_bits else b""
            if self.counted_layers:
                body += bytes([self.counted_layers])
        return body

    @classmethod
    def from_info_payload(cls, payload: bytes) -> "LinkConfig":
        if payload[1:5] != MAGIC:
            raise LinkError(f"info frame does not start with {MAGIC!r}: {payload[:5]!r}; is this a spikeforge board?")
        if len(payload) < 22:
            raise LinkError(f"info frame of {len(payload)} bytes is too short")
        version, in_features, classes, score_bits, _, timesteps, flags, baud, clk = \
            struct.unpack("<BHBBBBBII", payload[5:21])
        extra = {}
        if version >= 2:
            if len(payload) < 26:
                raise LinkError(f"version 2 info frame of {len(payload)} bytes is too short")
            batch_depth, code_bits, top = struct.unpack("<HBB", payload[21:25])
            representatives = tuple(payload[25:25 + top + 1]) if code_bits else ()
            after = 25 + len(representatives)       # then the counted layers, if any, and the CRC
            counted = payload[after] if len(payload) >= after + 2 else 0
            extra = {"batch_depth": batch_depth, "code_bits": code_bits, "representatives": representatives,
                     "counted_layers": counted}
        elif version != 1:
            raise LinkError(f"the board speaks link version {version}; this host speaks 1..{VERSION}")
        return cls(in_features=in_features, classes=classes, score_bits=score_bits, scores=bool(flags & 1),
                   timesteps=timesteps, baud=baud, clk_freq=clk, version=version, **extra)


@dataclass(frozen=True)
class Result:
    """One decoded result frame."""
    seq: int
    status: Status
    label: int
    scores: tuple


@dataclass(frozen=True)
class LayerCounters:
    """One layer's counters in a counter frame (:data:`LAYER_COUNTER_NAMES`): they add up to the frame's ``busy``."""
    busy: int
    stalled: int
    starved: int


@dataclass(frozen=True)
class Counters:
    """One decoded counter frame (see the framing): cycle counts since the counters were cleared; ``layers``
    one :class:`LayerCounters` per counted layer, in pipeline order (empty from a board without them)."""
    samples: int
    first_result: int
    last_result: int
    busy: int
    input_stall: int
    output_stall: int
    layers: tuple = ()

    @property
    def cycles_per_sample(self) -> float | None:
        """Steady-state cycles between results (``None`` below two samples)."""
        if self.samples < 2:
            return None
        return (self.last_result - self.first_result) / (self.samples - 1)


def sample_frame(seq: int, pixels) -> bytes:
    """The bytes to send for one sample (SLIP-stuffed, CRC included)."""
    payload = bytes([KIND_SAMPLE, seq & 0xFF]) + bytes(bytearray(pixels))
    return slip_encode(payload + bytes([crc8(payload)]))


def packed_sample_frame(seq: int, packed: bytes) -> bytes:
    """One sample in the compact form (``packed`` from :func:`pack_codes`)."""
    payload = bytes([KIND_PACKED, seq & 0xFF]) + bytes(packed)
    return slip_encode(payload + bytes([crc8(payload)]))


def batch_frame(seq: int, samples, *, packed: bool = False) -> bytes:
    """A batch of samples (each raw bytes, or packed with ``packed=True``)."""
    payload = bytes([KIND_PACKED_BATCH if packed else KIND_BATCH, seq & 0xFF, len(samples)])
    payload += b"".join(bytes(bytearray(s)) for s in samples)
    return slip_encode(payload + bytes([crc8(payload)]))


def info_request() -> bytes:
    return slip_encode(bytes([KIND_INFO]))


def counters_request() -> bytes:
    return slip_encode(bytes([KIND_COUNTERS]))


def parse_frame(payload: bytes, config: LinkConfig | None = None):
    """Decode one frame payload from the board: a :class:`Result`, :class:`Counters` or :class:`LinkConfig`.

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
    if payload[0] == KIND_COUNTERS:
        top, per_layer = len(COUNTER_NAMES), len(LAYER_COUNTER_NAMES)
        words, odd = divmod(len(payload) - 2, 4)
        layers = (words - top) // per_layer
        expected = config.counted_layers if config is not None else layers
        if odd or words < top or (words - top) % per_layer or layers != expected:
            raise LinkError(f"counter frame has {len(payload)} bytes, expected {2 + 4 * (top + per_layer * expected)}"
                            + (f" ({expected} counted layers)" if config is not None else ""))
        values = struct.unpack(f"<{words}I", payload[1:-1])
        return Counters(*values[:top], layers=tuple(LayerCounters(*values[top + per_layer * i:top + per_layer * (i + 1)])
                                                    for i in range(layers)))
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
#: A byte of a sample as the receiver forwards it: ``last`` on a sample's final byte, ``packed`` for
#: the compact form, ``batch`` for a batch frame's bytes (they go to the batch buffer).
FrameByteLayout = data.StructLayout({"data": 8, "last": 1, "packed": 1, "batch": 1})
#: A raw pixel after the :class:`CodeUnpacker` (``batch`` as above).
PixelBeatLayout = data.StructLayout({"data": 8, "last": 1, "batch": 1})
#: What the receiver tells the transmitter about each frame it answers: ``count`` results to take
#: from the accelerator and answer (``seq``, ``seq + 1``, ...); 0 = one answer with ``status`` and no
#: result. ``batch``: the frame was a batch (the batch buffer runs it when ``status`` is OK).
TagLayout = data.StructLayout({"kind": TagKind, "seq": 8, "status": Status, "count": 8, "batch": 1})


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

    The decoded beat is registered and ``line.ready`` does not look at the byte: a byte is taken
    whenever the output register is free or being emptied. (Choosing ``ready`` from the byte put the
    receive FIFO's block RAM read, the byte compares and the receiver's ready in one path back to
    the FIFO's level: the iCEBreaker's slowest path, 37 ns, once the transmitter's was gone.)

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
        byte, out = self.line.payload, self.decoded
        m.d.comb += self.line.ready.eq(~out.valid | out.ready)
        with m.If(out.valid & out.ready):
            m.d.sync += out.valid.eq(0)
        with m.If(self.line.valid & self.line.ready):
            with m.If(byte == ESC):
                m.d.sync += escaped.eq(1)
            with m.Else():
                m.d.sync += [out.valid.eq(1), out.payload.delimiter.eq(byte == END), escaped.eq(0)]
                with m.If(escaped & (byte == ESC_END)):
                    m.d.sync += out.payload.data.eq(END)
                with m.Elif(escaped & (byte == ESC_ESC)):
                    m.d.sync += out.payload.data.eq(ESC)
                with m.Else():
                    m.d.sync += out.payload.data.eq(byte)
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
    """Parses host frames: forwards sample bytes, tells the transmitter what to answer.

    Parameters
    ----------
    in_features : int
        Pixels per sample.
    timeout_cycles : int
        A frame that receives nothing for this many cycles is closed as ``TIMEOUT``.
    batch_depth : int
        The largest batch accepted (0: batch frames are ``REFUSED``).
    code_bits : int
        T of the compact mode (0: compact frames are ``REFUSED``).

    Members
    -------
    decoded : In(stream.Signature(LinkByte))
        Frame bytes and boundaries from the :class:`SlipDecoder`.
    bytes : Out(stream.Signature(FrameByteLayout))
        The sample bytes of sample and batch frames as they arrive. A sample frame always yields
        exactly one whole sample (zero bytes complete one that was cut short); a batch frame's bytes
        go out as they come (the batch buffer drops them unless the frame's tag says OK).
    tags : Out(stream.Signature(TagLayout))
        One per frame that needs an answer, in order, after the frame's last byte went out.
    """

    def __init__(self, in_features: int, timeout_cycles: int, *, batch_depth: int = 0, code_bits: int = 0):
        if in_features < 1:
            raise InputError(f"in_features {in_features} must be >= 1")
        if timeout_cycles < 2:
            raise InputError(f"timeout_cycles {timeout_cycles} must be >= 2")
        if not 0 <= batch_depth <= 255:
            raise InputError(f"batch_depth {batch_depth} is not in 0..255")
        if not 0 <= code_bits <= MAX_CODE_BITS:
            raise InputError(f"code_bits {code_bits} is not in 0..{MAX_CODE_BITS}")
        self.in_features = in_features
        self.timeout_cycles = timeout_cycles
        self.batch_depth = batch_depth
        self.code_bits = code_bits
        super().__init__({
            "decoded": In(stream.Signature(LinkByte)),
            "bytes": Out(stream.Signature(FrameByteLayout)),
            "tags": Out(stream.Signature(TagLayout)),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.in_features
        packed_n = math.ceil(n / codes_per_byte(self.code_bits)) if self.code_bits else n
        inp = self.decoded
        byte, delimiter = inp.payload.data, inp.payload.delimiter
        count = Signal(range(n + 1))            # bytes of the current sample
        samples = Signal(8)                     # samples of the current batch done
        batch_count = Signal(8)
        crc = Signal(8)
        crc_received = Signal(8)
        seq = Signal(8)
        status = Signal(Status)
        packed = Signal()
        batch = Signal()
        refused = Signal()
        answers = Signal(8)                     # the tag's count
        idle = Signal(range(self.timeout_cycles + 1))
        timeout = Signal()

        sample_bytes = Mux(packed, packed_n, n)
        last_byte = count == sample_bytes - 1
        in_frame = Signal()
        with m.If(inp.valid | ~in_frame):
            m.d.sync += idle.eq(0)
        with m.Else():
            m.d.sync += idle.eq(idle + 1)
        m.d.comb += timeout.eq(in_frame & ~inp.valid & (idle == self.timeout_cycles - 1))
        got_byte = inp.valid & ~delimiter
        got_end = inp.valid & delimiter
        error_end = Mux(timeout, Status.TIMEOUT, Status.SHORT)

        m.d.comb += [self.tags.payload.seq.eq(seq), self.tags.payload.status.eq(status),
                     self.tags.payload.count.eq(answers), self.tags.payload.batch.eq(batch),
                     self.bytes.payload.packed.eq(packed), self.bytes.payload.batch.eq(batch)]

        def cut_short(next_state_single="PAD"):
            # The frame ended early: a sample frame is completed with zeros and answered once; a
            # batch runs nothing and gets one answer.
            m.d.sync += status.eq(error_end)
            with m.If(batch):
                m.d.sync += answers.eq(0)
                m.next = "PUSH"
            with m.Else():
                m.d.sync += answers.eq(1)
                m.next = next_state_single

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += inp.ready.eq(1)
                with m.If(got_byte):
                    m.d.sync += [crc.eq(crc8_next(Const(0, 8), byte)), count.eq(0), samples.eq(0),
                                 batch_count.eq(0), status.eq(Status.OK)]
                    with m.If((byte == KIND_SAMPLE) | (byte == KIND_PACKED) | (byte == KIND_BATCH)
                              | (byte == KIND_PACKED_BATCH)):
                        is_packed = (byte == KIND_PACKED) | (byte == KIND_PACKED_BATCH)
                        is_batch = (byte == KIND_BATCH) | (byte == KIND_PACKED_BATCH)
                        m.d.sync += [packed.eq(is_packed), batch.eq(is_batch),
                                     refused.eq((is_packed & (self.code_bits == 0))
                                                | (is_batch & (self.batch_depth == 0)))]
                        m.next = "SEQ"
                    with m.Elif(byte == KIND_INFO):
                        m.d.sync += [batch.eq(0), answers.eq(0)]
                        m.next = "INFO"
                    with m.Elif(byte == KIND_COUNTERS):
                        m.d.sync += [batch.eq(0), answers.eq(0)]
                        m.next = "COUNTERS"
                    with m.Else():
                        m.next = "SKIP"
            with m.State("SKIP"):
                m.d.comb += [in_frame.eq(1), inp.ready.eq(1)]
                with m.If(got_end | timeout):
                    m.next = "IDLE"
            for state, kind in (("INFO", TagKind.INFO), ("COUNTERS", TagKind.COUNTERS)):
                with m.State(state):
                    m.d.comb += [in_frame.eq(1), inp.ready.eq(1)]
                    with m.If(got_end):
                        m.next = f"PUSH_{state}"
                    with m.Elif(got_byte):
                        m.next = "SKIP"
                    with m.Elif(timeout):
                        m.next = "IDLE"
                with m.State(f"PUSH_{state}"):
                    m.d.comb += [self.tags.valid.eq(1), self.tags.payload.kind.eq(kind)]
                    with m.If(self.tags.ready):
                        m.next = "IDLE"
            with m.State("SEQ"):
                m.d.comb += [in_frame.eq(1), inp.ready.eq(1)]
                with m.If(got_byte):
                    m.d.sync += [seq.eq(byte), crc.eq(crc8_next(crc, byte))]
                    with m.If(batch):
                        m.next = "COUNT"
                    with m.Elif(refused):
                        m.d.sync += [status.eq(Status.REFUSED), answers.eq(0)]
                        m.next = "DRAIN"
                    with m.Else():
                        m.next = "DATA"
                with m.Elif(got_end | timeout):
                    m.d.sync += seq.eq(0)
                    with m.If(refused):
                        m.d.sync += [status.eq(Status.REFUSED), answers.eq(0)]
                        m.next = "PUSH"
                    with m.Else():
                        cut_short()
            with m.State("COUNT"):
                m.d.comb += [in_frame.eq(1), inp.ready.eq(1)]
                with m.If(got_byte):
                    m.d.sync += [batch_count.eq(byte), crc.eq(crc8_next(crc, byte))]
                    with m.If(refused | (byte == 0) | (byte > self.batch_depth)):
                        m.d.sync += [status.eq(Status.REFUSED), answers.eq(0)]
                        m.next = "DRAIN"
                    with m.Else():
                        m.next = "DATA"
                with m.Elif(got_end | timeout):
                    cut_short()
            with m.State("DATA"):
                m.d.comb += in_frame.eq(1)
                with m.If(got_byte):
                    m.d.comb += [self.bytes.valid.eq(1), self.bytes.payload.data.eq(byte),
                                 self.bytes.payload.last.eq(last_byte), inp.ready.eq(self.bytes.ready)]
                    with m.If(self.bytes.ready):
                        m.d.sync += [crc.eq(crc8_next(crc, byte)), count.eq(count + 1)]
                        with m.If(last_byte):
                            m.d.sync += [count.eq(0), samples.eq(samples + 1)]
                            with m.If(~batch | (samples + 1 == batch_count)):
                                m.next = "CRC"
                with m.Elif(got_end | timeout):
                    m.d.comb += inp.ready.eq(1)
                    cut_short()
            with m.State("CRC"):
                m.d.comb += [in_frame.eq(1), inp.ready.eq(1)]
                m.d.sync += answers.eq(Mux(batch, 0, 1))     # unless the CRC checks (TAIL)
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
                    ok = crc == crc_received
                    m.d.sync += status.eq(Mux(ok, Status.OK, Status.BAD_CRC))
                    with m.If(batch):
                        m.d.sync += answers.eq(Mux(ok, batch_count, 0))
                    m.next = "PUSH"
            with m.State("LONG"):
                m.d.comb += [in_frame.eq(1), inp.ready.eq(1)]
                with m.If(got_end | timeout):
                    m.next = "PUSH"
            with m.State("DRAIN"):
                m.d.comb += [in_frame.eq(1), inp.ready.eq(1)]
                with m.If(got_end | timeout):
                    m.next = "PUSH"
            with m.State("PAD"):
                # The accelerator always gets whole samples: finish this one with zeros (a zero code
                # stands for a zero pixel too).
                m.d.comb += [self.bytes.valid.eq(count != sample_bytes), self.bytes.payload.data.eq(0),
                             self.bytes.payload.last.eq(last_byte)]
                with m.If(count == sample_bytes):
                    m.next = "PUSH"
                with m.Elif(self.bytes.ready):
                    m.d.sync += count.eq(count + 1)
                    with m.If(last_byte):
                        m.next = "PUSH"
            with m.State("PUSH"):
                m.d.comb += [self.tags.valid.eq(1), self.tags.payload.kind.eq(TagKind.SAMPLE)]
                with m.If(self.tags.ready):
                    m.next = "IDLE"
        return m


class CodeUnpacker(wiring.Component):
    """Turns the receiver's bytes into raw pixels: a compact byte into its ``8 // T`` codes, each
    code into its representative raw byte (the LUT maps it back to the code); raw bytes pass.

    Parameters
    ----------
    in_features : int
    code_bits : int
        T (0: no compact mode; everything passes).
    representatives : sequence of int
        Per code, its raw byte (:func:`representatives_of`).

    Members
    -------
    bytes : In(stream.Signature(FrameByteLayout))
    pixels : Out(stream.Signature(PixelBeatLayout))
        ``in_features`` beats per sample, ``last`` on the final one.
    """

    bytes: In(stream.Signature(FrameByteLayout))
    pixels: Out(stream.Signature(PixelBeatLayout))

    def __init__(self, in_features: int, code_bits: int = 0, representatives=()):
        self.in_features = in_features
        self.code_bits = code_bits
        self.representatives = [int(r) for r in representatives]
        if code_bits and not 1 <= len(self.representatives) <= 1 << code_bits:
            raise InputError(f"{len(self.representatives)} representatives for {code_bits}-bit codes")
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        inp, out = self.bytes, self.pixels
        m.d.comb += [out.payload.batch.eq(inp.payload.batch)]
        if not self.code_bits:
            m.d.comb += [out.valid.eq(inp.valid), inp.ready.eq(out.ready),
                         out.payload.data.eq(inp.payload.data), out.payload.last.eq(inp.payload.last)]
            return m
        t, k = self.code_bits, codes_per_byte(self.code_bits)
        in_last_byte = self.in_features - (math.ceil(self.in_features / k) - 1) * k     # codes in a sample's last byte
        table = self.representatives + [self.representatives[-1]] * ((1 << t) - len(self.representatives))
        reps = Array(Const(r, 8) for r in table)
        index = Signal(range(k))
        code = (inp.payload.data >> (index * t))[:t]
        final = Mux(inp.payload.last, index == in_last_byte - 1, index == k - 1)
        with m.If(inp.payload.packed):
            m.d.comb += [out.valid.eq(inp.valid), out.payload.data.eq(reps[code]),
                         out.payload.last.eq(inp.payload.last & final), inp.ready.eq(out.ready & final)]
            with m.If(out.valid & out.ready):
                m.d.sync += index.eq(Mux(final, 0, index + 1))
        with m.Else():
            m.d.comb += [out.valid.eq(inp.valid), inp.ready.eq(out.ready),
                         out.payload.data.eq(inp.payload.data), out.payload.last.eq(inp.payload.last)]
        return m


def counter_layout(layers: int = 0) -> data.StructLayout:
    """The counter values the transmitter sends, 32 bits each: :data:`COUNTER_NAMES`, then (``layers`` > 0)
    ``layers``, an array of :data:`LAYER_COUNTER_NAMES` per layer."""
    fields = {name: 32 for name in COUNTER_NAMES}
    if layers:
        fields["layers"] = data.ArrayLayout(data.StructLayout({name: 32 for name in LAYER_COUNTER_NAMES}), layers)
    return data.StructLayout(fields)


#: The top level's counter values (:func:`counter_layout` without layers).
CounterLayout = counter_layout()


class LinkTransmitter(wiring.Component):
    """Builds the answer frames: pairs each sample tag with the accelerator's next results.

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
    counters : In(counter_layout(config.counted_layers))
        The performance counters, sent in a counter frame.
    freeze_counters : Out(1)
        High while a counter frame goes out (the counters hold still).
    clear_counters : Out(1)
        Pulses after a counter frame went out.
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
            "counters": In(counter_layout(config.counted_layers)),
            "freeze_counters": Out(1),
            "clear_counters": Out(1),
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
        done = Signal(8)                # results of this tag answered
        with_result = Signal()          # the frame carries a result (else: an error answer)

        # The bytes of each frame kind, between its delimiters, CRC excluded.
        scores = []
        if cfg.scores:
            for j in range(cfg.classes):
                extended = Signal(signed(cfg.score_bytes * 8), name=f"score{j}")
                m.d.comb += extended.eq(result.scores[j])
                scores += [extended[8 * b:8 * (b + 1)] for b in range(cfg.score_bytes)]
        label = Mux(with_result, result.label, 0)
        result_bytes = [Const(KIND_RESULT, 8), (tag.seq + done)[:8], tag.status.as_value(), label] + \
            [Mux(with_result, b, 0) for b in scores]
        info_bytes = [Const(b, 8) for b in cfg.info_payload()]
        counter_words = [self.counters[name] for name in COUNTER_NAMES] + [
            self.counters.layers[i][name] for i in range(cfg.counted_layers) for name in LAYER_COUNTER_NAMES]
        counter_bytes = [Const(KIND_COUNTERS, 8)] + [word[8 * b:8 * (b + 1)] for word in counter_words for b in range(4)]
        assert len(result_bytes) + 1 == cfg.result_bytes
        frames = {TagKind.SAMPLE: result_bytes, TagKind.INFO: info_bytes, TagKind.COUNTERS: counter_bytes}

        index = Signal(range(max(len(f) for f in frames.values()) + 2))
        crc = Signal(8)
        # The byte at ``index``, registered: the frame multiplexer (kinds x bytes, the sequence number's
        # adder) starts and ends at flip-flops, instead of running from the SLIP encoder's ready through
        # the CRC (the iCEBreaker's slowest path, 47 ns, once the activity LED's was gone). After each
        # byte ``body`` (and ``final``) takes a cycle to follow ``index`` (``fresh`` low): the UART takes
        # a byte in tens of cycles, so the bubble costs nothing.
        body = Signal(8)
        fresh = Signal()
        fetched = Signal(8)
        body_length = Signal(range(max(len(f) for f in frames.values()) + 1))
        with m.Switch(tag.kind):
            for kind, frame_bytes in frames.items():
                with m.Case(kind):
                    m.d.comb += body_length.eq(len(frame_bytes))
                    with m.Switch(index):
                        for i, value in enumerate(frame_bytes):
                            with m.Case(i):
                                m.d.comb += fetched.eq(value)
        # ``final``: ``body`` is the frame's last byte, registered with it (the compare with the kind's
        # length is off the FSM's next-state logic).
        final = Signal()
        m.d.sync += [body.eq(fetched), final.eq(index == body_length - 1), fresh.eq(1)]
        active = Signal()               # a tag is being answered
        m.d.comb += self.freeze_counters.eq(active & (tag.kind == TagKind.COUNTERS))

        m.d.sync += [self.answered.eq(0), self.clear_counters.eq(0)]
        with m.FSM():
            with m.State("WAIT"):
                m.d.comb += self.tags.ready.eq(1)
                with m.If(self.tags.valid):
                    m.d.sync += [tag.eq(self.tags.payload), done.eq(0), active.eq(1)]
                    m.next = "NEXT"
            with m.State("NEXT"):
                # The next frame of this tag: a result to wait for, or an answer without one.
                with m.If((tag.kind != TagKind.SAMPLE) | (tag.count == 0)):
                    m.d.sync += with_result.eq(0)
                    m.next = "OPEN"
                with m.Elif(self.results.valid):
                    m.d.comb += self.results.ready.eq(1)
                    m.d.sync += [result.eq(self.results.payload), with_result.eq(1)]
                    m.next = "OPEN"
            with m.State("OPEN"):
                m.d.comb += [self.raw.valid.eq(1), self.raw.payload.delimiter.eq(1)]
                with m.If(self.raw.ready):
                    m.d.sync += [index.eq(0), fresh.eq(0), crc.eq(0)]
                    m.next = "BODY"
            with m.State("BODY"):
                m.d.comb += [self.raw.valid.eq(fresh), self.raw.payload.data.eq(body)]
                with m.If(fresh & self.raw.ready):
                    m.d.sync += [crc.eq(crc8_next(crc, body)), index.eq(index + 1), fresh.eq(0)]
                    with m.If(final):
                        m.next = "CRC"
            with m.State("CRC"):
                m.d.comb += [self.raw.valid.eq(1), self.raw.payload.data.eq(crc)]
                with m.If(self.raw.ready):
                    m.next = "CLOSE"
            with m.State("CLOSE"):
                m.d.comb += [self.raw.valid.eq(1), self.raw.payload.delimiter.eq(1)]
                with m.If(self.raw.ready):
                    with m.If(tag.kind == TagKind.SAMPLE):
                        m.d.sync += [self.label.eq(label), self.error.eq(tag.status != Status.OK),
                                     self.answered.eq(1), done.eq(done + 1)]
                        with m.If(done + 1 < tag.count):
                            m.next = "NEXT"
                        with m.Else():
                            m.d.sync += active.eq(0)
                            m.next = "WAIT"
                    with m.Else():
                        m.d.sync += [self.clear_counters.eq(tag.kind == TagKind.COUNTERS), active.eq(0)]
                        m.next = "WAIT"
        return m
