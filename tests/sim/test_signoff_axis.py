"""Sign-off of the AXI4-Stream top (``generate --axis``) with cocotb + Verilator, and the design checks around it.

The digits MLP (the demo network, folded as the demo folds it) with ``interface="axis"``: 200 samples of the
test split streamed through ``s_axis`` with no stalls, then with random ``tvalid`` gaps and ``tready``
back-pressure of 50 % and 90 %, and ``aresetn`` pulled low in the middle of a sample and mid-computation; every
``m_axis`` beat (label, every score, ``tlast``) against the golden model, and the sink checks that a beat offered
while ``tready`` is low stays offered, unchanged. The whole split is a manual run (README, "AXI4-Stream top").
"""

import json
import shutil

import pytest

from spikeforge.hdl.generate import generate
from spikeforge.ir.random_network import random_network
from spikeforge.sim.fast_engine import verify_fast
from spikeforge.sim.signoff import Design, SignoffError, format_report, stall_phases, verify

SAMPLES = 200


@pytest.fixture(scope="module")
def axis_rtl(demo_net, digits_test, tmp_path_factory):
    from spikeforge.demo_hardware import DEMO_LANES_BUDGET
    from spikeforge.ir import golden
    spikes_in = [float(s.mean()) for s in golden.run(demo_net, digits_test.samples).input_spikes()]
    rtl = tmp_path_factory.mktemp("axis") / "rtl"
    generate(demo_net, rtl, lanes_budget=DEMO_LANES_BUDGET, spikes_in=spikes_in, interface="axis")
    return rtl


@pytest.mark.verilator
def test_digits_axis_top_is_bit_exact_under_stalls_and_resets(demo_net, axis_rtl, digits_test, signoff_build_root):
    beats = demo_net.in_features
    samples, labels = digits_test.samples[:SAMPLES], digits_test.labels[:SAMPLES]
    phases = [{"name": "alone", "samples": [0]}, {"name": "stream", "samples": list(range(SAMPLES))},
              *stall_phases(SAMPLES, densities=(0.5, 0.9), seed=7),
              {"name": "reset-mid-pixels", "samples": [0, 1, 2, 3], "reset_after_beats": 2 * beats + beats // 2,
               "input_pauses": {"density": 0.5, "seed": 11}, "output_pauses": {"density": 0.5, "seed": 12}},
              {"name": "reset-stalled", "samples": [4, 5, 6, 7], "reset_after_beats": 4 * beats,
               "reset_delay_cycles": 300, "output_pauses": {"density": 0.9, "seed": 13}},
              {"name": "after-reset", "samples": list(range(40))}]
    report = verify(demo_net, axis_rtl, samples, labels, phases=phases, build_root=signoff_build_root,
                    report_path=False)
    print(format_report(report))
    assert report["ok"], format_report(report)
    assert report["design"]["interface"] == "axis" and "AXI4-Stream top" in format_report(report)
    by_name = {p["name"]: p for p in report["phases"]}
    for name in ("stream", "stalls-50", "stalls-90"):
        assert by_name[name]["checked"] == SAMPLES and by_name[name]["mismatches"] == 0
        assert by_name[name]["accuracy"] == report["golden_accuracy"]
    assert by_name["reset-mid-pixels"]["dropped"] and by_name["reset-stalled"]["dropped"]
    assert by_name["after-reset"]["checked"] == 40
    # The output register adds a cycle of latency, nothing per sample: the stream top's cycle model holds.
    assert abs(report["model_agreement"]["steady_cycles_per_sample"]) <= 0.05, report["model_agreement"]
    assert by_name["stalls-90"]["cycles"] > 1.5 * by_name["stalls-50"]["cycles"]


def _axis_design_of_stream_verilog(net, tmp_path):
    """An axis design.json beside the stream top's Verilog (module renamed to the name design.json gives)."""
    generate(net, tmp_path / "axis", interface="axis")
    generate(net, tmp_path / "stream")
    shutil.copytree(tmp_path / "axis", tmp_path / "axis2")
    text = (tmp_path / "stream" / "spikeforge_top.v").read_text().replace("module spikeforge_top(",
                                                                           "module spikeforge_axis(")
    (tmp_path / "axis" / "spikeforge_axis.v").write_text(text)
    return tmp_path / "axis"


def test_axis_design_json_beside_stream_verilog_is_refused_before_building(tmp_path):
    net = random_network(2, sizes=(4, 3), timesteps=2, weight_bits=4)
    rtl = _axis_design_of_stream_verilog(net, tmp_path)
    samples = [[0] * 4]
    with pytest.raises(SignoffError, match=r"describes an AXI4-Stream \(interface 'axis'\) top, but module "
                                           r"'spikeforge_axis' in spikeforge_axis.v does not have its ports: "
                                           r"missing aclk, aresetn, s_axis_tdata"):
        verify(net, rtl, samples, build_root=tmp_path / "build", report_path=False)
    assert not (tmp_path / "build").exists()
    # ... and a stream design.json beside AXI4-Stream Verilog.
    text = (tmp_path / "axis2" / "spikeforge_axis.v").read_text().replace("module spikeforge_axis(",
                                                                          "module spikeforge_top(")
    (tmp_path / "stream" / "spikeforge_top.v").write_text(text)
    with pytest.raises(SignoffError, match=r"describes a stream \(DESIGN.md §3\) top.*missing clk, rst, pixels__valid"):
        verify(net, tmp_path / "stream", samples, build_root=tmp_path / "build", report_path=False)


def test_a_wider_m_axis_than_design_json_says_is_refused(tmp_path):
    net = random_network(2, sizes=(4, 3), timesteps=2, weight_bits=4)
    generate(net, tmp_path / "rtl", interface="axis")
    path = tmp_path / "rtl" / "design.json"
    info = json.loads(path.read_text())
    info["axis"]["m_axis_tdata_bits"] += 8
    path.write_text(json.dumps(info))
    design = Design.load(tmp_path / "rtl", interfaces=("stream", "axis"))
    with pytest.raises(SignoffError, match=rf"m_axis_tdata is output \[{info['axis']['m_axis_tdata_bits'] - 8}\] "
                                           rf"where output \[{info['axis']['m_axis_tdata_bits']}\] is expected"):
        design.check_ports()


def test_the_fast_engine_refuses_an_axis_design(tmp_path):
    """The compiled harness drives only the stream top: it says so (an InputError, exit 2 from the CLI)."""
    net = random_network(2, sizes=(4, 3), timesteps=2, weight_bits=4)
    generate(net, tmp_path / "rtl", interface="axis")
    with pytest.raises(SignoffError, match=r"holds an AXI4-Stream top .* drives only the stream top"):
        verify_fast(net, tmp_path / "rtl", [[0] * 4])
