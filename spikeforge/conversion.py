"""``spikeforge.convert``: the converter with dataset names resolved (the converter itself takes arrays).

    net = spikeforge.convert(model, "digits", timesteps=8)          # a dataset name or IDX directory
    net = spikeforge.convert(model, raw_samples, timesteps=8)       # arrays go straight through

A name gives the dataset's training split (its first :data:`MAX_CALIBRATION_SAMPLES` samples), their
labels (the clip search's reference), its class names and its input scale (``raw / 255`` unless
``normalization`` says otherwise); the float model's accuracy on its test split is recorded, and a
model at chance level there (a forgotten or doubled normalisation) gets a :class:`ChanceLevelWarning`.
:class:`InputNormalization` (``spikeforge.InputNormalization``) leaves the scale to the data unless
given: ``InputNormalization(mean=0.1307, std=0.3081)`` with a dataset name means ``(raw / 255 - mean) /
std``. A model that normalises its input itself (``x / 255`` in ``forward``) takes raw bytes: pass
``normalization=InputNormalization(scale=1)``; converting it with the default scale, which would
normalise twice, is refused with a message saying so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from spikeforge.converter import calibrate
import numpy as np

from spikeforge.converter.convert import ConversionError, float_model_outputs
from spikeforge.converter.convert import convert as convert_arrays
from spikeforge.converter.model_files import load_calibration as load_calibration_file
from spikeforge.datasets import load as load_dataset
from spikeforge.ir.network import Network, raw_samples

__all__ = ["convert", "load_calibration", "InputNormalization", "ChanceLevelWarning", "chance_level",
           "MAX_CALIBRATION_SAMPLES"]

#: Calibration uses at most this many samples of a named dataset's training split.
MAX_CALIBRATION_SAMPLES = 5000


@dataclass(frozen=True)
class InputNormalization(calibrate.InputNormalization):
    """How the model's input was derived from raw bytes: ``x = (raw / scale - mean) / std``.

    ``scale=None`` (the default) is the data's own: a dataset's (255 for the image sets), 1 for arrays
    of raw samples. So passing only ``mean``/``std`` never drops a dataset's ``/ 255``. ``scale=1``
    says the model takes raw bytes (it normalises itself, or was trained on 0..255).
    """

    scale: float | None = None

    def __post_init__(self):
        if self.scale is not None:
            super().__post_init__()
        else:       # validate mean and std now; the scale is resolved against the data in for_scale
            calibrate.InputNormalization(1.0, self.mean, self.std)

    def for_scale(self, data_scale: float) -> calibrate.InputNormalization:
        """The converter's normalisation, with ``data_scale`` where no scale was given."""
        return calibrate.InputNormalization(data_scale if self.scale is None else self.scale, self.mean, self.std)

    def affine(self, shape):
        return self.for_scale(1.0).affine(shape)

    def apply(self, raw, shape=None):
        return self.for_scale(1.0).apply(raw, shape)


class ChanceLevelWarning(UserWarning):
    """The float model is at chance level on the dataset: its input is probably not what it was trained on."""


def chance_level(net: Network) -> str | None:
    """A loud message when the float model's recorded test accuracy is within twice chance, else ``None``."""
    classes = max(len(net.classes), 2)
    for key, accuracy in (net.calibration.get("float_accuracy") or {}).items():
        if accuracy is not None and accuracy <= 2.0 / classes:
            scale = (net.calibration.get("normalization") or {}).get("scale")
            return (f"the float model classifies only {100 * accuracy:.1f} % of {key} (chance is "
                    f"{100 / classes:.1f} %): it was probably trained on another input normalisation than the "
                    f"one used here (raw / {scale:g}, then mean/std). Check --input-scale/--input-mean/--input-std "
                    f"(normalization=InputNormalization(...)); the spiking network copies the float model, so it is "
                    f"at chance too")
    return None


def convert(model, calibration, *, normalization: InputNormalization | None = None, classes=None,
            **options) -> Network:
    """:func:`spikeforge.converter.convert.convert`, where ``calibration`` may also name a dataset."""
    if not isinstance(calibration, str):
        if isinstance(normalization, InputNormalization):
            normalization = normalization.for_scale(1.0)          # arrays are raw samples
        return convert_arrays(model, raw_samples(calibration, "the calibration samples"),
                              normalization=normalization, classes=classes, **options)
    train = load_dataset(calibration, "train")       # raises DatasetError naming the accepted names
    test = load_dataset(calibration, "test")
    if normalization is None:
        _check_default_scale(model, train, options.get("input_shape"))
    elif isinstance(normalization, InputNormalization):
        normalization = normalization.for_scale(train.input_scale)
    net = convert_arrays(model, train.samples[:MAX_CALIBRATION_SAMPLES],
                         labels=train.labels[:MAX_CALIBRATION_SAMPLES],
                         normalization=normalization or calibrate.InputNormalization(scale=train.input_scale),
                         classes=classes or train.classes,
                         evaluation={f"{test.name}/test": (test.samples, test.labels)}, **options)
    net.calibration = {"dataset": calibration, **net.calibration}
    message = chance_level(net)
    if message:
        warnings.warn(ChanceLevelWarning(message), stacklevel=2)
    return net


def _check_default_scale(model, train, input_shape, samples: int = 500):
    """A model that normalises its input itself (``x / 255`` in forward) takes raw bytes: the dataset's
    default ``raw / input_scale`` would normalise twice. Say so instead of converting a broken model."""
    raw, labels = train.samples[:samples], train.labels[:samples]
    scaled, _ = float_model_outputs(model, raw, normalization=calibrate.InputNormalization(scale=train.input_scale),
                                    input_shape=input_shape)
    scaled_accuracy = float(np.mean(scaled.argmax(1) == labels))
    if scaled_accuracy >= 0.5:
        return
    as_bytes, _ = float_model_outputs(model, raw, normalization=calibrate.InputNormalization(),
                                      input_shape=input_shape)
    raw_accuracy = float(np.mean(as_bytes.argmax(1) == labels))
    if raw_accuracy >= scaled_accuracy + 0.3:
        raise ConversionError(
            f"the model classifies {100 * scaled_accuracy:.1f} % of {train.name}/train when fed raw / "
            f"{train.input_scale:g} (the dataset's default) but {100 * raw_accuracy:.1f} % when fed raw bytes: it "
            f"normalises its input itself. Pass normalization=InputNormalization(scale=1) (--input-scale 1)")


def load_calibration(spec: str):
    """What ``--calibrate SPEC`` means: ``(samples, default input scale)`` for a ``.npy``/``.pt`` file of raw
    samples (scale 1), or ``(name, the dataset's input scale)`` for a dataset name or IDX directory (pass
    the name on to :func:`convert`)."""
    if Path(spec).is_file():
        return load_calibration_file(spec)
    dataset = load_dataset(spec, "train")    # raises DatasetError naming the accepted names
    return spec, dataset.input_scale
