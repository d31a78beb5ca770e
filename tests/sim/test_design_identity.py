"""No false sign-off: outputs record their network's fingerprint, and verify / report --design /
patch-weights refuse an output of another network before doing anything (issue 11)."""

import json

import numpy as np
import pytest

from spikeforge.boards import patch
from spikeforge.boards.patch import PatchError, patch_weights
from spikeforge.cli import main
from spikeforge.commands.report import _check_design
from spikeforge.datasets import load as load_dataset
from spikeforge.hdl.generate import generate
from spikeforge.ir import golden
from spikeforge.ir.errors import InputError
from spikeforge.ir.fingerprint import fingerprint, structure_fingerprint
from spikeforge.ir.network import load
from spikeforge.ir.random_network import random_conv_network, random_network
from spikeforge.sim import signoff, verilator
from spikeforge.sim.signoff import Design, SignoffError, verify


def _net_with_a_dark_pixel():
    """A digits-sized network whose input table maps byte 0 to no spikes (pixel 0 of digits is always 0)."""
    net = random_network(0, sizes=(64, 12, 10), timesteps=4)
    net.input_lut[0] = 0
    return net


@pytest.fixture(scope="module")
def designs(tmp_path_factory):
    """Network A (saved, generated), and B: A with one weight changed on a pixel digits never lights."""
    root = tmp_path_factory.mktemp("identity")
    a = _net_with_a_dark_pixel()
    a.save(root / "a")
    b = load(root / "a")
    b.layers[0].weight[3, 0] = -b.layers[0].weight[3, 0] - 1
    b.save(root / "b")
    generate(root / "a", root / "rtl", lanes={"fc1": 4, "fc2": 2})
    return root


@pytest.fixture
def no_simulator(monkeypatch):
    """Building or running a simulation fails the test: the refusal comes before."""
    def called(*args, **kwargs):
        raise AssertionError("a simulator was called")
    monkeypatch.setattr(verilator, "build", called)
    monkeypatch.setattr(signoff, "run_phases", called)


# -- the fingerprint ---------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda: random_network(1, sizes=(20, 9, 5), timesteps=6),
                                  lambda: random_conv_network(2)], ids=["dense", "conv"])
def test_fingerprint_is_stable_across_save_and_load_and_moves_with_every_array_element(make, tmp_path):
    net = make()
    full, structure = fingerprint(net), structure_fingerprint(net)
    assert len(full) == 64 and int(full, 16) >= 0 and full != structure
    net.save(tmp_path / "net")
    again = load(tmp_path / "net")
    assert (fingerprint(again), structure_fingerprint(again)) == (full, structure)
    # Every element of every array (input table, weight, bias, threshold, v0 of every layer) counts.
    arrays = {"input.lut": again.input_lut}
    for layer in again.linear_layers:
        arrays.update({f"{layer.name}.{key}": getattr(layer, key) for key in ("weight", "bias", "threshold", "v0")})
    assert len(arrays) == 1 + 4 * len(again.linear_layers)
    rng = np.random.default_rng(0)
    for name, array in arrays.items():
        flat = array.reshape(-1)
        for index in {0, flat.size - 1, int(rng.integers(flat.size))}:
            before = int(flat[index])
            flat[index] = before + 1
            assert fingerprint(again) != full, (name, index)
            assert structure_fingerprint(again) == structure, (name, index)
            flat[index] = before
    assert fingerprint(again) == full
    # What is not arithmetic does not count; what is structure moves both.
    again.calibration = {"note": "retrained"}
    assert fingerprint(again) == full
    again.classes = [f"other{i}" for i in range(len(again.classes))]
    assert fingerprint(again) != full and structure_fingerprint(again) != structure


def test_design_json_records_the_fingerprints(designs):
    info = json.loads((designs / "rtl" / "design.json").read_text())
    net = load(designs / "a")
    assert info["network"]["fingerprint"] == fingerprint(net)
    assert info["network"]["structure_fingerprint"] == structure_fingerprint(net)
    assert info["network"]["path"] == str(designs / "a")


# -- verify --------------------------------------------------------------------------------------------

def test_the_changed_weight_is_invisible_on_the_dataset(designs):
    """The trap of the issue: golden results on digits are the same for A and B."""
    samples = load_dataset("digits", "test").samples.reshape(-1, 64)
    assert not samples[:, 0].any()
    a, b = load(designs / "a"), load(designs / "b")
    assert np.array_equal(golden.run(a, samples).scores, golden.run(b, samples).scores)
    assert fingerprint(a) != fingerprint(b)


def test_verify_refuses_rtl_of_another_network_before_simulating(designs, no_simulator):
    b = load(designs / "b")
    samples = np.zeros((3, 64), dtype=np.uint8)
    with pytest.raises(SignoffError) as error:
        verify(b, designs / "rtl", samples, report_path=False, network_path=designs / "b")
    message = str(error.value)
    assert error.value.exit_code == 2 and isinstance(error.value, InputError)
    assert fingerprint(load(designs / "a"))[:12] in message and fingerprint(b)[:12] in message
    assert str(designs / "rtl") in message and str(designs / "b") in message
    assert "regenerate it with `spikeforge generate`" in message


def test_verify_command_exits_2_with_the_message(designs, no_simulator, capsys):
    assert main(["verify", str(designs / "b"), "--rtl", str(designs / "rtl"), "--samples", "3"]) == 2
    err = capsys.readouterr().err
    assert "their fingerprints differ" in err and str(designs / "b") in err
    assert fingerprint(load(designs / "b"))[:12] in err


def test_the_right_network_passes_the_identity_check(designs):
    design = Design.load(designs / "rtl")
    assert design.check_identity(load(designs / "a"), designs / "a") is None


def test_verify_refuses_a_design_json_without_fingerprint(designs, tmp_path, no_simulator):
    old = tmp_path / "old_rtl"
    old.mkdir()
    for item in (designs / "rtl").iterdir():
        if item.is_file():
            (old / item.name).write_bytes(item.read_bytes())
    info = json.loads((old / "design.json").read_text())
    for key in ("fingerprint", "structure_fingerprint"):
        del info["network"][key]
    info["network"].update(manifest_sha256="0" * 64, arrays_sha256="0" * 64)     # what older ones recorded
    (old / "design.json").write_text(json.dumps(info))
    with pytest.raises(SignoffError, match=r"records no network fingerprint \(written by an older spikeforge\).*"
                                           r"regenerate it with `spikeforge generate`"):
        verify(load(designs / "a"), old, np.zeros((2, 64), dtype=np.uint8), report_path=False)


# -- report --design -------------------------------------------------------------------------------

def test_report_design_refuses_another_networks_design(designs, capsys):
    _check_design(designs / "rtl", load(designs / "a"), designs / "a")        # its own network: fine
    with pytest.raises(InputError, match=r"the design .*design\.json was made from network [0-9a-f]{12} .*"
                                         r"not from .*/b \(network [0-9a-f]{12}\)"):
        _check_design(designs / "rtl", load(designs / "b"), designs / "b")
    assert main(["report", str(designs / "b"), "--design", str(designs / "rtl"), "-o", str(designs / "rep")]) == 2
    assert "their fingerprints differ" in capsys.readouterr().err
    assert not (designs / "rep").exists()


def test_report_design_refuses_a_folder_without_a_design(designs):
    with pytest.raises(InputError, match=r"--design .* holds no design\.json or board report\.json"):
        _check_design(designs / "a", load(designs / "a"), designs / "a")


# -- patch-weights -----------------------------------------------------------------------------------

def _fake_build(root, net, *, record=True):
    """The files of an iCE40 `spikeforge build` output that patch-weights reads before icebram."""
    out = root / "board"
    (out / "build" / "roms").mkdir(parents=True)
    (out / "build" / "top.asc").write_text(".device 5k\n")
    for layer in net.layers:
        (out / "build" / "roms" / f"{layer.name}.placeholder.hex").write_text("")
    (out / "top.bin").write_bytes(b"\0")
    net.save(out / "network")
    network = {"fingerprint": fingerprint(net), "structure_fingerprint": structure_fingerprint(net)} if record else {}
    report = {"format": "spikeforge-board-build", "family": "ice40", "board": "icebreaker",
              "patchable_layers": [layer.name for layer in net.layers],
              "folding": {layer.name: 1 for layer in net.layers}, "network": network}
    (out / "report.json").write_text(json.dumps(report))
    return out / "top.bin"


class _ReachedIcebram(Exception):
    pass


@pytest.fixture
def stop_at_icebram(monkeypatch):
    def reached(*args, **kwargs):
        raise _ReachedIcebram
    monkeypatch.setattr(patch, "parse_hex_image", reached)


def test_patch_takes_new_weights_of_the_same_structure(tmp_path, stop_at_icebram):
    net = random_network(3, sizes=(16, 8, 4), timesteps=4)
    bitstream = _fake_build(tmp_path, net)
    retrained = load(bitstream.parent / "network")
    retrained.layers[0].weight[0, 0] ^= 1
    with pytest.raises(_ReachedIcebram):                  # every identity check passed
        patch_weights(bitstream, retrained, tmp_path / "out.bin")


def test_patch_refuses_another_structure(tmp_path, stop_at_icebram):
    net = random_network(3, sizes=(16, 8, 4), timesteps=4)
    bitstream = _fake_build(tmp_path, net)
    renamed = load(bitstream.parent / "network")
    renamed.classes = ["a", "b", "c", "d"]
    with pytest.raises(PatchError, match=r"was made from a network of structure [0-9a-f]{12}, not that of new/net "
                                         r"\(structure [0-9a-f]{12}\): their structures .* differ; patch-weights "
                                         r"needs the same structure: rebuild instead$"):
        patch_weights(bitstream, renamed, tmp_path / "out.bin", new_network_path="new/net")


def test_patch_refuses_a_build_whose_network_copy_was_replaced(tmp_path, stop_at_icebram):
    net = random_network(3, sizes=(16, 8, 4), timesteps=4)
    bitstream = _fake_build(tmp_path, net)
    swapped = load(bitstream.parent / "network")
    swapped.layers[0].bias[0] += 1                         # unpatched logic: the bitstream holds the old bias
    swapped.save(bitstream.parent / "network")
    with pytest.raises(PatchError, match=r"the build .*report\.json was made from network [0-9a-f]{12}, not "
                                         r"from .*board/network"):
        patch_weights(bitstream, swapped, tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()


def test_patch_refuses_a_build_that_records_no_fingerprint(tmp_path, stop_at_icebram):
    net = random_network(3, sizes=(16, 8, 4), timesteps=4)
    bitstream = _fake_build(tmp_path, net, record=False)
    with pytest.raises(PatchError, match=r"records no network fingerprint .*rebuild it with `spikeforge build`"):
        patch_weights(bitstream, net, tmp_path / "out.bin")
