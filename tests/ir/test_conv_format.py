"""Conv2dLayer / MaxPool2dLayer validation, shape chaining and the on-disk format version 2."""

import json
import zipfile

import numpy as np
import pytest

from spikeforge.ir.network import (Conv2dLayer, DenseLayer, MaxPool2dLayer, Network, NetworkFormatError, load)
from spikeforge.ir.random_network import random_conv_network, random_network


def _conv(**kwargs):
    args = dict(name="c1", weight=np.ones((4, 2, 3, 3), dtype=int), bias=[0] * 4, threshold=5, v0=2,
                weight_bits=4, in_shape=(2, 8, 8), stride=1, padding=1)
    args.update(kwargs)
    return Conv2dLayer(**args)


def _image_net(**kwargs):
    c1 = Conv2dLayer("c1", np.ones((16, 1, 3, 3), dtype=int), np.zeros(16, dtype=int), 5, 2, 4, (1, 8, 8),
                     padding=1)
    p1 = MaxPool2dLayer("p1", (16, 8, 8), 2)
    fc = DenseLayer("fc", np.ones((10, 256), dtype=int), np.zeros(10, dtype=int), 1, 0, 4, fires=False)
    args = dict(timesteps=4, input_shape=(8, 8), input_lut=np.zeros(256, dtype=int), layers=[c1, p1, fc],
                classes=[str(i) for i in range(10)])
    args.update(kwargs)
    return Network(**args)


def test_conv_layer_api():
    layer = _conv(stride=(2, 1), padding=(1, 0), threshold=[1, 2, 3, 4])
    assert layer.kind == "conv2d" and layer.fires is True
    assert layer.kernel == (3, 3) and layer.stride == (2, 1) and layer.padding == (1, 0)
    assert layer.in_shape == (2, 8, 8) and layer.out_shape == (4, 4, 6)
    assert (layer.in_features, layer.out_features) == (128, 96)
    assert (layer.in_channels, layer.out_channels) == (2, 4)
    np.testing.assert_array_equal(layer.v0, [2, 2, 2, 2])              # a scalar broadcasts per channel
    np.testing.assert_array_equal(layer.threshold, [1, 2, 3, 4])
    assert _conv() == _conv() and _conv() != _conv(padding=0) and _conv() != _conv(bias=[0, 0, 0, 1])


def test_pool_layer_api():
    pool = MaxPool2dLayer("p1", (3, 7, 9), kernel=2)
    assert pool.kind == "maxpool2d" and pool.fires is True and pool.padding == (0, 0)
    assert pool.kernel == (2, 2) and pool.stride == (2, 2)             # stride defaults to the kernel
    assert pool.out_shape == (3, 3, 4)                                  # floor mode
    assert (pool.in_features, pool.out_features) == (189, 36)
    assert MaxPool2dLayer("p1", (3, 7, 9), (3, 2), stride=1).out_shape == (3, 5, 8)
    assert pool == MaxPool2dLayer("p1", [3, 7, 9], [2, 2], [2, 2]) and pool != MaxPool2dLayer("p1", (3, 7, 9), 2, 1)


def test_dense_layer_has_shapes_too():
    layer = DenseLayer("fc", np.ones((3, 5), dtype=int), [0, 0, 0], 1, 0, 4, fires=False)
    assert layer.in_shape == (5,) and layer.out_shape == (3,)


def test_conv_rom_order_and_bound():
    weight = np.arange(2 * 3 * 2 * 2).reshape(2, 3, 2, 2) - 12           # (Co=2, C=3, kh=2, kw=2)
    layer = _conv(weight=weight, bias=[5, -7], threshold=1, v0=[0, 3], weight_bits=5, in_shape=(3, 4, 4),
                  padding=0)
    words = layer.rom_words()
    for ci in range(3):
        for dy in range(2):
            for dx in range(2):
                for co in range(2):
                    assert words[((ci * 2 + dy) * 2 + dx) * 2 + co] == weight[co, ci, dy, dx]
    assert layer.rom_hex().split()[:3] == [f"{-12 & 31:02x}", f"{0 & 31:02x}", f"{-11 & 31:02x}"]
    expected = max(np.abs(weight[co]).sum() * 15 + abs([5, -7][co]) + [0, 3][co] for co in range(2))
    assert layer.accumulator_bound(4) == expected


@pytest.mark.parametrize("kwargs, message", [
    (dict(weight=np.ones((4, 2, 3), dtype=int)), r"conv2d weight must be 4-D \(Co, C, kh, kw\)"),
    (dict(in_shape=(3, 8, 8)), r"takes 2 input channels, but in_shape \(3, 8, 8\) has 3"),
    (dict(in_shape=(2, 8)), r"in_shape \(2, 8\) is not an integer or a sequence of 3 integers"),
    (dict(in_shape=(2, 0, 8)), r"in_shape \(2, 0, 8\) must be \(C, H, W\)"),
    (dict(stride=0), r"stride \(0, 0\) must be >= 1"),
    (dict(padding=-1), r"padding \(-1, -1\) must be >= 0 and smaller than the kernel"),
    (dict(padding=(3, 0)), r"padding \(3, 0\) must be >= 0 and smaller than the kernel \(3, 3\)"),
    (dict(in_shape=(2, 2, 8), padding=0), "kernel 3 does not fit an input of size 2 with padding 0"),
    (dict(weight=np.full((4, 2, 3, 3), 8)), r"does not fit 4-bit two's complement \(-8..7\)"),
    (dict(threshold=0), "threshold 0 < 1"),
    (dict(bias=[0, 0]), r"bias has shape \(2,\), expected \(4,\)"),
    (dict(weight_bits=17), "weight_bits 17 is not in 2..16"),
    (dict(name="conv-1"), "not an identifier"),
    (dict(stride=(1, 2, 3)), "stride"),
])
def test_conv_validation_names_the_bad_value(kwargs, message):
    with pytest.raises(NetworkFormatError, match=message) as info:
        _conv(**kwargs)
    if "name" not in kwargs:
        assert "'c1'" in str(info.value)


def test_conv_has_no_groups_or_dilation():
    with pytest.raises(TypeError):
        _conv(groups=2)
    with pytest.raises(TypeError):
        _conv(dilation=2)


@pytest.mark.parametrize("args, message", [
    (dict(kernel=0), r"kernel \(0, 0\) must be >= 1"),
    (dict(kernel=3, stride=0), r"stride \(0, 0\) must be >= 1"),
    (dict(kernel=9), "kernel 9 does not fit an input of size 7"),
    (dict(in_shape=(3, 7)), "in_shape"),
])
def test_pool_validation_names_the_bad_value(args, message):
    full = dict(name="p1", in_shape=(3, 7, 9), kernel=2)
    full.update(args)
    with pytest.raises(NetworkFormatError, match=message):
        MaxPool2dLayer(**full)


def test_network_chains_shapes():
    net = _image_net()
    assert [layer.out_shape for layer in net.layers] == [(16, 8, 8), (16, 4, 4), (10,)]
    assert net.in_features == 64 and net.num_classes == 10
    assert [layer.name for layer in net.linear_layers] == ["c1", "fc"]
    assert net.has_maps and net.format_version == 2
    # (C, H, W) is accepted as well as (H, W) meaning (1, H, W).
    assert _image_net(input_shape=(1, 8, 8)).input_shape == (1, 8, 8)


def test_network_chain_errors():
    c1, p1, fc = _image_net().layers
    with pytest.raises(NetworkFormatError, match=r"takes in_shape \[1, 8, 8\], but its input has shape \[1, 9, 8\]"):
        _image_net(input_shape=(9, 8))
    with pytest.raises(NetworkFormatError, match=r"'c1' \(conv2d\) takes a \[C, H, W\] map, but its input has "
                                                 r"shape \[64\]"):
        _image_net(input_shape=(64,))
    with pytest.raises(NetworkFormatError, match="'fc' takes 256 inputs, but its input has 1024"):
        _image_net(layers=[c1, fc])
    dense = DenseLayer("d0", np.ones((64, 64), dtype=int), np.zeros(64, dtype=int), 1, 0, 4)
    with pytest.raises(NetworkFormatError, match="a map cannot follow a dense layer"):
        _image_net(layers=[dense, c1, p1, fc])
    with pytest.raises(NetworkFormatError, match="a maxpool2d cannot be the last layer"):
        _image_net(layers=[c1, p1], classes=["x"] * 256)
    with pytest.raises(NetworkFormatError, match="'c1': fires=True, but only the last layer"):
        _image_net(layers=[c1], classes=["x"] * 1024)
    with pytest.raises(NetworkFormatError, match="layer 1 is a str; supported: DenseLayer, Conv2dLayer, "
                                                 "MaxPool2dLayer"):
        _image_net(layers=[c1, "p1", fc])


def test_a_conv_may_be_the_output_layer():
    out = Conv2dLayer("c2", np.ones((2, 16, 4, 4), dtype=int), [0, 1], 1, 0, 4, (16, 4, 4), fires=False)
    c1, p1, _ = _image_net().layers
    net = _image_net(layers=[c1, p1, out], classes=["a", "b"])
    assert net.output_layer is out and net.num_classes == 2
    with pytest.raises(NetworkFormatError, match="output layer 'c2': v0 must be 0"):
        _image_net(layers=[c1, p1, Conv2dLayer("c2", np.ones((2, 16, 4, 4), dtype=int), [0, 1], 1, 1, 4,
                                                       (16, 4, 4), fires=False)], classes=["a", "b"])


def test_describe_shows_shapes():
    text = _image_net().describe()
    assert "c1         iLIF   conv 3x3 s1 p1  1x8x8 -> 16x8x8" in text
    assert "p1         maxpool 2x2  16x8x8 -> 16x4x4" in text
    assert "fc         output   256 -> 10" in text


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_v2_round_trip_is_exact(tmp_path, seed):
    net = random_conv_network(seed, input_shape=(2, 7, 6), stack=(("conv", 3, (3, 2), (2, 1), (1, 0)),
                              ("pool", (2, 2), (1, 2)), ("conv", 4, 2, 1, 1), ("dense", 5)), weight_bits=6)
    path = net.save(tmp_path / "net")
    again = load(path)
    assert again == net
    manifest = json.loads((path / "network.json").read_text())
    assert manifest["version"] == 2 and manifest["input"]["shape"] == [2, 7, 6]
    c1, p2 = manifest["layers"][:2]
    assert c1["kind"] == "conv2d" and c1["in_shape"] == [2, 7, 6] and c1["out_shape"] == [3, 4, 5]
    assert (c1["kernel"], c1["stride"], c1["padding"]) == ([3, 2], [2, 1], [1, 0])
    assert (c1["in_features"], c1["out_features"]) == (84, 60)
    assert p2 == {"name": "p2", "kind": "maxpool2d", "in_shape": [3, 4, 5], "out_shape": [3, 3, 2],
                  "kernel": [2, 2], "stride": [1, 2]}
    assert sorted(p.name for p in (path / "rom").iterdir()) == ["c1.weight.hex", "c3.weight.hex", "d4.weight.hex",
                                                                 "d5.weight.hex"]
    assert (path / "rom" / "c1.weight.hex").read_text() == net.layer("c1").rom_hex()
    assert "p2.weight" not in np.load(path / "weights.npz").files
    samples = np.random.default_rng(seed).integers(0, 256, size=(9, 2, 7, 6))
    np.testing.assert_array_equal(again.run(samples).scores, net.run(samples).scores)


def test_dense_only_networks_still_write_version_1(tmp_path):
    net = random_network(3, sizes=(6, 4, 2))
    path = net.save(tmp_path / "net")
    manifest = json.loads((path / "network.json").read_text())
    assert manifest["version"] == 1 and net.format_version == 1
    assert set(manifest["layers"][0]) == {"name", "kind", "in_features", "out_features", "weight_bits", "fires",
                                          "weight", "bias", "threshold", "v0", "rom", "accumulator_bound"}
    assert load(path) == net


@pytest.fixture
def saved(tmp_path):
    net = random_conv_network(0, input_shape=(1, 6, 6), stack=(("conv", 2, 3, 1, 1), ("pool", 2, 2)))
    path = net.save(tmp_path / "net")
    return path, json.loads((path / "network.json").read_text())


def _load_with(path, manifest):
    (path / "network.json").write_text(json.dumps(manifest))
    return load(path)


def _layer_patch(manifest, index, **changes):
    layers = [dict(entry) for entry in manifest["layers"]]
    layers[index].update(changes)
    for key, value in changes.items():
        if value is None:
            del layers[index][key]
    return dict(manifest, layers=layers)


@pytest.mark.parametrize("patch, message", [
    (lambda m: [], "the manifest must be a JSON object, got list"),
    (lambda m: dict(m, layers={"c1": m["layers"][0]}), "key 'layers' must be a list of layer objects"),
    (lambda m: dict(m, layers=["c1"] + m["layers"][1:]), "layer 0 must be an object, got 'c1'"),
    (lambda m: {k: v for k, v in m.items() if k != "timesteps"}, "required key 'timesteps' is missing"),
    (lambda m: dict(m, input={"lut": "input.lut"}), "input: required key 'shape' is missing"),
    (lambda m: dict(m, version=3), r"version 3 is not supported \(this spikeforge reads versions 1, 2\)"),
    (lambda m: dict(m, version=1), "layer 'c1' has kind 'conv2d', which needs format version 2"),
    (lambda m: _layer_patch(m, 0, kind="conv3d"),
     "layer 'c1' has kind 'conv3d'; supported: 'dense', 'conv2d', 'maxpool2d'"),
    (lambda m: _layer_patch(m, 0, padding=None), "layer 'c1': required key 'padding' is missing"),
    (lambda m: _layer_patch(m, 1, stride=None), "layer 'p2': required key 'stride' is missing"),
    (lambda m: _layer_patch(m, 0, name=None), "layer 0: required key 'name' is missing"),
    (lambda m: _layer_patch(m, 0, kernel=[5, 5]), r"layer 'c1' declares kernel \[5, 5\] but its weight has shape "
                                                  r"\[2, 1, 3, 3\]"),
    (lambda m: _layer_patch(m, 0, out_shape=[2, 5, 5]), r"layer 'c1' declares out_shape \[2, 5, 5\] but its "
                                                        r"weight and window give \[2, 6, 6\]"),
    (lambda m: _layer_patch(m, 0, in_features=35), "layer 'c1' declares 35->72 features"),
    (lambda m: _layer_patch(m, 0, in_shape=[1, 6]), "layer 'c1': key 'in_shape' must be a list of 3 integers"),
    (lambda m: _layer_patch(m, 0, in_shape=[2, 6, 6]), r"takes 1 input channels, but in_shape \(2, 6, 6\) has 2"),
    (lambda m: _layer_patch(m, 0, stride="1"), "layer 'c1': key 'stride' must be a list of 2 integers"),
    (lambda m: _layer_patch(m, 0, fires="yes"), "layer 'c1': key 'fires' must be true or false"),
    (lambda m: _layer_patch(m, 0, weight_bits=4.5), "layer 'c1': key 'weight_bits' must be an integer"),
    (lambda m: _layer_patch(m, 0, dilation=2), "layer 'c1': dilation 2 is not supported; only dilation = 1"),
    (lambda m: _layer_patch(m, 0, groups=[2, 1]), r"layer 'c1': groups \[2, 1\] is not supported"),
    (lambda m: _layer_patch(m, 0, weight="c9.weight"), "array 'c9.weight' named by the manifest is missing"),
    (lambda m: _layer_patch(m, 1, kernel=[7, 7]), "layer 'p2': kernel 7 does not fit an input of size 6"),
    (lambda m: _layer_patch(m, 1, out_shape=[2, 2, 2]), r"layer 'p2' declares out_shape \[2, 2, 2\] but its "
                                                        r"in_shape and window give \[2, 3, 3\]"),
    (lambda m: _layer_patch(m, 1, in_shape=[2, 8, 8], out_shape=[2, 4, 4]),
     r"layer 'p2' takes in_shape \[2, 8, 8\], but its input has shape \[2, 6, 6\]"),
])
def test_malformed_manifests_name_the_key(saved, patch, message):
    path, manifest = saved
    with pytest.raises(NetworkFormatError, match=message):
        _load_with(path, patch(manifest))


def test_weight_shape_disagreeing_with_the_manifest(saved):
    path, manifest = saved
    arrays = dict(np.load(path / "weights.npz"))
    arrays["c1.bias"] = np.zeros(3, dtype=np.int64)
    np.savez(path / "weights.npz", **arrays)
    with pytest.raises(NetworkFormatError, match=r"layer 'c1': bias has shape \(3,\), expected \(2,\)"):
        load(path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "bad member"])
def test_corrupt_weights_file_is_a_format_error(saved, damage):
    path, _ = saved
    npz = path / "weights.npz"
    data = npz.read_bytes()
    if damage == "truncate":
        npz.write_bytes(data[:len(data) // 2])
    elif damage == "garbage":
        npz.write_bytes(b"not a zip file at all")
    else:
        with zipfile.ZipFile(npz, "w") as archive:
            archive.writestr("c1.weight.npy", b"\x93NUMPY broken header")
    with pytest.raises(NetworkFormatError, match="weights.npz: not a readable .npz archive"):
        load(path)


def test_input_shape_in_the_manifest_must_be_integers(saved):
    path, manifest = saved
    with pytest.raises(NetworkFormatError, match="input: key 'shape' must be a non-empty list of integers"):
        _load_with(path, dict(manifest, input={"shape": ["1", 6, 6], "lut": "input.lut"}))
