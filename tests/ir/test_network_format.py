import json

import numpy as np
import pytest

import spikeforge
from spikeforge.ir.network import DenseLayer, Network, NetworkFormatError, load
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
