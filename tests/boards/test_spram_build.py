# amaranth: UnusedElaboratable=no
"""Membrane banks in the iCE40UP5K's SPRAM (``LAYER=LANES:spram``): the fit check counts SPRAMs, names the layer
that overflows them, refuses SPRAM on a device without it, and falls back to it when block RAM runs out. The
iCEBreaker conv build in ``test_board_build_conv.py`` puts a conv's banks in SB_SPRAM256KA primitives."""

import pytest

import spikeforge.boards.build as build_module
from spikeforge.boards.build import (MEMORY_PLACEMENT_SCRIPT, BuildOptions, FitError, build, check_estimate,
                                     estimate_resources, place_memories, spram_lanes)
from spikeforge.boards.platforms import board_info
from spikeforge.hdl.folding import Folding, resolve_folding
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


def _big_net():
    """1x28x28 -> conv 4 -> pool -> conv 8 -> pool -> 10: its membrane banks need 62 of the iCE40UP5K's 30 block RAMs
    with two banks, 41 with one."""
    return random_conv_network(1, input_shape=(1, 28, 28), stack=(("conv", 4, 3, 1, 1), ("pool", 2, 2),
                                                                   ("conv", 8, 3, 1, 1), ("pool", 2, 2)),
                               classes=10, timesteps=4, weight_bits=6, threshold_range=(50, 600),
                               bias_range=(-300, 300))


def test_spram_lanes_moves_the_largest_banks_while_the_sprams_hold_them():
    net = _big_net()
    info = board_info("icebreaker")
    assert spram_lanes(net, info, BuildOptions(), 1) == {"c1": "1:spram", "c3": "1:spram", "d5": 1}
    assert spram_lanes(net, info, BuildOptions(lanes={"c1": 2, "c3": 2, "d5": 1}), 1) == \
        {"c1": "2:spram", "c3": "2:spram", "d5": 1}
    # Two banks of conv1 at 2 lanes take all four SPRAMs: conv3 stays in block RAM.
    assert spram_lanes(net, info, BuildOptions(lanes={"c1": 2, "c3": 2, "d5": 1}), 2) == \
        {"c1": "2:spram", "c3": 2, "d5": 1}
    assert spram_lanes(net, board_info("ulx3s-85f"), BuildOptions(), 1) is None             # no SPRAM
    assert spram_lanes(net, info, BuildOptions(lanes={"c1": "1:spram", "c3": 1, "d5": 1}), 1) is None  # chosen


def test_build_falls_back_to_spram_when_one_bank_does_not_fit(tmp_path, monkeypatch):
    """The fall-back chain, with the tools replaced: two banks, one bank, then SPRAM for the largest banks."""
    tried = []

    def fake_build(net, board, out_dir, options, log, membrane_banks, fallback):
        tried.append((membrane_banks, dict(options.lanes or {}), fallback is not None))
        folding = resolve_folding(net, options.lanes, membrane_banks=membrane_banks)
        check_estimate(estimate_resources(plan_network(net, folding, membrane_banks=membrane_banks),
                                          board_info(board).device), board)
        return {"folding": folding.config(), "membrane_banks": membrane_banks}

    monkeypatch.setattr(build_module, "_build", fake_build)
    lines = []
    report = build(_big_net(), "icebreaker", tmp_path / "ib", log=lines.append)
    assert report == {"folding": {"c1": "1:spram", "c3": "1:spram", "d5": 1}, "membrane_banks": 1}
    assert [t[0] for t in tried] == [2, 1, 1] and tried[-1][2]
    assert any("falling back to SPRAM for the membrane banks of c1, c3 (half rate): --lanes "
               "c1=1:spram,c3=1:spram,d5=1" in line for line in lines)


def test_a_half_rate_layers_placeholder_weight_rom_stays_pinned_in_block_ram(tmp_path):
    """A half-rate layer's ROMs live one module down (``<layer>.core``): its placeholder weight ROM must still be
    kept in block RAM, where icebram finds it, even when block RAM is short and small memories go to logic."""
    (tmp_path / "top.il").write_text(
        "module \\top.serial.accelerator.c1.core\n  memory width 6 size 72 \\weights\n  memory width 6 size 72 \\biases\n"
        "end\nmodule \\top.serial.accelerator.d3\n  memory width 6 size 96 \\weights\nend\n")
    placement = place_memories(tmp_path, "ice40", ["c1", "d3"], block_rams=1)
    assert placement["top.serial.accelerator.c1.core.weights"]["placement"] == "block RAM (patchable)"
    assert placement["top.serial.accelerator.d3.weights"]["placement"] == "block RAM (patchable)"
    assert placement["top.serial.accelerator.c1.core.biases"]["placement"] == "logic"
    script = (tmp_path / MEMORY_PLACEMENT_SCRIPT).read_text()
    assert "setattr -set ram_block 1 top.serial.accelerator.c1.core/m:weights" in script
