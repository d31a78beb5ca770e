"""method="search": the clip percentile is chosen on calibration data, by agreement then fidelity."""

import numpy as np
import pytest

from spikeforge.converter.calibrate import InputNormalization
from spikeforge.converter.clip_search import SEARCH_PERCENTILES, score_error
from spikeforge.conversion import convert as convert_named
from spikeforge.converter.convert import convert
from spikeforge.datasets import load
from spikeforge.demo_model import load_digits_mlp


def test_score_error_ignores_scale_and_measures_shape():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 10))
    assert score_error(7.0 * logits, logits) == pytest.approx(0.0, abs=1e-12)
    assert score_error(np.round(64 * logits), logits) < 1e-3
    assert score_error(rng.normal(size=(50, 10)), logits) > 0.5


@pytest.mark.parametrize("timesteps", [2, 3])
def test_search_picks_the_best_candidate_on_the_training_split(timesteps):
    model = load_digits_mlp()
    net = convert_named(model, "digits", timesteps=timesteps, method="search")
    record = net.calibration
    assert record["method"] == "search" and record["search"]["reference"] == "calibration labels"
    table = record["search"]["candidates"]
    assert [c["percentile"] for c in table] == list(SEARCH_PERCENTILES)
    best = max(table, key=lambda c: (c["agreement"], -c["score_error"]))
    assert record["percentile"] == best["percentile"]
    # The table's numbers are what the chosen network does on the training split...
    train = load("digits", "train")
    assert np.mean(net.run(train.samples).labels == train.labels) == best["agreement"]
    # ...and the network is exactly the plain conversion at that percentile.
    plain = convert_named(model, "digits", timesteps=timesteps, percentile=best["percentile"])
    for ours, theirs in zip(net.layers, plain.layers):
        np.testing.assert_array_equal(ours.weight, theirs.weight)
        np.testing.assert_array_equal(ours.threshold, theirs.threshold)
        np.testing.assert_array_equal(ours.bias, theirs.bias)
    np.testing.assert_array_equal(net.input_lut, plain.input_lut)


def test_search_without_labels_agrees_with_the_float_model():
    train = load("digits", "train")
    net = convert(load_digits_mlp(), train.samples[:400], timesteps=2, method="search",
                  normalization=InputNormalization(scale=255.0))
    search = net.calibration["search"]
    assert search["reference"] == "float model predictions"
    assert max(c["agreement"] for c in search["candidates"]) > 0.95
