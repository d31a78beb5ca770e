"""The golden model on conv and max-pool layers: closed form == literal timesteps, == PyTorch, fan-out."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from spikeforge.ir import amplification, golden
from spikeforge.ir.network import Conv2dLayer, DenseLayer, MaxPool2dLayer, Network
from spikeforge.ir.random_network import random_conv_network


def _assert_same(a, b):
    assert len(a.codes) == len(b.codes)
    for x, y in zip(a.codes, b.codes):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.labels, b.labels)


@st.composite
def conv_stacks(draw):
    """A random small conv/pool/dense stack that fits its input (strides 1-2, paddings 0-2)."""
    channels = draw(st.integers(1, 3))
    height, width = draw(st.integers(3, 9)), draw(st.integers(3, 9))
    shape, stack = (channels, height, width), []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            kernel = (draw(st.integers(1, min(3, shape[1] + 2))), draw(st.integers(1, min(3, shape[2] + 2))))
            padding = tuple(draw(st.integers(0, min(2, k - 1))) for k in kernel)
            if any(s + 2 * p < k for s, p, k in zip(shape[1:], padding, kernel)):
                continue
            stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
            out_channels = draw(st.integers(1, 4))
            stack.append(("conv", out_channels, kernel, stride, padding))
            shape = (out_channels,) + tuple((s + 2 * p - k) // st_ + 1
                                            for s, p, k, st_ in zip(shape[1:], padding, kernel, stride))
        else:
            kernel = (draw(st.integers(1, min(3, shape[1]))), draw(st.integers(1, min(3, shape[2]))))
            stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
            stack.append(("pool", kernel, stride))
            shape = (shape[0],) + tuple((s - k) // st_ + 1 for s, k, st_ in zip(shape[1:], kernel, stride))
    if draw(st.booleans()):
        stack.append(("dense", draw(st.integers(1, 6))))
    if not any(spec[0] == "conv" for spec in stack) and draw(st.booleans()):
        stack.insert(0, ("conv", 2, 1, 1, 0))
    output = "dense"
    if stack and stack[-1][0] != "dense" and draw(st.booleans()):
        output = ("conv", draw(st.integers(1, 3)), 1, 1, 0)         # a conv as the last linear op
    return (channels, height, width), tuple(stack), output


@settings(max_examples=40, deadline=None)
@given(spec=conv_stacks(), seed=st.integers(0, 2**32 - 1), timesteps=st.integers(1, 16),
       weight_bits=st.integers(2, 16), round_v0=st.booleans(), scale=st.integers(0, 14))
def test_closed_form_equals_literal_on_conv_pool_dense_stacks(spec, seed, timesteps, weight_bits, round_v0, scale):
    input_shape, stack, output = spec
    net = random_conv_network(seed, input_shape=input_shape, stack=stack, output=output, classes=3,
                              timesteps=timesteps, weight_bits=weight_bits, round_v0=round_v0,
                              threshold_range=(1, 1 << scale), bias_range=(-3000, 3000))
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, 256, size=(7,) + input_shape)
    samples[0] = 0
    samples[1] = 255
    closed = golden.run(net, samples)
    literal = golden.run_timesteps(net, samples)
    _assert_same(closed, literal)
    for counts, spikes in zip(literal.spike_counts, closed.input_spikes()):
        np.testing.assert_array_equal(counts.sum(axis=1), spikes)


@pytest.mark.parametrize("dtype", [None, np.float64, np.float32])
def test_every_arithmetic_path_is_exact_on_a_cnn(monkeypatch, dtype):
    net = random_conv_network(7, input_shape=(2, 10, 9), stack=(("conv", 5, 3, 1, 1), ("pool", 2, 2),
                              ("conv", 6, (2, 3), (1, 2), (1, 0)), ("dense", 8)), classes=4, timesteps=6,
                              weight_bits=7, threshold_range=(50, 900))
    samples = np.random.default_rng(2).integers(0, 256, size=(40, 2, 10, 9)).astype(np.uint8)
    reference = golden.run_timesteps(net, samples)
    monkeypatch.setattr(golden, "_fast_dtype", lambda net: None)          # the exact engine (fast: test_golden_fast)
    monkeypatch.setattr(golden, "_float_dtype", lambda net: dtype)
    _assert_same(golden.run(net, samples), reference)


def test_chunked_batches_equal_one_batch(monkeypatch):
    net = random_conv_network(4, input_shape=(1, 8, 8), stack=(("conv", 3, 3, 1, 1), ("pool", 2, 2)))
    samples = np.random.default_rng(0).integers(0, 256, size=(50, 8, 8))
    whole = golden.run(net, samples)
    monkeypatch.setattr(golden, "_CHUNK_BYTES", 1)                   # chunks of the minimum size
    monkeypatch.setattr(golden, "_fast_dtype", lambda net: None)      # of the exact engine
    assert golden._chunk_size(net) < 50
    _assert_same(golden.run(net, samples), whole)


def _torch_reference(net, samples):
    """The closed form written with torch.nn.functional on integer-valued float64 tensors."""
    codes = torch.from_numpy(golden.encode(net, samples).astype(np.float64))
    activity = codes.reshape((len(samples),) + net.layers[0].in_shape)
    for layer in net.layers:
        if isinstance(layer, MaxPool2dLayer):
            activity = torch.nn.functional.max_pool2d(activity, layer.kernel, layer.stride)
            continue
        weight = torch.from_numpy(layer.weight.astype(np.float64))
        if isinstance(layer, Conv2dLayer):
            potential = torch.nn.functional.conv2d(activity, weight, torch.from_numpy(layer.bias.astype(np.float64)),
                                                   stride=layer.stride, padding=layer.padding)
            shape = (1, -1, 1, 1)
        else:
            potential = activity.flatten(1) @ weight.T + torch.from_numpy(layer.bias.astype(np.float64))
            shape = (1, -1)
        if not layer.fires:
            return potential.flatten(1).numpy().astype(np.int64)
        potential = potential + torch.from_numpy(layer.v0.astype(np.float64)).reshape(shape)
        theta = torch.from_numpy(layer.threshold.astype(np.float64)).reshape(shape)
        activity = torch.clamp(torch.floor(potential / theta), 0, net.code_max)


@pytest.mark.parametrize("seed, input_shape, stack", [
    (0, (1, 28, 28), (("conv", 16, 3, 1, 1), ("pool", 2, 2), ("conv", 32, 3, 1, 1), ("pool", 2, 2))),
    (1, (3, 11, 9), (("conv", 4, (3, 2), (2, 1), (2, 1)), ("pool", 3, 1), ("dense", 7))),
    (2, (2, 6, 13), (("conv", 3, 1, 2, 0), ("conv", 5, (2, 3), 1, (1, 2)), ("pool", (1, 2), None))),
])
def test_closed_form_equals_torch_conv2d(seed, input_shape, stack):
    net = random_conv_network(seed, input_shape=input_shape, stack=stack, classes=10, timesteps=5,
                              weight_bits=8, threshold_range=(100, 2000))
    samples = np.random.default_rng(seed).integers(0, 256, size=(30,) + input_shape)
    result = golden.run(net, samples)
    np.testing.assert_array_equal(result.scores, _torch_reference(net, samples))
    assert np.unique(result.labels).size > 1 or np.unique(result.scores).size > 1     # not degenerate


def _pooled_by_loops(codes, in_shape, kernel, stride):
    channels, height, width = in_shape
    maps = codes.reshape((len(codes),) + in_shape)
    out_h, out_w = (height - kernel[0]) // stride[0] + 1, (width - kernel[1]) // stride[1] + 1
    pooled = np.zeros((len(codes), channels, out_h, out_w), dtype=np.int64)
    for y in range(out_h):
        for x in range(out_w):
            window = maps[:, :, y * stride[0]:y * stride[0] + kernel[0], x * stride[1]:x * stride[1] + kernel[1]]
            pooled[:, :, y, x] = window.max(axis=(2, 3))
    return pooled.reshape(len(codes), -1)


@pytest.mark.parametrize("kernel, stride", [((2, 2), (2, 2)), ((3, 2), (1, 2)), ((2, 3), (2, 1)), ((1, 1), (1, 1))])
@pytest.mark.parametrize("timesteps", [1, 4, 16])
def test_bit_serial_max_pool_is_the_max_of_codes(kernel, stride, timesteps):
    """The literal model's MSB-first candidate elimination gives the max of each window's codes."""
    code_max = (1 << timesteps) - 1
    identity = Conv2dLayer("c1", np.eye(3, dtype=np.int64)[:, :, None, None], np.zeros(3, dtype=int), 1, 0,
                           weight_bits=2, in_shape=(3, 7, 8))
    pool = MaxPool2dLayer("p1", (3, 7, 8), kernel, stride)
    out = DenseLayer("fc", np.ones((2, pool.out_features), dtype=int), [0, 0], 1, 0, weight_bits=2, fires=False)
    rng = np.random.default_rng(timesteps)
    net = Network(timesteps=timesteps, input_shape=(3, 7, 8), input_lut=rng.integers(0, code_max + 1, size=256),
                  layers=[identity, pool, out], classes=["a", "b"])
    samples = rng.integers(0, 256, size=(25, 3, 7, 8))
    samples[:5] = rng.integers(0, 3, size=(5, 3, 7, 8))             # windows with equal codes (ties)
    literal = golden.run_timesteps(net, samples)
    np.testing.assert_array_equal(literal.codes[1], literal.codes[0])    # the identity conv passes codes on
    expected = _pooled_by_loops(literal.codes[1], (3, 7, 8), kernel, stride)
    np.testing.assert_array_equal(literal.codes[2], expected)
    np.testing.assert_array_equal(golden.run(net, samples).codes[2], expected)
    # The pooled spikes of step t are bit T-1-t of the pooled codes.
    for t in range(timesteps):
        np.testing.assert_array_equal(literal.spike_counts[2][:, t],
                                      ((expected >> (timesteps - 1 - t)) & 1).sum(axis=1))


def _additions_by_brute_force(layer, spike_map):
    """Walk every output position and kernel tap; each tap inside the input adds spikes × Co."""
    channels, height, width = layer.in_shape
    _, out_h, out_w = layer.out_shape
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.padding
    maps = spike_map.reshape(channels, height, width)
    total = 0
    for y in range(out_h):
        for x in range(out_w):
            for dy in range(kh):
                for dx in range(kw):
                    iy, ix = y * sh + dy - ph, x * sw + dx - pw
                    if 0 <= iy < height and 0 <= ix < width:
                        total += int(maps[:, iy, ix].sum()) * layer.out_channels
    return total


@pytest.mark.parametrize("stack", [
    (("conv", 4, 3, 1, 1), ("pool", 2, 2), ("dense", 5)),
    (("conv", 3, (3, 2), (2, 1), (2, 1)), ("conv", 2, 3, 2, 0)),
])
def test_spike_driven_additions_of_a_conv_match_a_brute_force_count(stack):
    net = random_conv_network(3, input_shape=(2, 9, 8), stack=stack, timesteps=4, threshold_range=(20, 200))
    samples = np.random.default_rng(3).integers(0, 256, size=(6, 2, 9, 8))
    result = golden.run(net, samples)
    per_feature = result.input_spikes(per_feature=True)
    additions = golden.spike_driven_additions(net, per_feature)
    for n in range(len(samples)):
        expected = 0
        for layer, spikes in zip(net.layers, per_feature):
            if isinstance(layer, Conv2dLayer):
                expected += _additions_by_brute_force(layer, spikes[n])
            elif isinstance(layer, DenseLayer):
                expected += int(spikes[n].sum()) * layer.out_features
        assert additions[n] == expected
    assert additions.min() > 0
    with pytest.raises(ValueError, match=r"layer 'c1' is a conv2d.*per_feature=True"):
        golden.spike_driven_additions(net, result.input_spikes())


def test_spike_fanout_counts_the_taps_inside_the_map():
    layer = Conv2dLayer("c1", np.ones((5, 1, 3, 3), dtype=int), np.zeros(5, dtype=int), 1, 0, 4, (1, 4, 4),
                        padding=1)
    fanout = golden.spike_fanout(layer).reshape(4, 4)
    # Same-padding 3x3 on 4x4: a corner pixel reaches 4 outputs, an edge pixel 6, an inner one 9.
    np.testing.assert_array_equal(fanout // 5, [[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]])
    assert golden.spike_fanout(MaxPool2dLayer("p", (1, 4, 4), 2)).sum() == 0


def test_samples_may_drop_the_channel_axis_of_a_one_channel_input():
    net = random_conv_network(5, input_shape=(1, 6, 6), stack=(("conv", 2, 3, 1, 1),))
    samples = np.random.default_rng(5).integers(0, 256, size=(4, 6, 6)).astype(np.uint8)
    _assert_same(golden.run(net, samples), golden.run(net, samples[:, None]))
    _assert_same(golden.run(net, samples), golden.run(net, samples.reshape(4, -1)))
    with pytest.raises(ValueError, match=r"expected \(N, 36\) or \(N, 1, 6, 6\)"):
        golden.run(net, samples[:, :5])


def test_rate_coded_conv_converges_to_the_closed_form():
    net = random_conv_network(6, input_shape=(1, 6, 6), stack=(("conv", 3, 3, 1, 1), ("dense", 8)), classes=4,
                              timesteps=8, threshold_range=(1500, 3000), bias_range=(-100, 100))
    samples = np.random.default_rng(1).integers(0, 256, size=(200, 6, 6))
    exact = golden.run(net, samples)
    short = golden.run_rate_coded(net, samples, timesteps=4, input_mode="current")
    long = golden.run_rate_coded(net, samples, timesteps=512, input_mode="current")
    agree_short, agree_long = np.mean(short.labels == exact.labels), np.mean(long.labels == exact.labels)
    assert agree_long > 0.85 and agree_long > agree_short


def test_rate_coded_max_pool_is_the_or_of_the_window_spikes():
    """Two inputs at rate 1/2 in one window: OR pooling spikes on ~3/4 of the steps (max of rates: 1/2)."""
    pool = MaxPool2dLayer("p1", (1, 1, 2), (1, 2))
    out = DenseLayer("fc", [[1]], [0], 1, 0, weight_bits=2, fires=False)
    lut = np.zeros(256, dtype=int)
    lut[128] = 1
    net = Network(timesteps=1, input_shape=(1, 1, 2), input_lut=lut, layers=[pool, out], classes=["a"],
                  calibration={"input_max": 256})
    steps = 4000
    result = golden.run_rate_coded(net, np.array([[[[128, 128]]]]), timesteps=steps, seed=1)
    assert 0.72 * steps < result.spike_counts[1][0] < 0.78 * steps
    assert 0.97 * steps < result.spike_counts[0][0] < 1.03 * steps
    np.testing.assert_allclose(result.potentials[0, 0], result.spike_counts[1][0])


def test_rate_coded_additions_match_the_counts_on_a_cnn():
    net = random_conv_network(8, input_shape=(1, 7, 7), stack=(("conv", 3, 3, 1, 1), ("pool", 2, 2),
                              ("dense", 6)), classes=3, threshold_range=(300, 900))
    samples = np.random.default_rng(8).integers(0, 256, size=(20, 7, 7))
    result = golden.run_rate_coded(net, samples, timesteps=30, seed=2)
    again = golden.run_rate_coded(net, samples, timesteps=30, seed=2)
    np.testing.assert_array_equal(result.labels, again.labels)
    np.testing.assert_array_equal(result.additions, again.additions)
    # Dense layers cost their fan-out per received spike; the conv at least 4 taps × 3 channels per spike.
    dense_part = result.spike_counts[2] * 6 + result.spike_counts[3] * 3
    assert np.all(result.additions >= dense_part + result.spike_counts[0] * 4 * 3)
    assert np.all(result.additions <= dense_part + result.spike_counts[0] * 9 * 3)
    steps = list(golden.rate_coded_steps(net, samples, 30, seed=2))
    np.testing.assert_array_equal(golden.argmax_lowest(steps[-1][0]), result.labels)


def test_the_amplification_model_refuses_maps_clearly():
    net = random_conv_network(0, input_shape=(1, 6, 6), stack=(("conv", 2, 3, 1, 1), ("pool", 2, 2)))
    with pytest.raises(ValueError, match="amplification model runs dense networks only; this network has "
                                         "conv2d, maxpool2d layers"):
        amplification.run(net, np.zeros((1, 6, 6), dtype=np.uint8), amplification=1.5)
