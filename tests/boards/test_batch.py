# amaranth: UnusedElaboratable=no
"""The batch buffer alone (Amaranth simulator): banks, the replay pipeline, stalls."""

import random

import pytest
from amaranth.sim import Simulator

from spikeforge.boards.batch import BatchBuffer
from spikeforge.boards.link import Status, TagKind


@pytest.mark.parametrize("in_features, depth, bank_bytes", [(5, 7, 8), (6, 4, 2048), (3, 11, 4)])
def test_a_batch_replays_byte_for_byte_across_banks_under_back_pressure(in_features, depth, bank_bytes):
    """``depth`` samples written into banks of ``bank_bytes`` (several banks, a last one part full, or one) come
    back in order with ``last`` on each sample's final byte while the accelerator takes them at random; a
    sample frame after the batch passes straight through, behind the batch's final byte."""
    rng = random.Random(in_features * 100 + depth)
    dut = BatchBuffer(in_features, depth, bank_bytes=bank_bytes)
    batch = [rng.randrange(256) for _ in range(depth * in_features)]
    after = [rng.randrange(256) for _ in range(in_features)]
    got = []

    async def link(ctx):
        ctx.set(dut.tags_out.ready, 1)
        for index, byte in enumerate(batch):
            ctx.set(dut.beats.payload, {"data": byte, "last": index % in_features == in_features - 1, "batch": 1})
            ctx.set(dut.beats.valid, 1)
            await ctx.tick().until(dut.beats.ready)
        ctx.set(dut.beats.valid, 0)
        ctx.set(dut.tags_in.payload, {"kind": TagKind.SAMPLE, "seq": 3, "status": Status.OK, "count": depth,
                                      "batch": 1})
        ctx.set(dut.tags_in.valid, 1)
        await ctx.tick().until(dut.tags_in.ready)
        ctx.set(dut.tags_in.valid, 0)
        # The next sample frame waits until the replay is over (the FSM is back in PASS).
        await ctx.tick().until(~dut.replaying)
        for index, byte in enumerate(after):
            ctx.set(dut.beats.payload, {"data": byte, "last": index == in_features - 1, "batch": 0})
            ctx.set(dut.beats.valid, 1)
            await ctx.tick().until(dut.beats.ready)
        ctx.set(dut.beats.valid, 0)

    async def accelerator(ctx):
        while len(got) < len(batch) + len(after):
            ready = rng.random() < 0.6
            ctx.set(dut.pixels.ready, ready)
            _, _, valid, data, last = await ctx.tick().sample(dut.pixels.valid, dut.pixels.payload.data,
                                                              dut.pixels.payload.last)
            if valid and ready:
                got.append((data, last))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(link, background=True)
    sim.add_testbench(accelerator)
    sim.run_until(1e-6 * 20 * (len(batch) + len(after) + 100))
    expected = [(b, int(i % in_features == in_features - 1)) for i, b in enumerate(batch + after)]
    assert got == expected


@pytest.mark.parametrize("bank_bytes", [12, 1, 4096])
def test_bank_bytes_must_be_a_power_of_two_that_one_block_ram_holds(bank_bytes):
    with pytest.raises(ValueError, match=f"bank_bytes {bank_bytes} must be a power of two in 2..2048"):
        BatchBuffer(4, 2, bank_bytes=bank_bytes)
