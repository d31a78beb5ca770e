"""The checkpointed rate-coded run of the benchmarks equals golden.run_rate_coded at every T."""

import numpy as np
import pytest

from spikeforge.benchmarks.accuracy_vs_timesteps import parity_point
from spikeforge.benchmarks.rate_coded import rate_coded_curve
from spikeforge.ir import golden
from spikeforge.ir.random_network import random_network


@pytest.mark.parametrize("mode, v0", [("spikes", 0.0), ("spikes", 0.5), ("current", 0.0), ("current", 0.5)])
def test_curve_equals_golden_at_every_checkpoint(mode, v0):
    net = random_network(7, sizes=(12, 9, 6, 4), timesteps=6, weight_bits=6, threshold_range=(20, 200),
                         bias_range=(-300, 300))
    samples = np.random.default_rng(1).integers(0, 256, size=(40, 12), dtype=np.uint8)
    curve = rate_coded_curve(net, samples, 20, input_mode=mode, seed=5, initial_potential=v0)
    for timesteps in (1, 2, 7, 20):
        expected = golden.run_rate_coded(net, samples, timesteps, input_mode=mode, seed=5, initial_potential=v0)
        np.testing.assert_array_equal(curve.labels[timesteps - 1], expected.labels)
        for layer, counts in enumerate(expected.spike_counts):
            np.testing.assert_array_equal(curve.spike_counts[timesteps - 1, layer], counts)


def test_curve_rejects_an_unknown_input_mode():
    net = random_network(0, sizes=(3, 2, 2))
    with pytest.raises(ValueError, match="input_mode 'poisson' is not supported"):
        rate_coded_curve(net, np.zeros((1, 3), dtype=np.uint8), 4, input_mode="poisson")


def test_parity_point_is_the_first_t_within_tolerance():
    curve = [{"timesteps": t, "accuracy": a} for t, a in ((1, 0.50), (2, 0.894), (3, 0.896), (4, 0.89), (5, 0.91))]
    assert parity_point(curve, 0.90, 0.5)["timesteps"] == 3       # 0.896 >= 0.895; 0.894 is not
    assert parity_point(curve, 0.90, 1.0)["timesteps"] == 2
    assert parity_point(curve, 0.95, 1.0) is None
