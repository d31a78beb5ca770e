"""The compiled regression engine (spikeforge.sim.fast_engine, `spikeforge verify --engine fast`).

The Verilator tests build the demo design's harness once (about a minute of CPU) and check it against
the golden model and against the cocotb sign-off of the same design (the shared ``demo_signoff``
fixture): same results, same latency, same cycles per sample. The others need no simulator.
"""

import numpy as np
import pytest

from spikeforge.cli import main
from spikeforge.hdl.layouts import result_layout
from spikeforge.ir import golden
from spikeforge.ir.random_network import random_network
from spikeforge.sim import fast_engine
from spikeforge.sim.fast_engine import FastBuild, FastResult, decode_results, run_fast, verify_fast
from spikeforge.sim.signoff import SignoffError, format_report


@pytest.fixture(scope="module")
def fast_build(demo_rtl, signoff_build_root):
    return fast_engine.build_fast(demo_rtl, signoff_build_root)


# -- with Verilator ----------------------------------------------------------------------------------

@pytest.mark.verilator
def test_the_whole_digits_split_is_bit_exact_and_times_like_the_cocotb_signoff(
        demo_net, demo_rtl, digits_test, fast_build, signoff_build_root, demo_signoff):
    report = verify_fast(demo_net, demo_rtl, digits_test.samples, digits_test.labels, build_root=signoff_build_root,
                         report_path=False)
    print(format_report(report))
    assert report["ok"] and report["mismatches"] == 0 and report["checked"] == len(digits_test)
    assert report["simulation"]["engine"] == "fast" and report["simulation"]["build_reused"]
    # The two engines run the same phases on the same RTL: the same latency and result spacing.
    assert report["timing"]["latency_cycles"] == demo_signoff["timing"]["latency_cycles"]
    assert report["timing"]["cycles_per_sample"] == demo_signoff["timing"]["cycles_per_sample"]
    assert report["timing"]["stream_cycles"] == demo_signoff["timing"]["stream_cycles"]
    assert report["accuracy"] == demo_signoff["accuracy"]
    assert abs(report["model_agreement"]["steady_cycles_per_sample"]) < 0.01
    assert "compiled harness" in format_report(report)


@pytest.mark.verilator
def test_run_fast_decodes_through_the_layout_and_shards_agree(demo_net, demo_rtl, digits_test, fast_build,
                                                              signoff_build_root):
    samples = digits_test.samples[:60]
    result = run_fast(demo_rtl, samples, build_root=signoff_build_root)
    assert fast_build.reused is False or result.build.executable == fast_build.executable
    expected = golden.run(demo_net, samples)
    assert result.received == 60 and result.stray == 0 and result.error is None
    np.testing.assert_array_equal(result.labels, expected.labels)
    np.testing.assert_array_equal(result.scores, expected.scores)
    assert np.all(result.sample_cycles > 0) and np.all(np.diff(result.result_cycle) > 0)
    assert result.latency_cycles > 0 and result.steady_cycles_per_sample > 0
    # Three shards, each its own pipeline: the same results, every sample checked once.
    report = verify_fast(demo_net, demo_rtl, samples, build_root=signoff_build_root, shards=3, report_path=False)
    assert report["ok"] and report["checked"] == 60 and report["simulation"]["shards"] == 3
    assert [p["name"] for p in report["phases"]] == ["alone", "shard-0", "shard-1", "shard-2"]
    assert report["timing"]["latency_cycles"] == result.latency_cycles


@pytest.mark.verilator
def test_skipping_the_input_region_on_quiet_cycles_changes_no_cycle(demo_rtl, digits_test, fast_build,
                                                                     signoff_build_root):
    # The default harness skips Verilator's input-combinational region when no input changed; the plain one
    # runs Verilator's whole scheduler on both edges. Same results on the same cycles, beat for beat.
    assert fast_build.fast_clock
    plain = fast_engine.build_fast(demo_rtl, signoff_build_root, fast_clock=False)
    assert not plain.fast_clock and plain.executable != fast_build.executable
    samples = digits_test.samples[:80]
    fast, slow = run_fast(demo_rtl, samples, build=fast_build), run_fast(demo_rtl, samples, build=plain)
    # The skip ran (most cycles: the fire phases and the gaps between samples move no input) and only there.
    assert fast.quiet_cycles > fast.cycles // 2 and slow.quiet_cycles == 0
    assert fast.received == slow.received == 80 and fast.cycles == slow.cycles
    assert fast.latency_cycles == slow.latency_cycles and fast.stray == slow.stray == 0
    assert fast.error is None and slow.error is None
    for name in ("labels", "scores", "first_beat", "result_cycle"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name))


@pytest.mark.verilator
def test_a_deadlock_is_reported_not_hung(demo_rtl, digits_test, fast_build, signoff_build_root):
    result = run_fast(demo_rtl, digits_test.samples[:3], build_root=signoff_build_root, idle_limit=3)
    assert result.error is not None and "deadlock" in result.error and result.received < 3


@pytest.mark.verilator
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Port .* is already in use:UserWarning")   # the dashboard of another cluster
# distributed can leave a socket of a slow LocalCluster shutdown to the garbage collector on a loaded machine.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_cli_engine_fast_shards_on_an_embedded_dask_cluster(demo_rtl, fast_build, signoff_build_root, tmp_path,
                                                            demo_net, capsys):
    net_dir = tmp_path / "net"
    demo_net.save(net_dir)
    code = main(["verify", str(net_dir), "--rtl", str(demo_rtl), "--engine", "fast", "--shards", "2",
                 "--samples", "40", "--build-dir", str(signoff_build_root), "--report", str(tmp_path / "v.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PASS: bit-exact" in out and "2 shards on embedded LocalCluster: 2 workers" in out
    assert (tmp_path / "v.json").is_file()


# -- without a simulator -----------------------------------------------------------------------------

def _scheduler(tmp_path, triggers, detectors=("__Vtrigprevexpr___TOP__clk__0",), phases=("act", "nba")):
    """A stand-in for Verilator's output: the root header's edge detectors, the trigger dumps, the phase functions."""
    obj = tmp_path / "obj"
    obj.mkdir(exist_ok=True)
    (obj / "Vtop___024root.h").write_text("".join(f"        CData/*0:0*/ {name};\n" for name in detectors))
    dumps = "".join(f'    VL_DBG_MSGS("         \'" + tag + "\' region trigger index {i} is active: {t}\\n");\n'
                    for i, t in enumerate(triggers))
    functions = "".join(f"bool Vtop___024root___eval_phase__{p}(Vtop___024root* vlSelf) {{\n}}\n" for p in phases)
    (obj / "Vtop___024root__0.cpp").write_text(functions)
    (obj / "Vtop___024root__1__Slow.cpp").write_text(dumps)
    return obj


def test_the_quiet_cycle_skip_is_only_built_for_a_rising_edge_only_scheduler(tmp_path):
    ico, stl, rise = ("Internal 'ico' trigger - first iteration", "Internal 'stl' trigger - first iteration",
                      "@(posedge clk)")
    assert fast_engine._fast_clock(_scheduler(tmp_path, [stl, ico, rise]))
    # A falling edge, logic on the clock's level, another clock, a phase Verilator no longer names so: the plain
    # scheduler on both edges.
    for triggers in ([stl, ico, rise, "@(negedge clk)"], [ico, rise, "@( clk)"], [ico, "@(posedge other)"], [ico]):
        assert not fast_engine._fast_clock(_scheduler(tmp_path, triggers)), triggers
    assert not fast_engine._fast_clock(_scheduler(tmp_path, [ico, rise], detectors=(
        "__Vtrigprevexpr___TOP__clk__0", "__Vtrigprevexpr___TOP__rst__0")))
    assert not fast_engine._fast_clock(_scheduler(tmp_path, [ico, rise], phases=("nba",)))


def test_decode_results_reads_the_layout_fields_of_any_width():
    layout = result_layout(3, 37)
    label, scores = 2, [-(1 << 36), (1 << 36) - 1, -5]
    raw = layout.const({"label": label, "scores": scores}).as_bits()
    words = np.array([[(raw >> (32 * i)) & 0xFFFFFFFF for i in range((layout.size + 31) // 32)]], dtype="<u4")
    labels, decoded = decode_results(layout, words)
    assert labels.tolist() == [label] and decoded.tolist() == [scores]


def test_the_build_compiles_verilators_listed_sources_in_two_units(tmp_path):
    (tmp_path / "Vtop_classes.mk").write_text(
        "# Generated module classes, fast-path\nVM_CLASSES_FAST += \\\n  Vtop \\\n  Vtop___024root__0 \\\n\n"
        "VM_CLASSES_SLOW += \\\n  Vtop___024root__Slow \\\n\nVM_SUPPORT_FAST += \\\n\n"
        "VM_SUPPORT_SLOW += \\\n  Vtop__Syms__Slow \\\n\nVM_GLOBAL_FAST += \\\n  verilated \\\n")
    fast_engine._unity_sources(tmp_path)
    fast = (tmp_path / "spikeforge_fast.cpp").read_text().splitlines()
    slow = (tmp_path / "spikeforge_slow.cpp").read_text().splitlines()
    assert fast == ['#include "Vtop.cpp"', '#include "Vtop___024root__0.cpp"', f'#include "{fast_engine.HARNESS}"']
    assert slow == ['#include "Vtop___024root__Slow.cpp"', '#include "Vtop__Syms__Slow.cpp"']


@pytest.fixture(scope="module")
def small_design(tmp_path_factory):
    from spikeforge.hdl.generate import generate
    root = tmp_path_factory.mktemp("fast")
    net = random_network(3, sizes=(16, 6, 4), timesteps=3)
    net.save(root / "net")
    generate(root / "net", root / "rtl", lanes={"fc1": 2, "fc2": 2})
    return net, root


def _fake_engine(monkeypatch, flip=None):
    """The engine without Verilator: the golden model's answers (the label of sample ``flip``, a row of
    bytes, changed if asked)."""
    def fake_build(design, build_root=None, **kwargs):
        return FastBuild(executable=None, build_dir=None, seconds=0.0, reused=True)

    def fake_run(design, samples, *, alone=True, **kwargs):
        expected = golden.run(fake_run.net, samples)
        labels = expected.labels.astype(np.int64).copy()
        if flip is not None:
            hit = np.all(np.asarray(samples) == flip, axis=1)
            labels[hit] = (labels[hit] + 1) % expected.scores.shape[1]
        n = len(samples)
        cycles = np.arange(n, dtype=np.int64) * 100
        return FastResult(labels=labels, scores=expected.scores.astype(np.int64), first_beat=cycles,
                          result_cycle=cycles + 300, latency_cycles=300 if alone else None, cycles=100 * n + 500,
                          seconds=0.01, received=n, stray=0)
    monkeypatch.setattr(fast_engine, "build_fast", fake_build)
    monkeypatch.setattr(fast_engine, "run_fast", fake_run)
    return fake_run


def test_a_result_that_differs_from_the_golden_model_fails_the_signoff(small_design, monkeypatch):
    net, root = small_design
    samples = np.random.default_rng(0).integers(0, 256, (20, 16), dtype=np.uint8)
    _fake_engine(monkeypatch).net = net
    assert verify_fast(net, root / "rtl", samples, report_path=False, shards=2)["ok"]
    _fake_engine(monkeypatch, flip=samples[13]).net = net
    report = verify_fast(net, root / "rtl", samples, report_path=False, shards=2)
    assert not report["ok"] and report["mismatches"] == 1 and report["first_mismatch"]["sample"] == 13
    assert "FAIL" in format_report(report)


def test_rtl_of_another_network_is_refused_before_building(small_design, monkeypatch):
    net, root = small_design
    other = random_network(4, sizes=(16, 6, 4), timesteps=3)

    def called(*args, **kwargs):
        raise AssertionError("the engine was built")
    monkeypatch.setattr(fast_engine, "build_fast", called)
    with pytest.raises(SignoffError, match="fingerprint"):
        verify_fast(other, root / "rtl", np.zeros((2, 16), np.uint8), report_path=False)
    with pytest.raises(SignoffError, match="samples have 15 values each"):
        verify_fast(net, root / "rtl", np.zeros((2, 15), np.uint8), report_path=False)
    with pytest.raises(SignoffError, match="not raw bytes"):
        verify_fast(net, root / "rtl", np.full((2, 16), 0.5), report_path=False)
    with pytest.raises(SignoffError, match="shards 0"):
        verify_fast(net, root / "rtl", np.zeros((2, 16), np.uint8), report_path=False, shards=0)


@pytest.mark.parametrize("argv, fragment", [
    (["--shards", "2"], "--shards/--scheduler need --engine fast"),
    (["--scheduler", "tcp://127.0.0.1:1"], "--shards/--scheduler need --engine fast"),
    (["--engine", "fast", "--stalls", "random"], "--engine fast streams without stalls"),
    (["--engine", "fast", "--shards", "0"], "--shards 0 must be >= 1"),
])
def test_cli_refuses_options_the_engine_does_not_take(argv, fragment, tmp_path, capsys):
    code = main(["verify", str(tmp_path / "net"), "--rtl", str(tmp_path / "rtl"), *argv])
    assert code == 2
    assert fragment in capsys.readouterr().err
