# amaranth: UnusedElaboratable=no
"""DenseILIF and OutputLayer on their own: bit-exact codes/scores, ping-pong hand-over (two banks), the
one-bank layer's turn-taking, stream rules."""

import random
import re

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from spikeforge.testing.hdl_harness import as_event, codes_from_events, event_sequence, put_stream, take_stream
from spikeforge.ir.network import DenseLayer, Network
from spikeforge.ir.random_network import random_network
from spikeforge.hdl.folding import Folding
from spikeforge.hdl.layer import LANES_PER_LEVEL, LEVEL_COPIES, DenseILIF, OutputLayer
from spikeforge.hdl.bitops import at_most_one_set, lowest_one_hot, lowest_set_bit, times_constant
from spikeforge.hdl.plan import choose_multiplier, plan_network
from spikeforge.ir.errors import InputError
from spikeforge.ir import golden


def _input_beats(codes, group, timesteps):
    beats = []
    for row in codes:
        for mask, chunk, step, last in event_sequence(row, group, timesteps):
            beats.append({"mask": mask, "chunk": chunk, "step": step, "last": last})
    return beats


def _run_hidden(net, lanes, codes, *, gap=0.0, stall=0.0, seed=0, banks=2, multiplier="dsp"):
    plan = plan_network(net, Folding.for_network(net, {"fc1": lanes, "fc2": 1}), membrane_banks=banks,
                        multiplier=multiplier)
    return _simulate_layer(plan.layers[0], codes, net.timesteps, gap=gap, stall=stall, seed=seed)


def _simulate_layer(layer, codes, timesteps, *, gap=0.0, stall=0.0, seed=0):
    """One hidden layer in Amaranth's simulator fed ``codes``: its output codes, the spike beats per
    sample, every beat with its cycle, the cycles the input beats were accepted in, the input beats."""
    dut = DenseILIF(layer)
    beats = _input_beats(codes, layer.in_group, timesteps)
    out, accepted = {}, []

    async def driver(ctx):
        await put_stream(ctx, dut.events, beats, gap=gap, rng=random.Random(seed), cycles=accepted)

    async def checker(ctx):
        out["spikes"] = await take_stream(ctx, dut.spikes, stall=stall, rng=random.Random(seed + 1),
                                          until=lambda taken: sum(t[1][3] for t in taken) == len(codes),
                                          decode=as_event)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(driver)
    sim.add_testbench(checker)
    sim.run()
    samples, current = [], []
    for cycle, beat in out["spikes"]:
        current.append(beat)
        if beat[3]:
            samples.append(current)
            current = []
    got = np.array([codes_from_events(s, layer.lanes, layer.out_features, timesteps) for s in samples])
    return got, samples, out["spikes"], accepted, beats


@pytest.mark.parametrize("banks", [2, 1])
@pytest.mark.parametrize("lanes", [1, 3, 7])
@pytest.mark.parametrize("timesteps,weight_bits", [(1, 2), (4, 8), (6, 12)])
def test_hidden_layer_codes_are_exact(lanes, timesteps, weight_bits, banks):
    net = random_network(timesteps * 10 + weight_bits, sizes=(9, 7, 3), timesteps=timesteps,
                         weight_bits=weight_bits, threshold_range=(1, 40 << weight_bits))
    rng = np.random.default_rng(lanes)
    codes = rng.integers(0, 1 << timesteps, size=(5, 9))
    codes[0] = 0
    codes[1] = (1 << timesteps) - 1
    got, samples, _, _, _ = _run_hidden(net, lanes, codes, banks=banks)
    expected = golden.run_codes(net, codes).codes[1]
    np.testing.assert_array_equal(got, expected)
    # The beats themselves are the canonical sequence (step order, one beat per chunk with spikes).
    for beats, row in zip(samples, expected):
        assert beats == event_sequence(row, lanes, timesteps)


@pytest.mark.parametrize("banks", [2, 1])
def test_hidden_layer_stream_rules_under_stalls(banks):
    net = random_network(11, sizes=(12, 10, 2), timesteps=5, weight_bits=6, threshold_range=(1, 300))
    codes = np.random.default_rng(0).integers(0, 32, size=(6, 12))
    got, _, _, _, _ = _run_hidden(net, 4, codes, gap=0.4, stall=0.6, seed=3, banks=banks)
    np.testing.assert_array_equal(got, golden.run_codes(net, codes).codes[1])


def _second_sample_timing(banks):
    """Three full-scale samples through a 4-8 layer with one lane (fire: 8 steps x 8 chunks).

    Returns the cycles of sample 0's first and last output beat and of sample 1's input transfers.
    """
    net = random_network(2, sizes=(4, 8, 2), timesteps=8, weight_bits=8, threshold_range=(1, 30), bias_range=(0, 0))
    codes = np.full((3, 4), 255)
    got, _, spikes, accepted, beats = _run_hidden(net, 1, codes, banks=banks)
    np.testing.assert_array_equal(got, golden.run_codes(net, codes).codes[1])
    sample_ends = [i for i, b in enumerate(beats) if b["last"]]
    first_out_of_sample0 = spikes[0][0]
    last_out_of_sample0 = next(cycle for cycle, beat in spikes if beat[3])
    return first_out_of_sample0, last_out_of_sample0, accepted[sample_ends[0] + 1: sample_ends[1] + 1]


def test_ping_pong_accumulates_next_sample_while_firing():
    """Two membrane banks: sample n+1's input events go in while sample n's spikes are still coming out."""
    first_out_of_sample0, last_out_of_sample0, in_sample1 = _second_sample_timing(banks=2)
    assert any(first_out_of_sample0 <= c <= last_out_of_sample0 for c in in_sample1)
    # ...and the hand-over takes the next sample's first event in the cycle it flips the banks.
    assert in_sample1[0] < first_out_of_sample0


def test_one_bank_takes_the_next_sample_after_the_fire_sweep():
    """One membrane bank: sample n+1's input events go in only after sample n's fire sweep (the sweep
    leaves the bank when its final position reaches the event register, which offers the final beat in
    that same cycle: the first event of n+1 is taken then at the earliest)."""
    first_out_of_sample0, last_out_of_sample0, in_sample1 = _second_sample_timing(banks=1)
    assert in_sample1 and all(c >= last_out_of_sample0 for c in in_sample1)
    assert in_sample1[0] == last_out_of_sample0
    assert first_out_of_sample0 < last_out_of_sample0


def _output_net(weight, bias, timesteps=4, weight_bits=8):
    weight = np.asarray(weight)
    n_out, n_in = weight.shape
    hidden = DenseLayer("fc1", np.eye(n_in, dtype=np.int64), np.zeros(n_in, dtype=np.int64), 1, 0, weight_bits)
    out = DenseLayer("fc2", weight, bias, 1, 0, weight_bits, fires=False)
    return Network(timesteps=timesteps, input_shape=(n_in,), input_lut=np.minimum(np.arange(256), (1 << timesteps) - 1),
                   layers=[hidden, out], classes=[str(i) for i in range(n_out)])


def _run_output(net, lanes, codes, *, stall=0.0, banks=2, multiplier="dsp"):
    plan = plan_network(net, Folding.for_network(net, {"fc1": 1, "fc2": lanes}), membrane_banks=banks,
                        multiplier=multiplier)
    layer = plan.layers[1]
    dut = OutputLayer(layer)
    beats = _input_beats(codes, layer.in_group, net.timesteps)
    out = {}

    async def driver(ctx):
        await put_stream(ctx, dut.events, beats)

    async def checker(ctx):
        out["results"] = await take_stream(
            ctx, dut.results, len(codes), stall=stall,
            decode=lambda v: (int(v.label), [int(v.scores[i]) for i in range(layer.out_features)]))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(driver)
    sim.add_testbench(checker)
    sim.run()
    return [r[1] for r in out["results"]]


@pytest.mark.parametrize("multiplier", ["dsp", "logic"])
@pytest.mark.parametrize("banks", [2, 1])
@pytest.mark.parametrize("lanes", [1, 3, 5])
def test_output_scores_argmax_ties_and_negative(lanes, banks, multiplier):
    weight = np.array([[3, -2, 0], [3, -2, 0], [-8, 7, 1], [0, 0, 0], [-128, -128, -128]])
    bias = np.array([0, 0, -5, 0, 100])
    net = _output_net(weight, bias)
    plan = plan_network(net, Folding.for_network(net, {"fc1": 1, "fc2": 5}))
    codes = np.array([[0, 0, 0], [15, 0, 0], [0, 15, 3], [15, 15, 15], [1, 2, 3]])
    # For input codes straight into the output layer, fc1 is skipped: scores = W·q + b.
    results = _run_output(net, lanes, codes, stall=0.3, banks=banks, multiplier=multiplier)
    for (label, scores), row in zip(results, codes):
        expected = weight @ row + bias
        assert scores == list(expected)
        assert label == int(np.argmax(expected))            # numpy: lowest index on ties
    assert results[0][0] == 4                                # bias wins on zero input
    assert results[1][0] == 0                                # rows 0 and 1 tie: the lower index
    assert min(min(s) for _, s in results) < 0
    assert plan.score_bits == plan.output.membrane_bits


def test_single_class_has_a_one_bit_label():
    net = _output_net([[5, -5]], [7])
    results = _run_output(net, 1, np.array([[3, 1], [0, 15]]))
    assert results == [(0, [17]), (0, [-68])]


@pytest.mark.parametrize("banks", [2, 1])
@pytest.mark.parametrize("lanes", [1, 4])
@pytest.mark.parametrize("timesteps,weight_bits", [(1, 3), (4, 8), (8, 8), (13, 5)])
def test_logic_multiplier_hidden_layer_is_exact(lanes, timesteps, weight_bits, banks):
    """The shifter in logic (no DSP) gives the same codes as the golden model, the most negative weight
    shifted by T-1 included."""
    net = random_network(timesteps * 7 + weight_bits, sizes=(9, 7, 3), timesteps=timesteps,
                         weight_bits=weight_bits, threshold_range=(1, 40 << weight_bits))
    net.layers[0].weight[0, :] = -(1 << (weight_bits - 1))             # the extremes of the weight range
    net.layers[0].weight[1, :] = (1 << (weight_bits - 1)) - 1
    rng = np.random.default_rng(lanes + timesteps)
    codes = rng.integers(0, 1 << timesteps, size=(4, 9))
    codes[1] = (1 << timesteps) - 1
    got, samples, _, _, _ = _run_hidden(net, lanes, codes, banks=banks, multiplier="logic", stall=0.3, gap=0.2)
    expected = golden.run_codes(net, codes).codes[1]
    np.testing.assert_array_equal(got, expected)


def test_logic_multiplier_has_no_multiply_and_same_timing():
    """``logic`` elaborates to shifts (no ``$mul`` cell per lane for a DSP to take); the beats come out in the same
    cycles as with ``dsp``."""
    net = random_network(5, sizes=(6, 5, 2), timesteps=8, weight_bits=8, threshold_range=(1, 3000))
    cells = {}
    for multiplier in ("dsp", "logic"):
        plan = plan_network(net, Folding.for_network(net, {"fc1": 2, "fc2": 1}), multiplier=multiplier)
        cells[multiplier] = rtlil.convert(DenseILIF(plan.layers[0]))
    # Address arithmetic has constant multiplies in both; the lanes' multipliers are gone in ``logic``.
    assert cells["dsp"].count("cell $mul ") - cells["logic"].count("cell $mul ") == 2
    assert cells["logic"].count("cell $sshl ") + cells["logic"].count("cell $shl ") >= 2
    codes = np.random.default_rng(1).integers(0, 256, size=(3, 6))
    runs = [_run_hidden(net, 2, codes, multiplier=multiplier) for multiplier in ("dsp", "logic")]
    assert [cycle for cycle, _ in runs[0][2]] == [cycle for cycle, _ in runs[1][2]]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])


def test_multiplier_choice_and_refusal():
    net = random_network(3, sizes=(6, 5, 2), timesteps=4, weight_bits=8)
    folding = Folding.for_network(net, {"fc1": 5, "fc2": 2})
    assert choose_multiplier(net, folding, 8) == "dsp"          # 7 lanes, 8 DSPs
    assert choose_multiplier(net, folding, 6) == "logic"        # the DSPs run out
    assert choose_multiplier(net, folding, None) == "dsp"       # no known budget
    assert choose_multiplier(net, folding, 0, "dsp") == "dsp"   # forced
    assert choose_multiplier(net, folding, 100, "logic") == "logic"
    with pytest.raises(InputError, match="multiplier 'lut' is not supported; accepted: dsp, logic, auto"):
        choose_multiplier(net, folding, 8, "lut")
    with pytest.raises(InputError, match="multiplier 'auto' is not supported; accepted: dsp, logic$"):
        plan_network(net, folding, multiplier="auto")


@pytest.mark.parametrize("width", [1, 2, 5, 8])
def test_mask_walk_helpers_match_the_arithmetic(width):
    """The mask walk's helpers on every mask: the any/several tree equals ``(m & (m - 1)) == 0``, the
    lowest bit alone is ``m & -m`` and the priority tree gives that bit's index."""
    m = Module()
    mask, single, low, hot = Signal(width), Signal(), Signal(max(1, (width - 1).bit_length())), Signal(width)
    m.d.comb += [single.eq(at_most_one_set(mask)), low.eq(lowest_set_bit(mask)), hot.eq(lowest_one_hot(mask))]

    async def testbench(ctx):
        for value in range(1 << width):
            ctx.set(mask, value)
            assert ctx.get(single) == int(value & (value - 1) == 0), value
            assert ctx.get(hot) == value & -value, value
            if value:
                assert 1 << ctx.get(low) == value & -value, value

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()


@pytest.mark.parametrize("constant", [0, 1, 2, 3, 10, 64, 200])
def test_times_constant_is_the_product_without_a_multiplier(constant):
    """The weight address's ``in_index × chunks`` as shifted copies and adders (no ``$mul``: yosys would
    map it to a DSP on ECP5)."""
    m = Module()
    value, product = Signal(5), Signal(16)
    m.d.comb += product.eq(times_constant(value, constant))
    assert "$mul" not in rtlil.convert(m, ports=[value, product])

    async def testbench(ctx):
        for x in range(32):
            ctx.set(value, x)
            assert ctx.get(product) == x * constant, x

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()


def test_a_wide_layers_level_register_is_copied_per_lane_group():
    """A 64-lane layer with one θ: four level registers (one per 16 lanes), distinct in initial value and
    reset so yosys cannot merge them back; a 16-lane layer keeps one. (Bit-exactness with the copies: the
    64-lane Fashion-MNIST design in the accelerator and sign-off tests.)"""
    net = random_network(4, sizes=(8, 64, 2), timesteps=3, weight_bits=6, threshold_range=(7, 7))
    for lanes, copies in ((64, min(LEVEL_COPIES, 64 // LANES_PER_LEVEL)), (16, 1)):
        plan = plan_network(net, Folding.for_network(net, {"fc1": lanes, "fc2": 1}))
        assert plan.layers[0].uniform_threshold == 7
        text = rtlil.convert(DenseILIF(plan.layers[0]))
        names = sorted(set(re.findall(r"wire width \d+ (?:init \d+'[01]+ )?\\(level\d*)\b", text)))
        assert names == ([f"level{i}" for i in range(copies)] if copies > 1 else ["level"]), names


def test_wide_producer_mask_is_walked_exactly():
    """A consumer of a 24-lane producer (a 24-bit event mask, the case the carry-free walk is for),
    under stalls."""
    net = random_network(17, sizes=(30, 24, 5, 2), timesteps=3, weight_bits=6, threshold_range=(1, 200))
    plan = plan_network(net, Folding.for_network(net, {"fc1": 24, "fc2": 2, "fc3": 1}))
    layer = plan.layers[1]
    assert layer.in_group == 24
    codes = np.random.default_rng(2).integers(0, 8, size=(4, 24))
    codes[1] = 7
    got = _simulate_layer(layer, codes, net.timesteps, gap=0.3, stall=0.3, seed=1)[0]
    # fc2 on these input codes: the golden model of the network that starts at fc2.
    tail = Network(timesteps=net.timesteps, input_shape=(24,), input_lut=np.arange(256) % 8,
                   layers=list(net.layers[1:]), classes=net.classes)
    np.testing.assert_array_equal(got, golden.run_codes(tail, codes).codes[1])
