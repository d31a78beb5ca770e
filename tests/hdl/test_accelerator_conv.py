# amaranth: UnusedElaboratable=no
"""Conv networks through the whole Accelerator in Amaranth's simulator, bit-exact against the golden model.

The conv cores (:class:`~spikeforge.hdl.conv_layer.ConvILIF`, max pool fused) sit in the same pipeline
as the dense cores; labels and scores must equal the golden model's, and the steady-state cycles per
sample the cycle model's within 5 %.
"""

import json

import numpy as np
import pytest

from spikeforge.cli import main
from spikeforge.hdl import Accelerator
from spikeforge.hdl.conv_plan import ConvLayerPlan
from spikeforge.hdl.cycle_model import predict
from spikeforge.hdl.folding import FoldingError, auto_folding, layer_cycles, resolve_folding
from spikeforge.hdl.generate import generate
from spikeforge.hdl.plan import plan_network
from spikeforge.ir import golden
from spikeforge.ir.errors import InputError
from spikeforge.ir.random_network import random_conv_network
from spikeforge.sim.signoff import format_report, verify
from spikeforge.testing.hdl_harness import simulate_accelerator

STACK = (("conv", 4, 3, 1, 1), ("pool", 2, 2), ("conv", 6, 3, 1, 1), ("pool", 2, 2), ("dense", 5))


def _random_net(seed, timesteps=3, stack=STACK, input_shape=(1, 8, 8)):
    return random_conv_network(seed, input_shape=input_shape, stack=stack, classes=3, timesteps=timesteps,
                               weight_bits=6, threshold_range=(1, 600), bias_range=(-300, 300))


def _check(net, samples, folding=None, banks=2, **kwargs):
    dut = Accelerator(net, folding, membrane_banks=banks)
    run = simulate_accelerator(dut, samples, **kwargs)
    expected = golden.run(net, samples)
    np.testing.assert_array_equal(run.scores, expected.scores)
    np.testing.assert_array_equal(run.labels, expected.labels)
    return run, dut


def _spacing(cycles):
    return (cycles[-1] - cycles[0]) / (len(cycles) - 1)


@pytest.mark.parametrize("seed,folding,banks", [
    (3, {"c1": 3, "c3": 4, "d5": 2}, 2),
    pytest.param(4, {"c1": 4, "c3": 1, "d5": 5}, 2, marks=pytest.mark.slow),     # ~8 s each
    pytest.param(5, {"c1": 1, "c3": 6, "d5": 1}, 1, marks=pytest.mark.slow),
])
def test_random_conv_pool_conv_pool_dense_is_bit_exact_and_on_the_cycle_model(seed, folding, banks):
    net = _random_net(seed)
    samples = np.random.default_rng(seed).integers(0, 256, size=(5, net.in_features))
    samples[0] = 0
    run, dut = _check(net, samples, folding, banks)
    assert [type(p).__name__ for p in dut.plan.layers] == ["ConvLayerPlan", "ConvLayerPlan", "LayerPlan",
                                                           "LayerPlan"]
    model = predict(net, dut.folding, samples, fifo_depth=dut.fifo_depth, membrane_banks=banks)
    measured, predicted = _spacing(run.result_cycles), _spacing(model.result_cycles)
    assert abs(measured - predicted) <= 0.05 * measured, (measured, predicted)


@pytest.mark.parametrize("seed,folding,banks", [
    (9, {"c1": "4x3", "c3": "3x2", "d5": 2}, 2),
    pytest.param(10, {"c1": (2, 2), "c3": "6x3", "d5": 1}, 1, marks=pytest.mark.slow),
])
def test_tap_lanes_in_the_pipeline_are_bit_exact_and_on_the_cycle_model(seed, folding, banks):
    """Conv cores with column banks in the whole pipeline; the model's adders count lanes x taps."""
    net = _random_net(seed)
    samples = np.random.default_rng(seed).integers(0, 256, size=(4, net.in_features))
    run, dut = _check(net, samples, folding, banks)
    assert [p.taps for p in dut.plan.layers[:2]] == [dut.folding.tap_lanes("c1"), dut.folding.tap_lanes("c3")]
    model = predict(net, dut.folding, samples, fifo_depth=dut.fifo_depth, membrane_banks=banks)
    measured, predicted = _spacing(run.result_cycles), _spacing(model.result_cycles)
    assert abs(measured - predicted) <= 0.05 * measured, (measured, predicted)
    adders = {entry["name"]: entry["adders"] for entry in model.layers}
    assert adders == {name: dut.folding[name] * dut.folding.tap_lanes(name) for name in adders}
    assert model.adder_utilisation == pytest.approx(model.useful_additions / (sum(adders.values()) *
                                                                              model.cycles_per_sample))


def test_conv_with_tap_lanes_stride_2_no_pool_into_dense_with_stalls():
    """Stride 2, a non-square kernel, padding 1, no pool, tap lanes: input gaps and output stalls."""
    net = _random_net(11, timesteps=2, stack=(("conv", 5, (2, 3), 2, 1), ("dense", 4)), input_shape=(2, 7, 6))
    samples = np.random.default_rng(11).integers(0, 256, size=(4, net.in_features))
    _check(net, samples, {"c1": "3x2", "d2": 3}, gap=0.3, stall=0.3)


def test_conv_without_pool_and_dense_directly_after_conv_with_stalls():
    """A stride-2 conv without a pool feeding a dense layer; input gaps and output stalls."""
    net = _random_net(8, timesteps=2, stack=(("conv", 5, 3, 2, 0), ("dense", 4)), input_shape=(2, 7, 6))
    samples = np.random.default_rng(8).integers(0, 256, size=(4, net.in_features))
    _check(net, samples, {"c1": 2, "d2": 3}, gap=0.3, stall=0.3)


@pytest.fixture(scope="module")
def digits_cnn_net():
    pytest.importorskip("torch")
    # Function-level: the converter and the shipped CNN need torch, an optional heavy dependency.
    from spikeforge.cnn_models import load_digits_cnn
    from spikeforge.converter.convert import convert
    from spikeforge.datasets import load
    train = load("digits", "train")
    net = convert(load_digits_cnn(), train.images, timesteps=4, weight_bits=8, labels=train.labels)
    return net, load("digits", "test")


@pytest.mark.slow
def test_digits_cnn_ten_test_samples_bit_exact(digits_cnn_net):
    net, test = digits_cnn_net
    samples = np.asarray(test.images[:10]).reshape(10, -1)
    run, dut = _check(net, samples)
    assert any(isinstance(p, ConvLayerPlan) for p in dut.plan.layers)
    model = predict(net, dut.folding, samples, fifo_depth=dut.fifo_depth)
    measured, predicted = _spacing(run.result_cycles), _spacing(model.result_cycles)
    assert abs(measured - predicted) <= 0.05 * measured, (measured, predicted)


def test_first_conv_gets_encoder_lanes_that_divide_the_width():
    net = _random_net(6, input_shape=(1, 6, 10), stack=(("conv", 3, 3, 1, 1), ("dense", 4)))
    for budget in (2, 5, 13):
        plan = plan_network(net, resolve_folding(net, {"c1": min(3, budget)}))
        assert 10 % plan.encoder_lanes == 0
        assert plan.layers[0].input_map.group == plan.encoder_lanes


def test_dense_after_conv_reads_position_major_events():
    net = _random_net(7, stack=(("conv", 3, 3, 1, 1), ("pool", 2, 2), ("dense", 4)))
    plan = plan_network(net, resolve_folding(net, {"c1": 2, "d3": 4}))
    conv, dense = plan.layers[0], plan.layers[1]
    assert (dense.in_group, dense.in_chunks) == (conv.lanes, conv.out_chunks)
    assert len(dense.weight_words) == conv.out_chunks * conv.lanes * dense.chunks


def test_pool_name_and_conv_lanes_are_checked_by_name():
    net = _random_net(3)
    with pytest.raises(FoldingError, match=r"layer 'p2' is a max pool: it is fused into the core of 'c1' "
                                           r"and takes no lanes"):
        Accelerator(net, {"p2": 2})
    with pytest.raises(FoldingError, match=r"layer 'c1': lanes 5 is not in 1..4 \(its output channels\)"):
        Accelerator(net, {"c1": 5, "c3": 1, "d5": 1})


def test_unsupported_conv_networks_are_refused_naming_the_layer():
    conv_out = random_conv_network(2, stack=(("conv", 3, 3, 1, 1),), output=("conv", 2, 3, 1, 1))
    with pytest.raises(InputError, match=r"layer 'c2' is a conv2d output layer; the hardware generator has no "
                                         r"conv output core"):
        Accelerator(conv_out)
    pool_first = random_conv_network(2, stack=(("pool", 2, 2), ("dense", 4)))
    with pytest.raises(InputError, match=r"layer 'p1' is a maxpool2d layer that is the first layer"):
        predict(pool_first, None, [1.0] * len(pool_first.layers))


@pytest.mark.verilator
@pytest.mark.parametrize("banks", [2, 1])
def test_digits_cnn_verilator_signoff_with_stalls(digits_cnn_net, tmp_path, banks):
    """`generate` + `verify` (cocotb + Verilator) on the digits CNN: bit-exact alone, streamed and under
    25/50/90 % random stalls; the cycle model within 5 % of the measured stream. Two membrane banks and
    one (early release: the next sample accumulates while the pooled readout fires its later steps)."""
    net, test = digits_cnn_net
    generate(net, tmp_path / "rtl", membrane_banks=banks)
    report = verify(net, tmp_path / "rtl", test.images[:40], test.labels[:40], stalls="random",
                    build_root=tmp_path / "build", report_path=False)
    assert report["ok"], format_report(report)
    assert [p["name"] for p in report["phases"]] == ["alone", "stream", "stalls-25", "stalls-50", "stalls-90"]
    for phase in report["phases"]:
        assert phase["mismatches"] == 0 and phase["missing"] == 0 and phase["stray"] == 0, phase
    agreement = report["model_agreement"]
    # Throughput is the criterion (5 %). The first sample's latency (alone in an idle pipeline) is
    # modelled less closely for conv layers: measured -5.06 % on this design; allowed 6 %, a known gap.
    assert abs(agreement["stream_cycles"]) <= 0.05 and abs(agreement["latency_cycles"]) <= 0.06, agreement


def test_automatic_folding_gives_conv_layers_channel_lanes_and_pools_none():
    net = _random_net(3)
    folding = auto_folding(net, lanes_budget=8)
    assert list(folding.lanes) == ["c1", "c3", "d5", "d6"]
    assert 1 <= folding["c1"] <= 4 and 1 <= folding["c3"] <= 6 and folding.total_lanes() <= 8
    spikes = [100.0] * len(net.layers)
    # c1: 3x3 stride 1 -> 9 taps per spike, 2 chunks at 2 lanes; the sweep P·chunks·K + (T-1)·P·chunks.
    assert layer_cycles(net, 0, 2, spikes) == max(100 * 9 * 2, 16 * 2 * 4 + 2 * 16 * 2)
    assert layer_cycles(net, 0, 2, spikes, membrane_banks=1) == 100 * 9 * 2 + 16 * 2 * 4 + 2 * 16 * 2


def test_cli_generate_takes_conv_lanes_by_name_and_refuses_a_pool_name(tmp_path, capsys):
    net = _random_net(3)
    net.save(tmp_path / "net")
    assert main(["generate", str(tmp_path / "net"), "-o", str(tmp_path / "bad"), "--lanes", "p2=2"]) == 2
    assert "layer 'p2' is a max pool" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "net"), "-o", str(tmp_path / "rtl"), "--lanes", "c1=4,c3=3"]) == 0
    capsys.readouterr()
    design = json.loads((tmp_path / "rtl" / "design.json").read_text())
    assert design["folding"]["c1"] == 4 and design["folding"]["c3"] == 3
