"""Amaranth-simulator drivers and checkers shared by the HDL unit tests.

Two async testbenches per stream test: a driver that puts beats (with optional random gaps) and a
checker that takes them (with optional random back-pressure) and asserts the stream rules: once
``valid`` is high it stays high with the same payload until ``ready`` takes it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
from amaranth.sim import Simulator

from spikeforge.hdl.cycle_model import predict


def event_sequence(codes, group: int, timesteps: int) -> list:
    """The beats a producer (encoder or fire sweep) emits for one sample: ``(mask, chunk, step, last)``.

    ``codes`` are the producer's T-bit output codes (one per neuron), ``group`` its lanes.
    """
    codes = [int(c) for c in codes]
    chunks = -(-len(codes) // group)
    beats = []
    for t in range(timesteps):
        for c in range(chunks):
            mask = 0
            for k in range(group):
                i = c * group + k
                if i < len(codes) and (codes[i] >> (timesteps - 1 - t)) & 1:
                    mask |= 1 << k
            final = t == timesteps - 1 and c == chunks - 1
            if mask or final:
                beats.append((mask, c, t, int(final)))
    return beats


def codes_from_events(beats, group: int, features: int, timesteps: int) -> list:
    """Inverse of :func:`event_sequence` for a sample's beats -> codes."""
    codes = [0] * features
    for mask, chunk, step, _last in beats:
        for k in range(group):
            if (mask >> k) & 1:
                index = chunk * group + k
                assert index < features, f"spike for padding neuron {index}"
                codes[index] |= 1 << (timesteps - 1 - step)
    return codes


def as_event(view) -> tuple:
    return (int(view.mask), int(view.chunk), int(view.step), int(view.last))


async def put_stream(ctx, port, beats, *, gap=0.0, rng=None, encode=lambda b: b, cycles=None):
    """Drive ``beats`` into ``port`` (a stream interface); with probability ``gap`` idle a cycle first.

    Appends the cycle (clock edges since the start, 0-based) of every transfer to ``cycles``.
    """
    rng = rng or random.Random(0)
    cycle = 0
    for beat in beats:
        while gap and rng.random() < gap:
            ctx.set(port.valid, 0)
            await ctx.tick()
            cycle += 1
        ctx.set(port.payload, encode(beat))
        ctx.set(port.valid, 1)
        while True:
            _clk, _rst, ready = await ctx.tick().sample(port.ready)
            cycle += 1
            if ready:
                break
        if cycles is not None:
            cycles.append(cycle - 1)
    ctx.set(port.valid, 0)


async def take_stream(ctx, port, count=None, *, until=None, stall=0.0, rng=None, decode=lambda v: v,
                      hold=0, max_cycles=None):
    """Take beats from ``port`` until ``count`` are taken (or ``until(taken)`` is true); with probability
    ``stall`` hold ``ready`` low a cycle, and keep it low for the first ``hold`` cycles. Fails (instead
    of simulating forever) when the beats are not all taken within ``max_cycles``.

    Checks the stream rule on every cycle: once ``valid`` is high it stays high, with the same payload,
    until the beat is taken. Returns ``[(cycle, decoded payload)]``.
    """
    rng = rng or random.Random(1)
    done = until or (lambda taken: len(taken) == count)
    taken = []
    cycle = 0
    pending = None        # payload bits shown with valid and not yet taken
    def next_ready(cycle):
        return 0 if cycle < hold or (stall and rng.random() < stall) else 1

    ready = next_ready(0)
    ctx.set(port.ready, ready)
    async for _clk, _rst, valid, payload in ctx.tick().sample(port.valid, port.payload):
        assert max_cycles is None or cycle < max_cycles, \
            f"only {len(taken)} beats taken in {max_cycles} cycles: the design is stuck or far too slow"
        bits = payload.as_bits() if hasattr(payload, "as_bits") else int(payload)
        if pending is not None:
            assert valid, f"cycle {cycle}: valid dropped before the beat was taken"
            assert bits == pending, f"cycle {cycle}: payload changed while valid and not ready"
        if valid and ready:
            taken.append((cycle, decode(payload)))
            pending = None
            if done(taken):
                break
        elif valid:
            pending = bits
        cycle += 1
        ready = next_ready(cycle)
        ctx.set(port.ready, ready)
    ctx.set(port.ready, 0)
    return taken


def pixel_beats(samples) -> list:
    beats = []
    for sample in samples:
        flat = [int(v) for v in np.asarray(sample).reshape(-1)]
        for i, value in enumerate(flat):
            beats.append({"data": value, "last": int(i == len(flat) - 1)})
    return beats


@dataclass
class AcceleratorRun:
    labels: np.ndarray
    scores: np.ndarray
    result_cycles: list = field(default_factory=list)


def cycle_budget(dut, samples, *, gap=0.0, stall=0.0, hold=0) -> int:
    """Cycles within which every result must be out: the cycle model's time for ``samples``, stretched
    generously for input gaps and output stalls (a deadlock fails the test instead of hanging it)."""
    model = predict(dut.net, dut.folding, np.asarray(samples), fifo_depth=dut.fifo_depth,
                    membrane_banks=dut.membrane_banks)
    nominal = model.latency + len(samples) * model.cycles_per_sample
    return int(4 * nominal / ((1 - gap) * (1 - stall))) + hold + 1000


def simulate_accelerator(dut, samples, *, gap=0.0, stall=0.0, seed=0, hold=0, accepted=None) -> AcceleratorRun:
    """Stream ``samples`` (raw bytes, (N, in_features)) through an Accelerator; collect every result.

    ``hold`` keeps ``results.ready`` low for the first cycles; ``accepted`` (a list) gets the cycle of
    every pixel transfer. The run fails once it exceeds :func:`cycle_budget`.
    """
    samples = np.asarray(samples)
    n = len(samples)
    classes = dut.plan.classes
    out = {}
    budget = cycle_budget(dut, samples, gap=gap, stall=stall, hold=hold)

    async def driver(ctx):
        await put_stream(ctx, dut.pixels, pixel_beats(samples), gap=gap, rng=random.Random(seed), cycles=accepted)

    async def checker(ctx):
        def decode(view):
            return int(view.label), [int(view.scores[i]) for i in range(classes)]
        out["taken"] = await take_stream(ctx, dut.results, n, stall=stall, rng=random.Random(seed + 1),
                                         decode=decode, hold=hold, max_cycles=budget)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(driver)
    sim.add_testbench(checker)
    sim.run()
    taken = out["taken"]
    return AcceleratorRun(labels=np.array([t[1][0] for t in taken]),
                          scores=np.array([t[1][1] for t in taken]).reshape(n, classes),
                          result_cycles=[t[0] for t in taken])
