"""``spikeforge.convert``: the converter with dataset names resolved (the converter itself takes arrays).

    net = spikeforge.convert(model, "digits", timesteps=8)          # a dataset name or IDX directory
    net = spikeforge.convert(model, raw_samples, timesteps=8)       # arrays go straight through

A name gives the dataset's training split (its first :data:`MAX_CALIBRATION_SAMPLES` samples), their
labels (the clip search's reference), its class names and its input scale (``raw / 255`` unless
``normalization`` says otherwise); the float model's accuracy on its test split is recorded.
"""

from __future__ import annotations

from pathlib import Path

from spikeforge.converter.calibrate import InputNormalization
from spikeforge.converter.convert import convert as convert_arrays
from spikeforge.converter.model_files import load_calibration as load_calibration_file
from spikeforge.datasets import load as load_dataset
from spikeforge.ir.network import Network

__all__ = ["convert", "load_calibration", "MAX_CALIBRATION_SAMPLES"]

#: Calibration uses at most this many samples of a named dataset's training split.
MAX_CALIBRATION_SAMPLES = 5000


def convert(model, calibration, *, normalization: InputNormalization | None = None, classes=None,
            **options) -> Network:
    """:func:`spikeforge.converter.convert.convert`, where ``calibration`` may also name a dataset."""
    if not isinstance(calibration, str):
        return convert_arrays(model, calibration, normalization=normalization, classes=classes, **options)
    train = load_dataset(calibration, "train")       # raises DatasetError naming the accepted names
    test = load_dataset(calibration, "test")
    net = convert_arrays(model, train.samples[:MAX_CALIBRATION_SAMPLES],
                         labels=train.labels[:MAX_CALIBRATION_SAMPLES],
                         normalization=normalization or InputNormalization(scale=train.input_scale),
                         classes=classes or train.classes,
                         evaluation={f"{test.name}/test": (test.samples, test.labels)}, **options)
    net.calibration = {"dataset": calibration, **net.calibration}
    return net


def load_calibration(spec: str):
    """What ``--calibrate SPEC`` means: ``(samples, default input scale)`` for a ``.npy``/``.pt`` file of raw
    samples (scale 1), or ``(name, the dataset's input scale)`` for a dataset name or IDX directory (pass
    the name on to :func:`convert`)."""
    if Path(spec).is_file():
        return load_calibration_file(spec)
    dataset = load_dataset(spec, "train")    # raises DatasetError naming the accepted names
    return spec, dataset.input_scale
