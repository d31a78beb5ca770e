import dataclasses
import random
import struct

import numpy as np
import pytest
from amaranth.sim import Simulator

from spikeforge.boards.link import (END, ESC, Counters, LayerCounters, LinkConfig, LinkError, Result, SlipStreamDecoder, Status,
                                    batch_frame, counters_request, crc8, info_request, lut_from_representatives,
                                    pack_codes, packed_sample_frame, parse_frame, representatives_of, sample_frame,
                                    slip_encode)
from spikeforge.boards.serial import SerialAccelerator, link_config_for
from spikeforge.hdl import Accelerator
from spikeforge.hdl.cycle_model import ACCUMULATE_DRAIN, predict
from spikeforge.ir import golden
from spikeforge.ir.random_network import random_network

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


#: A monotonic 2-bit LUT for the compact mode: raw bytes 0..9 -> 0, 10..99 -> 1, 100..255 -> 3 (2 unused).
LUT = [0] * 10 + [1] * 90 + [3] * 156


def run_board(host_bytes, *, timeout_cycles=3000, expect_frames, config_kw=None, divisor=DIVISOR,
              line_error=0.0, latency=37):
    """Send ``host_bytes`` (a list of frames and pauses) into a stand-in board's rx pin at ``divisor``
    clock cycles per bit (the host's clock off by ``line_error``); return the decoded frames from its tx pin."""
    accelerator = StandInAccelerator(classes=10, score_bits=20, latency=latency)
    config_kw = {"timesteps": 8, **(config_kw or {})}
    clk = 1_000_000 * divisor
    config = link_config_for(accelerator, in_features=IN_FEATURES, clk_freq=clk, baud=1_000_000, **config_kw)
    dut = SerialAccelerator(accelerator, config, timeout_cycles=timeout_cycles, led_count=6)
    assert dut.divisor == divisor
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
            await uart_send(ctx, dut.rx, chunk, divisor * (1 + line_error))

    async def host_rx(ctx):
        while len(frames) < expect_frames:
            frames.extend(decoder.feed(await uart_receive(ctx, dut.tx, divisor, 1)))

    sim = Simulator(dut)
    sim.add_clock(1 / clk)

    async def watchdog(ctx):
        await ctx.delay(40e-3)
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


@pytest.mark.slow     # the board link simulated through a dozen damaged frames: ~6 s
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


@pytest.mark.slow     # waits out the link's timeouts in simulation: ~4 s
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


def test_a_version_1_board_is_still_understood():
    v2 = LinkConfig(in_features=64, classes=10, score_bits=16, timesteps=4, baud=1_000_000, clk_freq=12_000_000,
                    batch_depth=8, code_bits=2, representatives=(0, 5, 9, 200))
    payload = v2.info_payload()
    assert parse_frame(payload + bytes([crc8(payload)])) == v2
    v1 = LinkConfig(in_features=64, classes=10, score_bits=16, timesteps=4, baud=1_000_000, clk_freq=12_000_000,
                    version=1)
    payload = v1.info_payload()
    assert len(payload) == 21                       # the version 1 frame, byte for byte
    assert parse_frame(payload + bytes([crc8(payload)])) == v1
    assert (v1.batch_depth, v1.code_bits) == (0, 0)
    # Per-layer counters: one byte more at the end (a host that does not know it reads the same fields).
    counted = dataclasses.replace(v2, counted_layers=3)
    payload = counted.info_payload()
    assert payload[:-1] == v2.info_payload() and payload[-1] == 3
    assert parse_frame(payload + bytes([crc8(payload)])) == counted and v2.counted_layers == 0


def test_counter_frames_with_and_without_layers():
    top = (4, 100, 400, 450, 3, 0)
    layers = ((300, 20, 130), (200, 0, 250))
    payload = bytes([ord("C")]) + struct.pack("<12I", *top, *(v for layer in layers for v in layer))
    frame = payload + bytes([crc8(payload)])
    config = LinkConfig(in_features=4, classes=3, score_bits=9, counted_layers=2)
    counters = parse_frame(frame, config)
    assert counters == Counters(*top, layers=(LayerCounters(300, 20, 130), LayerCounters(200, 0, 250)))
    assert all(layer.busy + layer.stalled + layer.starved == counters.busy for layer in counters.layers)
    with pytest.raises(LinkError, match=r"counter frame has 50 bytes, expected 38 \(1 counted layers\)"):
        parse_frame(frame, dataclasses.replace(config, counted_layers=1))
    old = bytes([ord("C")]) + struct.pack("<6I", *top)              # a board without per-layer counters
    assert parse_frame(old + bytes([crc8(old)]), dataclasses.replace(config, counted_layers=0)) == Counters(*top)


def test_lut_representatives_round_trip():
    reps = representatives_of(LUT)
    assert reps == (0, 10, 100, 100)
    assert lut_from_representatives(reps) == LUT
    assert representatives_of([1] * 256) is None                 # code 0 unreachable
    assert representatives_of([0] * 128 + [2] * 64 + [1] * 64) is None   # not monotonic
    assert pack_codes([1, 2, 3, 0, 1], 2) == bytes([0b00111001, 0b01])


@pytest.mark.parametrize("line_error", [-0.012, 0.012])
def test_fastest_divisor_with_a_dropped_byte_and_clock_error(line_error):
    """4 clock cycles per bit (3 Mbaud from 12 MHz), the host's clock off by 1.2 %: a lost byte is
    answered SHORT and the next frame is received normally."""
    good = bytes(range(30, 30 + IN_FEATURES))
    stream = [info_request(), sample_frame(1, good)[:6] + sample_frame(1, good)[7:], sample_frame(2, good)]
    config, frames = run_board(stream, expect_frames=3, divisor=4, line_error=line_error)
    label, scores = standin_reference(good, 10)
    assert frames[0] == config and config.version == 2
    assert (frames[1].seq, frames[1].status) == (1, Status.SHORT)
    assert frames[2] == Result(seq=2, status=Status.OK, label=label, scores=scores)


@pytest.mark.slow
def test_compact_samples_are_bit_exact_and_refused_without_the_mode():
    rng = random.Random(9)
    raw = [bytes(rng.randrange(256) for _ in range(IN_FEATURES)) for _ in range(2)]
    codes = [[LUT[v] for v in sample] for sample in raw]
    config_kw = {"timesteps": 2, "input_lut": LUT}
    stream = [info_request()] + [packed_sample_frame(5 + i, pack_codes(c, 2)) for i, c in enumerate(codes)]
    config, frames = run_board(stream, expect_frames=3, config_kw=config_kw, divisor=4)
    assert (config.code_bits, config.packed_bytes, config.lut()) == (2, 3, LUT)
    for i, (c, result) in enumerate(zip(codes, frames[1:])):
        # The board feeds the accelerator the representative of each code: the same codes as the raw sample.
        fed = bytes(config.representatives[code] for code in c)
        assert [LUT[v] for v in fed] == c
        label, scores = standin_reference(fed, 10)
        assert result == Result(seq=5 + i, status=Status.OK, label=label, scores=scores)
    # A board without the compact mode (T = 8) refuses the frame, and the next one is served.
    _, frames = run_board([packed_sample_frame(1, b"\x01\x02"), sample_frame(2, raw[0])], expect_frames=2)
    assert (frames[0].seq, frames[0].status) == (1, Status.REFUSED)
    assert frames[1] == Result(2, Status.OK, *standin_reference(raw[0], 10))


@pytest.mark.slow
def test_batch_runs_back_to_back_refuses_too_many_and_drops_a_damaged_one():
    rng = random.Random(3)
    samples = [bytes(rng.randrange(256) for _ in range(IN_FEATURES)) for _ in range(5)]
    damaged = batch_frame(9, samples[:2])
    damaged = damaged[:10] + damaged[11:]                 # a lost byte
    stream = [batch_frame(200, samples[:3]), counters_request(), 9000,     # the counters answered before going on
              batch_frame(7, samples[:5]),                  # 5 > batch_depth 4: refused
              damaged,
              batch_frame(20, samples[3:], packed=False), sample_frame(40, samples[0])]
    config, frames = run_board(stream, expect_frames=3 + 1 + 1 + 1 + 2 + 1, config_kw={"batch_depth": 4},
                               latency=20, divisor=4)
    results = [f for f in frames if isinstance(f, Result)]
    expect = [Result(s, Status.OK, *standin_reference(x, 10)) for s, x in zip((200, 201, 202), samples[:3])]
    assert results[:3] == expect
    counters = next(f for f in frames if isinstance(f, Counters))
    assert counters.samples == 3
    # Back-to-back: a result every latency + pixels cycles (the stand-in holds one sample at a time).
    assert counters.cycles_per_sample == pytest.approx(IN_FEATURES + 20 + 2, abs=2), counters
    # Busy from the first pixel to the last result; the stand-in refuses pixels while it computes.
    assert counters.busy >= counters.last_result - 2 and counters.output_stall == 0
    assert counters.input_stall == 2 * 21
    assert [(r.seq, r.status) for r in results[3:5]] == [(7, Status.REFUSED), (9, Status.SHORT)]
    assert results[5:] == [Result(20, Status.OK, *standin_reference(samples[3], 10)),
                           Result(21, Status.OK, *standin_reference(samples[4], 10)),
                           Result(40, Status.OK, *standin_reference(samples[0], 10))]


@pytest.mark.parametrize("argv, message", [
    (["run", "--port", "/dev/null-nothing", "--batch", "-1"], "--batch -1 must be >= 0"),
    (["simboard", "no-such-net", "--baud", "2950000"], "at most 1.3% allowed at 4 clock cycles per bit"),
    (["simboard", "no-such-net", "--batch-depth", "300"], "--batch-depth 300 is not in 0..255"),
    (["simboard", "no-such-net", "--board", "ulx3s-85f", "--clock-mhz", "0.3"], "no baud rate of the FT231X"),
])
def test_cli_refuses_bad_link_options_before_any_work(argv, message, capsys):
    from spikeforge.cli import main
    from spikeforge.ir.errors import EXIT_USAGE
    assert main(argv) == EXIT_USAGE
    assert message in capsys.readouterr().err


@pytest.mark.slow     # the real accelerator behind the link: ~5 s
def test_the_real_accelerator_behind_a_compact_batch_is_bit_exact():
    """A random dense network's Accelerator behind the link: a compact batch, the counters, a compact and a raw
    sample; every label and score equals the golden model's, and the counters count the batch alone."""
    net = random_network(0, sizes=(16, 8, 4), timesteps=4)
    accelerator = Accelerator(net, None)
    config = link_config_for(accelerator, in_features=16, timesteps=4, clk_freq=4e6, baud=1_000_000, batch_depth=4)
    assert config.code_bits == 4 and config.lut() == [int(v) for v in net.input_lut]
    dut = SerialAccelerator(accelerator, config, timeout_cycles=5000)
    samples = np.random.default_rng(1).integers(0, 256, size=(6, 16)).astype(np.uint8)
    packed = [pack_codes([config.lut()[v] for v in s], 4) for s in samples]
    frames = []

    async def host(ctx):
        await uart_send(ctx, dut.rx, batch_frame(10, packed[:4], packed=True) + counters_request(), 4)
        await ctx.tick().repeat(4000)           # the counters answered before the next samples
        await uart_send(ctx, dut.rx, packed_sample_frame(20, packed[4]) + sample_frame(21, samples[5]), 4)

    async def host_rx(ctx):
        decoder = SlipStreamDecoder()
        while len(frames) < 7:
            frames.extend(decoder.feed(await uart_receive(ctx, dut.tx, 4, 1)))

    sim = Simulator(dut)
    sim.add_clock(1 / 4e6)
    sim.add_testbench(host, background=True)
    sim.add_testbench(host_rx)
    sim.run()
    answers = [parse_frame(f, config) for f in frames]
    expected = golden.run(net, samples)
    results = [a for a in answers if isinstance(a, Result)]
    assert [(r.seq, r.status) for r in results] == [(s, Status.OK) for s in (10, 11, 12, 13, 20, 21)]
    assert [r.label for r in results] == list(expected.labels)
    assert [r.scores for r in results] == [tuple(int(v) for v in s) for s in expected.scores]
    counters = next(a for a in answers if isinstance(a, Counters))
    assert counters.samples == 4 and counters.first_result < counters.last_result <= counters.busy + 2
    # Per layer: every busy cycle of the accelerator is one of busy, stalled, starved; a layer's busy cycles hold
    # at least its spike work (a beat with k spikes keeps it k x chunks cycles) and at most its accumulate (work
    # plus drain) and its fire sweep, plus the two cycles a sample's hand-over and last beat may add (the cycle
    # model, beat by beat, on the same samples; the fire sweep of one sample overlaps the next one's accumulate).
    assert config.counted_layers == 2 and len(counters.layers) == 2
    model = predict(net, None, samples[:4])
    for layer, predicted in zip(counters.layers, model.layers):
        assert layer.busy + layer.stalled + layer.starved == counters.busy
        work = 4 * (predicted["accumulate_cycles"] - ACCUMULATE_DRAIN)
        assert work <= layer.busy + layer.stalled, (predicted["name"], layer, work)
        assert layer.busy <= 4 * (predicted["accumulate_cycles"] + predicted["fire_cycles"] + 2), (predicted, layer)
