"""``spikeforge.convert``: the converter with dataset names resolved (the converter itself takes arrays).

    net = spikeforge.convert(model, "digits", timesteps=8)          # a dataset name or IDX directory
    net = spikeforge.convert(model, raw_samples, timesteps=8)       # arrays go straight through

A name gives the dataset's training split (its first :data:`MAX_CALIBRATION_SAMPLES` samples), their
labels (the clip search's reference), its class names and its input scale (``raw / 255`` unless
``normalization`` says otherwise); the float model's accuracy on its test split is recorded. A model
that normalises its input itself (``x / 255`` in ``forward``) takes raw bytes: pass
``normalization=InputNormalization()``; converting it with the default scale, which would normalise
twice, is refused with a message saying so.
"""

from __future__ import annotations

from pathlib import Path

from spikeforge.converter.calibrate import InputNormalization
import numpy as np

from spikeforge.converter.convert import ConversionError, float_model_outputs
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
    if normalization is None:
        _check_default_scale(model, train, options.get("input_shape"))
    net = convert_arrays(model, train.samples[:MAX_CALIBRATION_SAMPLES],
                         labels=train.labels[:MAX_CALIBRATION_SAMPLES],
                         normalization=normalization or InputNormalization(scale=train.input_scale),
                         classes=classes or train.classes,
                         evaluation={f"{test.name}/test": (test.samples, test.labels)}, **options)
    net.calibration = {"dataset": calibration, **net.calibration}
    return net


def _check_default_scale(model, train, input_shape, samples: int = 500):
    """A model that normalises its input itself (``x / 255`` in forward) takes raw bytes: the dataset's
    default ``raw / input_scale`` would normalise twice. Say so instead of converting a broken model."""
    raw, labels = train.samples[:samples], train.labels[:samples]
    scaled, _ = float_model_outputs(model, raw, normalization=InputNormalization(scale=train.input_scale),
                                    input_shape=input_shape)
    scaled_accuracy = float(np.mean(scaled.argmax(1) == labels))
    if scaled_accuracy >= 0.5:
        return
    as_bytes, _ = float_model_outputs(model, raw, normalization=InputNormalization(), input_shape=input_shape)
    raw_accuracy = float(np.mean(as_bytes.argmax(1) == labels))
    if raw_accuracy >= scaled_accuracy + 0.3:
        raise ConversionError(
            f"the model classifies {100 * scaled_accuracy:.1f} % of {train.name}/train when fed raw / "
            f"{train.input_scale:g} (the dataset's default) but {100 * raw_accuracy:.1f} % when fed raw bytes: it "
            f"normalises its input itself. Pass normalization=InputNormalization() (--input-scale 1)")


def load_calibration(spec: str):
    """What ``--calibrate SPEC`` means: ``(samples, default input scale)`` for a ``.npy``/``.pt`` file of raw
    samples (scale 1), or ``(name, the dataset's input scale)`` for a dataset name or IDX directory (pass
    the name on to :func:`convert`)."""
    if Path(spec).is_file():
        return load_calibration_file(spec)
    dataset = load_dataset(spec, "train")    # raises DatasetError naming the accepted names
    return spec, dataset.input_scale
