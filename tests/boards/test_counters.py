"""Per-layer performance counters in Amaranth's simulator: a layer stalled by back-pressure counts every cycle as
stalled, at full rate and at half rate (its handshakes gated off every other cycle)."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from spikeforge.boards.counters import PerformanceCounters
from spikeforge.hdl import Accelerator
from spikeforge.ir.random_network import random_network

WINDOW = 1000


def _counted(folding):
    """An accelerator with counters on its streams and every layer's probe, and the network."""
    net = random_network(0, sizes=(20, 12, 9, 4), timesteps=3)
    dut = Accelerator(net, folding)
    probes = dut.stage_probes()
    counters = PerformanceCounters(len(probes))
    m = Module()
    m.submodules.dut, m.submodules.counters = dut, counters
    m.d.comb += [counters.pixel_valid.eq(dut.pixels.valid), counters.pixel_ready.eq(dut.pixels.ready),
                 counters.pixel_last.eq(dut.pixels.payload.last), counters.result_valid.eq(dut.results.valid),
                 counters.result_ready.eq(dut.results.ready)]
    m.d.comb += [counters.stages[index].eq(probe) for index, probe in enumerate(probes)]
    return m, dut, counters, net


@pytest.mark.slow     # about 10,000 cycles simulated: ~7 s
@pytest.mark.parametrize("fc1", ["3", "3:spram"])
def test_a_layer_held_by_back_pressure_counts_every_cycle_stalled(fc1):
    m, dut, counters, net = _counted({"fc1": fc1, "fc2": 2, "fc3": 2})
    samples = np.random.default_rng(0).integers(0, 256, size=(40, net.in_features))
    window = {}

    async def driver(ctx):
        for sample in samples:
            for index, value in enumerate(sample):
                ctx.set(dut.pixels.payload.data, int(value))
                ctx.set(dut.pixels.payload.last, index == len(sample) - 1)
                ctx.set(dut.pixels.valid, 1)
                await ctx.tick().until(dut.pixels.ready)

    def read(ctx):
        return [tuple(ctx.get(layer[name]) for name in ("busy", "stalled", "starved"))
                for layer in counters.values.layers]

    async def checker(ctx):
        ctx.set(dut.results.ready, 1)
        await ctx.tick().repeat(1500)
        ctx.set(dut.results.ready, 0)           # the link stops taking results: the pipeline fills and stops
        await ctx.tick().repeat(6000)
        before = read(ctx)
        await ctx.tick().repeat(WINDOW)
        window["counts"] = [tuple(b - a for a, b in zip(x, y)) for x, y in zip(before, read(ctx))]
        window["busy"] = ctx.get(counters.values.busy)
        ctx.set(dut.results.ready, 1)           # drain, so the driver puts every sample and ends

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(driver)
    sim.add_testbench(checker)
    sim.run()
    # Every layer, fc1 at half rate included (it counted half of them as busy before the probe's gated bit).
    assert window["counts"] == [(0, WINDOW, 0)] * 3
    assert window["busy"] > 0
