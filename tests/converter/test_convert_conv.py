"""Convolutional models: every supported op and spelling converts faithfully; the rest is refused by path."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from spikeforge.converter.calibrate import InputNormalization
from spikeforge.converter.convert import ConversionError, convert, float_model_outputs
from spikeforge.ir.network import Conv2dLayer, DenseLayer, MaxPool2dLayer, load

SCALE = InputNormalization(scale=255.0)


class Functional(nn.Module):
    """F.conv2d with its own parameters, max pool before the ReLU, view, dropout, BatchNorm2d."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(6, 1, 3, 3) * 0.3)
        self.bias = nn.Parameter(torch.zeros(6))
        self.bn = nn.BatchNorm2d(6)
        self.conv = nn.Conv2d(6, 8, (3, 2), stride=(1, 2), padding=(1, 0))
        self.fc = nn.Linear(8 * 4 * 1, 10)

    def forward(self, x):
        x = self.bn(F.conv2d(x, self.weight, self.bias, padding=1))
        x = F.relu(F.max_pool2d(x, 2))
        x = torch.relu(F.max_pool2d(self.conv(x), kernel_size=(1, 2), stride=(1, 1)))
        x = F.dropout(x, 0.5, training=self.training)
        return self.fc(x.view(x.size(0), -1))


class MaxPoolBeforeRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding="same")
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 16, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.conv(x)).relu(), 1))


class GlobalMean(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 12, 3)
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        return self.fc(F.relu(self.conv(x)).mean((2, 3)))


def _sequential_cnn():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3), nn.ReLU(), nn.Flatten(), nn.Dropout(0.2), nn.Linear(16 * 2 * 2, 10))


MODELS = {
    "sequential": _sequential_cnn,
    "functional": Functional,
    "maxpool-before-relu": MaxPoolBeforeRelu,
    "relu-inplace-strided": lambda: nn.Sequential(nn.Conv2d(1, 8, 3, stride=2), nn.ReLU(inplace=True),
                                                  nn.Flatten(), nn.Linear(8 * 3 * 3, 10)),
    # avg pool (stride == kernel) then a padded conv: a strided conv with the kernel spread
    "avgpool-conv": lambda: nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                          nn.Linear(8 * 4 * 4, 10)),
    # two avg pools in a row fold as one
    "avgpool-avgpool-conv": lambda: nn.Sequential(nn.Conv2d(1, 4, 1), nn.ReLU(), nn.AvgPool2d(2), nn.AvgPool2d(2),
                                                  nn.Conv2d(4, 8, 2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 10)),
    # avg pool with overlapping windows before a Linear
    "avgpool-overlap-dense": lambda: nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.AvgPool2d(3, stride=1),
                                                   nn.Flatten(), nn.Linear(6 * 4 * 4, 10)),
    "adaptive-2x2-dense": lambda: nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((2, 2)),
                                                nn.Flatten(), nn.Linear(6 * 4, 10)),
    "adaptive-global": lambda: nn.Sequential(nn.Conv2d(1, 12, 3), nn.ReLU(), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1),
                                             nn.Flatten(), nn.Linear(12, 10)),
    "mean-2-3": GlobalMean,
    "dense-first": lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)),
}


def _trained(name, digits_images, quick_fit):
    torch.manual_seed(0)
    raw, labels = digits_images
    model = MODELS[name]()
    return quick_fit(model, raw.reshape(-1, 1, 8, 8), labels)


def _reference(model, raw, normalization=SCALE):
    """The model itself in float64 on the normalised raw samples."""
    model64 = _copy_double(model)
    with torch.no_grad():
        x = torch.tensor(normalization.apply(raw.astype(np.float64)), dtype=torch.float64)
        return model64(x.reshape(len(raw), 1, 8, 8)).numpy()


def _copy_double(model):
    import copy
    return copy.deepcopy(model).double().eval()


def _exported(model, example):
    batch = torch.export.Dim("batch")
    return torch.export.export(model, (example,), dynamic_shapes=({0: batch},)).module()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_op_and_spelling_converts_and_agrees_with_the_float_model(name, digits_images, quick_fit):
    raw, _ = digits_images
    model = _trained(name, digits_images, quick_fit)
    reference = _reference(model, raw)
    chain, layers = float_model_outputs(model, raw, normalization=SCALE)
    assert np.abs(chain - reference).max() <= 1e-4 * (1 + np.abs(reference).max())
    net = convert(model, raw, timesteps=8, normalization=SCALE)
    agreement = np.mean(net.run(raw).labels == reference.argmax(1))
    assert agreement >= 0.95, (name, agreement)
    kinds = {layer.kind for layer in net.layers}
    assert ("conv2d" in kinds) == (name != "dense-first")


def test_avg_pool_before_a_conv_becomes_a_strided_conv_with_the_kernel_spread(digits_images, quick_fit):
    raw, _ = digits_images
    model = _trained("avgpool-conv", digits_images, quick_fit)
    _, layers = float_model_outputs(model, raw, normalization=SCALE)
    conv2 = layers[1]
    assert conv2.path == "3" and conv2.stride == (2, 2) and conv2.padding == (2, 2) and conv2.in_shape == (8, 8, 8)
    original = model[3].weight.detach().double().numpy()
    np.testing.assert_allclose(conv2.weight[:, :, ::2, ::2], original / 4)
    np.testing.assert_allclose(conv2.weight[:, :, 1::2, 1::2], original / 4)


@pytest.mark.slow
def test_aten_spellings_from_torch_export_and_decompositions(digits_images, quick_fit):
    raw, _ = digits_images
    for name in ("functional", "avgpool-conv", "mean-2-3"):
        model = _trained(name, digits_images, quick_fit)
        reference = convert(model, raw, timesteps=6, normalization=SCALE)
        program = torch.export.export(model, (torch.zeros(2, 1, 8, 8),),
                                      dynamic_shapes=({0: torch.export.Dim("batch")},))
        for exported in (program.module(), program.run_decompositions().module()):
            net = convert(exported, raw, timesteps=6, normalization=SCALE)
            assert [type(l) for l in net.layers] == [type(l) for l in reference.layers], name
            np.testing.assert_array_equal(net.run(raw).scores, reference.run(raw).scores)


@pytest.mark.slow
def test_conv_network_satisfies_the_ir_and_per_channel_thresholds(digits_images, quick_fit):
    raw, _ = digits_images
    model = _trained("sequential", digits_images, quick_fit)
    per_layer = convert(model, raw, timesteps=4, weight_bits=6, normalization=SCALE)
    conv1, pool, conv2, fc = per_layer.layers
    assert isinstance(conv1, Conv2dLayer) and isinstance(pool, MaxPool2dLayer) and isinstance(fc, DenseLayer)
    assert conv1.in_shape == (1, 8, 8) and conv1.out_shape == (8, 8, 8) and pool.out_shape == (8, 4, 4)
    assert conv2.out_shape == (16, 2, 2) and fc.in_features == 64 and per_layer.input_shape == (1, 8, 8)
    assert len(set(conv1.threshold.tolist())) == 1 and np.abs(conv1.weight).max() == 31
    per_channel = convert(model, raw, timesteps=4, weight_bits=6, normalization=SCALE, per_channel=True)
    for layer in per_channel.layers[0], per_channel.layers[2]:
        assert len(set(layer.threshold.tolist())) > 1
        largest = np.abs(layer.weight).reshape(layer.out_channels, -1).max(axis=1)
        assert largest.max() <= 31 and largest.min() >= 29          # every channel uses its bits
        np.testing.assert_array_equal(layer.v0, layer.threshold // 2)
    floor = convert(model, raw, timesteps=4, normalization=SCALE, v0="floor", method="max")
    assert not floor.layers[0].v0.any() and floor.calibration["method"] == "max"
    for bits in (2, 16):
        net = convert(model, raw, timesteps=4, weight_bits=bits, normalization=SCALE)
        top = (1 << (bits - 1)) - 1
        assert net.layers[0].weight_bits == bits and 0.9 * top <= np.abs(net.layers[0].weight).max() <= top
    steps = per_layer.calibration["activation_steps"]
    assert len(steps) == 2 and len(per_layer.calibration["activation_scales"]) == 2


@pytest.mark.slow
def test_clip_search_for_a_cnn(digits_images, quick_fit):
    raw, labels = digits_images
    model = _trained("sequential", digits_images, quick_fit)
    net = convert(model, raw, timesteps=3, normalization=SCALE, method="search", labels=labels)
    search = net.calibration["search"]
    assert search["reference"] == "calibration labels"
    best = max(search["candidates"], key=lambda c: (c["agreement"], -c["score_error"]))
    assert net.calibration["percentile"] == best["percentile"]
    assert np.mean(net.run(raw).labels == labels) == best["agreement"]


def test_save_load_round_trip_gives_identical_golden_results(tmp_path, digits_images, quick_fit):
    raw, _ = digits_images
    net = convert(_trained("functional", digits_images, quick_fit), raw, timesteps=8, normalization=SCALE)
    loaded = load(net.save(tmp_path / "net"))
    assert loaded == net
    np.testing.assert_array_equal(loaded.run(raw).scores, net.run(raw).scores)


@pytest.mark.slow
def test_calibration_samples_are_read_in_the_models_input_shape(digits_images, quick_fit):
    raw, _ = digits_images
    model = _trained("sequential", digits_images, quick_fit)
    images = convert(model, raw, timesteps=4, normalization=SCALE)                # (N, 8, 8) -> (N, 1, 8, 8)
    channels = convert(model, raw.reshape(-1, 1, 8, 8), timesteps=4, normalization=SCALE)
    assert images.layers == channels.layers and images.input_shape == (1, 8, 8)
    with pytest.raises(ConversionError, match=r"samples of shape \(64,\) cannot be read as \(C, H, W\) with C = 1"):
        convert(model, raw.reshape(-1, 64), timesteps=4, normalization=SCALE)
    flat = convert(model, raw.reshape(-1, 64), timesteps=4, normalization=SCALE, input_shape=(1, 8, 8))
    assert flat.layers == images.layers
    # A torch.export program says its own input shape.
    exported = convert(_exported(model, torch.zeros(2, 1, 8, 8)), raw.reshape(-1, 64), timesteps=4,
                       normalization=SCALE)
    assert exported.layers == images.layers
    # A model that reshapes its input itself takes the samples as they are.
    class Reshaping(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = model

        def forward(self, x):
            return self.body(x.view(-1, 1, 8, 8))

    reshaping = convert(Reshaping().eval(), raw.reshape(-1, 64), timesteps=4, normalization=SCALE)
    assert reshaping.input_shape == (1, 8, 8) and [l.name for l in reshaping.layers][0] == "body_0"
    np.testing.assert_array_equal(reshaping.run(raw).scores, images.run(raw).scores)
    # ...also when it was exported for one batch size only (the model is run in batches of that size).
    static = torch.export.export(model, (torch.zeros(3, 1, 8, 8),)).module()
    assert convert(static, raw, timesteps=4, normalization=SCALE).layers == images.layers
    three = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2)).eval()
    with pytest.raises(ConversionError, match=r"with C = 3 .*\(N, 3, H, W\)"):
        convert(three, raw, timesteps=4)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(torch.flatten(x + F.relu(self.conv(x)), 1))


class RawMaxPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.conv(F.max_pool2d(x, 1))), 1))


def _head(channels, size):
    return [nn.Flatten(), nn.Linear(channels * size * size, 10)]


@pytest.mark.parametrize("model, message", [
    (nn.Sequential(nn.Conv2d(1, 4, 3, groups=1), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=2), nn.ReLU(), *_head(4, 4)),
     r"'2': Conv2d with groups=2 \(supported: groups=1\) is not supported; supported: Linear, Conv2d"),
    (nn.Sequential(nn.Conv2d(1, 4, 3, dilation=2), nn.ReLU(), *_head(4, 4)),
     r"'0': Conv2d with dilation=\(2, 2\) \(supported: dilation=1\)"),
    (nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect"), nn.ReLU(), *_head(4, 8)),
     r"'0': Conv2d with padding_mode='reflect'"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2, padding=1), *_head(4, 4)),
     r"'2': MaxPool2d with padding=\(1, 1\) \(supported: padding=0\)"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(4, ceil_mode=True), *_head(4, 2)),
     r"'2': MaxPool2d with ceil_mode=True"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AvgPool2d(2, padding=1), *_head(4, 4)),
     r"'2': AvgPool2d with padding=\(1, 1\)"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AvgPool2d(2, ceil_mode=True), *_head(4, 3)),
     r"'2': AvgPool2d with ceil_mode=True"),
    (nn.Sequential(nn.Conv2d(1, 4, 1), nn.ReLU(), nn.AvgPool2d(3, stride=2), nn.Conv2d(4, 4, 3), nn.ReLU(),
                   *_head(4, 1)),
     r"'2': AvgPool2d with kernel \(3, 3\) and stride \(2, 2\) before the Conv2d '3' cannot be folded exactly"),
    (nn.Sequential(nn.Conv2d(1, 4, 1), nn.ReLU(), nn.AvgPool2d(3), nn.Conv2d(4, 4, 2, padding=1), nn.ReLU(),
                   *_head(4, 3)),
     r"'2': AvgPool2d drops the last rows/columns of its 8x8 input, so the padded Conv2d '3'"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(4), *_head(4, 4)),
     r"'2': AdaptiveAvgPool2d with output size \(4, 4\) on a 6x6 map cannot be folded exactly"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.AvgPool2d(2), nn.ReLU(), *_head(4, 3)),
     r"'1': AvgPool2d between '0' and its ReLU is not supported"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10), nn.AdaptiveAvgPool1d(1)),
     r"'4': AdaptiveAvgPool1d is not supported"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 10, 6), nn.AvgPool2d(1), nn.Flatten()),
     r"'3': AvgPool2d after the last layer cannot be folded"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 10, 2), nn.MaxPool2d(5), nn.Flatten()),
     r"'3': max pooling after the output layer is not supported"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3), nn.ReLU(), *_head(4, 4)),
     r"'1': Conv2d follows '0' with no ReLU between them"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Linear(6, 10)),
     r"'2': Linear is applied to a tensor of shape \(4, 6, 6\) per sample; flatten it to features first"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.ConvTranspose2d(4, 4, 2), *_head(4, 7)),
     r"'2': ConvTranspose2d is not supported"),
    (RawMaxPool(), r"'max_pool2d': F.max_pool2d of the raw input is not supported"),
    (Residual(), r"'add': add combines several tensors .*residual"),
])
def test_unsupported_ops_are_refused_with_their_path(model, message, digits_images):
    raw, _ = digits_images
    with pytest.raises(ConversionError, match=message):
        convert(model.eval(), raw[:50], timesteps=4, normalization=SCALE)


def test_conv_output_layer_with_flatten(digits_images, quick_fit):
    """A conv may be the output layer when a flatten is all that follows it (DESIGN §1b)."""
    raw, labels = digits_images
    model = quick_fit(nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 10, 3),
                                    nn.Flatten()), raw.reshape(-1, 1, 8, 8), labels)
    net = convert(model, raw, timesteps=8, normalization=SCALE)
    assert isinstance(net.output_layer, Conv2dLayer) and not net.output_layer.fires
    assert np.mean(net.run(raw).labels == _reference(model, raw).argmax(1)) >= 0.95


def _cli(*args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")           # tiny models: threads only contend
    return subprocess.run([sys.executable, "-m", "spikeforge", *args], cwd=cwd, capture_output=True, text=True,
                          env=env)


class RawBytesCNN(nn.Module):
    """Takes raw bytes (N, 1, 8, 8) and normalises in forward, as users write it."""

    def __init__(self):
        super().__init__()
        self.features = _sequential_cnn()

    def forward(self, x):
        return self.features(x / 255.0)


@pytest.mark.slow
def test_cli_converts_an_exported_cnn_calibrated_on_a_npy_file(tmp_path, digits_images, quick_fit):
    raw, labels = digits_images
    torch.manual_seed(0)
    model = RawBytesCNN()
    quick_fit(model, raw.reshape(-1, 1, 8, 8).astype(np.float32), labels, scale=1.0)
    torch.export.save(torch.export.export(model, (torch.zeros(2, 1, 8, 8),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)), tmp_path / "cnn.pt2")
    np.save(tmp_path / "images.npy", raw)                                  # (N, 8, 8) bytes
    done = _cli("convert", "cnn.pt2", "--calibrate", "images.npy", "-T", "8", "-o", "net", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    net = load(tmp_path / "net")
    assert [layer.kind for layer in net.layers] == ["conv2d", "maxpool2d", "conv2d", "dense"]
    reference = model(torch.tensor(raw, dtype=torch.float32).reshape(-1, 1, 8, 8)).argmax(1).numpy()
    assert np.mean(net.run(raw).labels == reference) >= 0.95
    bad = nn.Sequential(nn.Conv2d(1, 4, 3, groups=1, dilation=2), nn.ReLU(), nn.Flatten(), nn.Linear(64, 10))
    torch.save(bad, tmp_path / "bad.pt")
    failed = _cli("convert", "bad.pt", "--calibrate", "images.npy", "-o", "badnet", cwd=tmp_path)
    assert failed.returncode == 2 and "'0': Conv2d with dilation=(2, 2)" in failed.stderr
    assert not (tmp_path / "badnet").exists()
