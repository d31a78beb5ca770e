# amaranth: UnusedElaboratable=no
"""Conv networks on boards: the analytic estimate by layer and memory, fit refusals that name the layer's
memory, placeholders for conv weight ROMs, patch-weights refusals by layer, and (marked ``synth``) one small
conv network built for each FPGA family (on the iCE40UP5K with its conv's membrane banks in SPRAM)."""

import json

import numpy as np
import pytest

from spikeforge.boards.build import (BuildOptions, FitError, MemoryEstimate, build, check_estimate, estimate_resources,
                                     memories_by_layer, memory_what, phase, plan_memories)
from spikeforge.boards.patch import PatchError, check_patchable
from spikeforge.boards.placeholders import placeholder_plan, rom_columns
from spikeforge.boards.platforms import board_info
from spikeforge.cli import main
from spikeforge.hdl.folding import Folding, folded_layers
from spikeforge.hdl.plan import plan_network
from spikeforge.ir.network import Conv2dLayer, Network
from spikeforge.ir.random_network import random_conv_network

#: conv 4 3x3 pad 1 -> pool 2 -> dense 4 -> output 3 on a 1x8x8 input: small enough for both families.
SMALL = (("conv", 4, 3, 1, 1), ("pool", 2, 2), ("dense", 4))
#: With 8 channels the conv's weight ROM (1·3·3·8 = 72 words at one lane) is deep enough to patch.
PATCHABLE = (("conv", 8, 3, 1, 1), ("pool", 2, 2), ("dense", 8))
UNPADDED = (("conv", 8, 3, 1, 0), ("pool", 2, 2), ("dense", 8))


def small_net(seed=0, input_shape=(1, 8, 8), stack=SMALL, timesteps=3):
    return random_conv_network(seed, input_shape=input_shape, stack=stack, classes=3, timesteps=timesteps,
                               weight_bits=6, threshold_range=(1, 600), bias_range=(-300, 300))


def one_lane(net):
    return Folding.for_network(net, {layer.name: 1 for layer in folded_layers(net)})


def test_plan_memories_of_a_conv_layer_follow_the_plan():
    net = small_net()
    plan = plan_network(net, one_lane(net))
    conv = plan.layers[0]
    memories = {(m.owner, m.name): m for m in plan_memories(plan)}
    assert memories["c1", "weights"].depth == len(conv.weight_words) == 9 * 4       # C·kh·kw·chunks
    assert memories["c1", "membrane0"].depth == memories["c1", "membrane1"].depth == conv.bank_words == 8 * 8 * 4
    assert memories["c1", "membrane0"].width == conv.membrane_bits
    assert memories["c1", "pooled"].depth == conv.out_chunks == 4 * 4 * 4
    for name in ("in_map", "rows", "cols", "biases", "fifo"):
        assert ("c1", name) in memories
    # Every RAM/ROM bit the plan reports per memory is in the list (the FIFO and depth-2 minimum aside).
    bits = conv.memory_bits
    assert memories["c1", "weights"].bits == bits["weight"]
    assert sum(m.bits for (owner, name), m in memories.items() if owner == "c1" and name.startswith("membrane")) \
        == bits["membrane"]
    single = plan_network(net, one_lane(net), membrane_banks=1)
    assert [m.name for m in plan_memories(single) if m.owner == "c1" and m.name.startswith("membrane")] == ["membrane"]


def test_estimate_reports_every_layer_and_memory():
    net = small_net()
    estimate = estimate_resources(plan_network(net, one_lane(net)), board_info("icebreaker").device)
    assert set(estimate["layers"]) == {"encoder", "c1", "d3", "d4"}
    membrane = estimate["layers"]["c1"]["membrane0"]
    assert membrane["depth"] == 256 and membrane["block_rams_at_best"] >= 1
    check_estimate(estimate, "icebreaker")          # a small conv network fits


def test_fit_refusal_names_the_layer_memory_and_how_much_over(tmp_path):
    """A 1x28x28 input with 32 channels: the membrane banks alone overflow the iCE40UP5K's block RAM."""
    net = small_net(1, input_shape=(1, 28, 28), stack=(("conv", 32, 3, 1, 1), ("pool", 2, 2), ("dense", 4)))
    # Two banks do not fit, so the build tries one: the refusal is the one-bank design's.
    with pytest.raises(FitError, match=r"does not fit ICEBreakerPlatform: .*c1's membrane bank \(25088 words x "
                                       r"12 bits\) alone needs 75 block RAMs of 4 kbit, the device has 30 \(45 "
                                       r"over\); d3's weight ROM"):
        build(net, "icebreaker", tmp_path / "out", log=lambda line: None)
    assert not (tmp_path / "out").exists()          # refused before anything is written


def test_block_ram_total_refusal_says_where_it_runs_out():
    estimate = {"rom_bits": 0, "block_ram_bits": 30 * 4096, "weight_rom_block_rams": 0, "block_rams": 30,
                "block_ram_kbits": 4, "family": "ice40", "block_rams_needed": 32, "logic_lower_bound": 0,
                "logic": 5280, "lanes": 2, "layers": {
                    "c1": {"weights": {"width": 8, "depth": 4608, "rom": True, "block_rams_counted": 9},
                           "membrane0": {"width": 15, "depth": 1024, "rom": False, "block_rams_counted": 12}},
                    "c2": {"membrane0": {"width": 17, "depth": 512, "rom": False, "block_rams_counted": 11}}}}
    with pytest.raises(FitError, match=r"the memories need at least 32 block RAMs of 4 kbit, the device has 30 "
                                       r"\(2 over\); the device runs out at c2's membrane bank 0 \(512 words x 17 "
                                       r"bits\): 11; per layer: c1 21 \(weight ROM 9, membrane bank 0 12\); c2 11 "
                                       r"\(membrane bank 0 11\)$"):
        check_estimate(estimate, "icebreaker")
    # On a device with free SPRAM the refusal says which layer's banks to move there, and how.
    estimate.update(sprams=4, sprams_needed=0)
    with pytest.raises(FitError, match=r"c1's membrane banks could go to SPRAM \(1 of 4 SPRAMs, 12 block RAMs "
                                       r"saved, the layer at half rate\): --lanes c1=LANES:spram$"):
        check_estimate(estimate, "icebreaker")


def test_memory_estimate_labels_and_logic():
    weights = MemoryEstimate("conv2", "weights", 8, 4608, True)
    assert weights.label == "conv2's weight ROM (4608 words x 8 bits)" and not weights.may_be_logic()
    assert MemoryEstimate("conv2", "rows", 24, 4, True).may_be_logic()
    assert MemoryEstimate("conv1", "fifo", 12, 16, False).may_be_logic()
    assert memory_what("membrane") == "membrane bank" and memory_what("membrane1") == "membrane bank 1"
    assert memory_what("membrane0_2") == "membrane bank 0, column bank 2" and memory_what("pooled") == \
        "pooled residual store"


def test_memories_by_layer_groups_the_placement():
    placement = {"top.serial.accelerator.conv1.weights": {"placement": "block RAM", "block_rams_at_best": 1},
                 "top.serial.accelerator.conv1.membrane0": {"placement": "block RAM", "block_rams_at_best": 4},
                 "top.serial.accelerator.conv1_fifo.fifo.storage": {"placement": "logic", "block_rams_at_best": 1},
                 "top.serial.rx_fifo.storage": {"placement": "block RAM", "block_rams_at_best": 1}}
    grouped = memories_by_layer(placement)
    assert set(grouped["conv1"]) == {"weights", "membrane0"} and "conv1_fifo" in grouped
    assert "link" in grouped


def test_phase_logs_elapsed_time_and_failure():
    lines = []
    with phase("synthesis (yosys)", lines.append, tick_s=0.01, enabled=False) as timer:
        pass
    assert lines[0] == "[build] synthesis (yosys) ..." and lines[1].startswith("[build] synthesis (yosys): done in ")
    assert timer.seconds >= 0
    with pytest.raises(RuntimeError):
        with phase("place and route", lines.append, enabled=False):
            raise RuntimeError("nextpnr")
    assert lines[-1].startswith("[build] place and route: failed after ")


def test_conv_placeholders_have_distinct_columns_for_every_rom():
    """Conv weight ROMs (C·kh·kw·chunks words) get placeholders whose columns are unique across all ROMs."""
    net = small_net(2, stack=(("conv", 8, 3, 1, 1), ("pool", 2, 2), ("conv", 8, 3, 1, 1), ("dense", 4)))
    plan = plan_network(net, one_lane(net))
    fake = placeholder_plan(plan, seed=3)
    columns = []
    for real, placeholder in zip(plan.layers, fake.layers):
        if placeholder.weight_words is not real.weight_words:
            assert len(placeholder.weight_words) == len(real.weight_words)
            columns += rom_columns(placeholder.weight_words, real.lanes * real.weight_bits)
    assert {"c1", "c3"} <= {l.name for l, r in zip(fake.layers, plan.layers) if l.weight_words is not r.weight_words}
    assert len(columns) == len(set(columns)) and 0 not in columns


def _other_weights(net, seed, **change):
    """The same network with each conv's weights permuted within an output channel (same Σ|W|, same widths)."""
    rng = np.random.default_rng(seed)
    layers = []
    for layer in net.layers:
        if isinstance(layer, Conv2dLayer):
            flat = layer.weight.reshape(layer.weight.shape[0], -1)
            weight = np.array([rng.permutation(row) for row in flat]).reshape(layer.weight.shape)
            layer = Conv2dLayer(layer.name, weight, layer.bias + change.get(layer.name, 0), layer.threshold,
                                layer.v0, layer.weight_bits, layer.in_shape, layer.stride, layer.padding,
                                layer.fires)
        layers.append(layer)
    return Network(net.timesteps, net.input_shape, net.input_lut, layers, net.classes, net.calibration)


def test_patch_check_takes_other_conv_weights_and_refuses_by_layer():
    net = small_net(3, stack=PATCHABLE)
    folding = one_lane(net)
    other = _other_weights(net, 1)
    assert not np.array_equal(other.layers[0].weight, net.layers[0].weight)
    check_patchable(net, other, folding)            # same shapes, biases and thresholds: patchable
    with pytest.raises(PatchError, match=r"c1 biases \(b \+ v0\) differ"):
        check_patchable(net, _other_weights(net, 1, c1=1), folding)
    unpadded = small_net(3, stack=UNPADDED)
    with pytest.raises(PatchError, match=r"different shape.*differs at 'c1' \(c1 conv 3x3 s1 p1 1x8x8->8x8x8 "
                                         r"\(6-bit\) in the bitstream, c1 conv 3x3 s1 p0 1x8x8->8x6x6 \(6-bit\) here\)"):
        check_patchable(net, unpadded, folding)


@pytest.mark.slow
@pytest.mark.synth
def test_icebreaker_conv_bitstream_with_spram_banks_and_patch_weights(tmp_path, monkeypatch, capsys):
    """A small conv network on the iCE40UP5K, its conv's membrane banks in SPRAM (``c1=1:spram``, the layer at
    half rate, SB_SPRAM256KA primitives): built with placeholder conv ROMs, patched with other weights (bit for
    bit the bitstream a full build of those weights gives), another shape refused by layer."""
    monkeypatch.chdir(tmp_path)
    net = small_net(4, stack=PATCHABLE)
    net_dir = net.save(tmp_path / "net")
    lanes = ["--lanes", "c1=1:spram,d3=1,d4=1"]
    # The oscillator's 12 MHz, no clock search (one place and route a build; the search is covered by the MLP's
    # iCEBreaker build): the rebuild below places exactly as this build does.
    assert main(["build", str(net_dir), "--board", "icebreaker", "-o", "ib", "--clock", "12", *lanes]) == 0
    out = capsys.readouterr().out
    assert "block RAMs by layer" in out and "synthesis" in out
    assert "SPRAM (membrane banks at half rate)" in out and "ICESTORM_SPRAM" in out
    report = json.loads((tmp_path / "ib" / "report.json").read_text())
    assert report["status"] == "built" and report["timing_met"]
    assert report["folding"]["c1"] == "1:spram"
    assert report["estimate"]["layers"]["c1"]["weights"]["depth"] == 9 * 8
    assert "c1" in report["patchable_layers"]
    # c1's two banks are SPRAMs (none in block RAM), as the estimate said; d3's are in block RAM.
    assert report["synthesis"]["sprams"] == report["estimate"]["sprams_needed"] == 2
    assert report["place_and_route"]["utilisation"]["ICESTORM_SPRAM"]["used"] == 2
    assert not any("c1.membrane" in name for name in report["memories"])
    assert any(name.endswith("d3.membrane0") or name.endswith("d3.membrane") for name in report["memories"])
    assert report["synthesis"]["seconds"] > 0 and report["pack_seconds"] >= 0

    other = _other_weights(net, 5)
    other_dir = other.save(tmp_path / "other")
    assert main(["patch-weights", "ib/top.bin", str(other_dir), "-o", "patched.bin"]) == 0
    assert main(["build", str(other_dir), "--board", "icebreaker", "-o", "ib2", "--clock", "12", *lanes]) == 0
    assert (tmp_path / "ib2" / "top.bin").read_bytes() == (tmp_path / "patched.bin").read_bytes()
    capsys.readouterr()

    refused = small_net(4, stack=UNPADDED).save(tmp_path / "refused")
    assert main(["patch-weights", "ib/top.bin", str(refused), "-o", "bad.bin"]) == 2
    assert "differs at 'c1'" in capsys.readouterr().err and not (tmp_path / "bad.bin").exists()


@pytest.mark.slow
@pytest.mark.synth
def test_ulx3s_conv_bitstream(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # A forced PLL clock: one place and route (the clock search is covered by the MLP's iCEBreaker build).
    report = build(small_net(5), "ulx3s-85f", "ulx3s", options=BuildOptions(clock_mhz=50), log=lambda line: None)
    assert report["status"] == "built" and report["device"] == "LFE5U-85F"
    assert report["timing_met"] and report["membrane_banks"] == 2
    assert report["pll"]["primitive"] == "EHXPLLL" and report["clock_mhz"] == 50.0
    assert report["clock_search"]["mode"] == "forced" and len(report["clock_search"]["tries"]) == 1
    assert report["fmax_mhz"] >= report["clock_mhz"] and report["critical_path"]["delay_ns"] > 0
    assert (tmp_path / "ulx3s" / "top.bit").stat().st_size > 100_000
    assert {"c1", "d3", "d4"} <= set(report["estimate"]["layers"])


def test_tap_lanes_column_banks_and_slotted_weight_rom():
    """A conv folded ``1x3`` (tap lanes): one membrane bank per column bank, 3 tap slots in a weight word;
    the placeholders and the patch check use the plan's own widths."""
    from spikeforge.boards.placeholders import weight_rom_width
    net = small_net(6, stack=PATCHABLE)
    folding = Folding.for_network(net, {"c1": "1x3", "d3": 1, "d4": 1})
    plan = plan_network(net, folding)
    conv = plan.layers[0]
    names = [m.name for m in plan_memories(plan) if m.owner == "c1" and m.name.startswith("membrane")]
    assert names == ["membrane0_0", "membrane0_1", "membrane0_2", "membrane1_0", "membrane1_1", "membrane1_2"]
    assert weight_rom_width(conv) == 3 * 1 * 6
    estimate = estimate_resources(plan, board_info("ulx3s-85f").device)
    assert estimate["adders"] == 1 * 3 + 1 + 1 and estimate["layers"]["c1"]["weights"]["width"] == 3 * 1 * 6
    fake = placeholder_plan(plan, seed=1)
    assert fake.layers[0].weight_words is not conv.weight_words         # patchable: 72 words x 18 bits
    columns = rom_columns(fake.layers[0].weight_words, weight_rom_width(conv))
    assert len(columns) == len(set(columns)) == 18
    check_patchable(net, _other_weights(net, 2), folding)
