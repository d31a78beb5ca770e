"""A conv network on the simulated board (cocotb + Verilator on a pty), driven by `spikeforge run`."""

import json

import numpy as np
import pytest

from spikeforge import datasets
from spikeforge.boards.simboard import SimulatedBoard
from spikeforge.cli import main
from spikeforge.hdl.cycle_model import ACCUMULATE_DRAIN, CONV_DECODE, CONV_DRAIN, predict
from spikeforge.ir import golden
from spikeforge.ir.random_network import random_conv_network

# The simulated board is the design running in Verilator (a Verilator build of the board: minutes on a busy machine).
pytestmark = [pytest.mark.verilator, pytest.mark.slow]

SAMPLES = 8


def test_run_command_classifies_digits_with_a_conv_network(tmp_path, capsys):
    """A conv-pool-dense network on digits-shaped input (1x8x8): every label and score the board sends back
    over the UART equals the golden model's."""
    net = random_conv_network(7, input_shape=(1, 8, 8), stack=(("conv", 4, 3, 1, 1), ("pool", 2, 2), ("dense", 6)),
                              classes=10, timesteps=3, weight_bits=6, threshold_range=(1, 600),
                              bias_range=(-300, 300))
    net_dir = net.save(tmp_path / "net")
    with SimulatedBoard(net, tmp_path / "board") as board:
        status = main(["run", "--port", board.port, "--dataset", "digits", "--samples", str(SAMPLES),
                       "--network", str(net_dir), "--json", str(tmp_path / "run.json"), "--quiet"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert f"golden model: {SAMPLES}/{SAMPLES} agree" in out
    run = json.loads((tmp_path / "run.json").read_text())
    data = datasets.load("digits", "test").head(SAMPLES)
    np.testing.assert_array_equal(run["labels"], golden.run(net, data.samples).labels)
    # Per-layer counters of a conv core (its max pool fused) and the dense output layer: they split the busy cycles,
    # and each layer is busy at least its work and at most its accumulate and readout, two cycles a sample to spare
    # (the cycle model's per-sample form: a conv's words per spike from every input feature's codes).
    stages = [layer for layer in net.layers if layer.kind != "maxpool2d"]
    assert [row["name"] for row in run["board_layers"]] == [layer.name for layer in stages] == ["c1", "d3", "d4"]
    assert all(sum(layer.values()) == c["busy"] for c in run["board_counters"] for layer in c["layers"])
    model = predict(net, None, data.samples.reshape(SAMPLES, -1))
    drains = [CONV_DECODE + CONV_DRAIN if layer.kind == "conv2d" else ACCUMULATE_DRAIN for layer in stages]
    for row, predicted, drain in zip(run["board_layers"], model.layers, drains):
        assert SAMPLES * (predicted["accumulate_cycles"] - drain) <= row["busy"] + row["stalled"], (row, predicted)
        assert row["busy"] <= SAMPLES * (predicted["accumulate_cycles"] + predicted["fire_cycles"] + 2), (row, predicted)
