# amaranth: UnusedElaboratable=no
import pytest
from amaranth.sim import Simulator

from spikeforge.boards.leds import PulseStretcher


@pytest.mark.parametrize("cycles", [1, 30, 100])
def test_pulse_stretcher_lights_at_least_the_time_asked_and_restarts(cycles):
    """Whatever the prescaler's phase at the trigger, ``lit`` stays high at least ``cycles`` cycles (and
    less than 2.2 times that, but for a time shorter than the 2-cycle tick allows); a second trigger while lit restarts the time."""
    dut = PulseStretcher(cycles)
    durations = []

    async def lit_after_trigger(ctx):
        ctx.set(dut.trigger, 1)
        await ctx.tick()
        ctx.set(dut.trigger, 0)
        lit = 0
        while ctx.get(dut.lit):
            lit += 1
            await ctx.tick()
        return lit

    async def testbench(ctx):
        for phase in range(dut.tick_cycles + 1):
            await ctx.tick().repeat(phase + 1)
            durations.append(await lit_after_trigger(ctx))
        # Retriggered half way: lit from the second trigger on for the full time again.
        ctx.set(dut.trigger, 1)
        await ctx.tick()
        ctx.set(dut.trigger, 0)
        await ctx.tick().repeat(cycles // 2 + 1)
        durations.append(await lit_after_trigger(ctx))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    assert min(durations) >= cycles, durations
    assert max(durations) <= (PulseStretcher.TICKS - 1) * dut.tick_cycles, durations
    if cycles >= 30:
        assert max(durations) < 2.2 * cycles, durations


def test_pulse_stretcher_refuses_no_time():
    with pytest.raises(ValueError, match="cycles 0 must be >= 1"):
        PulseStretcher(0)
