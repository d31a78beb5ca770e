"""The hardware section's case selection: ``--networks`` may name CNN cases alone; the others keep their results."""

from types import SimpleNamespace

import pytest

from spikeforge.benchmarks import hardware, runner
from spikeforge.boards.build import BuildOptions, small_device_folding
from spikeforge.boards.platforms import board_info
from spikeforge.ir.errors import InputError

PREVIOUS = {"hardware": {"date": "2026-11-28T07:59:37+00:00", "result": {
    "cases": [{"network": "digits", "timesteps": 3}, {"network": "fmnist", "timesteps": 4}],
    "cnn_cases": [{"network": "digits-cnn"}, {"network": "fmnist-cnn"}, {"network": "gone-cnn"}]}}}


@pytest.fixture
def measured(monkeypatch):
    """Cases 'measured' without tools: the names of those run, in order."""
    ran = []
    monkeypatch.setattr(hardware, "_cnn_case", lambda ctx, case: ran.append(case["network"]) or
                        {"network": case["network"], "fresh": True})
    monkeypatch.setattr(hardware, "_case", lambda ctx, case, T, why: ran.append(f"{case['network']}@{T}") or
                        {"network": case["network"], "timesteps": T, "fresh": True})
    monkeypatch.setattr(hardware, "_smallest_t", lambda ctx, key: (4, "test"))
    return ran


def _ctx(networks, previous=PREVIOUS):
    return SimpleNamespace(quick=False, networks=networks, previous=previous)


def test_naming_one_cnn_runs_it_alone_and_keeps_every_other_case(measured):
    result = hardware.measure(_ctx(("fmnist-cnn",)))
    assert measured == ["fmnist-cnn"]
    assert [(e["network"], e.get("carried_over")) for e in result["cases"]] == [
        ("digits", "2026-11-28T07:59:37+00:00"), ("fmnist", "2026-11-28T07:59:37+00:00")]
    cnn = {e["network"]: e for e in result["cnn_cases"]}
    assert list(cnn) == ["digits-cnn", "fmnist-cnn", "gone-cnn"]      # CNN_CASES order, then the rest
    assert cnn["fmnist-cnn"].get("fresh") and "carried_over" not in cnn["fmnist-cnn"]
    assert cnn["digits-cnn"]["carried_over"] == "2026-11-28T07:59:37+00:00"


def test_the_default_networks_run_every_cnn(measured):
    """... and the ULX3S Fashion-MNIST build (issue 15's) only at its smallest T."""
    result = hardware.measure(_ctx(("digits", "fmnist", "fmnist-deep"), previous={}))
    assert measured == ["digits@4", "digits@8", "fmnist@4", *hardware.CNN_NAMES]
    assert [e["network"] for e in result["cnn_cases"]] == list(hardware.CNN_NAMES)
    assert not any(e.get("carried_over") for e in result["cases"] + result["cnn_cases"])


def test_naming_one_mlp_runs_it_alone_and_keeps_the_cnns(measured):
    result = hardware.measure(_ctx(("digits",)))
    assert measured == ["digits@4", "digits@8"]
    assert [(e["network"], e.get("carried_over")) for e in result["cnn_cases"]] == [
        ("digits-cnn", "2026-11-28T07:59:37+00:00"), ("fmnist-cnn", "2026-11-28T07:59:37+00:00"),
        ("gone-cnn", "2026-11-28T07:59:37+00:00")]


def test_a_carried_case_keeps_its_first_date(measured):
    previous = {"hardware": {"date": "2026-11-30T04:00:00+00:00", "result": {
        "cases": [], "cnn_cases": [{"network": "digits-cnn", "carried_over": "2026-11-29T00:00:00+00:00"}]}}}
    result = hardware.measure(_ctx(("mnist-cnn",), previous))
    assert measured == ["mnist-cnn"]
    assert result["cnn_cases"][0] == {"network": "digits-cnn", "carried_over": "2026-11-29T00:00:00+00:00"}


def test_explicit_lanes_of_a_case_are_used_whole():
    assert hardware._folding(None, None, {"lanes": {"conv1": "16x3", "fc": 2}}, "ulx3s-85f") == {"conv1": "16x3",
                                                                                                 "fc": 2}


def test_the_board_default_folding_is_what_the_build_picks():
    from spikeforge.ir.random_network import random_conv_network, random_network
    net = random_network(1, sizes=(64, 64, 32, 10), timesteps=8)
    folding = hardware._folding(net, None, {"board_default": True}, "icebreaker")
    assert folding == small_device_folding(net, board_info("icebreaker"), BuildOptions()) and sum(folding.values()) <= 8
    with pytest.raises(ValueError, match="icebreaker has no small-device default folding"):
        hardware._folding(random_conv_network(1), None, {"board_default": True}, "icebreaker")


def test_an_unknown_network_name_is_refused_with_the_cnn_names_listed(tmp_path):
    args = runner.build_parser().parse_args(["--only", "hardware", "--networks", "nope", "-o", str(tmp_path)])
    with pytest.raises(InputError, match=r"unknown network\(s\) 'nope'.*fmnist-cnn"):
        runner.run(args)


def test_a_build_that_failed_after_synthesis_reports_its_cells_and_the_placement_estimate(tmp_path):
    (tmp_path / "stat.json").write_text('{"design": {"num_cells_by_type": {"LUT4": 100, "CCU2C": 10, '
                                        '"TRELLIS_FF": 50, "DP16KD": 3, "MULT18X18D": 2}}}')
    (tmp_path / "top.tim").write_text("Info: Max frequency for clock '$glbnet$clk': 43.31 MHz (PASS at 25.00 MHz)\n")
    found = hardware.partial_build(tmp_path, "ulx3s-85f")
    assert found["placement_fmax_estimate_mhz"] == 43.31
    assert found["synthesis_only"]["ffs"] == 50 and found["synthesis_only"]["block_rams"] == 3
    assert found["synthesis_only"]["dsps"] == 2 and found["synthesis_only"]["luts"] >= 100
    assert hardware.partial_build(tmp_path / "absent", "ulx3s-85f") == {}
