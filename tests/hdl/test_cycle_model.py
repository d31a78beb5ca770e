"""The cycle model (hdl/cycle_model.py) against the RTL: beats, FIFOs filling, one and two banks.

The fast tests simulate tiny networks in Amaranth and want every result beat on its predicted cycle;
the Verilator test runs a 784-input MLP on Fashion-MNIST images (the encoder's sweep bunches its spikes
in the image's centre) through the compiled harness and wants the model within 5 %.
"""

from __future__ import annotations

import numpy as np
import pytest

from spikeforge.hdl import Accelerator
from spikeforge.hdl.cycle_model import predict, sweep_beats
from spikeforge.hdl.folding import auto_folding
from spikeforge.hdl.generate import generate
from spikeforge.ir import golden
from spikeforge.ir.random_network import random_network
from spikeforge.sim.fast_engine import run_fast
from spikeforge.testing.hdl_harness import simulate_accelerator


def test_sweep_beats_counts_each_chunks_spikes_step_by_step_msb_first():
    codes = np.array([[0b101, 0b011, 0b000], [0b111, 0b000, 0b100]])
    # lanes 2: chunk 0 = neurons 0, 1; chunk 1 = neuron 2 (and a padding lane); positions t*2 + c.
    assert sweep_beats(codes, 2, 3).tolist() == [[1, 0, 1, 0, 2, 0], [1, 1, 1, 0, 1, 0]]
    assert sweep_beats(codes, 3, 3).tolist() == [[1, 1, 2], [2, 1, 1]]


@pytest.mark.parametrize("lanes, banks, depth", [
    ({"fc1": 1, "fc2": 4}, 2, 2),        # a 36-position fire sweep into a 2-deep FIFO: it fills and stalls
    ({"fc1": 12, "fc2": 1}, 1, 4),       # one bank: each layer's readout follows its accumulate
    ({"fc1": 1, "fc2": 4}, 1, 2),        # one bank, and the readout stalls on the full FIFO before it frees it
    ({"fc1": 3, "fc2": 2}, 2, 16),
])
def test_every_result_lands_on_its_predicted_cycle(lanes, banks, depth):
    net = random_network(5, sizes=(24, 12, 4), timesteps=3, weight_bits=6, threshold_range=(20, 200))
    _assert_results_on_predicted_cycles(net, np.random.default_rng(1).integers(0, 256, size=(6, 24)), lanes, banks,
                                        depth)


def _assert_results_on_predicted_cycles(net, samples, lanes, banks, depth):
    """The Amaranth simulation's result beats land on exactly the cycles the beat-by-beat model predicts."""
    dut = Accelerator(net, lanes, membrane_banks=banks, fifo_depth=depth)
    run = simulate_accelerator(dut, samples)
    model = predict(net, dut.plan.folding, samples, membrane_banks=banks, fifo_depth=depth)
    assert np.array_equal(np.array(run.result_cycles), model.result_cycles), \
        (run.result_cycles, model.result_cycles.tolist())


@pytest.mark.parametrize("seed, lanes, depth", [
    (850, {"fc1": 4, "fc2": 4, "fc3": 1}, 2),
    pytest.param(846, {"fc1": 1, "fc2": 1, "fc3": 4}, 2, marks=pytest.mark.slow),
    (764, {"fc1": 2, "fc2": 2, "fc3": 4}, 4),
])
def test_one_bank_three_layers_land_on_their_predicted_cycles(seed, lanes, depth):
    # A middle layer with one bank frees it when its sweep's final beat reaches the offering stage, which a full
    # FIFO does not delay when that beat follows the previous one: the model was 1-9 cycles late here.
    net = random_network(seed, sizes=(24, 12, 8, 4), timesteps=3, weight_bits=6, threshold_range=(20, 200))
    _assert_results_on_predicted_cycles(net, np.random.default_rng(seed).integers(0, 256, size=(6, 24)), lanes, 1,
                                        depth)


def test_samples_and_their_golden_result_give_the_same_prediction():
    net = random_network(7, sizes=(30, 16, 5), timesteps=4)
    samples = np.random.default_rng(2).integers(0, 256, size=(12, 30))
    from_samples = predict(net, {"fc1": 2, "fc2": 1}, samples)
    from_result = predict(net, {"fc1": 2, "fc2": 1}, golden.run(net, samples))
    assert np.array_equal(from_samples.result_cycles, from_result.result_cycles)
    assert from_samples.latency == from_result.latency


def test_counts_alone_still_predict_and_a_single_sample_repeats():
    net = random_network(3, sizes=(20, 10, 3), timesteps=4)
    model = predict(net, {"fc1": 5, "fc2": 3}, [40, 12])
    assert len(model.result_cycles) == 8
    # Two banks, constant work: the slowest stage (fc1's accumulate: 40 spikes x 2 chunks + 4).
    assert model.cycles_per_sample == pytest.approx(84)


@pytest.mark.verilator
@pytest.mark.slow
def test_a_784_input_mlp_on_fashion_mnist_is_on_the_model_in_verilator(tmp_path):
    """784-32-16-10 at T = 4 on 24 Fashion-MNIST test images (the encoder's sweep runs over the image
    row by row, its spikes bunch in the centre), balanced for 12 lanes on the measured spikes: the
    compiled harness's result beats against the model, within 5 % (exact in practice)."""
    datasets = pytest.importorskip("spikeforge.datasets")
    net = random_network(17, sizes=(784, 32, 16, 10), timesteps=4, weight_bits=8,
                         threshold_range=(200, 1000), bias_range=(-100, 100))
    images = datasets.load("fashion-mnist", "test").samples[:24].reshape(24, -1)
    spikes = [float(s.mean()) for s in golden.run(net, images).input_spikes()]
    folding = auto_folding(net, lanes_budget=12, spikes_in=spikes)
    generate(net, tmp_path / "rtl", lanes=folding.config())
    result = run_fast(tmp_path / "rtl", images, build_root=tmp_path / "build", progress=False)
    model = predict(net, folding, images)
    measured = (result.result_cycle[-1] - result.result_cycle[0]) / (len(images) - 1)
    assert abs(measured / model.cycles_per_sample - 1) < 0.05, (measured, model.cycles_per_sample)
    assert abs(result.latency_cycles / model.latency - 1) < 0.05, (result.latency_cycles, model.latency)
    offsets = (result.result_cycle - result.first_beat[0]) - model.result_cycles
    assert np.max(np.abs(offsets)) <= 0.05 * model.result_cycles[-1], offsets
