"""Sign-off of a CNN design with cocotb + Verilator (DESIGN.md §4, layer 3): the digits CNN, folded with
channel and tap lanes (column banks), reset in the middle of samples — while pixels load, while the conv
cores accumulate and fire, and under back-pressure — then a clean stream: bit-exact, nothing left
behind in the membrane banks, and the fresh stream on the cycle model.

The whole test split at 0/50/90 % stalls is a measurement, not a test:
``python -m benchmarks.hdl_cycles --conv`` (see README, "Convolutional networks").
"""

import pytest

from spikeforge.sim.signoff import format_report, verify

pytestmark = pytest.mark.verilator      # every test here builds or runs the design in Verilator

#: The cycle model must agree with the RTL within this fraction (issue 13).
MODEL_TOLERANCE = 0.05
#: The digits CNN's folding here: tap lanes on both conv layers (column banks by ox mod 3).
FOLDING = {"conv1": "2x3", "conv2": "16x3", "fc": 1}


@pytest.fixture(scope="module")
def digits_cnn(tmp_path_factory):
    pytest.importorskip("torch")
    # Function-level: the converter and the shipped CNN need torch, an optional heavy dependency.
    from spikeforge.cnn_models import load_digits_cnn
    from spikeforge.converter.convert import convert
    from spikeforge.datasets import load
    from spikeforge.hdl.generate import generate
    train = load("digits", "train")
    net = convert(load_digits_cnn(), train.images, timesteps=4, weight_bits=8, labels=train.labels)
    rtl = tmp_path_factory.mktemp("digits_cnn") / "rtl"
    design = generate(net, rtl, lanes=FOLDING)
    assert [layer.get("taps", 1) for layer in design["layers"]] == [3, 3, 1]
    return net, rtl, load("digits", "test")


def test_reset_mid_sample_then_a_clean_run_is_exact(digits_cnn, signoff_build_root):
    net, rtl, test = digits_cnn
    beats = net.in_features
    clean = 60
    phases = [
        # Mid-pixels: samples 0 and 1 inside the pipeline, sample 2 half loaded.
        {"name": "reset-mid-pixels", "samples": [0, 1, 2, 3], "reset_after_beats": 2 * beats + beats // 2},
        # Mid-computation: every pixel taken, the conv cores accumulating and firing three samples.
        {"name": "reset-mid-compute", "samples": [4, 5, 6], "reset_after_beats": 3 * beats,
         "reset_delay_cycles": 1500},
        # Under back-pressure, with results waiting to be taken.
        {"name": "reset-stalled", "samples": [7, 8, 9, 10], "reset_after_beats": 3 * beats,
         "reset_delay_cycles": 4000, "output_pauses": {"density": 0.9, "seed": 5}},
        {"name": "stream", "samples": list(range(clean))},
    ]
    report = verify(net, rtl, test.samples[:clean], test.labels[:clean], phases=phases,
                    build_root=signoff_build_root, report_path=False)
    print(format_report(report))
    assert report["ok"], format_report(report)
    by_name = {p["name"]: p for p in report["phases"]}
    for phase in report["phases"]:
        assert phase["mismatches"] == 0 and phase["missing"] == 0 and phase["stray"] == 0, phase
    for name in ("reset-mid-pixels", "reset-mid-compute", "reset-stalled"):
        assert by_name[name]["dropped"], f"{name}: the reset hit no sample in flight"
    assert by_name["stream"]["checked"] == clean
    # After the resets the pipeline is as good as new (banks cleared): a fresh stream on the cycle model.
    assert abs(report["model_agreement"]["stream_cycles"]) <= MODEL_TOLERANCE, report["model_agreement"]
