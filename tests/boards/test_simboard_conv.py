"""A conv network on the simulated board (cocotb + Verilator on a pty), driven by `spikeforge run`."""

import json

import numpy as np
import pytest

from spikeforge import datasets
from spikeforge.boards.simboard import SimulatedBoard
from spikeforge.cli import main
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
    labels = json.loads((tmp_path / "run.json").read_text())["labels"]
    data = datasets.load("digits", "test").head(SAMPLES)
    np.testing.assert_array_equal(labels, golden.run(net, data.samples).labels)
