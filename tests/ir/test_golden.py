import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from spikeforge.ir.network import DenseLayer, Network
from spikeforge.ir.random_network import random_network
from spikeforge.ir import golden


def _assert_same(a, b):
    assert len(a.codes) == len(b.codes)
    for x, y in zip(a.codes, b.codes):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.labels, b.labels)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), timesteps=st.integers(1, 16), weight_bits=st.integers(2, 16),
       depth=st.integers(1, 3), round_v0=st.booleans())
def test_closed_form_equals_literal_ilif(seed, timesteps, weight_bits, depth, round_v0):
    rng = np.random.default_rng(seed)
    sizes = tuple(int(s) for s in rng.integers(1, 12, size=depth + 1)) + (int(rng.integers(1, 6)),)
    net = random_network(seed, sizes=sizes, timesteps=timesteps, weight_bits=weight_bits,
                         threshold_range=(1, 1 << int(rng.integers(0, 12))), round_v0=round_v0,
                         bias_range=(-3000, 3000))
    samples = rng.integers(0, 256, size=(17, sizes[0]))
    samples[0] = 0
    samples[1] = 255
    closed = golden.run(net, samples)
    literal = golden.run_timesteps(net, samples)
    _assert_same(closed, literal)
    # Per-timestep counts add up to the popcount of the codes.
    for counts, spikes in zip(literal.spike_counts, closed.input_spikes()):
        np.testing.assert_array_equal(counts.sum(axis=1), spikes)


def _one_neuron(potential_offset, threshold, timesteps):
    """A 1-input network whose hidden neuron sees exactly V = potential_offset (input code 0)."""
    hidden = DenseLayer("fc1", weight=[[1]], bias=[potential_offset], threshold=[threshold], v0=[0],
                        weight_bits=2, fires=True)
    out = DenseLayer("fc2", weight=[[1]], bias=[0], threshold=[1], v0=[0], weight_bits=2, fires=False)
    return Network(timesteps=timesteps, input_shape=(1,), input_lut=np.zeros(256, dtype=int),
                   layers=[hidden, out], classes=["a"])


@pytest.mark.parametrize("timesteps", [1, 3, 8, 16])
def test_neuron_edges_exact_threshold_saturation_and_negative(timesteps):
    theta = 7
    code_max = (1 << timesteps) - 1
    cases = {
        -1: 0, -10**6: 0, 0: 0, theta - 1: 0, theta: 1,             # ReLU and the exact threshold
        theta * code_max: code_max, theta * code_max + theta - 1: code_max,
        theta * (code_max + 1): code_max, 10**9: code_max,          # saturation
    }
    for potential, expected in cases.items():
        net = _one_neuron(potential, theta, timesteps)
        for model in (golden.run, golden.run_timesteps):
            result = model(net, np.zeros((1, 1), dtype=np.uint8))
            assert result.codes[1][0, 0] == expected, (model.__name__, potential)


def test_argmax_ties_take_lowest_index():
    scores = np.array([[3, 5, 5, 1], [-2, -2, -2, -2], [0, 0, 1, 1]])
    np.testing.assert_array_equal(golden.argmax_lowest(scores), [1, 0, 2])


def test_input_shape_and_byte_range_are_checked():
    net = random_network(0, sizes=(6, 3, 2))
    with pytest.raises(ValueError, match=r"expected \(N, 6\)"):
        golden.run(net, np.zeros((2, 5), dtype=np.uint8))
    with pytest.raises(ValueError, match="bytes 0..255"):
        golden.run(net, np.full((2, 6), 300))
    with pytest.raises(ValueError, match="uint8"):
        golden.run(net, np.zeros((2, 6), dtype=np.float32))


def test_rate_coded_baseline_converges_to_the_closed_form_labels():
    net = random_network(5, sizes=(20, 16, 5), timesteps=8, threshold_range=(400, 800), bias_range=(-100, 100))
    samples = np.random.default_rng(1).integers(0, 256, size=(200, 20))
    exact = golden.run(net, samples)
    short = golden.run_rate_coded(net, samples, timesteps=4, input_mode="current")
    long = golden.run_rate_coded(net, samples, timesteps=512, input_mode="current")
    agree_short = np.mean(short.labels == exact.labels)
    agree_long = np.mean(long.labels == exact.labels)
    assert agree_long > 0.9 and agree_long > agree_short
    spiking = golden.run_rate_coded(net, samples, timesteps=64, input_mode="spikes", seed=3)
    again = golden.run_rate_coded(net, samples, timesteps=64, input_mode="spikes", seed=3)
    np.testing.assert_array_equal(spiking.labels, again.labels)           # seeded, reproducible
    assert spiking.spike_counts[0].sum() > 0
    with pytest.raises(ValueError, match="input_mode 'poisson'"):
        golden.run_rate_coded(net, samples, timesteps=4, input_mode="poisson")


def test_spike_driven_additions_counts_events_times_fanout():
    net = random_network(2, sizes=(4, 3, 2), timesteps=2)
    lut = np.zeros(256, dtype=int)
    lut[1] = 3          # two spikes
    net.input_lut = lut
    result = golden.run(net, np.array([[1, 0, 0, 1]]))
    spikes = result.input_spikes()
    assert spikes[0][0] == 4
    assert golden.spike_driven_additions(net, spikes)[0] == 4 * 3 + spikes[1][0] * 2


@pytest.mark.parametrize("dtype", [None, np.float64, np.float32])
def test_every_arithmetic_path_of_the_closed_form_is_exact(monkeypatch, dtype):
    """float32 / float64 BLAS and the int64 fallback give identical results."""
    net = random_network(11, sizes=(30, 20, 10, 6), timesteps=6, weight_bits=6, threshold_range=(1, 300))
    samples = np.random.default_rng(4).integers(0, 256, size=(300, 30)).astype(np.uint8)
    reference = golden.run_timesteps(net, samples)
    monkeypatch.setattr(golden, "_fast_dtype", lambda net: None)          # the exact engine (fast: test_golden_fast)
    monkeypatch.setattr(golden, "_float_dtype", lambda net: dtype)
    _assert_same(golden.run(net, samples), reference)
