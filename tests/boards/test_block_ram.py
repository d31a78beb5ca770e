# amaranth: UnusedElaboratable=no
"""The registered-read byte RAM: its timing in simulation, and the ECP5 DP16KD it becomes on a board."""

import random
import types

import pytest
from amaranth.hdl import Fragment, Instance
from amaranth.sim import Simulator

from spikeforge.boards.block_ram import ECP5_WORDS, RegisteredReadRAM, is_ecp5


def test_a_read_comes_two_read_enables_later_and_holds_while_stalled():
    """The byte at an address taken on one ``read_en`` cycle is on ``read_data`` after the next ``read_en``
    cycle, and stays there while ``read_en`` is low (the pipeline around it stalls whole)."""
    rng = random.Random(5)
    depth = 37
    contents = [rng.randrange(256) for _ in range(depth)]
    dut = RegisteredReadRAM(depth)
    seen = []

    async def bench(ctx):
        for address, byte in enumerate(contents):
            ctx.set(dut.write_addr, address)
            ctx.set(dut.write_data, byte)
            ctx.set(dut.write_en, 1)
            await ctx.tick()
        ctx.set(dut.write_en, 0)
        addresses = [rng.randrange(depth) for _ in range(60)]
        pipeline = []                       # addresses taken, oldest first
        for address in addresses + [0, 0]:
            enable = rng.random() < 0.6
            ctx.set(dut.read_addr, address)
            ctx.set(dut.read_en, enable)
            before = ctx.get(dut.read_data)
            await ctx.tick()
            if enable:
                pipeline.append(address)
                if len(pipeline) >= 2:
                    seen.append((ctx.get(dut.read_data), contents[pipeline[-2]]))
            else:
                assert ctx.get(dut.read_data) == before

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(seen) > 20
    assert all(got == want for got, want in seen)


def test_on_an_ecp5_it_is_a_dp16kd_with_its_output_register_on():
    """On an ECP5 platform: one DP16KD, 9-bit ports, ``REGMODE_B = OUTREG``, the word address on
    ``AD*[13:3]`` (the x9 mode), both read stages enabled by ``read_en``, the byte on ``DOB0..7``."""
    ecp5 = types.SimpleNamespace(family="ecp5")
    dut = RegisteredReadRAM(ECP5_WORDS)
    fragment = Fragment.get(dut, ecp5)
    instances = [sub for sub, _name, _src in fragment.subfragments if isinstance(sub, Instance)]
    assert len(instances) == 1 and instances[0].type == "DP16KD"
    dp16kd = instances[0]
    assert dp16kd.parameters["REGMODE_B"] == "OUTREG"
    assert dp16kd.parameters["DATA_WIDTH_A"] == dp16kd.parameters["DATA_WIDTH_B"] == 9
    ports = {name: value for name, (value, _kind) in dp16kd.ports.items()}
    for port in "AB":
        assert [repr(ports[f"AD{port}{i}"]) for i in range(3)] == ["(const 1'd0)"] * 3
    assert repr(ports["ADB3"]) == repr(dut.read_addr[0]) and repr(ports["ADB13"]) == repr(dut.read_addr[10])
    assert repr(ports["ADA3"]) == repr(dut.write_addr[0])
    assert repr(ports["CEB"]) == repr(ports["OCEB"]) == repr(dut.read_en)
    assert repr(ports["WEA"]) == repr(dut.write_en)


@pytest.mark.parametrize("family, expected", [("ecp5", True), ("ice40", False)])
def test_is_ecp5_reads_the_platform_family(family, expected):
    assert is_ecp5(types.SimpleNamespace(family=family)) is expected
    assert is_ecp5(None) is False


def test_a_depth_one_block_ram_cannot_hold_is_refused():
    with pytest.raises(ValueError, match="depth 4096 is not in 2..2048"):
        RegisteredReadRAM(4096)
