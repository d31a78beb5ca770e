# amaranth: UnusedElaboratable=no
"""Membrane banks in the iCE40UP5K's SPRAM (``LAYER=LANES:spram``): the fit check counts SPRAMs, names the layer
that overflows them, refuses SPRAM on a device without it, and (marked ``synth``) a small conv network builds for
the iCEBreaker with its first layer's banks in SB_SPRAM256KA primitives."""

import json

import pytest

from spikeforge.boards.build import BuildOptions, FitError, build, check_estimate, estimate_resources
from spikeforge.boards.platforms import board_info
from spikeforge.cli import main
from spikeforge.hdl.folding import Folding
from spikeforge.hdl.plan import plan_network
from spikeforge.ir.random_network import random_conv_network


def _net(seed=6, input_shape=(1, 8, 8), channels=4):
    return random_conv_network(seed, input_shape=input_shape, stack=(("conv", channels, 3, 1, 1), ("pool", 2, 2),
                                                                     ("dense", 4)),
                               classes=3, timesteps=3, weight_bits=6, threshold_range=(1, 600), bias_range=(-300, 300))


def test_the_estimate_counts_sprams_not_block_rams_for_banks_in_spram():
    net = _net()
    folding = Folding.for_network(net, {"c1": "2:spram", "d3": 1, "d4": 1})
    estimate = estimate_resources(plan_network(net, folding), board_info("icebreaker").device)
    conv = plan_network(net, folding).layers[0]
    banks = {name: m for name, m in estimate["layers"]["c1"].items() if name.startswith("membrane")}
    assert set(banks) == {"membrane0", "membrane1"}
    per_bank = -(-2 * conv.membrane_bits // 16)
    assert all(m["sprams"] == per_bank and m["block_rams_counted"] == 0 for m in banks.values())
    assert estimate["sprams_needed"] == 2 * per_bank and estimate["sprams"] == 4
    check_estimate(estimate, "icebreaker")


def test_too_many_sprams_and_a_device_without_spram_are_refused_by_layer(tmp_path):
    net = _net(channels=8)
    # 8 channel lanes of ~12-bit potentials: 6-7 SPRAMs a bank, two banks.
    with pytest.raises(FitError, match=r"membrane banks in SPRAM \(c1 \d+\) need \d+ SPRAMs of 16,384 x 16 bits, "
                                       r"the device has 4 \(\d+ over\): use fewer lanes"):
        build(net, "icebreaker", tmp_path / "ib", options=BuildOptions(lanes={"c1": "8:spram", "d3": 1, "d4": 1},
                                                                       membrane_banks=2), log=lambda line: None)
    with pytest.raises(FitError, match=r"membrane banks in SPRAM \(c1 \d+\) need \d+ SPRAMs .* the device has 0: drop "
                                       r":spram from --lanes"):
        build(net, "ulx3s-85f", tmp_path / "ulx3s", options=BuildOptions(lanes={"c1": "1:spram"}),
              log=lambda line: None)
    assert not (tmp_path / "ib").exists() and not (tmp_path / "ulx3s").exists()


@pytest.mark.slow
@pytest.mark.synth
def test_icebreaker_build_puts_the_banks_in_spram(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    net = _net()
    net_dir = net.save(tmp_path / "net")
    # The oscillator's 12 MHz (one place and route), no placeholder ROMs: what is under test is the SPRAM.
    assert main(["build", str(net_dir), "--board", "icebreaker", "-o", "ib", "--clock", "12", "--no-patchable",
                 "--lanes", "c1=2:spram,d3=1,d4=1"]) == 0
    out = capsys.readouterr().out
    assert "SPRAM (membrane banks at half rate)" in out and "ICESTORM_SPRAM" in out
    report = json.loads((tmp_path / "ib" / "report.json").read_text())
    assert report["status"] == "built" and report["timing_met"]
    assert report["folding"]["c1"] == "2:spram"
    assert report["synthesis"]["sprams"] == report["estimate"]["sprams_needed"] >= 2
    assert report["place_and_route"]["utilisation"]["ICESTORM_SPRAM"]["used"] == report["synthesis"]["sprams"]
    # No block RAM holds c1's banks.
    assert not any("c1.membrane" in name for name in report["memories"])
