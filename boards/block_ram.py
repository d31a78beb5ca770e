"""A byte RAM whose read comes out of a register next to the block RAM: on the ECP5, the DP16KD's own.

:class:`RegisteredReadRAM` has one write port and one read port with a read latency of two cycles
(address, then data), both stages enabled by ``read_en``, so a pipeline around it can stall whole.

Why it exists: yosys maps an Amaranth :class:`~amaranth.lib.memory.Memory` onto the ECP5's DP16KD with
its output register off (``REGMODE "NOREG"``), and a register after it in logic then sits behind the
block RAM's clock-to-output (5.8 ns) and a route (5 ns): the ULX3S board's slowest path at 89.6 MHz.
With ``REGMODE "OUTREG"`` the block RAM's own register holds the byte and its clock-to-output is
under a nanosecond. So on an ECP5 platform the RAM is a DP16KD instantiated by hand (9-bit ports,
2,048 words); anywhere else (simulation, the iCE40, Verilog for another tool) it is a ``Memory`` read
port followed by a register, which behaves the same cycle for cycle.
"""

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["RegisteredReadRAM", "ECP5_WORDS", "is_ecp5"]

#: Bytes of one ECP5 DP16KD in its 2,048 x 9 mode (the most a :class:`RegisteredReadRAM` holds).
ECP5_WORDS = 2048
_ECP5_WIDTH = 9          # the DP16KD port width that holds a byte
_ECP5_ADDRESS_LSB = 3    # in the x9 mode the word address is ADx[13:3]


def is_ecp5(platform) -> bool:
    """Whether ``platform`` targets an ECP5 (an Amaranth Lattice platform with ``family == "ecp5"``)."""
    return getattr(platform, "family", None) == "ecp5"


class RegisteredReadRAM(wiring.Component):
    """``depth`` bytes, written one a cycle, read with two cycles of latency.

    Parameters
    ----------
    depth : int
        Bytes (2..:data:`ECP5_WORDS`).

    Members
    -------
    write_addr, write_data, write_en : In
        The byte ``write_data`` is stored at ``write_addr`` on a cycle with ``write_en`` high.
    read_addr : In
        Taken on a cycle with ``read_en`` high.
    read_en : In(1)
        Moves both read stages: the byte at an address taken on one ``read_en`` cycle is on
        ``read_data`` after the next ``read_en`` cycle, and stays while ``read_en`` is low.
    read_data : Out(8)
        Registered. A read of an address written in the same or the previous cycle is not defined.
    """

    def __init__(self, depth: int):
        if not 2 <= depth <= ECP5_WORDS:
            raise ValueError(f"depth {depth} is not in 2..{ECP5_WORDS}")
        self.depth = depth
        abits = max(1, (depth - 1).bit_length())
        super().__init__({
            "write_addr": In(abits), "write_data": In(8), "write_en": In(1),
            "read_addr": In(abits), "read_en": In(1), "read_data": Out(8),
        })

    def elaborate(self, platform):
        if is_ecp5(platform):
            return self._dp16kd()
        m = Module()
        m.submodules.memory = memory = Memory(shape=8, depth=self.depth, init=[])
        write, read = memory.write_port(), memory.read_port()
        m.d.comb += [write.addr.eq(self.write_addr), write.data.eq(self.write_data), write.en.eq(self.write_en),
                     read.addr.eq(self.read_addr), read.en.eq(self.read_en)]
        with m.If(self.read_en):
            m.d.sync += self.read_data.eq(read.data)
        return m

    def _dp16kd(self):
        m = Module()
        zero = Const(0, 1)

        def address(port, addr):
            bits = {f"i_AD{port}{i}": zero for i in range(14)}
            bits.update({f"i_AD{port}{i + _ECP5_ADDRESS_LSB}": addr[i] for i in range(len(addr))})
            return bits

        data_out = Signal(_ECP5_WIDTH)
        m.submodules.dp16kd = Instance(
            "DP16KD",
            p_DATA_WIDTH_A=_ECP5_WIDTH, p_DATA_WIDTH_B=_ECP5_WIDTH, p_REGMODE_A="NOREG", p_REGMODE_B="OUTREG",
            p_RESETMODE="SYNC", p_ASYNC_RESET_RELEASE="SYNC", p_CSDECODE_A="0b000", p_CSDECODE_B="0b000",
            p_WRITEMODE_A="NORMAL", p_WRITEMODE_B="NORMAL", p_GSR="DISABLED",
            # port A writes
            i_CLKA=ClockSignal(), i_CEA=Const(1, 1), i_OCEA=Const(1, 1), i_WEA=self.write_en, i_RSTA=zero,
            **{f"i_CSA{i}": zero for i in range(3)},
            **address("A", self.write_addr),
            **{f"i_DIA{i}": (self.write_data[i] if i < 8 else zero) for i in range(18)},
            # port B reads: CEB latches the address, OCEB loads the output register
            i_CLKB=ClockSignal(), i_CEB=self.read_en, i_OCEB=self.read_en, i_WEB=zero, i_RSTB=zero,
            **{f"i_CSB{i}": zero for i in range(3)},
            **address("B", self.read_addr),
            **{f"i_DIB{i}": zero for i in range(18)},
            **{f"o_DOB{i}": data_out[i] for i in range(_ECP5_WIDTH)},
        )
        m.d.comb += self.read_data.eq(data_out[:8])
        return m
