import random

import pytest
from amaranth.sim import Simulator

from spikeforge.boards.link import (END, ESC, LinkConfig, LinkError, Result, SlipStreamDecoder, Status, crc8,
                                    info_request, parse_frame, sample_frame, slip_encode)
from spikeforge.boards.top import SerialAccelerator, link_config_for

from spikeforge.testing.uart_bench import uart_receive, uart_send
from spikeforge.testing.boards_standin import StandInAccelerator, standin_reference

DIVISOR = 8
IN_FEATURES = 12


def test_crc8_check_value():
    assert crc8(b"123456789") == 0xF4      # CRC-8/SMBUS check value


def test_slip_round_trip_with_special_bytes():
    payload = bytes([1, END, 2, ESC, ESC, END, 3])
    stuffed = slip_encode(payload)
    assert stuffed.count(bytes([END])) == 2
    decoder = SlipStreamDecoder()
    assert decoder.feed(stuffed[:4]) == []
    assert decoder.feed(stuffed[4:] + bytes([END, END])) == [payload]


def test_parse_frame_rejects_bad_crc_and_kind():
    config = LinkConfig(in_features=4, classes=3, score_bits=9)
    with pytest.raises(LinkError, match="CRC mismatch"):
        parse_frame(b"R\x00\x00\x01\x00")
    body = b"X\x00"
    with pytest.raises(LinkError, match="unknown frame kind 0x58"):
        parse_frame(body + bytes([crc8(body)]), config)


WINDOW = 2


def run_board(host_bytes, *, timeout_cycles=3000, expect_frames, config_kw=None):
    """Send ``host_bytes`` (a list of frames and pauses) into a stand-in board's rx pin; return the
    decoded frames from its tx pin."""
    accelerator = StandInAccelerator(classes=10, score_bits=20)
    config = link_config_for(accelerator, in_features=IN_FEATURES, timesteps=8, clk_freq=8_000_000,
                             baud=1_000_000, **(config_kw or {}))
    dut = SerialAccelerator(accelerator, config, timeout_cycles=timeout_cycles, led_count=6)
    assert dut.divisor == DIVISOR
    frames = []
    decoder = SlipStreamDecoder()

    async def host_tx(ctx):
        # Like the host client: at most WINDOW frames without an answer.
        for index, chunk in enumerate(host_bytes):
            if isinstance(chunk, int):          # a pause, in clock cycles
                await ctx.tick().repeat(chunk)
                continue
            while len(frames) < index - WINDOW:
                await ctx.tick().repeat(50)
            await uart_send(ctx, dut.rx, chunk, DIVISOR)

    async def host_rx(ctx):
        while len(frames) < expect_frames:
            frames.extend(decoder.feed(await uart_receive(ctx, dut.tx, DIVISOR, 1)))

    sim = Simulator(dut)
    sim.add_clock(1 / 8e6)
    async def watchdog(ctx):
        await ctx.delay(20e-3)
        raise AssertionError(f"expected {expect_frames} frames from the board, got {len(frames)}: {[parse_frame(f, config) for f in frames]}")

    sim.add_testbench(host_tx, background=True)
    sim.add_testbench(watchdog, background=True)
    sim.add_testbench(host_rx)
    sim.run()
    return config, [parse_frame(f, config) for f in frames]


def test_info_and_samples_round_trip():
    rng = random.Random(5)
    samples = [bytes(rng.randrange(256) for _ in range(IN_FEATURES)) for _ in range(4)]
    samples[1] = bytes([END, ESC] * (IN_FEATURES // 2))         # exercises the stuffing
    stream = [info_request()] + [sample_frame(seq, s) for seq, s in enumerate(samples, 100)]
    config, frames = run_board(stream, expect_frames=1 + len(samples))
    assert frames[0] == config
    for seq, (sample, result) in enumerate(zip(samples, frames[1:]), 100):
        label, scores = standin_reference(sample, 10)
        assert result == Result(seq=seq, status=Status.OK, label=label, scores=scores)


def test_frames_without_scores():
    sample = bytes(range(IN_FEATURES))
    config, frames = run_board([sample_frame(7, sample)], expect_frames=1, config_kw={"scores": False})
    assert frames == [Result(seq=7, status=Status.OK, label=standin_reference(sample, 10)[0], scores=())]


DAMAGE = {
    "drop": (lambda f: f[:5] + f[6:], Status.SHORT),                       # a lost byte
    "extra": (lambda f: f[:5] + b"\x33" + f[5:], Status.LONG),             # an extra byte
    "flip": (lambda f: f[:5] + bytes([f[5] ^ 0x10]) + f[6:], Status.BAD_CRC),  # a corrupted byte
    "tail": (lambda f: f[:-1] + b"\x33" + f[-1:], Status.LONG),           # junk after the CRC
}


def test_recovers_from_damaged_frames():
    good = bytes(range(10, 10 + IN_FEATURES))
    stream = []
    for i, name in enumerate(DAMAGE):
        stream += [DAMAGE[name][0](sample_frame(2 * i, good)), sample_frame(2 * i + 1, good)]
    _, frames = run_board(stream, expect_frames=2 * len(DAMAGE))
    label, scores = standin_reference(good, 10)
    for i, name in enumerate(DAMAGE):
        damaged, after = frames[2 * i], frames[2 * i + 1]
        assert (damaged.seq, damaged.status) == (2 * i, DAMAGE[name][1]), name
        assert after == Result(seq=2 * i + 1, status=Status.OK, label=label, scores=scores), name


def test_lost_end_and_silence():
    good = bytes(range(IN_FEATURES))
    first = sample_frame(1, good)[:-1]          # its closing END is lost ...
    second = sample_frame(2, good)[1:]          # ... and so is the second's opening one
    partial = sample_frame(4, good)[:8]         # then the host stops mid-frame
    _, frames = run_board([first + second, sample_frame(3, good), partial, 3000, sample_frame(5, good)],
                          timeout_cycles=2000, expect_frames=4)
    assert [(f.seq, f.status) for f in frames] == [(1, Status.LONG), (3, Status.OK), (4, Status.TIMEOUT),
                                                   (5, Status.OK)]
    label, scores = standin_reference(good, 10)
    assert frames[3] == Result(seq=5, status=Status.OK, label=label, scores=scores)
