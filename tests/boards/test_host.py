"""The host client (pyserial on a pty) against the board design in Amaranth's simulator: streamed, compact and
batched runs, a batch split at the board's buffer, the board's counters, a byte lost inside a batch. The
Verilator-simulated board (test_simboard.py) covers the same with a real network; this runs in seconds."""

import os
import threading
import time
import tty
from collections import deque

import numpy as np
import pytest
from amaranth.sim import Simulator

from spikeforge.boards.host import BoardClient, RunStats
from spikeforge.boards.serial import SerialAccelerator, link_config_for
from spikeforge.hdl import Accelerator
from spikeforge.hdl.cycle_model import ACCUMULATE_DRAIN, predict
from spikeforge.ir import golden
from spikeforge.ir.random_network import random_network

pytestmark = pytest.mark.slow       # ~20 s: Amaranth's simulator clocks every bit

DIVISOR = 4


class PtyBoard:
    """The board design in Amaranth's simulator (a thread) with its UART pins bridged to a pty."""

    def __init__(self, dut, drop_rx_byte=-1):
        self.dut = dut
        self.drop = drop_rx_byte
        self.stop = False
        self.master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(self.master, False)
        self.port = os.ttyname(slave)
        self.slave = slave

    async def to_board(self, ctx):
        pending, index = deque(), 0
        ctx.set(self.dut.rx, 1)
        while not self.stop:
            try:
                pending.extend(os.read(self.master, 4096))
            except (BlockingIOError, OSError):
                pass
            if not pending:
                await ctx.tick().repeat(200)
                time.sleep(0.0005)
                continue
            while pending:
                byte, index = pending.popleft(), index + 1
                if index - 1 == self.drop:
                    continue
                for bit in [0] + [(byte >> k) & 1 for k in range(8)] + [1]:
                    ctx.set(self.dut.rx, bit)
                    await ctx.tick().repeat(DIVISOR)

    async def to_host(self, ctx):
        while not self.stop:
            await ctx.tick().repeat(1)
            if ctx.get(self.dut.tx):
                continue
            await ctx.tick().repeat(DIVISOR + DIVISOR // 2 - 1)
            byte = 0
            for k in range(8):
                byte |= ctx.get(self.dut.tx) << k
                await ctx.tick().repeat(DIVISOR)
            os.write(self.master, bytes([byte]))

    def __enter__(self):
        sim = Simulator(self.dut)
        sim.add_clock(1 / 12e6)
        # Both bridges end by themselves once stopped, so the simulation ends with no coroutine left
        # suspended (one left for the garbage collector is an unraisable-exception error under pytest).
        sim.add_testbench(self.to_board)
        sim.add_testbench(self.to_host)
        self.thread = threading.Thread(target=sim.run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join(60)
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def net():
    return random_network(0, sizes=(16, 8, 4), timesteps=4)


def board(net, **kwargs):
    accelerator = Accelerator(net, None)
    config = link_config_for(accelerator, in_features=16, timesteps=4, clk_freq=12e6, baud=3_000_000, batch_depth=4)
    return PtyBoard(SerialAccelerator(accelerator, config, timeout_cycles=200_000), **kwargs)


def check(results, net, samples):
    expected = golden.run(net, samples)
    assert [r.label for r in results] == list(expected.labels)
    assert [r.scores for r in results] == [tuple(int(v) for v in s) for s in expected.scores]


def test_stream_compact_and_a_batch_split_at_the_buffer(net):
    samples = np.random.default_rng(2).integers(0, 256, size=(6, 16)).astype(np.uint8)
    with board(net) as simulated, BoardClient(simulated.port, answer_timeout=20) as client:
        assert (client.config.baud, client.config.batch_depth, client.config.code_bits) == (3_000_000, 4, 4)
        streamed = RunStats()
        check(client.classify(samples, stats=streamed, compact=True), net, samples)
        assert [c.samples for c in streamed.counters] == [6]
        batched = RunStats()
        check(client.classify(samples, stats=batched, batch=6, compact=True), net, samples)
    assert [c.samples for c in batched.counters] == [4, 2]           # 6 > the buffer's 4: split, none lost
    assert batched.board_cycles_per_sample < streamed.board_cycles_per_sample / 4    # back-to-back vs the link
    assert batched.resent == 0 and batched.bytes_sent < 6 * (16 + 5)
    # Per-layer counters: in every reading each layer's busy, stalled and starved cycles split the accelerator's
    # busy cycles; over the batches a layer is busy at least its spike work and at most its accumulate and fire
    # phases with two cycles a sample to spare (the cycle model on the same samples; see test_link.py).
    assert all(len(c.layers) == 2 and all(l.busy + l.stalled + l.starved == c.busy for l in c.layers)
               for c in batched.counters + streamed.counters)
    model = predict(net, None, samples)
    for layer, predicted in zip(batched.board_layers, model.layers):
        assert 6 * (predicted["accumulate_cycles"] - ACCUMULATE_DRAIN) <= layer.busy + layer.stalled
        assert layer.busy <= 6 * (predicted["accumulate_cycles"] + predicted["fire_cycles"] + 2)


def test_a_byte_lost_inside_a_batch_resends_the_batch(net):
    samples = np.random.default_rng(3).integers(0, 256, size=(4, 16)).astype(np.uint8)
    # The info request is 3 bytes on the wire; then the batch frame: drop one of its codes.
    with board(net, drop_rx_byte=3 + 10) as simulated, BoardClient(simulated.port, answer_timeout=20) as client:
        stats = RunStats()
        check(client.classify(samples, stats=stats, batch=4, compact=True), net, samples)
    assert stats.errors == {"SHORT": 1} and stats.resent == 4 and [c.samples for c in stats.counters] == [4]


def test_a_batch_whose_answers_are_late_is_waited_for_not_sent_again(net):
    samples = np.random.default_rng(4).integers(0, 256, size=(4, 16)).astype(np.uint8)
    # Amaranth's simulator is far slower than the 20 ms timeout. Sending the batch again while the board replays
    # it would overwrite its buffer: the host asks for the counters instead and waits for them.
    with board(net) as simulated, BoardClient(simulated.port, answer_timeout=20) as client:
        client.answer_timeout = 0.02
        late = RunStats()
        check(client.classify(samples, stats=late, batch=4, compact=True), net, samples)
        after = RunStats()
        check(client.classify(samples[::-1], stats=after, batch=4, compact=True), net, samples[::-1])
    assert late.resent == 0 and late.errors == {}
    assert late.answer_timeout >= 0.04                 # the late answers doubled the timeout
    assert [c.samples for c in late.counters] == [4]   # the counters that said the board was done: the batch's
    assert [c.samples for c in after.counters] == [4] and after.resent == 0
