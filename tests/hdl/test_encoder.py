# amaranth: UnusedElaboratable=no
"""SpikeEncoder: bit-plane order (MSB first), stream rules under stalls, loading while emitting."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from spikeforge.testing.hdl_harness import as_event, event_sequence, pixel_beats, put_stream, take_stream
from spikeforge.hdl.encoder import SpikeEncoder


def _run(encoder, samples, *, gap=0.0, stall=0.0, seed=0, beats=None):
    beats = beats if beats is not None else pixel_beats(samples)
    lasts = sum(b["last"] for b in beats)
    out, accepted = {}, []

    async def driver(ctx):
        await put_stream(ctx, encoder.pixels, beats, gap=gap, rng=random.Random(seed), cycles=accepted)

    async def checker(ctx):
        out["events"] = await take_stream(ctx, encoder.events, stall=stall, rng=random.Random(seed + 7),
                                          until=lambda taken: sum(t[1][3] for t in taken) == lasts,
                                          decode=as_event)

    sim = Simulator(encoder)
    sim.add_clock(1e-8)
    sim.add_testbench(driver)
    sim.add_testbench(checker)
    sim.run()
    return out["events"], accepted


def _split_samples(events):
    samples, current = [], []
    for _cycle, beat in events:
        current.append(beat)
        if beat[3]:
            samples.append(current)
            current = []
    return samples


@pytest.mark.parametrize("in_features,lanes,timesteps", [(10, 3, 4), (7, 7, 1), (5, 1, 5), (16, 16, 8)])
def test_events_are_bit_planes_msb_first(in_features, lanes, timesteps):
    rng = np.random.default_rng(in_features)
    lut = rng.integers(0, 1 << timesteps, size=256)
    samples = rng.integers(0, 256, size=(3, in_features))
    samples[1] = 0                                     # a sample without spikes: only its last beat
    encoder = SpikeEncoder(in_features=in_features, timesteps=timesteps, lut=lut, lanes=lanes)
    events, _ = _run(encoder, samples)
    got = _split_samples(events)
    for sample, beats in zip(samples, got):
        assert beats == event_sequence(lut[sample], lanes, timesteps)
    if lut[0] == 0:
        assert got[1] == [(0, encoder.chunks - 1, timesteps - 1, 1)]


def test_stream_rules_under_gaps_and_stalls():
    rng = np.random.default_rng(3)
    lut = rng.integers(0, 32, size=256)
    samples = rng.integers(0, 256, size=(4, 11))
    encoder = SpikeEncoder(in_features=11, timesteps=5, lut=lut, lanes=4)
    events, _ = _run(encoder, samples, gap=0.3, stall=0.5, seed=5)   # take_stream asserts the rules
    assert _split_samples(events) == [event_sequence(lut[s], 4, 5) for s in samples]


def test_loads_next_sample_while_emitting():
    """Ping-pong buffer: bytes of sample n+1 are taken while sample n's events still go out."""
    lut = np.arange(256)
    samples = np.full((3, 8), 255)
    encoder = SpikeEncoder(in_features=8, timesteps=8, lut=lut, lanes=1)     # emission 64 cycles > load 8
    events, accepted = _run(encoder, samples, stall=0.2)
    first_sample_end = next(cycle for cycle, beat in events if beat[3])
    assert accepted[8] < first_sample_end        # the first byte of sample 1 went in before sample 0 ended
    assert _split_samples(events) == [event_sequence(lut[s], 1, 8) for s in samples]


def test_short_sample_resynchronises_on_last():
    lut = np.arange(256)
    beats = [{"data": 9, "last": 0}, {"data": 200, "last": 1}]            # 2 of 6 values, then `last`
    full = [17, 0, 255, 3, 128, 64]
    beats += [{"data": v, "last": int(i == 5)} for i, v in enumerate(full)]
    encoder = SpikeEncoder(in_features=6, timesteps=8, lut=lut, lanes=2)
    events, _ = _run(encoder, None, beats=beats)
    got = _split_samples(events)
    assert len(got) == 2
    assert got[0] == event_sequence([9, 200, 0, 0, 0, 0], 2, 8)
    assert got[1] == event_sequence(full, 2, 8)


@pytest.mark.parametrize("sent", [1, 2, 3, 5])
def test_short_sample_is_zero_padded_over_an_older_sample(sent):
    """A short sample reuses a bank that held a full sample: the values it did not send are code 0."""
    lut = np.arange(256)
    full = np.full(6, 255)
    short = [37, 200, 91, 5, 66][:sent]
    beats = pixel_beats(np.stack([full, full]))                         # fill both ping-pong banks
    beats += [{"data": v, "last": int(i == sent - 1)} for i, v in enumerate(short)]
    beats += pixel_beats(np.stack([full]))
    encoder = SpikeEncoder(in_features=6, timesteps=8, lut=lut, lanes=2)
    events, _ = _run(encoder, None, beats=beats, stall=0.3)
    got = _split_samples(events)
    assert len(got) == 4
    assert got[2] == event_sequence(short + [0] * (6 - sent), 2, 8)
    assert got[3] == event_sequence(full, 2, 8)


def test_rejects_bad_parameters():
    with pytest.raises(ValueError, match="encoder lanes 5 is not in 1..4"):
        SpikeEncoder(in_features=4, timesteps=2, lut=[0] * 256, lanes=5)
    with pytest.raises(ValueError, match=r"256 codes in 0..3"):
        SpikeEncoder(in_features=4, timesteps=2, lut=[4] * 256, lanes=1)
