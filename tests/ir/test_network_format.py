import json

import numpy as np
import pytest

import spikeforge
from spikeforge.ir import golden
from spikeforge.ir.errors import InputError
from spikeforge.ir.network import DenseLayer, Network, NetworkFormatError, load, raw_samples
from spikeforge.ir.random_network import random_network


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_save_load_roundtrip_is_exact(tmp_path, seed):
    net = random_network(seed, sizes=(10, 7, 3), timesteps=5, weight_bits=6)
    net.calibration = {"method": "percentile", "scales": [0.5, 1.25]}
    net.save(tmp_path / "net")
    again = load(tmp_path / "net")
    assert again == net
    samples = np.random.default_rng(seed).integers(0, 256, size=(20, 10))
    np.testing.assert_array_equal(again.run(samples).scores, net.run(samples).scores)
    # Saving over an existing network replaces it.
    net.save(tmp_path / "net")
    assert load(tmp_path / "net") == net
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net"]


def test_rom_image_order_and_twos_complement(tmp_path):
    weight = np.array([[1, -1, 3], [-4, 0, 2]])     # out=2, in=3
    layer = DenseLayer("fc1", weight=weight, bias=[0, 0], threshold=[1, 1], v0=[0, 0], weight_bits=3, fires=False)
    # address = in_index * out_features + out_index
    assert layer.rom_hex().split() == ["1", "4", "7", "0", "3", "2"]
    net = Network(timesteps=2, input_shape=(3,), input_lut=np.zeros(256, dtype=int), layers=[layer], classes=["a", "b"])
    net.save(tmp_path / "n")
    assert (tmp_path / "n" / "rom" / "fc1.weight.hex").read_text() == "1\n4\n7\n0\n3\n2\n"
    manifest = json.loads((tmp_path / "n" / "network.json").read_text())
    assert manifest["format"] == "spikeforge-network" and manifest["version"] == 1
    assert manifest["layers"][0]["kind"] == "dense" and manifest["layers"][0]["fires"] is False


def test_wrong_format_version_or_missing_array_is_a_clear_error(tmp_path):
    net = random_network(0, sizes=(4, 3, 2))
    path = net.save(tmp_path / "net")
    manifest = json.loads((path / "network.json").read_text())
    for key, value, message in [("format", "onnx", "format 'onnx' is not 'spikeforge-network'"),
                                ("version", 7, "version 7 is not supported")]:
        broken = dict(manifest, **{key: value})
        (path / "network.json").write_text(json.dumps(broken))
        with pytest.raises(NetworkFormatError, match=message):
            load(path)
    (path / "network.json").write_text(json.dumps(manifest))
    arrays = dict(np.load(path / "weights.npz"))
    del arrays["fc1.bias"]
    np.savez(path / "weights.npz", **arrays)
    with pytest.raises(NetworkFormatError, match="array 'fc1.bias' named by the manifest is missing"):
        load(path)
    with pytest.raises(NetworkFormatError, match="not found"):
        load(tmp_path / "nothing")


def test_refuses_to_overwrite_a_foreign_directory(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="not a spikeforge network directory"):
        random_network(0, sizes=(4, 3, 2)).save(tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize("kwargs, message", [
    (dict(weight_bits=1), "weight_bits 1 is not in 2..16"),
    (dict(weight=[[9]]), r"does not fit 4-bit two's complement \(-8..7\)"),
    (dict(threshold=[0]), "threshold 0 < 1"),
    (dict(name="fc 1"), "not an identifier"),
])
def test_layer_validation_names_the_bad_value(kwargs, message):
    args = dict(name="fc1", weight=[[1]], bias=[0], threshold=[1], v0=[0], weight_bits=4, fires=False)
    args.update(kwargs)
    with pytest.raises(NetworkFormatError, match=message):
        DenseLayer(**args)


def test_network_validation():
    layer = DenseLayer("fc1", weight=[[1, 2]], bias=[0], threshold=[1], v0=[0], weight_bits=4, fires=False)
    with pytest.raises(NetworkFormatError, match="timesteps 17 is not in 1..16"):
        Network(timesteps=17, input_shape=(2,), input_lut=np.zeros(256, dtype=int), layers=[layer], classes=["a"])
    with pytest.raises(NetworkFormatError, match="takes 2 inputs, but its input has 3"):
        Network(timesteps=4, input_shape=(3,), input_lut=np.zeros(256, dtype=int), layers=[layer], classes=["a"])
    with pytest.raises(NetworkFormatError, match="outside 0..15"):
        Network(timesteps=4, input_shape=(2,), input_lut=np.full(256, 16), layers=[layer], classes=["a"])


def test_public_api_exports():
    assert spikeforge.load is load and spikeforge.Network is Network


def _edit_arrays(path, **changes):
    arrays = dict(np.load(path / "weights.npz"))
    for key, (index, value) in changes.items():
        arrays[key.replace("__", ".")] = arrays[key.replace("__", ".")].astype(np.int64 if value < 2**63 else
                                                                               np.uint64)
        arrays[key.replace("__", ".")][index] = value
    np.savez(path / "weights.npz", **arrays)


@pytest.mark.parametrize("changes, message", [
    (dict(fc1__bias=(0, -2**63)), r"bias -9223372036854775808 is out of range: \|bias\| must be at most "
                                  r"2305843009213693952 \(2\^61\)"),
    (dict(fc1__v0=(0, 2**62)), r"v0 4611686018427387904 is out of range"),
    (dict(fc2__bias=(0, 2**62)), r"layer 'fc2': bias 4611686018427387904 is out of range"),
    (dict(fc1__bias=(0, 2**60)), r"which the literal iLIF model doubles T = 5 times: above 4611686018427387904 "
                                 r"\(2\^62\).*at T = 5 the bound is 144115188075855872"),
    (dict(fc1__threshold=(0, 2**58)), r"threshold 288230376151711744·2\^6 .* at T = 5 θ must be at most "
                                      r"72057594037927936"),
    (dict(fc1__bias=(0, 2**64 - 1)), r"bias holds 18446744073709551615, which does not fit int64"),
])
def test_values_whose_arithmetic_cannot_stay_exact_are_refused_at_load_naming_the_bound(tmp_path, changes, message):
    path = random_network(0, sizes=(10, 7, 3), timesteps=5).save(tmp_path / "net")
    _edit_arrays(path, **changes)
    with pytest.raises(NetworkFormatError, match=message):
        load(path, check_rom=False)


def test_a_bias_just_within_the_literal_bound_loads_and_both_golden_models_agree(tmp_path):
    net = random_network(0, sizes=(10, 7, 3), timesteps=5)
    path = net.save(tmp_path / "net")
    layer = net.layers[0]
    room = (2 * 2**61 >> 5) - (layer.accumulator_bound(5) - abs(int(layer.bias[0])))
    _edit_arrays(path, fc1__bias=(0, -room))
    again = load(path)
    samples = np.random.default_rng(0).integers(0, 256, size=(8, 10)).astype(np.uint8)
    np.testing.assert_array_equal(golden.run(again, samples).scores, golden.run_timesteps(again, samples).scores)


@pytest.mark.parametrize("edit, message", [
    (lambda rom: rom.write_text("7f\n" + "".join(rom.read_text().splitlines(True)[1:])),
     r"rom/fc1.weight.hex contradicts weights.npz: address 0 holds 7f"),
    (lambda rom: rom.write_text(rom.read_text() + "00\n"), r"holds 71 words, but layer 'fc1' has 70 weights"),
    (lambda rom: rom.write_text("zz\n"), r"not a \$readmemh image"),
    (lambda rom: rom.unlink(), r"fc1.weight.hex: layer 'fc1''s ROM image cannot be read \(FileNotFoundError\)"),
])
def test_a_rom_image_contradicting_weights_npz_is_refused_with_the_repair(tmp_path, edit, message):
    net = random_network(0, sizes=(10, 7, 3), timesteps=5)
    path = net.save(tmp_path / "net")
    rom = path / "rom" / "fc1.weight.hex"
    if rom.read_text().startswith("7f\n"):
        pytest.skip("the first weight is already 127")
    edit(rom)
    with pytest.raises(NetworkFormatError, match=message) as error:
        load(path)
    assert "check_rom=False).save(" in str(error.value)
    load(path, check_rom=False).save(path)           # the repair the message names
    assert load(path) == net


def test_upper_case_rom_images_with_crlf_are_the_same_weights(tmp_path):
    net = random_network(1, sizes=(10, 7, 3), timesteps=5)
    path = net.save(tmp_path / "net")
    rom = path / "rom" / "fc1.weight.hex"
    rom.write_bytes(rom.read_text().upper().replace("\n", "\r\n").encode())
    assert load(path) == net


@pytest.mark.parametrize("manifest_edit, message", [
    (lambda m: [], "the manifest must be a JSON object, got list"),
    (lambda m: {**m, "layers": {"fc1": m["layers"][0]}}, "key 'layers' must be a list of layer objects"),
    (lambda m: {**m, "layers": ["fc1"] + m["layers"][1:]}, "layer 0 must be an object, got 'fc1'"),
    (lambda m: {**m, "classes": [[1], [2], [3]]}, r"class names must be strings \(or integers\)"),
])
def test_a_manifest_of_the_wrong_structure_is_a_clear_error(tmp_path, manifest_edit, message):
    path = random_network(0, sizes=(10, 7, 3)).save(tmp_path / "net")
    manifest = json.loads((path / "network.json").read_text())
    (path / "network.json").write_text(json.dumps(manifest_edit(manifest)))
    with pytest.raises(NetworkFormatError, match=message):
        load(path)


def test_a_truncated_weights_npz_is_a_clear_error(tmp_path):
    path = random_network(0, sizes=(10, 7, 3)).save(tmp_path / "net")
    data = (path / "weights.npz").read_bytes()
    (path / "weights.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(NetworkFormatError, match="weights.npz: not a readable .npz archive"):
        load(path)


@pytest.mark.parametrize("samples, message", [
    (np.full((2, 10), 0.5, dtype=np.float32), r"look scaled already.*--input-scale 255"),
    (np.full((2, 10), -1, dtype=np.int16), r"values span -1..-1 \(int16\), outside 0..255.*--input-scale"),
    (np.full((2, 10), 256, dtype=np.int64), r"values span 256..256 \(int64\), outside 0..255"),
    (np.full((2, 10), 3.5), r"look scaled already"),
    (np.array([["a"] * 10]), r"have dtype <U1; raw samples are bytes"),
])
def test_network_run_refuses_samples_that_are_not_raw_bytes_with_the_scale_hint(samples, message):
    net = random_network(0, sizes=(10, 7, 3))
    with pytest.raises(InputError, match=message):
        net.run(samples)


def test_whole_number_floats_are_raw_bytes():
    net = random_network(0, sizes=(10, 7, 3))
    samples = np.random.default_rng(0).integers(0, 256, size=(4, 10))
    np.testing.assert_array_equal(net.run(samples.astype(np.float32)).scores, net.run(samples).scores)
    assert raw_samples(samples.astype(np.float64)).dtype == np.uint8
