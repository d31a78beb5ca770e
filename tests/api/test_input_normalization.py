"""spikeforge.InputNormalization: the scale is the data's unless given, so mean/std never drop a /255."""

import numpy as np
import pytest

import spikeforge
from spikeforge.converter.calibrate import InputNormalization as ConverterNormalization
from spikeforge.datasets import load as load_dataset
from spikeforge.demo_model import load_digits_mlp
from spikeforge.ir.errors import InputError


def test_exported_and_the_scale_defaults_to_the_datasets():
    assert "InputNormalization" in spikeforge.__all__ and "ChanceLevelWarning" in spikeforge.__all__
    norm = spikeforge.InputNormalization(mean=0.25, std=0.5)
    assert norm.scale is None and isinstance(norm, ConverterNormalization)
    assert norm.for_scale(255.0) == ConverterNormalization(255.0, 0.25, 0.5)
    assert spikeforge.InputNormalization(scale=1, mean=0.25).for_scale(255.0).scale == 1
    with pytest.raises(InputError, match="std -1 must be positive"):
        spikeforge.InputNormalization(std=-1)


@pytest.mark.slow      # three conversions of the digits MLP
def test_mean_and_std_with_a_dataset_name_keep_its_255():
    model = load_digits_mlp()
    plain = spikeforge.convert(model, "digits", timesteps=4)
    given = spikeforge.convert(model, "digits", timesteps=4, normalization=spikeforge.InputNormalization(mean=0.0,
                                                                                                      std=1.0))
    assert given.calibration["normalization"] == {"scale": 255.0, "mean": 0.0, "std": 1.0}
    assert given.layers == plain.layers
    # With arrays the data's scale is 1 (raw samples): the same as the converter's own default.
    raw = load_dataset("digits", "train").samples
    arrays = spikeforge.convert(model, raw, timesteps=4, normalization=spikeforge.InputNormalization(scale=255.0))
    assert arrays.layers == plain.layers


def test_a_forgotten_normalisation_warns_at_chance_level():
    with pytest.warns(spikeforge.ChanceLevelWarning, match=r"classifies only .* of digits/test \(chance is 10.0 %\)"):
        spikeforge.convert(load_digits_mlp(), "digits", timesteps=4,
                           normalization=spikeforge.InputNormalization(mean=1000.0))


def test_arrays_that_are_not_raw_bytes_are_refused():
    scaled = load_dataset("digits", "train").samples[:50] / 255.0
    with pytest.raises(InputError, match="look scaled already"):
        spikeforge.convert(load_digits_mlp(), scaled, timesteps=4)
    assert np.all(scaled <= 1)
