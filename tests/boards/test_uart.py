import random

import pytest
from amaranth.sim import Simulator

from spikeforge.boards.uart import (BRIDGES, BaudError, UARTReceiver, UARTTransmitter, allowed_error, baud_divisor,
                                    board_baud)

from spikeforge.testing.uart_bench import uart_receive, uart_send


def test_baud_divisor():
    assert baud_divisor(12e6, 115200) == 104
    assert baud_divisor(25e6, 1_000_000) == 25


@pytest.mark.parametrize("clk, baud, message", [
    (12e6, 4_000_000, "too high for a 12 MHz clock"),
    (12e6, 2_300_000, "nearest is 2400000 baud"),
    (12e6, 0, "not a positive integer"),
    (25e6, 3_000_000, r"nearest is 3125000 baud \(4.2% off"),
])
def test_baud_divisor_refuses(clk, baud, message):
    with pytest.raises(BaudError, match=message):
        baud_divisor(clk, baud)


@pytest.mark.parametrize("board, clk, baud", [
    ("ICEBreakerPlatform", 12e6, 3_000_000),        # FT2232H: 12 MHz / 4
    ("ICEBreakerPlatform", 24e6, 6_000_000),
    ("ICEBreakerPlatform", 48e6, 12_000_000),       # the FT2232H's fastest
    ("ICEBreakerPlatform", 22.5e6, 3_200_000),      # 12 Mbaud / 3.75, 7 cycles a bit (0.4 % off)
    ("ULX3S_85F_Platform", 25e6, 1_500_000),        # FT231X: 3 Mbaud is 4.2 % off 25 MHz / 8
    ("ULX3S_85F_Platform", 48e6, 3_000_000),        # the FT231X's fastest
    ("ULX3S_85F_Platform", 70.3125e6, 3_000_000),   # 23 cycles a bit, 1.9 % off: within 2 % at 23
    ("SomeOtherPlatform", 12e6, 115200),
])
def test_board_baud_is_the_bridges_fastest_the_clock_makes(board, clk, baud):
    assert board_baud(board, clk) == baud
    divisor = baud_divisor(clk, baud)
    assert divisor >= 4 and abs(clk / divisor - baud) / baud <= allowed_error(divisor)


def test_bridge_rates_and_a_clock_too_slow():
    assert BRIDGES["FT231X"].rates()[:5] == [3_000_000, 2_000_000, 1_500_000, 1_200_000, 1_000_000]
    assert BRIDGES["FT2232H"].rates()[:3] == [12_000_000, 8_000_000, 6_000_000]
    with pytest.raises(BaudError, match=r"no baud rate of the FT231X from 3000000 down to 120000 can be made "
                                        r"from a 0.4 MHz clock"):
        board_baud("ULX3S_85F_Platform", 0.4e6)
    with pytest.raises(BaudError, match=r"at most 1.3% allowed at 4 clock cycles per bit"):
        baud_divisor(12e6, 2_950_000)


@pytest.mark.parametrize("divisor, baud_error", [(16, -0.03), (16, 0.0), (16, 0.03), (4, -0.013), (4, 0.013)])
def test_receiver_tolerates_baud_error(divisor, baud_error):
    dut = UARTReceiver(divisor)
    payload = bytes([0x00, 0xFF, 0x55, 0xAA, 0xC0, 0x01, 0x80]) + bytes(random.Random(1).randbytes(20))
    received = bytearray()

    async def driver(ctx):
        await ctx.tick().repeat(5)
        await uart_send(ctx, dut.rx, payload, divisor * (1 + baud_error))
        await ctx.tick().repeat(3 * divisor)

    async def checker(ctx):
        ctx.set(dut.data.ready, 1)
        async for _, _, valid, data, framing in ctx.tick().sample(dut.data.valid, dut.data.payload,
                                                                   dut.framing_error):
            assert not framing
            if valid:
                received.append(data)
            if len(received) == len(payload):
                break

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(driver)
    sim.add_process(checker)
    sim.run()
    assert bytes(received) == payload


def test_receiver_drops_a_framing_error_and_recovers():
    divisor = 8
    dut = UARTReceiver(divisor)
    events = []

    async def driver(ctx):
        ctx.set(dut.data.ready, 1)
        await ctx.tick().repeat(4)
        # 0x5A with a low stop bit, then a long break, then a good byte.
        for bit in [0] + [(0x5A >> i) & 1 for i in range(8)] + [0] * 12:
            ctx.set(dut.rx, bit)
            await ctx.tick().repeat(divisor)
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(2 * divisor)
        await uart_send(ctx, dut.rx, b"\x3c", divisor)
        await ctx.tick().repeat(2 * divisor)

    async def monitor(ctx):
        async for _, _, valid, data, framing in ctx.tick().sample(dut.data.valid, dut.data.payload,
                                                                   dut.framing_error):
            if framing:
                events.append("framing")
            if valid:
                events.append(data)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(driver)
    sim.add_process(monitor)
    sim.run_until(1e-6 * 400)
    assert events == ["framing", 0x3C]


@pytest.mark.parametrize("baud_error", [-0.03, 0.03])
def test_transmitter_round_trip(baud_error):
    divisor = 12
    dut = UARTTransmitter(divisor)
    payload = bytes(random.Random(2).randbytes(16)) + b"\x00\xff"
    received = []

    async def driver(ctx):
        for byte in payload:
            ctx.set(dut.data.payload, byte)
            ctx.set(dut.data.valid, 1)
            await ctx.tick().until(dut.data.ready)
        ctx.set(dut.data.valid, 0)

    async def checker(ctx):
        # A receiver whose clock is off by baud_error still reads every byte.
        received.append(await uart_receive(ctx, dut.tx, divisor * (1 + baud_error), len(payload)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(driver, background=True)
    sim.add_testbench(checker)
    sim.run()
    assert received[0] == payload
