# amaranth: UnusedElaboratable=no
"""PLL dividers (ECP5 EHXPLLL, iCE40 SB_PLL40_PAD) against the ecppll/icepll rules and their published
outputs, the clock choices of the build's search, and the board top with a PLL elaborated for both
families (no tools)."""

from fractions import Fraction

import pytest

from spikeforge.boards.build import ClockChoice, critical_path, forced_clock, search_clock, sync_fmax
from spikeforge.boards.platforms import board_info
from spikeforge.boards.pll import PLLError, ecp5_pll, ice40_pll, output_range, pll_for
from spikeforge.boards.top import BoardTop, SerialAccelerator, link_config_for
from spikeforge.hdl import Accelerator
from spikeforge.ir.random_network import random_network

MHZ = 1e6

#: ``ecppll -i 25 -o F`` (Project Trellis), as a ULX3S project records them: CLKI_DIV, CLKFB_DIV, CLKOP_DIV.
ECPPLL_25 = {120: (5, 24, 5), 110: (5, 22, 5), 100: (1, 4, 6), 95: (5, 19, 6), 90: (5, 18, 7), 85: (5, 17, 7),
             80: (5, 16, 7), 75: (1, 3, 8), 70: (5, 14, 9), 65: (5, 13, 9), 60: (5, 12, 10), 50: (1, 2, 12)}


@pytest.mark.parametrize("mhz", sorted(ECPPLL_25))
def test_ecp5_dividers_are_ecppll_s(mhz):
    pll = ecp5_pll(25 * MHZ, mhz * MHZ)
    d = pll.dividers
    assert (d["CLKI_DIV"], d["CLKFB_DIV"], d["CLKOP_DIV"]) == ECPPLL_25[mhz]
    assert pll.output_hz == mhz * MHZ and pll.primitive == "EHXPLLL"
    assert d["CLKOP_CPHASE"] == d["CLKOP_DIV"] // 2


def test_ecp5_12_to_16_mhz_takes_the_smaller_divider_on_a_vco_tie():
    # ecppll -i 12 -o 16: VCO 592 and 608 MHz are both 8 MHz from 600; the first (CLKOP_DIV 37) wins.
    d = pll_for("ecp5", 12 * MHZ, 16 * MHZ).dividers
    assert (d["CLKI_DIV"], d["CLKFB_DIV"], d["CLKOP_DIV"], d["CLKOP_CPHASE"]) == (3, 4, 37, 18)


def test_ice40_dividers_are_icepll_s():
    # icepll -i 12 -o 96: DIVR 0, DIVF 63, DIVQ 3, FILTER_RANGE 1 (F_PFD 12 MHz, F_VCO 768 MHz).
    pll = ice40_pll(12 * MHZ, 96 * MHZ)
    assert pll.dividers == {"DIVR": 0, "DIVF": 63, "DIVQ": 3, "FILTER_RANGE": 1}
    assert (pll.output_hz, pll.vco_hz, pll.pfd_hz) == (96 * MHZ, 768 * MHZ, 12 * MHZ)
    # Higher PFDs pick higher filter ranges (icepll's table).
    assert ice40_pll(100 * MHZ, 100 * MHZ).dividers["FILTER_RANGE"] == 5


@pytest.mark.parametrize("family,clkin,vco,step", [("ecp5", 25, (400, 800), None), ("ice40", 12, (533, 1066), None)])
def test_every_output_obeys_the_vco_pfd_and_output_limits(family, clkin, vco, step):
    """Many targets: the achieved clock is the formula of its dividers, every frequency in range, and
    nothing closer exists (nearest) / nothing faster below the target exists (at_most)."""
    low, high = output_range(family, clkin * MHZ)
    for target in [low / MHZ + 0.1 * k for k in range(0, 2000, 23)] + [16.2, 33.3, 48, 99.99, 133.3, 201]:
        if not low <= target * MHZ <= high:
            continue
        pll = pll_for(family, clkin * MHZ, target * MHZ)
        under = pll_for(family, clkin * MHZ, target * MHZ, at_most=True)
        for p in (pll, under):
            d = p.dividers
            if family == "ecp5":
                pfd = Fraction(clkin * 10**6) / d["CLKI_DIV"]
                out = pfd * d["CLKFB_DIV"]
                assert p.vco_hz == float(out * d["CLKOP_DIV"]) and 3.125 * MHZ <= pfd <= 400 * MHZ
                assert 1 <= d["CLKI_DIV"] <= 128 and 1 <= d["CLKFB_DIV"] <= 80 and 1 <= d["CLKOP_DIV"] <= 128
            else:
                pfd = Fraction(clkin * 10**6) / (d["DIVR"] + 1)
                out = pfd * (d["DIVF"] + 1) / 2 ** d["DIVQ"]
                assert p.vco_hz == float(pfd * (d["DIVF"] + 1)) and 10 * MHZ <= pfd <= 133 * MHZ
                assert 0 <= d["DIVR"] <= 15 and 0 <= d["DIVF"] <= 127 and 1 <= d["DIVQ"] <= 6
            assert p.output_hz == float(out) and vco[0] * MHZ <= p.vco_hz <= vco[1] * MHZ
        assert under.output_hz <= target * MHZ
        assert abs(pll.output_hz - target * MHZ) <= abs(under.output_hz - target * MHZ)
        # at_most is the fastest not above the target: a slightly lower target gives no faster clock.
        assert pll_for(family, clkin * MHZ, under.output_hz, at_most=True).output_hz == under.output_hz


def test_output_ranges():
    assert output_range("ecp5", 25 * MHZ) == (10 * MHZ, 400 * MHZ)
    low, high = output_range("ice40", 12 * MHZ)
    assert 16 * MHZ <= low < 16.5 * MHZ and 265 * MHZ < high <= 275 * MHZ


def test_errors_name_the_frequency_and_the_achievable_range():
    with pytest.raises(PLLError, match=r"SB_PLL40_PAD: 12 MHz cannot be made from 12 MHz; achievable: "
                                       r"16\.12-270 MHz"):
        ice40_pll(12 * MHZ, 12 * MHZ)
    with pytest.raises(PLLError, match=r"EHXPLLL: 500 MHz cannot be made from 25 MHz; achievable: 10-400 MHz"):
        ecp5_pll(25 * MHZ, 500 * MHZ)
    with pytest.raises(PLLError, match=r"EHXPLLL: no clock at or below 9 MHz can be made from 25 MHz; "
                                       r"achievable: 10-400 MHz"):
        ecp5_pll(25 * MHZ, 9 * MHZ, at_most=True)
    with pytest.raises(PLLError, match=r"SB_PLL40_PAD: input clock 8 MHz is outside 10-133 MHz"):
        ice40_pll(8 * MHZ, 48 * MHZ)
    with pytest.raises(PLLError, match=r"FPGA family 'xilinx7' has no PLL computation here; supported: ecp5, ice40"):
        pll_for("xilinx7", 100 * MHZ, 200 * MHZ)
    for bad in (0, -5, float("nan"), float("inf"), True, "100"):
        with pytest.raises(PLLError, match=r"PLL target frequency .* must be a finite frequency > 0"):
            ecp5_pll(25 * MHZ, bad)


def test_accept_leaves_out_outputs_the_design_cannot_use():
    whole = lambda hz: hz % MHZ == 0
    pll = ecp5_pll(25 * MHZ, 103.7 * MHZ, at_most=True, accept=whole)
    assert pll.output_hz == 100 * MHZ
    with pytest.raises(PLLError, match="that the design accepts"):
        ecp5_pll(25 * MHZ, 50 * MHZ, at_most=True, accept=lambda hz: False)


def test_build_clock_choices():
    ulx3s, icebreaker = board_info("ulx3s-85f"), board_info("icebreaker")
    assert forced_clock(ulx3s, 100).pll.dividers["CLKOP_DIV"] == 6
    assert forced_clock(icebreaker, 12) == ClockChoice(12 * MHZ)     # the oscillator itself, no PLL
    with pytest.raises(PLLError, match=r"--clock 14 MHz on ICEBreakerPlatform: SB_PLL40_PAD: 14 MHz cannot be "
                                       r"made from 12 MHz; achievable: 16\.12-270 MHz; or 12 MHz \(the board "
                                       r"oscillator, no PLL\)"):
        forced_clock(icebreaker, 14)
    # The search: the fastest at or below the target; the oscillator below the iCE40 PLL's range.
    assert search_clock(icebreaker, 25 * MHZ).hz == 24.75 * MHZ
    assert search_clock(icebreaker, 15 * MHZ) == ClockChoice(12 * MHZ)
    assert search_clock(icebreaker, 11 * MHZ) is None
    assert search_clock(ulx3s, 25.3 * MHZ) == ClockChoice(25 * MHZ)
    assert search_clock(ulx3s, 103.9 * MHZ, accept=lambda hz: hz % MHZ == 0).hz == 100 * MHZ
    arty = board_info("ArtyA7_35Platform")
    with pytest.raises(PLLError, match=r"ArtyA7_35Platform has no PLL this flow can set"):
        forced_clock(arty, 200)


def test_nextpnr_clock_and_critical_path_parsing():
    clocks = {"$glbnet$pll_clk": {"achieved_mhz": 103.2, "constraint_mhz": 100.0},
              "clk25_0__io": {"achieved_mhz": 400.0, "constraint_mhz": 25.0}}
    assert sync_fmax(clocks, 100.0) == 103.2 and sync_fmax({}, 100.0) is None

    def step(kind, cell_from, cell_to, delay, net=None, source=None):
        entry = {"type": kind, "delay": delay, "from": {"cell": cell_from}, "to": {"cell": cell_to}}
        if net:
            entry.update(net=net, sources=[source] if source else [])
        return entry
    slow = [step("clk-to-q", "a_FF", "a_FF", 0.5), step("routing", "a_FF", "lut", 1.0, "x.q[0]", "/w/hdl/encoder.py:88"),
            step("logic", "lut", "lut", 0.4), step("routing", "lut", "b_FF", 2.0, "x.d", None),
            step("setup", "b_FF", "b_FF", 0.1)]
    paths = [{"from": "posedge $glbnet$pll_clk", "to": "posedge $glbnet$pll_clk", "path": slow},
             {"from": "<async>", "to": "posedge $glbnet$pll_clk", "path": slow * 3},
             {"from": "posedge $glbnet$pll_clk", "to": "posedge $glbnet$pll_clk", "path": slow[:2]}]
    assert critical_path(paths, clocks) == {
        "clock": "$glbnet$pll_clk", "delay_ns": 4.0, "from_cell": "a_FF", "to_cell": "b_FF", "from_net": "x.q[0]",
        "to_net": "x.d", "from_source": "hdl/encoder.py:88", "to_source": None, "logic_steps": 1, "routing_steps": 2}
    assert critical_path([], clocks) is None


@pytest.mark.parametrize("board,mhz,primitive", [("icebreaker", 24, "SB_PLL40_PAD"), ("ulx3s-85f", 100, "EHXPLLL")])
def test_board_top_elaborates_with_the_pll_and_constrains_its_clock(board, mhz, primitive):
    info = board_info(board)
    platform = info.platform_class()
    pll = pll_for(info.family, info.clock_hz, mhz * MHZ)
    net = random_network(1, sizes=(16, 12, 8, 4), timesteps=4)
    accelerator = Accelerator(net, {"fc1": 1, "fc2": 1, "fc3": 1})
    config = link_config_for(accelerator, in_features=16, timesteps=4, clk_freq=pll.output_hz, baud=1_000_000)
    serial = SerialAccelerator(accelerator, config)
    assert serial.divisor == mhz       # the UART divisor comes from the PLL's clock
    top = BoardTop(serial, pll)
    plan = platform.prepare(top, name="top")
    rtlil = plan.files["top.il"]
    rtlil = rtlil if isinstance(rtlil, str) else rtlil.decode()
    assert f"cell \\{primitive} \\pll" in rtlil
    for name, value in pll.dividers.items():
        assert f"parameter \\{name} " in rtlil, name
    constraints = plan.files["top.pcf" if info.family == "ice40" else "top.lpf"]
    constraints = constraints if isinstance(constraints, str) else constraints.decode()
    expected = f"set_frequency pll_clk {mhz}.0" if info.family == "ice40" else \
        f'FREQUENCY NET "pll_clk" {mhz * 1e6}'
    assert expected in constraints
    assert top.reset_cycles() == int(15e-6 * mhz * MHZ)


def test_board_top_refuses_a_pll_made_for_another_oscillator():
    info = board_info("icebreaker")
    pll = pll_for("ice40", 25 * MHZ, 50 * MHZ)
    net = random_network(1, sizes=(16, 12, 8, 4), timesteps=4)
    accelerator = Accelerator(net, {"fc1": 1, "fc2": 1, "fc3": 1})
    config = link_config_for(accelerator, in_features=16, timesteps=4, clk_freq=50 * MHZ, baud=1_000_000)
    with pytest.raises(Exception, match=r"the PLL settings are for a 25 MHz input, the board clock 'clk12' is 12 MHz"):
        info.platform_class().prepare(BoardTop(SerialAccelerator(accelerator, config), pll), name="top")
