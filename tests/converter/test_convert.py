import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import spikeforge
from spikeforge.converter.calibrate import InputNormalization
from spikeforge.cnn_models import load_digits_cnn
from spikeforge.conversion import convert as convert_named
from spikeforge.converter.convert import ConversionError, convert
from spikeforge.converter.model_files import load_model
from spikeforge.ir.network import load
from spikeforge.datasets import load as load_dataset
from spikeforge.demo_model import DigitsMLP, float_accuracy, load_digits_mlp


def _raw(n=200, features=12, seed=0):
    return torch.tensor(np.random.default_rng(seed).integers(0, 256, size=(n, features)), dtype=torch.float32)


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(12, 9)
        self.bn = nn.BatchNorm1d(9)
        self.b = nn.Linear(9, 4)
        self.drop = nn.Dropout(0.5)
        self.id = nn.Identity()

    def forward(self, x):
        x = x.view(x.size(0), -1)
        x = self.drop(torch.relu(self.bn(self.a(x))))
        return self.b(self.id(x))


def _randomise_bn(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model.eval()


def _agreement(model, net, raw, normalization):
    with torch.no_grad():
        reference = model(torch.tensor(normalization.apply(raw.numpy()), dtype=torch.float32)).argmax(1).numpy()
    labels = net.run(raw.numpy().astype(np.uint8)).labels
    return np.mean(labels == reference)


def test_functional_model_with_batchnorm_view_and_dropout_converts_faithfully():
    torch.manual_seed(0)
    model = _randomise_bn(Functional())
    raw = _raw()
    normalization = InputNormalization(scale=255.0, mean=0.5, std=0.25)
    net = convert(model, raw, timesteps=12, weight_bits=12, normalization=normalization)
    assert [l.name for l in net.layers] == ["a", "b"]
    assert _agreement(model, net, raw, normalization) >= 0.97


def test_sequential_and_per_channel_and_floor():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3))
    raw = _raw(seed=1)
    for kwargs in (dict(per_channel=True), dict(v0="floor"), dict(method="max")):
        net = convert(model, raw, timesteps=10, weight_bits=10, normalization=InputNormalization(255.0), **kwargs)
        assert _agreement(model, net, raw, InputNormalization(255.0)) >= 0.95, kwargs
        if kwargs.get("per_channel"):
            assert len(set(net.layers[0].threshold.tolist())) > 1
        if kwargs.get("v0") == "floor":
            assert not net.layers[0].v0.any()
        else:
            np.testing.assert_array_equal(net.layers[0].v0, net.layers[0].threshold // 2)


def test_calibration_from_a_dataloader_equals_a_tensor():
    model = nn.Sequential(nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
    raw = _raw()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(raw, torch.zeros(len(raw))), batch_size=32)
    assert convert(model, loader, timesteps=4) == convert(model, raw, timesteps=4)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(12, 12)
        self.b = nn.Linear(12, 2)

    def forward(self, x):
        return self.b(x + F.relu(self.a(x)))


class NoRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(12, 6)
        self.b = nn.Linear(6, 2)

    def forward(self, x):
        return self.b(self.a(x))


@pytest.mark.parametrize("model, message", [
    (nn.Sequential(nn.Linear(12, 6), nn.Sigmoid(), nn.Linear(6, 2)), r"'1': Sigmoid is not supported; supported: Linear"),
    (Residual(), r"combines several tensors .*residual"),
    (NoRelu(), r"'b': Linear follows 'a' with no ReLU between them"),
    (nn.Sequential(nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 2), nn.ReLU()), r"output layer is followed by a ReLU"),
    (nn.Sequential(nn.ReLU(), nn.Linear(12, 2)), r"on the model's input is not supported"),
    (nn.Sequential(nn.Linear(12, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2)).train(),
     r"training mode and has BatchNorm: call model.eval\(\)"),
    (nn.Sequential(nn.Linear(12, 6), nn.ReLU(), nn.Conv1d(1, 1, 1)), r"Conv1d is not supported"),
])
def test_unsupported_models_are_refused_by_name(model, message):
    with pytest.raises(ConversionError, match=message):
        convert(model, _raw(), timesteps=4)


def test_non_finite_weights_are_refused():
    model = nn.Sequential(nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    with pytest.raises(ConversionError, match=r"'2': Linear has non-finite weights"):
        convert(model, _raw(), timesteps=4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(timesteps=0), r"timesteps 0 is not in 1..16"),
    (dict(timesteps=17), r"timesteps 17 is not in 1..16"),
    (dict(weight_bits=1), r"weight_bits 1 is not in 2..16"),
    (dict(weight_bits=17), r"weight_bits 17 is not in 2..16"),
    (dict(method="mean"), r"calibration method 'mean' is not supported; supported: percentile, max, search"),
    (dict(percentile=0), r"percentile 0 is not in \(0, 100\]"),
    (dict(v0="ceil"), r"v0 mode 'ceil' is not supported; supported: round, floor"),
])
def test_argument_ranges(kwargs, message):
    model = nn.Sequential(nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
    with pytest.raises(ConversionError, match=message):
        convert(model, _raw(), **kwargs)


def test_calibration_data_must_be_raw_bytes():
    model = nn.Sequential(nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
    with pytest.raises(ConversionError, match=r"span -1..255; pass raw bytes"):
        convert(model, torch.cat([_raw(), -torch.ones(1, 12)]), timesteps=4)


def test_weights_fit_their_bits_and_no_accumulator_surprises():
    net = convert_named(load_digits_mlp(), "digits", timesteps=8, weight_bits=4)
    for layer in net.layers:
        assert np.abs(layer.weight).max() <= 7 and layer.threshold.min() >= 1


def test_demo_network_accuracy_targets():
    """Digits MLP: float >= 97 %, spiking within 1 point at T = 4 and within 0.3 points at T >= 8."""
    test = load_dataset("digits", "test")
    model = load_digits_mlp()
    float_acc = float_accuracy(model, test)
    assert float_acc >= 0.97
    for timesteps, tolerance in ((4, 0.01), (8, 0.003), (16, 0.003)):
        net = convert_named(model, "digits", timesteps=timesteps)
        spiking = np.mean(net.run(test.samples).labels == test.labels)
        assert spiking >= float_acc - tolerance, (timesteps, spiking, float_acc)
    assert net.calibration["float_accuracy"]["digits/test"] == pytest.approx(float_acc)


def test_model_files_pt2_pickle_and_factory(tmp_path):
    model = load_digits_mlp()
    reference = convert_named(model, "digits", timesteps=6)
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(model, (torch.zeros(2, 8, 8),), dynamic_shapes=({0: batch},)),
                      tmp_path / "m.pt2")
    torch.save(model, tmp_path / "m.pt")
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    (tmp_path / "factory.py").write_text("from spikeforge.demo_model import DigitsMLP\n"
                                         "def make():\n    return DigitsMLP()\n")
    for spec, state in ((str(tmp_path / "m.pt2"), None), (str(tmp_path / "m.pt"), None),
                        (f"{tmp_path / 'factory.py'}:make", tmp_path / "sd.pt")):
        net = convert_named(load_model(spec, state), "digits", timesteps=6)
        for a, b in zip(net.layers, reference.layers):
            np.testing.assert_array_equal(a.weight, b.weight)
            np.testing.assert_array_equal(a.threshold, b.threshold)
    with pytest.raises(ConversionError, match="holds a state dict, not a module"):
        load_model(str(tmp_path / "sd.pt"))


def _cli(*args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")           # tiny models: threads only contend
    return subprocess.run([sys.executable, "-m", "spikeforge", *args], cwd=cwd, capture_output=True, text=True,
                          env=env)


@pytest.mark.slow
def test_cli_convert_eval_and_nothing_written_on_failure(tmp_path):
    torch.save(load_digits_mlp(), tmp_path / "m.pt")
    done = _cli("convert", "m.pt", "--calibrate", "digits", "-T", "5", "-o", "net", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "fc1" in done.stdout and "float ANN accuracy on digits/test" in done.stdout
    assert load(tmp_path / "net").timesteps == 5
    shown = _cli("eval", "net", "--dataset", "digits", "--json", "eval.json", cwd=tmp_path)
    assert shown.returncode == 0 and "spiking iLIF" in shown.stdout and (tmp_path / "eval.json").is_file()
    bad = nn.Sequential(nn.Linear(64, 6), nn.Tanh(), nn.Linear(6, 10))
    torch.save(bad, tmp_path / "bad.pt")
    failed = _cli("convert", "bad.pt", "--calibrate", "digits", "-o", "badnet", cwd=tmp_path)
    assert failed.returncode == 2 and "Tanh is not supported" in failed.stderr
    assert not (tmp_path / "badnet").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.slow
def test_cli_convert_clip_search(tmp_path):
    torch.save(load_digits_mlp(), tmp_path / "m.pt")
    done = _cli("convert", "m.pt", "--calibrate", "digits", "-T", "2", "--method", "search", "-o", "net",
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "clip search (agreement with the calibration labels): 95: " in done.stdout
    assert load(tmp_path / "net").calibration["method"] == "search"


def test_public_api_convert_resolves_dataset_names_and_the_converter_takes_arrays():
    assert spikeforge.convert is convert_named
    with pytest.raises(ConversionError, match=r"calibration data 'digits' is a name: the converter takes arrays"):
        convert(load_digits_mlp(), "digits")
    train = load_dataset("digits", "train")
    by_name = convert_named(load_digits_mlp(), "digits", timesteps=4)
    by_arrays = convert(load_digits_mlp(), train.samples, timesteps=4, labels=train.labels,
                        normalization=InputNormalization(scale=255.0))
    assert by_name.layers == by_arrays.layers and by_name.calibration["dataset"] == "digits"
    assert isinstance(load_digits_mlp(), DigitsMLP)


def test_a_model_that_normalises_itself_is_not_scaled_twice_by_a_dataset_default():
    """The shipped digits CNN divides by 255 in forward: it takes raw bytes."""
    with pytest.raises(ConversionError, match=r"when fed raw bytes: it normalises its input itself. Pass "
                                              r"normalization=InputNormalization\(scale=1\)"):
        convert_named(load_digits_cnn(), "digits", timesteps=4)
    net = convert_named(load_digits_cnn(), "digits", timesteps=4, normalization=InputNormalization())
    assert net.calibration["float_accuracy"]["digits/test"] >= 0.98
