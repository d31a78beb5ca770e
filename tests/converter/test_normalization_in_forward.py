"""Input normalisation written in ``forward`` is folded into the first layer, like InputNormalization."""

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

from spikeforge.converter.calibrate import InputNormalization
from spikeforge.converter.convert import ConversionError, convert, float_model_outputs

MEAN = (0.30,)
STD = (0.35,)


class Normalize(nn.Module):
    """A torchvision-style Normalize submodule: ``(x - mean) / std`` with per-channel buffers."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class Wrapped(nn.Module):
    """``body`` after the input arithmetic ``prepare(self, x)``; the model takes raw bytes (N, 1, 8, 8)."""

    def __init__(self, prepare, body):
        super().__init__()
        self.prepare = prepare
        self.body = body
        self.normalize = Normalize([m * 255 for m in MEAN], [s * 255 for s in STD])
        self.register_buffer("mean_c11", torch.tensor(MEAN).view(1, 1, 1))
        self.register_buffer("mean_1c11", torch.tensor(MEAN).view(1, 1, 1, 1))
        self.register_buffer("std_c", torch.tensor(STD))
        self.scale_attribute = torch.tensor([1 / 255.0])       # a plain tensor attribute, not a buffer

    def forward(self, x):
        return self.body(self.prepare(self, x))


SPELLINGS = {
    "x / 255": lambda m, x: x / 255,
    "x * s + t": lambda m, x: x * (1 / 255) + 0.5,
    "(x - mean) / std scalars": lambda m, x: (x / 255.0 - 0.3) / 0.35,
    "buffers (C, 1, 1) and (1, C, 1, 1)": lambda m, x: (x / 255 - m.mean_c11) / m.std_c[:, None, None] + m.mean_1c11,
    "torch functions": lambda m, x: torch.div(torch.sub(torch.mul(x, m.scale_attribute), 0.3), 0.35),
    "tensor methods": lambda m, x: x.float().div(255).sub(m.mean_1c11).mul(2.0).add(1.0),
    "constant minus x": lambda m, x: 1.0 - x / 255,
    "Normalize submodule": lambda m, x: m.normalize(x),
}


def _conv_body():
    # padding=0: an input shift cannot be folded exactly into a padded conv (see the refusal below)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 3 * 3, 10))


def _dense_body():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 24), nn.ReLU(), nn.Linear(24, 10))


def _model(spelling, body, digits_images, quick_fit):
    torch.manual_seed(0)
    raw, labels = digits_images
    model = Wrapped(SPELLINGS[spelling], body())
    return quick_fit(model, raw.reshape(-1, 1, 8, 8), labels, scale=1.0)


def _reference(model, raw):
    with torch.no_grad():
        return copy.deepcopy(model).double()(torch.tensor(raw, dtype=torch.float64).reshape(-1, 1, 8, 8)).numpy()


@pytest.mark.parametrize("body", [_conv_body, _dense_body], ids=["conv", "dense"])
@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_each_spelling_is_folded_into_the_first_layer(spelling, body, digits_images, quick_fit):
    raw, _ = digits_images
    raw = raw.reshape(-1, 1, 8, 8)     # a dense-first model cannot say it takes one channel: the samples do
    model = _model(spelling, body, digits_images, quick_fit)
    reference = _reference(model, raw)
    chain, layers = float_model_outputs(model, raw)
    assert np.abs(chain - reference).max() <= 1e-4 * (1 + np.abs(reference).max())
    net = convert(model, raw, timesteps=8)
    assert net.input_lut[255] == 255                  # the hardware is fed raw bytes (input_max 255)
    assert np.mean(net.run(raw).labels == reference.argmax(1)) >= 0.95


@pytest.mark.slow
def test_the_exported_program_folds_the_same_arithmetic(digits_images, quick_fit):
    raw, _ = digits_images
    for spelling in ("buffers (C, 1, 1) and (1, C, 1, 1)", "torch functions"):
        model = _model(spelling, _conv_body, digits_images, quick_fit)
        traced = convert(model, raw, timesteps=6)
        exported = torch.export.export(model, (torch.zeros(2, 1, 8, 8),),
                                       dynamic_shapes=({0: torch.export.Dim("batch")},)).module()
        net = convert(exported, raw, timesteps=6)
        np.testing.assert_array_equal(net.run(raw).scores, traced.run(raw).scores)


def test_in_forward_division_equals_the_explicit_normalization(digits_images, quick_fit):
    """``x / 255`` in forward and ``InputNormalization(scale=255)`` on the bare model give one network."""
    raw, _ = digits_images
    model = _model("x / 255", _conv_body, digits_images, quick_fit)
    explicit = convert(model.body, raw, timesteps=8, normalization=InputNormalization(scale=255.0))
    in_forward = convert(model, raw, timesteps=8)
    assert [l.name for l in in_forward.layers] == ["body_0", "body_2", "body_4"]
    for a, b in zip(explicit.layers, in_forward.layers):
        if a.kind != "maxpool2d":
            np.testing.assert_array_equal(a.weight, b.weight)
            np.testing.assert_array_equal(a.threshold, b.threshold)
            np.testing.assert_array_equal(np.abs(a.bias - b.bias) <= 1, True)


def test_explicit_normalization_applies_first_then_the_models_own(digits_images, quick_fit):
    """Raw bytes -> InputNormalization -> the model's forward (which normalises again) -> layers."""
    raw, _ = digits_images
    raw = raw.reshape(-1, 1, 8, 8)
    model = _model("(x - mean) / std scalars", _dense_body, digits_images, quick_fit)
    # The model now sees raw * 2 (the explicit map), then divides by 255 and shifts by itself.
    explicit = InputNormalization(scale=0.5)
    reference = _reference(model, raw * 2.0)
    chain, _ = float_model_outputs(model, raw, normalization=explicit)
    assert np.abs(chain - reference).max() <= 1e-4 * (1 + np.abs(reference).max())
    net = convert(model, raw, timesteps=8, normalization=explicit)
    assert np.mean(net.run(raw).labels == reference.argmax(1)) >= 0.95
    per_channel = InputNormalization(scale=255.0, mean=[0.1], std=[0.5])     # one value per channel
    chain, _ = float_model_outputs(model, raw, normalization=per_channel)
    reference = _reference(model, (raw / 255.0 - 0.1) / 0.5)
    assert np.abs(chain - reference).max() <= 1e-4 * (1 + np.abs(reference).max())


class After(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 36, 10)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x / 255) * 2), 1))


class Reciprocal(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(torch.flatten(1.0 / (x + 1), 1))


class Square(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(torch.flatten(x * x, 1))


class ShiftBeforePadding(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 64, 10)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x / 255 - 0.5)), 1))


class SpatialScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("weights", torch.linspace(0.5, 1.5, 64).view(1, 8, 8))
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 36, 10)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x * self.weights)), 1))


@pytest.mark.parametrize("model, message", [
    (After(), r"'mul': mul \(constant arithmetic\) after 'conv' is not supported; supported: constant arithmetic "
              r"on the input, before the first layer"),
    (Reciprocal(), r"'truediv': truediv divides a constant by the input"),
    (Square(), r"'mul': mul combines several tensors"),
    (ShiftBeforePadding(), r"'conv': the input arithmetic in forward \('truediv'\) shifts the input \(offset "
                           r"\[-0.5\]\), which cannot be folded into a Conv2d with zero padding \(1, 1\)"),
    (SpatialScale(), r"'conv': the input arithmetic in forward \('mul'\) has a scale that varies within a channel"),
])
def test_arithmetic_that_cannot_be_folded_is_refused(model, message, digits_images):
    raw, _ = digits_images
    with pytest.raises(ConversionError, match=message):
        convert(model.eval(), raw[:50], timesteps=4)


def test_explicit_mean_before_a_padded_conv_is_refused_and_a_scale_is_not(digits_images):
    raw, _ = digits_images
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10)).eval()
    with pytest.raises(ConversionError, match=r"'0': the input normalisation shifts the input \(offset \[-1\]\)"):
        convert(model, raw[:50], timesteps=4, normalization=InputNormalization(scale=255.0, mean=0.5, std=0.5))
    net = convert(model, raw[:50], timesteps=4, normalization=InputNormalization(scale=255.0, std=0.5))
    assert net.layers[0].padding == (1, 1)
