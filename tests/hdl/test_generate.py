# amaranth: UnusedElaboratable=no
"""`generate`: reproducible Verilog, ROM images as packed, design.json, lint, CLI."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from spikeforge.cli import main
from spikeforge.ir.random_network import random_network
from spikeforge.hdl.folding import FoldingError
from spikeforge.hdl.generate import generate, network_fingerprint
from spikeforge.hdl.plan import plan_network, signed_bits
from spikeforge.hdl.folding import Folding
from spikeforge.ir.errors import InputError

REQUIRED = {"top", "verilog", "timesteps", "classes", "label_bits", "score_bits", "pixels_payload_bits",
            "results_payload_bits", "in_features", "layers", "folding", "network"}
LAYER_KEYS = {"name", "in_features", "out_features", "lanes", "weight_bits", "accumulator_bits", "accumulator_bound",
              "rom_bits", "membrane_bits", "cycles_per_input_spike", "cycles_per_fire_step"}


@pytest.fixture
def net():
    return random_network(3, sizes=(12, 10, 6, 3), timesteps=5, weight_bits=7)


def test_writes_design_reproducibly(net, tmp_path):
    design = generate(net, tmp_path / "a", lanes={"fc1": 3, "fc2": 4, "fc3": 3}, name="acc")
    generate(net, tmp_path / "b", lanes={"fc1": 3, "fc2": 4, "fc3": 3}, name="acc")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert Path("acc.v") in files and Path("design.json") in files and Path("rom/fc1.weight.hex") in files
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert json.loads((tmp_path / "a" / "design.json").read_text()) == design
    assert REQUIRED <= design.keys()
    assert design["top"] == "acc" and design["verilog"] == "acc.v"
    assert design["classes"] == 3 and design["label_bits"] == 2
    assert design["pixels_payload_bits"] == 9
    assert design["results_payload_bits"] == 2 + 3 * design["score_bits"]
    assert design["folding"] == {"fc1": 3, "fc2": 4, "fc3": 3}
    assert design["network"] == {"timesteps": 5, "input_shape": [12], **network_fingerprint(net)}
    for entry, layer in zip(design["layers"], net.layers):
        assert LAYER_KEYS <= entry.keys()
        assert entry["accumulator_bound"] == layer.accumulator_bound(5)
        assert entry["accumulator_bits"] == signed_bits(entry["accumulator_bound"])
        assert entry["cycles_per_input_spike"] == -(-layer.out_features // entry["lanes"])
    assert design["score_bits"] == design["layers"][-1]["accumulator_bits"]
    assert "module acc(" in (tmp_path / "a" / "acc.v").read_text()


def test_rom_images_are_the_packed_words(net, tmp_path):
    generate(net, tmp_path / "d", lanes={"fc1": 3, "fc2": 4, "fc3": 3})
    plan = plan_network(net, Folding.for_network(net, {"fc1": 3, "fc2": 4, "fc3": 3}))
    layer = plan.layers[0]
    words = [int(line, 16) for line in (tmp_path / "d" / "rom" / "fc1.weight.hex").read_text().split()]
    assert len(words) == 12 * 4                       # in_features x ceil(10 / 3)
    mask = (1 << layer.weight_bits) - 1
    for i in range(12):
        for c in range(4):
            for k in range(3):
                field = (words[i * 4 + c] >> (k * layer.weight_bits)) & mask
                value = field - (1 << layer.weight_bits) if field >> (layer.weight_bits - 1) else field
                j = c * 3 + k
                assert value == (net.layers[0].weight[j, i] if j < 10 else 0)
    lut = [int(line, 16) for line in (tmp_path / "d" / "rom" / "input_lut.hex").read_text().split()]
    assert lut == net.input_lut.tolist()
    bias = [int(line, 16) for line in (tmp_path / "d" / "rom" / "fc3.bias.hex").read_text().split()]
    assert len(bias) == 1 and not (tmp_path / "d" / "rom" / "fc3.threshold.hex").exists()


def test_refuses_foreign_directory_and_leaves_nothing_half_written(net, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not a spikeforge design directory"):
        generate(net, foreign)
    assert (foreign / "notes.txt").read_text() == "keep"
    with pytest.raises(FoldingError, match="lanes 11 is not in 1..10"):
        generate(net, tmp_path / "bad", lanes={"fc1": 11})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]        # no staging left behind
    generate(net, tmp_path / "ok")
    generate(net, tmp_path / "ok", lanes_budget=3)                        # replaces its own output
    assert json.loads((tmp_path / "ok" / "design.json").read_text())["folding"] == {"fc1": 1, "fc2": 1, "fc3": 1}


@pytest.mark.verilator
@pytest.mark.parametrize("sizes,timesteps,lanes,interface", [((12, 10, 6, 3), 5, None, "stream"),
                                                             ((5, 1), 1, {"fc1": 1}, "stream"),
                                                             ((7, 4, 2), 16, {"fc1": 4, "fc2": 1}, "stream"),
                                                             ((7, 4, 2), 3, None, "axis")])
def test_verilog_passes_verilator_lint(tmp_path, sizes, timesteps, lanes, interface):
    from spikeforge.sim.verilator import SimulatorError, find_verilator
    try:
        install = find_verilator()
    except SimulatorError as error:
        pytest.skip(str(error))
    net = random_network(1, sizes=sizes, timesteps=timesteps, weight_bits=4)
    top = generate(net, tmp_path / "rtl", lanes=lanes, interface=interface)["top"]
    env = {**os.environ, **install.environment()}
    # Amaranth's netlists use implicit width changes and partial case statements by design; every
    # other warning class stays fatal.
    proc = subprocess.run([str(install.executable), "--lint-only", "-Wno-WIDTH", "-Wno-CASEINCOMPLETE",
                           "--top-module", top, str(tmp_path / "rtl" / f"{top}.v")],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "%Error" not in proc.stderr and "%Warning" not in proc.stderr


def test_cli_generate(net, tmp_path, capsys):
    net.save(tmp_path / "net")
    assert main(["generate", str(tmp_path / "net"), "-o", str(tmp_path / "rtl"), "--lanes", "fc1=5"]) == 0
    text = capsys.readouterr().out
    assert "fc1" in text and "cycles/sample" in text and "wrote" in text
    design = json.loads((tmp_path / "rtl" / "design.json").read_text())
    assert design["folding"]["fc1"] == 5
    assert design["network"]["path"] == str(tmp_path / "net")
    assert main(["generate", str(tmp_path / "net"), "-o", str(tmp_path / "rtl"), "--lanes", "fc7=5"]) == 2
    assert "folding names layer 'fc7'" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "net"), "-o", str(tmp_path / "rtl2"), "--target-cycles", "1"]) == 2
    assert "is not reachable" in capsys.readouterr().err


def test_plan_widths_hold_the_extremes():
    """Widths come from bounds: the worst-case potential and -bound fit the membrane register."""
    net = random_network(4, sizes=(30, 8, 2), timesteps=16, weight_bits=12)
    plan = plan_network(net, Folding.for_network(net, {"fc1": 3, "fc2": 2}))
    for layer_plan, layer in zip(plan.layers, net.layers):
        bound = layer.accumulator_bound(16)
        assert -(1 << (layer_plan.membrane_bits - 1)) < -bound and bound < (1 << (layer_plan.membrane_bits - 1))
        worst = int((np.abs(layer.weight).sum(axis=1) * 65535 + np.abs(layer.bias) + np.abs(layer.v0)).max())
        assert worst == bound


@pytest.mark.parametrize("depth", [0, 1, 2.5])
def test_fifo_depth_below_two_is_refused_by_value(net, depth):
    from spikeforge.hdl import Accelerator
    with pytest.raises(ValueError, match=rf"fifo_depth {depth!r} is not supported; it must be an integer >= 2"):
        Accelerator(net, fifo_depth=depth)


def test_conv_network_design_has_shapes_memories_and_decode_roms(tmp_path, capsys):
    """A conv-pool-dense network: design.json gives each conv its shapes, memories and cycles, the fused
    pool has no entry, the ROM images include the conv's decode ROMs; the CLI writes the same."""
    from spikeforge.ir.random_network import random_conv_network
    from spikeforge.ir.errors import InputError
    conv = random_conv_network(1)
    assert [layer.kind for layer in conv.layers] == ["conv2d", "maxpool2d", "dense", "dense"]
    design = generate(conv, tmp_path / "rtl", lanes={"c1": 2})
    entry = design["layers"][0]
    assert [layer["name"] for layer in design["layers"]] == ["c1", "d3", "d4"]
    assert entry["kind"] == "conv2d" and entry["lanes"] == 2 and entry["chunks"] == 2
    assert entry["in_shape"] == [1, 8, 8] and entry["conv_shape"] == [4, 8, 8] and entry["out_shape"] == [4, 4, 4]
    assert entry["pool"] == {"kernel": [2, 2], "stride": [2, 2]}
    assert entry["memory_bits"]["membrane"] == 2 * 8 * 8 * 2 * 2 * entry["membrane_bits"]
    assert design["layers"][1]["in_features"] == 64
    assert design["folding"] == {"c1": 2, "d3": design["folding"]["d3"], "d4": design["folding"]["d4"]}
    assert design["prediction"]["cycles_per_sample"] > 0
    for rom in ("weight", "bias", "in_map", "rows", "cols"):
        assert (tmp_path / "rtl" / entry["roms"][rom]).is_file()
    assert "module spikeforge_top" in (tmp_path / "rtl" / "spikeforge_top.v").read_text()
    conv.save(tmp_path / "net")
    assert main(["generate", str(tmp_path / "net"), "-o", str(tmp_path / "rtl2")]) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "rtl2" / "design.json").read_text())["layers"][0]["kind"] == "conv2d"
    pool_first = random_conv_network(2, stack=(("pool", 2, 2), ("dense", 4)))
    with pytest.raises(InputError, match=rf"layer {pool_first.layers[0].name!r} is a maxpool2d layer"):
        plan_network(pool_first, None)
    with pytest.raises(InputError, match=rf"layer {pool_first.layers[0].name!r} is a maxpool2d layer"):
        generate(pool_first, tmp_path / "rtl3")
    assert not (tmp_path / "rtl3").exists()


def test_conv_tap_lanes_in_design_json_and_the_cli(tmp_path, capsys):
    """``--lanes c1=4x3``: design.json records the folding as "4x3", the adders, one memory per column
    bank (what a block-RAM estimate reads), the wider weight ROM image; it regenerates the same folding."""
    from spikeforge.ir.random_network import random_conv_network
    conv = random_conv_network(1)
    conv.save(tmp_path / "net")
    assert main(["generate", str(tmp_path / "net"), "-o", str(tmp_path / "rtl"), "--lanes", "c1=4x3,d3=2"]) == 0
    assert "4x3" in capsys.readouterr().out
    design = json.loads((tmp_path / "rtl" / "design.json").read_text())
    entry = design["layers"][0]
    assert design["folding"]["c1"] == "4x3" and design["total_adders"] == design["total_lanes"] + 8
    assert (entry["lanes"], entry["taps"], entry["adders"], entry["column_banks"]) == (4, 3, 12, 3)
    names = [memory["name"] for memory in entry["memories"]]
    assert [n for n in names if n.startswith("membrane")] == [f"membrane{s}_{b}" for s in (0, 1) for b in range(3)]
    banks = [memory for memory in entry["memories"] if memory["name"].startswith("membrane")]
    assert all(memory["depth"] == 8 * 3 * 1 and memory["width"] == 4 * entry["membrane_bits"] for memory in banks)
    weights = next(memory for memory in entry["memories"] if memory["name"] == "weights")
    assert (weights["width"], weights["depth"]) == (3 * 4 * entry["weight_bits"], 9)
    assert sum(m["width"] * m["depth"] for m in banks) == entry["memory_bits"]["membrane"]
    image = (tmp_path / "rtl" / entry["roms"]["weight"]).read_text().split()
    assert len(image) == 9 and all(len(word) == (weights["width"] + 3) // 4 for word in image)
    text = (tmp_path / "rtl" / "spikeforge_top.v").read_text()
    assert all(name in text for name in names)
    again = generate(conv, tmp_path / "rtl2", lanes=design["folding"])
    assert again["folding"] == design["folding"]


@pytest.mark.slow     # two designs generated: ~4 s
def test_axis_design_records_its_interface_and_tdata_layout(net, tmp_path, capsys):
    """``--axis``: the AXI4-Stream ports in the Verilog (with Vivado's interface attributes), ``interface`` and
    the byte layout in design.json, a summary line; the stream top's design.json has no ``interface`` key."""
    net.save(tmp_path / "net")
    assert main(["generate", str(tmp_path / "net"), "-o", str(tmp_path / "rtl"), "--axis"]) == 0
    out = capsys.readouterr().out
    assert "AXI4-Stream top" in out and "spikeforge_axis.v" in out
    design = json.loads((tmp_path / "rtl" / "design.json").read_text())
    assert design["top"] == "spikeforge_axis" and design["interface"] == "axis"
    assert design["ports"]["clock"] == "aclk" and "active low" in design["ports"]["reset"]
    score_bytes = -(-design["score_bits"] // 8)
    assert design["axis"]["m_axis_tdata_bits"] == 8 * (1 + 3 * score_bytes)
    assert design["axis"]["scores"][2]["bits"] == [8 * (1 + 3 * score_bytes) - 1, 8 * (1 + 2 * score_bytes)]
    text = (tmp_path / "rtl" / "spikeforge_axis.v").read_text()
    header = text[text.index("module spikeforge_axis("):]
    for port, width in [("aclk", ""), ("aresetn", ""), ("s_axis_tdata", "[7:0] "), ("s_axis_tvalid", ""),
                        ("s_axis_tlast", ""), ("m_axis_tready", "")]:
        assert f"input {width}{port};" in header, port
    for port, width in [("s_axis_tready", ""), ("m_axis_tdata", f"[{design['axis']['m_axis_tdata_bits'] - 1}:0] "),
                        ("m_axis_tvalid", ""), ("m_axis_tlast", "")]:
        assert f"output {width}{port};" in header, port
    assert '(* X_INTERFACE_INFO = "xilinx.com:interface:axis:1.0 m_axis TDATA" *)' in header
    assert "pixels__valid" not in header.split(";")[0]
    # The same network through the API with a name of the user's; the stream top stays as it was.
    assert generate(net, tmp_path / "named", interface="axis", name="snn_axis")["top"] == "snn_axis"
    assert "interface" not in generate(net, tmp_path / "stream")


def test_unknown_interface_is_refused_by_value(net, tmp_path):
    with pytest.raises(InputError, match=r"interface 'axi' is not supported; supported: 'stream', 'axis'"):
        generate(net, tmp_path / "rtl", interface="axi")
    assert not (tmp_path / "rtl").exists()
