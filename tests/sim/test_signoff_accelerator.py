"""Sign-off of the generated accelerator with cocotb + Verilator (DESIGN.md §4, layer 3).

Scenarios: (1) the whole digits test split through the demo design; (2) random input gaps and output
back-pressure at three seeded densities; (3) resets in the middle of samples, then a clean run;
(4) a random small network per run over several T and weight widths; (5) the analytical cycle model
against the measured cycles; (6) DSP-free lanes (``multiplier="logic"``) at 0/50/90 % stalls; and the
same testbench on Icarus Verilog when it is installed.

Random networks are drawn from a seed printed by the test; replay a failure with
``SPIKEFORGE_SIGNOFF_SEED=<seed> pytest tests/sim/test_signoff_accelerator.py -k random``.
"""

import os
import random
import shutil

import numpy as np
import pytest

from spikeforge.ir.random_network import random_network
from spikeforge.sim.signoff import format_report, stall_phases, verify

pytestmark = pytest.mark.verilator      # every test here builds or runs the design in Verilator

#: The cycle model must agree with the RTL within this fraction (issue 4).
MODEL_TOLERANCE = 0.05


def _assert_exact(report, phases=None):
    assert report["ok"], format_report(report)
    for phase in report["phases"]:
        if phases is None or phase["name"] in phases:
            assert phase["mismatches"] == 0 and phase["missing"] == 0 and phase["stray"] == 0, phase


# -- (1) the whole digits test split, no stalls ---------------------------------------------------

def test_digits_test_split_is_bit_exact(demo_signoff, digits_test):
    report = demo_signoff
    _assert_exact(report)
    stream = next(p for p in report["phases"] if p["name"] == "stream")
    assert len(digits_test.samples) == 540
    assert stream["checked"] == stream["samples"] == 540
    assert report["accuracy"] == report["golden_accuracy"] > 0.9
    timing = report["timing"]
    assert timing["cycles_per_sample"]["min"] <= timing["steady_cycles_per_sample"] <= timing["cycles_per_sample"]["max"]
    # Pipelined: a sample in steady state costs far less than one sample alone.
    assert timing["steady_cycles_per_sample"] < timing["latency_cycles"] / 2


# -- (5) the analytical cycle model against the measurement ---------------------------------------

def test_cycle_model_agrees_with_measured_cycles(demo_signoff):
    report = demo_signoff
    agreement = report["model_agreement"]
    assert abs(agreement["stream_cycles"]) <= MODEL_TOLERANCE, agreement
    assert abs(agreement["latency_cycles"]) <= MODEL_TOLERANCE, agreement
    assert abs(agreement["steady_cycles_per_sample"]) <= MODEL_TOLERANCE, agreement
    assert agreement["per_result_max"] <= MODEL_TOLERANCE, agreement
    model, measured = report["model"]["cycles_per_sample"], report["timing"]["cycles_per_sample"]
    assert abs(model["mean"] - measured["mean"]) <= MODEL_TOLERANCE * measured["mean"]


# -- (2) random input gaps and output back-pressure -----------------------------------------------

def test_digits_exact_under_random_stalls(demo_net, demo_rtl, digits_test, signoff_build_root):
    phases = stall_phases(len(digits_test.samples), seed=4)            # 25 %, 50 %, 90 %, all 540 samples
    report = verify(demo_net, demo_rtl, digits_test.samples, digits_test.labels, phases=phases,
                    build_root=signoff_build_root, report_path=False)
    print(format_report(report))
    _assert_exact(report)
    by_name = {p["name"]: p for p in report["phases"]}
    assert [p["name"] for p in report["phases"]] == ["stalls-25", "stalls-50", "stalls-90"]
    for phase in by_name.values():
        assert phase["checked"] == 540 and phase["accuracy"] == report["golden_accuracy"]
    # At 90 % the input gaps dominate: ~640 cycles per 64-pixel sample instead of ~330.
    assert by_name["stalls-90"]["cycles"] > 1.5 * by_name["stalls-25"]["cycles"]


# -- (3) reset in the middle of a sample, then a clean run ----------------------------------------

def test_reset_mid_sample_then_a_clean_run_is_exact(demo_net, demo_rtl, digits_test, signoff_build_root):
    beats = demo_net.in_features
    clean = 200
    phases = [
        # Mid-pixels: samples 0 and 1 are inside the pipeline, sample 2 half loaded.
        {"name": "reset-mid-pixels", "samples": [0, 1, 2, 3], "reset_after_beats": 2 * beats + beats // 2},
        # Mid-computation: every pixel taken, the layers busy with three samples.
        {"name": "reset-mid-compute", "samples": [4, 5, 6], "reset_after_beats": 3 * beats,
         "reset_delay_cycles": 300},
        # Under back-pressure, with results waiting to be taken.
        {"name": "reset-stalled", "samples": [7, 8, 9, 10], "reset_after_beats": 3 * beats,
         "reset_delay_cycles": 1000, "output_pauses": {"density": 0.9, "seed": 5}},
        {"name": "stream", "samples": list(range(clean))},
    ]
    report = verify(demo_net, demo_rtl, digits_test.samples[:clean], digits_test.labels[:clean], phases=phases,
                    build_root=signoff_build_root, report_path=False)
    print(format_report(report))
    _assert_exact(report)
    by_name = {p["name"]: p for p in report["phases"]}
    for name in ("reset-mid-pixels", "reset-mid-compute", "reset-stalled"):
        assert by_name[name]["dropped"], f"{name}: the reset hit no sample in flight"
    assert by_name["reset-mid-pixels"]["dropped"] == [0, 1, 2, 3]
    assert by_name["stream"]["checked"] == clean
    # After the resets the pipeline is as good as new: its timing is the model's for a fresh stream.
    assert abs(report["model_agreement"]["stream_cycles"]) <= MODEL_TOLERANCE, report["model_agreement"]


# -- (4) a random small network per run -----------------------------------------------------------

def _run_seed() -> int:
    seed = os.environ.get("SPIKEFORGE_SIGNOFF_SEED")
    return int(seed) if seed else random.SystemRandom().randrange(2**32)


RUN_SEED = _run_seed()

# Ranges of T and weight widths the draws cover, short/narrow to long/wide.
REGIMES = {"short-narrow": ((1, 3), (2, 5)), "mid": ((4, 9), (6, 10)), "long-wide": ((10, 16), (11, 16))}


@pytest.mark.parametrize("regime", list(REGIMES))
def test_random_network_is_exact(regime, tmp_path, signoff_build_root):
    from spikeforge.hdl.generate import generate
    seed = (RUN_SEED + list(REGIMES).index(regime)) % 2**32
    print(f"network seed {seed} (run seed {RUN_SEED}); replay with SPIKEFORGE_SIGNOFF_SEED={RUN_SEED}")
    rng = np.random.default_rng(seed)
    (t_low, t_high), (w_low, w_high) = REGIMES[regime]
    timesteps, weight_bits = int(rng.integers(t_low, t_high + 1)), int(rng.integers(w_low, w_high + 1))
    hidden = [int(h) for h in rng.integers(1, 13, size=int(rng.integers(1, 3)))]
    sizes = (int(rng.integers(2, 25)), *hidden, int(rng.integers(1, 7)))
    net = random_network(seed, sizes=sizes, timesteps=timesteps, weight_bits=weight_bits,
                         threshold_range=(1, 1 << int(rng.integers(0, 10))), bias_range=(-2000, 2000),
                         round_v0=bool(rng.integers(0, 2)))
    lanes = {layer.name: int(rng.integers(1, layer.out_features + 1)) for layer in net.layers}
    context = f"seed {seed}: sizes {sizes}, T = {timesteps}, {weight_bits}-bit weights, lanes {lanes}"
    print(context)
    generate(net, tmp_path / "rtl", lanes=lanes)
    samples = rng.integers(0, 256, size=(60, sizes[0])).astype(np.uint8)
    samples[0], samples[1] = 0, 255                                   # silence and saturation
    phases = ([{"name": "alone", "samples": [0]}, {"name": "stream", "samples": list(range(60))}]
              + [dict(p, samples=list(range(30))) for p in stall_phases(30, densities=(0.5,), seed=seed)])
    report = verify(net, tmp_path / "rtl", samples, phases=phases, build_root=signoff_build_root, report_path=False)
    print(format_report(report))
    assert report["ok"], f"{context}\n{format_report(report)}"
    _assert_exact(report)
    agreement = report["model_agreement"]
    assert abs(agreement["stream_cycles"]) <= MODEL_TOLERANCE, f"{context}: model vs RTL {agreement}"


# -- (6) DSP-free lanes: the weight scaled by a shifter in logic -----------------------------------

def test_logic_multiplier_digits_exact_at_0_50_90_percent_stalls(demo_net, digits_test, tmp_path_factory,
                                                                 signoff_build_root):
    """``multiplier="logic"`` (what ``build`` picks once a device's DSPs run out) on the demo design's
    folding: the whole digits split bit-exact with no stalls and at 50 % and 90 % input gaps and output
    back-pressure, and on the cycle model (the shifter takes the multiplier's stage)."""
    from spikeforge.demo_hardware import DEMO_LANES_BUDGET
    from spikeforge.hdl.generate import generate
    from spikeforge.ir import golden
    spikes_in = [float(s.mean()) for s in golden.run(demo_net, digits_test.samples).input_spikes()]
    rtl = tmp_path_factory.mktemp("logic") / "rtl"
    design = generate(demo_net, rtl, lanes_budget=DEMO_LANES_BUDGET, spikes_in=spikes_in, multiplier="logic")
    assert design["multiplier"] == "logic" and design["total_lanes"] > 8     # more lanes than an iCE40UP5K's DSPs
    count = len(digits_test.samples)
    phases = ([{"name": "stream", "samples": list(range(count))}]
              + stall_phases(count, densities=(0.5, 0.9), seed=6))
    report = verify(demo_net, rtl, digits_test.samples, digits_test.labels, phases=phases,
                    build_root=signoff_build_root, report_path=False)
    print(format_report(report))
    _assert_exact(report)
    assert [p["name"] for p in report["phases"]] == ["stream", "stalls-50", "stalls-90"]
    assert all(p["checked"] == count for p in report["phases"])
    assert abs(report["model_agreement"]["stream_cycles"]) <= MODEL_TOLERANCE, report["model_agreement"]


# -- the same testbench on Icarus Verilog ---------------------------------------------------------

@pytest.mark.skipif(shutil.which("iverilog") is None or shutil.which("vvp") is None,
                    reason="Icarus Verilog is not installed (Debian/Ubuntu: apt-get install iverilog)")
def test_icarus_agrees_with_verilator_cycle_for_cycle(demo_net, demo_rtl, digits_test, demo_signoff,
                                                      signoff_build_root):
    count = 24
    phases = ([{"name": "alone", "samples": [0]}, {"name": "stream", "samples": list(range(count))}]
              + [dict(p, samples=list(range(12))) for p in stall_phases(12, densities=(0.5,), seed=2)])
    report = verify(demo_net, demo_rtl, digits_test.samples[:count], digits_test.labels[:count], phases=phases,
                    simulator="icarus", build_root=signoff_build_root, report_path=False)
    print(format_report(report))
    _assert_exact(report)
    assert report["simulation"]["simulator"] == "icarus"
    # Same design, same stimulus: the same cycle counts as Verilator's run of the full split.
    verilator_cycles = demo_signoff["per_sample_cycles"][:count - 1]
    assert report["per_sample_cycles"] == verilator_cycles
    assert report["timing"]["latency_cycles"] == demo_signoff["timing"]["latency_cycles"]
