# amaranth: UnusedElaboratable=no
"""ConvILIF on its own in Amaranth's simulator: output codes bit-exact against the golden model over
random conv layers (with and without a following max pool, overlapping windows included), both input
conventions, two banks and one, random input gaps and output stalls; cycles equal to the schedule
model; ping-pong vs one-bank turn-taking; the plan's refusals. Tap lanes (column banks): bit-exact
layers with stride 2, padding 0/1, non-square kernels, with and without pools, one and two membrane
banks; a planted bank-selection bug caught; the walk against a brute-force enumeration."""

import random
import re
from dataclasses import replace

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from spikeforge.testing.hdl_harness import as_event, codes_from_events, event_sequence, put_stream, take_stream
from spikeforge.hdl.conv_layer import ConvILIF
from spikeforge.hdl.conv_plan import InputMap, conv_layer_schedule, event_index_to_chw, plan_conv_layer
from spikeforge.hdl.folding import Folding
from spikeforge.hdl.plan import choose_multiplier, multiplier_dsps
from spikeforge.ir import golden
from spikeforge.ir.errors import InputError
from spikeforge.ir.network import MaxPool2dLayer
from spikeforge.ir.random_network import random_conv_network


def _net(seed, shape, conv, pool, timesteps, uniform=False):
    stack = [("conv",) + tuple(conv)] + ([("pool",) + tuple(pool)] if pool else [])
    return random_conv_network(seed, input_shape=shape, stack=stack, timesteps=timesteps, weight_bits=6,
                               threshold_range=(1, 60), bias_range=(-100, 100),
                               per_channel_threshold=not uniform)


def _position_major(codes, shape, group):
    """CHW-flat codes -> the event-index order of a position-major producer with ``group`` lanes."""
    C, H, W = shape
    padded = -(-C // group) * group
    out = np.zeros(H * W * padded, dtype=np.int64)
    index = event_index_to_chw(shape, group)
    out[index >= 0] = np.asarray(codes)[index[index >= 0]]
    return out


def _samples_beats(plan, codes, shape, timesteps):
    imap = plan.input_map
    if imap.lane_axis == "x":
        return [event_sequence(row, imap.group, timesteps) for row in codes]
    return [event_sequence(_position_major(row, shape, imap.group), imap.group, timesteps) for row in codes]


def _simulate(plan, samples, *, gap=0.0, stall=0.0, seed=0, accepted=None):
    dut = ConvILIF(plan)
    beats = [{"mask": m, "chunk": c, "step": s, "last": last} for sample in samples for m, c, s, last in sample]
    n = len(samples)
    out = {}

    async def driver(ctx):
        await put_stream(ctx, dut.events, beats, gap=gap, rng=random.Random(seed), cycles=accepted)

    async def checker(ctx):
        out["spikes"] = await take_stream(ctx, dut.spikes, stall=stall, rng=random.Random(seed + 1),
                                          until=lambda taken: sum(b[1][3] for b in taken) == n,
                                          decode=as_event, max_cycles=100_000)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(driver)
    sim.add_testbench(checker)
    sim.run()
    return out["spikes"]


def _decode(plan, spikes):
    """Output beats -> per-sample CHW codes of the emitted map (padding channels must stay silent)."""
    Co, Hp, Wp = plan.out_shape
    padded = plan.chunks * plan.lanes
    samples, current = [], []
    for _cycle, beat in spikes:
        current.append(beat)
        if beat[3]:
            samples.append(current)
            current = []
    decoded = []
    for beats in samples:
        codes = np.array(codes_from_events(beats, plan.lanes, Hp * Wp * padded, plan.timesteps))
        codes = codes.reshape(Hp * Wp, padded)
        assert not codes[:, Co:].any(), "a padding channel spiked"
        decoded.append(codes[:, :Co].T.reshape(-1))
    return np.array(decoded)


def _run_case(seed, shape, conv, pool, lanes, timesteps, *, group=1, axis="x", banks=2, n=2, gap=0.0,
              stall=0.0, uniform=False, density=0.5, taps=1, plan_hook=None):
    net = _net(seed, shape, conv, pool, timesteps, uniform)
    imap = InputMap.chw(shape, group) if axis == "x" else InputMap.position_major(shape, group)
    plan = plan_conv_layer(net.layers[0], lanes=lanes, timesteps=timesteps, input_map=imap,
                           pool=net.layers[1] if pool else None, membrane_banks=banks, taps=taps)
    if plan_hook is not None:
        plan = plan_hook(plan)
    rng = np.random.default_rng(seed)
    features = int(np.prod(shape))
    codes = rng.integers(0, 1 << timesteps, size=(n, features)) * (rng.random((n, features)) < density)
    codes[0, :features // 3] = (1 << timesteps) - 1           # saturated corner: every step spikes
    expected = golden.run_codes(net, codes).codes[2 if pool else 1]
    samples = _samples_beats(plan, codes, shape, timesteps)
    spikes = _simulate(plan, samples, gap=gap, stall=stall, seed=seed)
    np.testing.assert_array_equal(_decode(plan, spikes), expected)
    return plan, samples, spikes, expected


# (shape, conv (Co, k, stride, padding), pool (k, stride) or None, lanes, T, group, axis, banks, gap, stall, uniform θ)
CASES = [
    ((1, 6, 6), (3, 3, 1, 1), None, 1, 3, 1, "x", 2, 0.0, 0.0, False),
    ((1, 6, 6), (4, 3, 1, 1), (2, 2), 2, 4, 2, "x", 2, 0.3, 0.5, False),
    ((2, 5, 5), (5, 3, 2, 1), None, 3, 2, 1, "channel", 1, 0.3, 0.5, True),
    ((2, 5, 6), (7, 2, 2, 1), (3, 2), 5, 1, 3, "x", 2, 0.0, 0.5, False),      # overlapping windows, T = 1
    ((1, 6, 5), (6, 3, 2, 1), (3, 1), 4, 6, 5, "x", 1, 0.3, 0.0, False),      # overlapping, one bank
    ((2, 6, 6), (8, 1, 1, 0), (2, 2), 8, 5, 2, "channel", 2, 0.0, 0.0, True),  # 1x1 conv, lanes = Co
    ((1, 5, 5), (3, 2, 1, 0), (2, 3), 1, 2, 5, "x", 2, 0.3, 0.3, False),      # pool stride > kernel
    ((2, 6, 5), (4, 3, 2, 0), (2, 2), 4, 1, 1, "channel", 1, 0.0, 0.5, False),
    ((1, 6, 6), (8, 3, 1, 0), None, 3, 6, 6, "x", 1, 0.0, 0.3, True),
    ((1, 3, 3), (3, 3, 1, 0), None, 3, 3, 1, "x", 1, 0.0, 0.5, False),       # a 1x1 map: one-word bank
    ((1, 4, 4), (2, 3, 1, 0), (2, 2), 2, 4, 2, "x", 2, 0.3, 0.5, False),      # one pooled word
    ((3, 2, 2), (4, 2, 1, 1), (3, 3), 2, 3, 3, "channel", 2, 0.0, 0.5, False),
    ((1, 3, 4), (3, 3, 1, 0), None, 3, 4, 2, "x", 2, 0.0, 0.5, False),       # a two-word map
]


@pytest.mark.parametrize("shape,conv,pool,lanes,timesteps,group,axis,banks,gap,stall,uniform", CASES)
def test_conv_codes_are_exact(shape, conv, pool, lanes, timesteps, group, axis, banks, gap, stall, uniform):
    """Two samples back to back (the second pipelined behind the first), codes bit-exact."""
    seed = CASES.index((shape, conv, pool, lanes, timesteps, group, axis, banks, gap, stall, uniform))
    _run_case(seed, shape, conv, pool, lanes, timesteps, group=group, axis=axis, banks=banks, gap=gap,
              stall=stall, uniform=uniform)


@pytest.mark.parametrize("banks", [2, 1])
def test_tiny_maps_read_back_their_own_write_back(banks):
    """One output position in two chunks: each word is read again two issues after it was read, in the
    cycle its residual is written (the write-through port); dense input so that neurons do fire."""
    _run_case(4, (1, 3, 3), (4, 3, 1, 0), None, 2, 3, banks=banks, density=1.0)


def test_random_conv_layers_are_exact():
    """A few more layers drawn at random (kernel 1-3, stride 1-2, padding 0-1, Co 3-8, T 1-6)."""
    rng = random.Random(13)
    for index in range(4):
        C, H, W = rng.choice([1, 2]), rng.choice([5, 6]), rng.choice([5, 6])
        k, s = rng.randint(1, 3), rng.randint(1, 2)
        p = rng.randint(0, min(1, k - 1))
        Co, T = rng.randint(3, 8), rng.randint(1, 6)
        Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
        pool = None
        if min(Ho, Wo) >= 2 and rng.random() < 0.6:
            pk = rng.randint(2, min(3, Ho, Wo))
            pool = (pk, rng.randint(1, pk))
        axis = rng.choice(["x", "channel"])
        group = rng.choice([g for g in range(1, W + 1) if W % g == 0]) if axis == "x" else rng.randint(1, C)
        _run_case(500 + index, (C, H, W), (Co, k, s, p), pool, rng.randint(1, Co), T, group=group, axis=axis,
                  banks=rng.choice([1, 2]), gap=0.3, stall=0.4)


@pytest.mark.parametrize("banks", [2, 1])
@pytest.mark.parametrize("shape,conv,pool,lanes,timesteps,group,density", [
    ((2, 6, 6), (6, 2, 1, 1), None, 4, 3, 6, 0.5),
    ((1, 6, 6), (3, 3, 1, 1), (2, 2), 3, 3, 2, 0.5),
    ((2, 6, 6), (5, 3, 2, 0), (2, 2), 1, 5, 3, 0.1),
    ((2, 6, 6), (6, 1, 1, 0), None, 6, 1, 6, 0.5),
])
def test_cycles_equal_the_schedule(shape, conv, pool, lanes, timesteps, group, density, banks):
    """Three samples back to back, output always ready: every final beat on the cycle the model says."""
    net = _net(7, shape, conv, pool, timesteps)
    plan = plan_conv_layer(net.layers[0], lanes=lanes, timesteps=timesteps, input_map=InputMap.chw(shape, group),
                           pool=net.layers[1] if pool else None, membrane_banks=banks)
    rng = np.random.default_rng(1)
    features = int(np.prod(shape))
    codes = rng.integers(0, 1 << timesteps, size=(3, features)) * (rng.random((3, features)) < density)
    samples = _samples_beats(plan, codes, shape, timesteps)
    spikes = _simulate(plan, samples)
    np.testing.assert_array_equal(_decode(plan, spikes), golden.run_codes(net, codes).codes[2 if pool else 1])
    measured = [cycle for cycle, beat in spikes if beat[3]]
    model = conv_layer_schedule(plan, samples)
    assert measured == model.final_beat
    measured_spacing = (measured[-1] - measured[0]) / (len(measured) - 1)
    assert model.cycles_per_sample == pytest.approx(measured_spacing, rel=0.05)


def _second_sample_inputs(banks, pool=True):
    shape, T = (1, 6, 6), 4
    net = _net(3, shape, (4, 3, 1, 1), (2, 2) if pool else None, T)
    plan = plan_conv_layer(net.layers[0], lanes=4, timesteps=T, input_map=InputMap.chw(shape, 6),
                           pool=net.layers[1] if pool else None, membrane_banks=banks)
    codes = np.full((2, 36), (1 << T) - 1)
    samples = _samples_beats(plan, codes, shape, T)
    accepted = []
    spikes = _simulate(plan, samples, accepted=accepted)
    np.testing.assert_array_equal(_decode(plan, spikes), golden.run_codes(net, codes).codes[2 if pool else 1])
    end0 = len(samples[0])
    first_out, last_out = spikes[0][0], next(cycle for cycle, beat in spikes if beat[3])
    last_step0 = max(cycle for cycle, beat in spikes if beat[2] == 0 and cycle <= last_out)
    return first_out, last_out, last_step0, accepted[end0:end0 + len(samples[1])]


def test_ping_pong_accumulates_next_sample_while_firing():
    first_out, last_out, _, in_sample1 = _second_sample_inputs(banks=2)
    assert in_sample1[0] < first_out
    assert any(first_out <= cycle <= last_out for cycle in in_sample1)


def test_one_bank_with_a_pool_takes_next_sample_after_the_fire_sweeps_step_0():
    """Early release: steps 1..T-1 fire from the pooled residual store, so the bank is free after step 0."""
    _, last_out, last_step0, in_sample1 = _second_sample_inputs(banks=1)
    assert in_sample1 and all(cycle >= last_step0 for cycle in in_sample1)
    assert in_sample1[0] < last_out


def test_one_bank_without_a_pool_takes_next_sample_after_the_fire_sweep():
    _, last_out, _, in_sample1 = _second_sample_inputs(banks=1, pool=False)
    assert in_sample1 and all(cycle > last_out for cycle in in_sample1)


def test_event_index_to_chw_permutes_a_dense_layer_exactly():
    """A dense layer after a conv: its weight rows permuted by the event index see the same sums."""
    shape, lanes = (5, 3, 4), 2
    rng = np.random.default_rng(0)
    chw_codes = rng.integers(0, 16, size=60)
    weight = rng.integers(-8, 8, size=(7, 60))
    index = event_index_to_chw(shape, lanes)
    assert len(index) == 3 * 4 * 6 and (index == -1).sum() == 3 * 4
    permuted = np.where(index >= 0, weight[:, np.maximum(index, 0)], 0)
    np.testing.assert_array_equal(permuted @ _position_major(chw_codes, shape, lanes), weight @ chw_codes)


def test_plan_refusals_name_the_bad_value():
    net = _net(1, (1, 6, 6), (4, 3, 1, 1), (2, 2), 4)
    conv, pool = net.layers[0], net.layers[1]
    imap = InputMap.chw((1, 6, 6), 1)
    with pytest.raises(InputError, match="input group 4 does not divide the input width 6"):
        InputMap.chw((1, 6, 6), 4)
    with pytest.raises(InputError, match="lanes 5 is not in 1..4"):
        plan_conv_layer(conv, lanes=5, timesteps=4, input_map=imap)
    with pytest.raises(InputError, match=r"tap lanes 4 is not in 1..3 \(its kernel width\)"):
        plan_conv_layer(conv, lanes=2, timesteps=4, input_map=imap, taps=4)
    with pytest.raises(InputError, match="membrane_banks 3"):
        plan_conv_layer(conv, lanes=2, timesteps=4, input_map=imap, membrane_banks=3)
    with pytest.raises(InputError, match="pool 'other' takes"):
        plan_conv_layer(conv, lanes=2, timesteps=4, input_map=imap,
                        pool=MaxPool2dLayer("other", in_shape=(4, 5, 5), kernel=2))
    with pytest.raises(InputError, match="the input map has 24 chunks"):
        plan_conv_layer(conv, lanes=2, timesteps=4, input_map=InputMap.chw((2, 6, 6), 3))
    out_net = random_conv_network(2, input_shape=(1, 5, 5), stack=(), output=("conv", 3, 3, 1, 0))
    with pytest.raises(InputError, match="conv output layer is not supported"):
        plan_conv_layer(out_net.layers[0], lanes=1, timesteps=4, input_map=InputMap.chw((1, 5, 5), 1))
    with pytest.raises(InputError, match="ConvILIF takes a ConvLayerPlan"):
        ConvILIF(pool)


@pytest.mark.parametrize("banks", [2, 1])
def test_reset_in_the_middle_of_a_sample_leaves_nothing_behind(banks):
    """Half a sample, a reset, then two whole samples: those come out exact (the banks were cleared)."""
    shape, T = (1, 6, 6), 4
    net = _net(5, shape, (4, 3, 1, 1), (2, 2), T)
    plan = plan_conv_layer(net.layers[0], lanes=2, timesteps=T, input_map=InputMap.chw(shape, 2),
                           pool=net.layers[1], membrane_banks=banks)
    codes = np.random.default_rng(0).integers(0, 1 << T, size=(3, 36))
    samples = [[{"mask": m, "chunk": c, "step": s, "last": last} for m, c, s, last in sample]
               for sample in _samples_beats(plan, codes, shape, T)]
    dut = ConvILIF(plan)
    top = Module()
    top.domains.sync = domain = ClockDomain()
    top.submodules.dut = dut
    out = {}

    async def driver(ctx):
        await put_stream(ctx, dut.events, samples[0][:len(samples[0]) // 2])
        await ctx.tick().repeat(5)
        ctx.set(domain.rst, 1)
        await ctx.tick()
        ctx.set(domain.rst, 0)
        await put_stream(ctx, dut.events, samples[1] + samples[2])

    async def checker(ctx):
        out["spikes"] = await take_stream(ctx, dut.spikes, until=lambda taken: sum(b[1][3] for b in taken) == 2,
                                          decode=as_event, max_cycles=50_000)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(driver)
    sim.add_testbench(checker)
    sim.run()
    np.testing.assert_array_equal(_decode(plan, out["spikes"]), golden.run_codes(net, codes[1:]).codes[2])


def test_verilog_has_the_stream_ports():
    net = _net(4, (2, 5, 5), (5, 3, 1, 1), (2, 2), 3)
    plan = plan_conv_layer(net.layers[0], lanes=2, timesteps=3, input_map=InputMap.position_major((2, 5, 5), 1),
                           pool=net.layers[1])
    text = verilog.convert(ConvILIF(plan), name="conv", emit_src=False)
    for port in ("events__valid", "events__ready", "events__payload", "spikes__valid", "spikes__ready",
                 "spikes__payload"):
        assert port in text


# Tap lanes (column banks): (shape, conv (Co, (kh, kw), stride, padding), pool, lanes, taps, T, group, axis,
# banks, gap, stall). Stride 2, padding 0/1, non-square kernels, no pool, one and two membrane banks.
TAP_CASES = [
    ((1, 6, 6), (4, 3, 1, 1), (2, 2), 4, 3, 4, 2, "x", 2, 0.0, 0.0),
    ((2, 6, 7), (5, (2, 3), 1, 0), None, 3, 3, 3, 1, "channel", 1, 0.3, 0.5),
    ((1, 7, 6), (3, (3, 2), 2, 1), None, 2, 2, 3, 3, "x", 2, 0.3, 0.3),
    ((2, 7, 7), (4, 3, 2, 0), None, 4, 2, 2, 1, "channel", 2, 0.0, 0.5),     # stride 2: two columns a row
    ((1, 8, 8), (6, 3, 1, 1), (3, 2), 3, 2, 3, 4, "x", 1, 0.3, 0.0),         # taps < kw: groups of 2 then 1
    ((1, 3, 4), (3, (2, 3), 1, 1), None, 3, 3, 4, 2, "x", 2, 0.0, 0.5),      # one chunk: the bypass
    ((1, 4, 3), (2, 3, 1, 0), None, 1, 3, 3, 1, "x", 2, 0.0, 0.0),           # a 2x1 map: Wc < taps
]


@pytest.mark.parametrize("shape,conv,pool,lanes,taps,timesteps,group,axis,banks,gap,stall", TAP_CASES)
def test_tap_lanes_are_exact(shape, conv, pool, lanes, taps, timesteps, group, axis, banks, gap, stall):
    """Column banks: a spike's taps of one kernel row in one cycle; codes bit-exact, dense saturated corner."""
    seed = 40 + TAP_CASES.index((shape, conv, pool, lanes, taps, timesteps, group, axis, banks, gap, stall))
    plan, *_ = _run_case(seed, shape, conv, pool, lanes, timesteps, group=group, axis=axis, banks=banks,
                         gap=gap, stall=stall, taps=taps, density=0.7)
    assert plan.taps == taps and len(plan.membrane_names()) == banks * taps


def test_random_tap_lane_layers_are_exact():
    """Random layers with tap lanes 2..kw (stride 1-2, padding 0-1, non-square kernels, pools or none)."""
    rng = random.Random(31)
    for index in range(3):
        C, H, W = rng.choice([1, 2]), rng.choice([5, 6, 7]), rng.choice([5, 6, 7])
        kh, kw, s = rng.randint(1, 3), rng.randint(2, 3), rng.randint(1, 2)
        p = rng.randint(0, min(1, kh - 1, kw - 1))
        Co, T = rng.randint(2, 6), rng.randint(1, 5)
        Ho, Wo = (H + 2 * p - kh) // s + 1, (W + 2 * p - kw) // s + 1
        pool = (2, rng.randint(1, 2)) if min(Ho, Wo) >= 2 and rng.random() < 0.5 else None
        axis = rng.choice(["x", "channel"])
        group = rng.choice([g for g in range(1, W + 1) if W % g == 0]) if axis == "x" else rng.randint(1, C)
        _run_case(700 + index, (C, H, W), (Co, (kh, kw), s, p), pool, rng.randint(1, Co), T, group=group,
                  axis=axis, banks=rng.choice([1, 2]), gap=0.3, stall=0.4, taps=rng.randint(2, kw))


def _swap_rotation(plan):
    """A planted bug in the bank selection: every spike's rotation off by one column bank."""
    fields = plan.col_fields
    words = []
    for word in plan.col_words:
        shift = sum(fields[:3])
        rotation = (word >> shift) & ((1 << fields[3]) - 1)
        words.append((word & ~(((1 << fields[3]) - 1) << shift)) | (((rotation + 1) % plan.taps) << shift))
    return replace(plan, col_words=words)


def test_a_planted_bank_selection_bug_fails():
    with pytest.raises(AssertionError):
        _run_case(41, (1, 6, 6), (4, 3, 1, 1), (2, 2), 4, 4, group=2, taps=3, density=0.7, plan_hook=_swap_rotation)


@pytest.mark.parametrize("banks", [2, 1])
@pytest.mark.parametrize("shape,conv,pool,lanes,taps,timesteps,group,density", [
    ((2, 6, 6), (6, 3, 1, 1), (2, 2), 3, 3, 3, 6, 0.5),
    ((1, 7, 7), (5, (2, 3), 2, 0), None, 5, 2, 4, 7, 0.5),
])
def test_tap_lane_cycles_equal_the_schedule(shape, conv, pool, lanes, taps, timesteps, group, density, banks):
    net = _net(8, shape, conv, pool, timesteps)
    plan = plan_conv_layer(net.layers[0], lanes=lanes, timesteps=timesteps, input_map=InputMap.chw(shape, group),
                           pool=net.layers[1] if pool else None, membrane_banks=banks, taps=taps)
    rng = np.random.default_rng(2)
    features = int(np.prod(shape))
    codes = rng.integers(0, 1 << timesteps, size=(3, features)) * (rng.random((3, features)) < density)
    samples = _samples_beats(plan, codes, shape, timesteps)
    spikes = _simulate(plan, samples)
    np.testing.assert_array_equal(_decode(plan, spikes), golden.run_codes(net, codes).codes[2 if pool else 1])
    assert [cycle for cycle, beat in spikes if beat[3]] == conv_layer_schedule(plan, samples).final_beat


def test_walk_matches_a_brute_force_enumeration():
    """Plan geometry against brute force: every (spike, output) pair of the conv formula is issued once,
    to column bank ox mod taps at column ox // taps, with the weight of tap (dy, dx) in its slot."""
    rng = random.Random(5)
    for index in range(25):
        C, H, W = rng.choice([1, 2]), rng.randint(3, 8), rng.randint(3, 8)
        kh, kw, sh, sw = rng.randint(1, 3), rng.randint(1, 3), rng.randint(1, 2), rng.randint(1, 2)
        ph, pw = rng.randint(0, min(1, kh - 1)), rng.randint(0, min(1, kw - 1))
        if (H + 2 * ph - kh) < 0 or (W + 2 * pw - kw) < 0:
            continue
        Co = rng.randint(1, 5)
        net = random_conv_network(index, input_shape=(C, H, W), stack=[("conv", Co, (kh, kw), (sh, sw), (ph, pw))],
                                  timesteps=2, weight_bits=5)
        layer = net.layers[0]
        lanes, taps = rng.randint(1, Co), rng.randint(1, kw)
        plan = plan_conv_layer(layer, lanes=lanes, timesteps=2, input_map=InputMap.chw((C, H, W), 1), taps=taps)
        _, Ho, Wo = layer.out_shape
        weights = np.array(plan.weight_words, dtype=object)
        for y in range(H):
            for x in range(W):
                expected = {(oy, ox, oy * sh + dy - ph, ox * sw + dx - pw)
                            for oy in range(Ho) for ox in range(Wo) for dy in range(kh) for dx in range(kw)
                            if oy * sh + dy - ph == y and ox * sw + dx - pw == x}
                walked = _walk(plan, y, x)
                assert {(oy, ox, y, x) for oy, ox, *_ in walked} == expected
                assert len(walked) == len(expected) == plan.taps_reached(y, x)
                groups = {(oy, g) for oy, ox, g, *_ in walked}
                assert len(groups) == plan.words(y, x)
                for oy, ox, g, bank, column, slot, w_addr in walked:
                    assert bank == ox % taps and column == ox // taps
                    dy, dx = y + ph - oy * sh, x + pw - ox * sw
                    word = int(weights[w_addr])
                    bits = plan.weight_bits
                    got = [(word >> ((slot * lanes + k) * bits)) & ((1 << bits) - 1) for k in range(lanes)]
                    got = [v - (1 << bits) if v >> (bits - 1) else v for v in got]
                    assert got == [int(layer.weight[k, 0, dy, dx]) if k < Co else 0 for k in range(lanes)]


def _walk(plan, y, x):
    """The walker in Python from the plan's ROM fields (chunk 0, input channel 0): per reached output
    ``(oy, ox, group, column bank, column in bank, weight slot, weight address)``."""
    def unpack(word, widths):
        out = []
        for width in widths:
            out.append(word & ((1 << width) - 1))
            word >>= width
        return out
    ny, w_row, m_row = unpack(plan.row_words[y], plan.row_fields)
    nx, w_col, m_col, rotation = unpack(plan.col_words[x], plan.col_fields)
    kw, chunks, taps, Wb = plan.kernel[1], plan.chunks, plan.taps, plan.bank_columns
    (sh, sw) = plan.stride
    out = []
    for i in range(ny):
        w_tap, m_pos, remaining = w_row - i * sh * kw * chunks + w_col, m_row + i * Wb * chunks + m_col, nx
        group = 0
        while remaining > 0:
            for bank in range(taps):
                slot = (bank - rotation) % taps
                if slot < remaining:
                    address = m_pos + (chunks if bank < rotation else 0)
                    row, column = divmod(address // chunks, Wb)
                    out.append((row, column * taps + bank, group, bank, column, slot, w_tap))
            remaining -= taps
            w_tap -= taps * sw * chunks
            m_pos += chunks
            group += 1
    return out


@pytest.mark.slow       # 3-7 s a case
@pytest.mark.parametrize("case", [CASES[1], CASES[4], TAP_CASES[0], TAP_CASES[3]])
def test_logic_multiplier_is_exact_and_multiplies_nothing(case):
    """``multiplier='logic'``: the adders shift the weight by T-1-t instead of multiplying by a one-hot factor
    (no DSP): the same codes, bit for bit, and no multiply left in the Verilog."""
    if case in CASES:
        shape, conv, pool, lanes, timesteps, group, axis, banks, gap, stall, _uniform = case
        taps = 1
    else:
        shape, conv, pool, lanes, taps, timesteps, group, axis, banks, gap, stall = case
    plan, *_ = _run_case(90 + taps, shape, conv, pool, lanes, timesteps, group=group, axis=axis, banks=banks,
                         gap=gap, stall=stall, taps=taps, density=0.7,
                         plan_hook=lambda p: replace(p, multiplier="logic"))
    assert _signal_multiplies(verilog.convert(ConvILIF(plan), name="conv_logic")) == 0
    dsp = verilog.convert(ConvILIF(replace(plan, multiplier="dsp")), name="conv_dsp")
    assert _signal_multiplies(dsp) == plan.lanes * plan.taps       # one multiplier an adder


def _signal_multiplies(text: str) -> int:
    """Multiplies in Amaranth's Verilog whose right operand is not a constant (address arithmetic
    multiplies by constants, which synthesis turns into shifts and adds)."""
    total = len(re.findall(r" \* ", text))
    constant = len(re.findall(r" \* (?:\(\*[^)]*\*\) )?\d+'[hbd]", text))
    return total - constant


def test_the_automatic_multiplier_counts_the_conv_adders():
    net = random_conv_network(5, input_shape=(1, 8, 8), stack=[("conv", 8, 3, 1, 1), ("pool", 2, 2), ("dense", 10)],
                              timesteps=4)
    conv, _pool, hidden, output = net.layers
    folding = Folding.for_network(net, {conv.name: "4x3", hidden.name: 2, output.name: 1})
    assert multiplier_dsps(net, folding) == 4 * 3 + 2 + 1
    assert choose_multiplier(net, folding, 15) == "dsp"
    assert choose_multiplier(net, folding, 14) == "logic"      # the conv adders run the DSPs out
    with pytest.raises(InputError, match="multiplier 'lut' is not supported; accepted: dsp, logic"):
        plan_conv_layer(net.layers[0], lanes=4, timesteps=4, input_map=InputMap.chw((1, 8, 8), 1),
                        multiplier="lut")
