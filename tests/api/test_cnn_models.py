"""The shipped digits CNN and the CNN training recipe."""

import numpy as np
import pytest
import torch
import torch.fx

from spikeforge.cnn_models import ImageCNN, digits_cnn, fit, float_accuracy, load_digits_cnn
from spikeforge.converter.convert import convert
from spikeforge.datasets import load
from spikeforge.ir import golden
from spikeforge.ir.errors import InputError


@pytest.fixture(scope="module")
def digits():
    return load("digits", "train"), load("digits", "test")


@pytest.fixture(scope="module")
def shipped_float_accuracy(digits):
    return float_accuracy(load_digits_cnn(), digits[1].images, digits[1].labels)


def test_shipped_digits_cnn_reaches_98_percent(shipped_float_accuracy):
    assert shipped_float_accuracy >= 0.98


def test_forward_takes_raw_bytes_and_traces():
    model = load_digits_cnn()
    graph = torch.fx.symbolic_trace(model).graph
    ops = [node.target for node in graph.nodes if node.op in ("call_module", "call_function")]
    assert ops[0].__name__ == "truediv"                  # x / 255 inside forward, as users write it
    assert [t for t in ops if isinstance(t, str)] == ["conv1", "pool", "conv2", "pool", "fc"]
    raw = torch.full((2, 1, 8, 8), 255.0)
    assert model(raw).shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) == 16 * 9 + 16 + 32 * 16 * 9 + 32 + 128 * 10 + 10


def test_shipped_digits_cnn_converts_within_half_a_point_at_t4(digits, shipped_float_accuracy):
    train, test = digits
    net = convert(load_digits_cnn(), train.images, timesteps=4, weight_bits=8, labels=train.labels)
    assert [layer.kind for layer in net.layers] == ["conv2d", "maxpool2d", "conv2d", "maxpool2d", "dense"]
    assert net.input_shape == (1, 8, 8)
    spiking = float(np.mean(golden.run(net, test.images).labels == test.labels))
    assert spiking >= shipped_float_accuracy - 0.005, (spiking, shipped_float_accuracy)


def test_training_is_reproducible_and_reports_epoch_times(digits):
    train = digits[0].head(128)

    def trained(seed):
        torch.manual_seed(seed)
        model = digits_cnn()
        seconds = fit(model, train.images, train.labels, epochs=2, seed=seed, threads=1)
        return model, seconds

    first, seconds = trained(3)
    again, _ = trained(3)
    other, _ = trained(4)
    assert len(seconds) == 2 and all(s > 0 for s in seconds) and not first.training
    for name, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[name]), name
    assert not torch.equal(first.conv1.weight, other.conv1.weight)


def test_image_cnn_shapes_and_bad_input_shape():
    model = ImageCNN((3, 32, 32), (8, 16), classes=100, hidden=64)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 100) and model.hidden.in_features == 16 * 8 * 8
    with pytest.raises(InputError, match=r"input_shape \(1, 30, 30\): height and width must be divisible by 4"):
        ImageCNN((1, 30, 30))
