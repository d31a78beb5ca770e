"""The on-chip batch buffer: a batch frame's samples in block RAM, run back-to-back once the frame checks.

:class:`BatchBuffer` sits between the link (after the :class:`~.link.CodeUnpacker`) and the
accelerator's ``pixels`` stream, and in the tag path from the :class:`~.link.LinkReceiver` to the
:class:`~.link.LinkTransmitter`:

* a sample frame's pixels (``batch = 0``) pass straight through, as without a buffer;
* a batch frame's pixels (``batch = 1``) are written into a memory of ``depth * in_features`` bytes
  as they arrive, at one a cycle;
* when the batch frame's tag comes (after its CRC): if its status is OK the buffer passes the tag
  on and replays the ``count`` samples into the accelerator
  at one pixel a cycle (as fast as the accelerator takes them); a damaged batch is dropped (the
  tag still goes on: the host gets one answer with the error). Nothing else enters the accelerator
  until the replay is done.

The host sends a batch only when the previous one's answers are back (:class:`~.host.BoardClient`),
so the memory is never written while it is read; a batch larger than ``depth`` never gets here (the
receiver answers ``REFUSED``), and the host splits a larger request into batches of ``depth``.

The memory is in banks of :data:`BANK_BYTES`, replayed through a pipeline that registers each bank's
byte before choosing between banks, and ``pixels`` leaves through a register stage: no path runs
from a block RAM through the bank multiplexer into the encoder (the ULX3S board's critical path at
53.9 MHz when the buffer was one memory read straight into ``pixels``).
"""

from amaranth.hdl import Array, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .block_ram import ECP5_WORDS, RegisteredReadRAM
from .link import PixelBeatLayout, PixelLayout, Status, TagKind, TagLayout
from spikeforge.ir.errors import InputError

__all__ = ["BatchBuffer", "BANK_BYTES"]

#: Bytes per memory bank of the buffer: one ECP5 block RAM (2048 x 9), four iCE40 ones (512 x 8).
BANK_BYTES = 2048


class BatchBuffer(wiring.Component):
    """Holds one batch of samples and runs it back-to-back.

    Parameters
    ----------
    in_features : int
        Bytes per sample.
    depth : int
        Samples the buffer holds (1..255).
    pixel_shape : shape
        The accelerator's pixel payload (``data``, ``last``), :data:`~.link.PixelLayout` by default.
    bank_bytes : int
        Bytes per memory bank (a power of two, :data:`BANK_BYTES` by default).

    Members
    -------
    beats : In(stream.Signature(PixelBeatLayout))
        Raw pixels from the link; ``batch`` marks a batch frame's.
    tags_in : In(stream.Signature(TagLayout))
        The receiver's tags.
    tags_out : Out(stream.Signature(TagLayout))
        The same tags, in order (a good batch's once its replay has started).
    pixels : Out(stream.Signature(pixel_shape))
        To the accelerator.
    replaying : Out(1)
        High while a batch runs.
    """

    def __init__(self, in_features: int, depth: int, pixel_shape=PixelLayout, *, bank_bytes: int = BANK_BYTES):
        if not 1 <= depth <= 255:
            raise InputError(f"batch depth {depth} is not in 1..255")
        if bank_bytes < 2 or bank_bytes & (bank_bytes - 1) or bank_bytes > ECP5_WORDS:
            raise ValueError(f"bank_bytes {bank_bytes} must be a power of two in 2..{ECP5_WORDS}")
        self.bank_bytes = bank_bytes
        self.in_features = in_features
        self.depth = depth
        super().__init__({
            "beats": In(stream.Signature(PixelBeatLayout)),
            "tags_in": In(stream.Signature(TagLayout)),
            "tags_out": Out(stream.Signature(TagLayout)),
            "pixels": Out(stream.Signature(pixel_shape)),
            "replaying": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.in_features
        size = self.depth * n
        banks = -(-size // self.bank_bytes)
        offset_bits = ceil_log2(self.bank_bytes)
        rams = []
        for bank in range(banks):
            ram = RegisteredReadRAM(max(2, min(self.bank_bytes, size - bank * self.bank_bytes)))
            m.submodules[f"memory{bank}"] = ram
            rams.append(ram)

        write_at = Signal(range(size + 1))
        read_at = Signal(range(size + 1))
        remaining = Signal(range(size + 1))
        position = Signal(range(n))         # of the next read pixel within its sample

        beats, tags_in, tags_out = self.beats, self.tags_in, self.tags_out
        # What the FSM offers; the output register below takes it when it is empty or being emptied.
        pixels = stream.Signature(self.pixels.payload.shape()).create()
        self._register_output(m, pixels)
        m.d.comb += tags_out.payload.eq(tags_in.payload)
        write_en = Signal()
        # Registered beside ``write_at`` so a write's enable is a few gates from registers: the buffer is
        # full (``write_at == size``), and the bank written, one-hot (the compares on ``write_at`` were the
        # ULX3S board's slowest path at 94.2 MHz).
        full = Signal()
        write_bank = Signal(banks, init=1)
        for bank, ram in enumerate(rams):
            m.d.comb += [ram.write_addr.eq(write_at[:len(ram.write_addr)]), ram.write_data.eq(beats.payload.data),
                         ram.write_en.eq(write_en & write_bank[bank]),
                         ram.read_addr.eq(read_at[:len(ram.read_addr)])]

        # The replay is a four-stage pipeline that moves as one (``advance``): A, the banks' block RAMs
        # read at ``read_at``; H, each bank's byte in its RAM's output register (:class:`RegisteredReadRAM`:
        # the DP16KD's own on the ECP5); B, each bank's byte registered again; C, the byte of the bank
        # read, registered. So no path runs from a block RAM through the multiplexer over the banks (with
        # 25 block RAMs in one memory that was the ULX3S board's slowest path, 61 MHz), and none from a
        # block RAM's array to a register in logic (5.8 ns clock-to-output plus the route: 89.6 MHz).
        a_valid, a_last, a_bank = Signal(), Signal(), Signal(range(banks))
        h_valid, h_last, h_bank = Signal(), Signal(), Signal(range(banks))
        b_valid, b_last, b_bank = Signal(), Signal(), Signal(range(banks))
        h_bytes = [ram.read_data for ram in rams]
        b_bytes = Array(Signal(8, name=f"b_byte{bank}") for bank in range(banks))
        c_valid, c_last, c_byte = Signal(), Signal(), Signal(8)
        advance = ~c_valid | pixels.ready

        with m.FSM():
            with m.State("PASS"):
                with m.If(beats.payload.batch):
                    m.d.comb += [beats.ready.eq(~full), write_en.eq(beats.valid & ~full)]
                    with m.If(beats.valid & ~full):
                        m.d.sync += [write_at.eq(write_at + 1), full.eq(write_at == size - 1)]
                        with m.If(write_at[:offset_bits] == self.bank_bytes - 1):
                            m.d.sync += write_bank.eq(write_bank.rotate_left(1))
                with m.Else():
                    m.d.comb += [pixels.valid.eq(beats.valid), beats.ready.eq(pixels.ready),
                                 pixels.payload.data.eq(beats.payload.data),
                                 pixels.payload.last.eq(beats.payload.last)]
                m.d.comb += [tags_out.valid.eq(tags_in.valid), tags_in.ready.eq(tags_out.ready)]
                with m.If(tags_in.valid & tags_out.ready & tags_in.payload.batch
                          & (tags_in.payload.kind == TagKind.SAMPLE)):
                    m.d.sync += [write_at.eq(0), full.eq(0), write_bank.eq(1)]
                    with m.If(tags_in.payload.status == Status.OK):
                        m.d.sync += [remaining.eq(tags_in.payload.count * n), read_at.eq(0), position.eq(0)]
                        m.next = "REPLAY"
            with m.State("REPLAY"):
                # A read port's word comes out the cycle after its address, and stays while the port
                # is not enabled: the pipeline stalls whole.
                m.d.comb += [self.replaying.eq(1), pixels.valid.eq(c_valid), pixels.payload.data.eq(c_byte),
                             pixels.payload.last.eq(c_last)]
                m.d.comb += [ram.read_en.eq(advance) for ram in rams]
                with m.If(advance):
                    m.d.sync += [a_valid.eq(remaining != 0), a_bank.eq(read_at >> offset_bits),
                                 h_valid.eq(a_valid), h_last.eq(a_last), h_bank.eq(a_bank),
                                 b_valid.eq(h_valid), b_last.eq(h_last), b_bank.eq(h_bank),
                                 c_valid.eq(b_valid), c_last.eq(b_last), c_byte.eq(b_bytes[b_bank])]
                    m.d.sync += [b_bytes[bank].eq(h_bytes[bank]) for bank in range(banks)]
                    with m.If(remaining != 0):
                        m.d.sync += [read_at.eq(read_at + 1), remaining.eq(remaining - 1),
                                     a_last.eq(position == n - 1),
                                     position.eq(Mux(position == n - 1, 0, position + 1))]
                with m.If((remaining == 0) & ~a_valid & ~h_valid & ~b_valid & ~c_valid):
                    m.next = "PASS"
        return m

    def _register_output(self, m, staged):
        """Drive ``self.pixels`` from a register loaded from ``staged`` (a pipeline stage with
        ``ready`` passed through combinationally, so a stream at one pixel a cycle keeps its rate)."""
        out = self.pixels
        m.d.comb += staged.ready.eq(~out.valid | out.ready)
        with m.If(staged.ready):
            m.d.sync += [out.valid.eq(staged.valid), out.payload.eq(staged.payload)]
