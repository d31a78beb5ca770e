# amaranth: UnusedElaboratable=no
"""The testbench itself, on the small reference accelerator: exact under stalls and resets, and it
catches wrong results, deadlocks and stray beats."""

import time

import numpy as np
import pytest

from spikeforge.testing.signoff_support import BUG_PIXEL, ReferenceAccelerator, one_layer_network, write_reference_design
from spikeforge.sim import verilator
from spikeforge.sim.signoff import format_report, stall_phases, verify

IN_FEATURES, CLASSES = 64, 10


@pytest.fixture(scope="module")
def reference_net():
    return one_layer_network(5, in_features=IN_FEATURES, classes=CLASSES, timesteps=6, weight_bits=7)


@pytest.fixture(scope="module")
def samples():
    rng = np.random.default_rng(11)
    samples = rng.integers(0, 256, size=(200, IN_FEATURES)).astype(np.uint8)
    samples[0] = 0
    samples[1] = 255
    return samples


def _rtl(tmp_path_factory, net, **kwargs):
    return write_reference_design(net, tmp_path_factory.mktemp("reference_rtl"), **kwargs)


@pytest.mark.verilator
def test_reference_design_is_exact_under_stalls_and_resets(reference_net, samples, tmp_path_factory,
                                                           signoff_build_root):
    rtl = _rtl(tmp_path_factory, reference_net)
    beats = IN_FEATURES
    phases = ([{"name": "alone", "samples": [0]}, {"name": "stream", "samples": list(range(200))}]
              + stall_phases(200, seed=3)
              + [{"name": "reset-mid-pixels", "samples": [0, 1, 2], "reset_after_beats": beats + 20},
                 {"name": "reset-mid-result", "samples": [3, 4], "reset_after_beats": 2 * beats,
                  "reset_delay_cycles": 2},
                 {"name": "clean", "samples": list(range(50))}])
    report = verify(reference_net, rtl, samples, phases=phases, build_root=signoff_build_root, report_path=False)
    print(format_report(report))
    assert report["ok"], format_report(report)
    by_name = {p["name"]: p for p in report["phases"]}
    for name in ("stream", "stalls-25", "stalls-50", "stalls-90", "clean"):
        assert by_name[name]["checked"] == by_name[name]["samples"] and by_name[name]["mismatches"] == 0
    # The resets hit samples in flight: their results are dropped, and nothing stale comes out after.
    assert by_name["reset-mid-pixels"]["dropped"] == [1, 2]
    assert by_name["reset-mid-result"]["dropped"] == [4]
    # One pixel per cycle, then ARGMAX_CYCLES + 1 cycles of argmax and the result beat.
    assert report["timing"]["cycles_per_sample"] == {"min": beats + 5, "mean": beats + 5.0, "max": beats + 5}
    assert report["timing"]["latency_cycles"] == beats + 4
    # 90 % stalls on both sides: each pixel waits ~10 cycles.
    assert by_name["stalls-90"]["cycles"] > 8 * by_name["stream"]["cycles"]


@pytest.mark.verilator
def test_wrong_scores_are_caught_and_the_command_fails(reference_net, samples, tmp_path_factory, tmp_path,
                                                       signoff_build_root, capsys):
    rtl = _rtl(tmp_path_factory, reference_net, bug="score")
    report = verify(reference_net, rtl, samples[:40], build_root=signoff_build_root, report_path=False)
    pixel = BUG_PIXEL(IN_FEATURES)
    odd_first = [i for i in range(40) if samples[i, pixel] % 2]
    assert not report["ok"]
    assert report["mismatches"] == len(odd_first) + (1 if 0 in odd_first else 0)   # + the "alone" phase
    first = report["first_mismatch"]
    assert first["phase"] == "stream" and first["sample"] == odd_first[0]
    assert first["got"]["scores"][0] == first["expected"]["scores"][0] + 1
    assert first["got"]["scores"][1:] == first["expected"]["scores"][1:]

    # The command line: exit status 1, the first mismatch printed, the JSON report written.
    from spikeforge.cli import main
    from spikeforge.datasets import load
    net_dir = reference_net.save(tmp_path / "net")
    digits = load("digits", "test").samples[:12].reshape(12, -1)
    expected_bad = [i for i in range(12) if digits[i, pixel] % 2]
    assert expected_bad, f"the first 12 digits need an odd pixel {pixel} for this check"
    status = main(["verify", str(net_dir), "--rtl", str(rtl), "--samples", "12", "--build-dir",
                   str(signoff_build_root), "--report", str(tmp_path / "verify.json")])
    out = capsys.readouterr().out
    assert status == 1
    assert f"first: sample {expected_bad[0]} (phase " in out and out.rstrip().endswith("FAIL")
    assert (tmp_path / "verify.json").is_file()


@pytest.mark.verilator
def test_deadlock_fails_loudly_and_quickly(reference_net, samples, tmp_path_factory, signoff_build_root):
    rtl = _rtl(tmp_path_factory, reference_net, bug="deadlock")
    started = time.monotonic()
    report = verify(reference_net, rtl, samples[:20], build_root=signoff_build_root, report_path=False)
    assert not report["ok"]
    assert report["error"].startswith("deadlock in phase 'stream' while waiting for results")
    assert "results received 2 of 20" in report["error"]        # sample 0 alone, then 0..2 streamed: 3 done
    assert time.monotonic() - started < 120


@pytest.mark.slow     # a traced build of its own
@pytest.mark.verilator
def test_build_is_reused_and_waves_are_kept_on_request(reference_net, samples, tmp_path_factory, signoff_build_root):
    rtl = _rtl(tmp_path_factory, reference_net)        # the same Verilog as the first test's: reused
    source = rtl / "reference_top.v"
    first = verilator.build([source], "reference_top", verilator.build_dir_for(signoff_build_root, [source],
                                                                                 "reference_top"))
    again = verilator.build([source], "reference_top", first.build_dir)
    assert again.reused and again.seconds == 0.0 and again.build_dir == first.build_dir
    assert (first.build_dir / "spikeforge-build.json").is_file()

    report = verify(reference_net, rtl, samples[:5], waves=True, build_root=signoff_build_root, report_path=False)
    assert report["ok"], format_report(report)
    if verilator.fst_supported():
        waves = rtl / "signoff.fst"
        assert waves.read_bytes()[:1] == b"\x00"            # an FST header block, not VCD text
    else:                                                    # no lz4 headers: VCD instead, said so
        waves = rtl / "signoff.vcd"
        assert b"$enddefinitions" in waves.read_bytes() and "liblz4-dev" in format_report(report)
    assert report["waves"] == str(waves.resolve())
    assert b"pixels__valid" in waves.read_bytes() or waves.suffix == ".fst"
    assert report["simulation"]["build_dir"] != str(first.build_dir)   # traced: its own build


def test_reference_accelerator_refuses_deep_networks():
    from spikeforge.ir.random_network import random_network
    with pytest.raises(ValueError, match=r"computes one layer, the network has 3"):
        ReferenceAccelerator(random_network(0))
