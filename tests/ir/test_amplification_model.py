"""The generic-k iLIF model (spikeforge.ir.amplification): k = 2 is the golden model, other k behave as documented."""

import numpy as np
import pytest

from spikeforge.ir.network import DenseLayer, Network
from spikeforge.ir.random_network import random_network
from spikeforge.ir import amplification, golden


@pytest.mark.parametrize("seed, timesteps, weight_bits", [(0, 1, 8), (1, 4, 8), (2, 8, 4), (3, 16, 12), (4, 5, 2)])
def test_k2_equals_golden_codes_scores_and_spike_counts(seed, timesteps, weight_bits):
    net = random_network(seed, sizes=(9, 7, 5, 4), timesteps=timesteps, weight_bits=weight_bits,
                         threshold_range=(1, 300), round_v0=bool(seed % 2), bias_range=(-2000, 2000))
    samples = np.random.default_rng(seed).integers(0, 256, size=(64, 9), dtype=np.uint8)
    samples[0] = 0
    samples[1] = 255
    literal = golden.run_timesteps(net, samples)
    result = amplification.run(net, samples, amplification=2)
    assert result.code_max == net.code_max
    for expected, values in zip(literal.codes, result.values):
        assert values.dtype == np.int64
        np.testing.assert_array_equal(values, expected)
    np.testing.assert_array_equal(result.scores, literal.scores)
    np.testing.assert_array_equal(result.labels, literal.labels)
    for expected, counts in zip(literal.spike_counts, result.spike_counts):
        np.testing.assert_array_equal(counts, expected)
    np.testing.assert_array_equal(golden.spike_driven_additions(net, result.input_spikes()),
                                  golden.spike_driven_additions(net, golden.run(net, samples).input_spikes()))


def test_greedy_fire_phase_k2_is_clipped_floor_division():
    potential = np.arange(-50, 400).reshape(1, -1)
    values, counts = amplification.greedy_spikes(potential, 3, 2, 6)
    np.testing.assert_array_equal(values, np.clip(np.floor_divide(potential, 3), 0, 63))
    bits = (values[..., None] >> np.arange(5, -1, -1)) & 1
    np.testing.assert_array_equal(counts, bits.sum(axis=1))


@pytest.mark.parametrize("k, timesteps, expected", [
    (1.0, 4, [[4.0, 4.0, 3.0, 0.0]]),          # rate code: min(floor(V/θ), T) spikes worth 1
    (3.0, 2, [[4.0, 4.0, 3.0, 0.0]]),          # places 3, 1: 5 -> 3 + 1 = 4 (2 cannot be written: gap)
    (1.5, 3, [[4.75, 4.75, 3.25, 0.0]]),       # places 2.25, 1.5, 1 (sum 4.75 = x_max)
])
def test_other_k_greedy_expansion(k, timesteps, expected):
    values, _ = amplification.greedy_spikes(np.array([[9.0, 5.0, 3.5, -1.0]]), 1.0, k, timesteps)
    np.testing.assert_allclose(values, expected)


def test_code_max_and_place_values():
    assert amplification.code_max(2, 8) == 255
    assert amplification.code_max(1, 8) == 8
    assert amplification.code_max(3, 3) == 13
    np.testing.assert_allclose(amplification.place_values(1.5, 3), [2.25, 1.5, 1.0])


def test_k2_has_the_smallest_encoding_error():
    for timesteps in (4, 8):
        errors = {k: amplification.encoding_error(k, timesteps) for k in (1, 1.5, 2, 2.5, 3)}
        assert min(errors, key=errors.get) == 2
        # k = 2 rounds to nearest: the mean error of a uniform value is a quarter of a step.
        assert errors[2] == pytest.approx(0.25 / ((1 << timesteps) - 1), rel=1e-3)


def test_retimed_network_matches_a_network_built_for_that_t():
    """Re-timing k = 2 to another T rescales biases and input codes like converting at that T."""
    from spikeforge.ir.golden import input_lut

    def network(timesteps, scale):
        # The bias is in units of the input step, which is 17 times finer at T = 8 than at T = 4.
        hidden = DenseLayer("fc1", weight=[[2, -1]], bias=[2 * scale], threshold=[4], v0=[2], weight_bits=4)
        out = DenseLayer("fc2", weight=[[1], [-1]], bias=[1 * scale, -2 * scale], threshold=[1], v0=[0],
                         weight_bits=4, fires=False)
        return Network(timesteps=timesteps, input_shape=(2,), input_lut=input_lut(255.0, timesteps),
                       layers=[hidden, out], classes=["a", "b"], calibration={"input_max": 255.0})

    net8, net4 = network(8, 17), network(4, 1)
    samples = np.random.default_rng(0).integers(0, 256, size=(50, 2), dtype=np.uint8)
    retimed = amplification.run(net8, samples, amplification=2, timesteps=4)
    own = golden.run(net4, samples)
    np.testing.assert_array_equal(retimed.values[1], own.codes[1])
    np.testing.assert_array_equal(retimed.scores, own.scores)


@pytest.mark.parametrize("k, timesteps, message", [(0.5, 4, "amplification k = 0.5 must be a number >= 1"),
                                                   (float("nan"), 4, "must be a number >= 1"),
                                                   (2, 0, "timesteps 0 must be an integer >= 1")])
def test_bad_arguments_are_named(k, timesteps, message):
    net = random_network(0, sizes=(3, 2, 2), timesteps=4, weight_bits=4)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        amplification.run(net, np.zeros((1, 3), dtype=np.uint8), amplification=k, timesteps=timesteps)
