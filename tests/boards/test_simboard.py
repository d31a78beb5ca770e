"""The simulated board (cocotb + Verilator on a pty) driven by `spikeforge run` and the host client."""

import numpy as np
import pytest

from spikeforge.boards.host import BoardClient, RunStats
from spikeforge.boards.link import sample_frame
from spikeforge.boards.simboard import SimulatedBoard
from spikeforge.cli import main
from spikeforge.ir import golden

pytestmark = pytest.mark.verilator      # the simulated board is the design running in Verilator

SAMPLES = 24


@pytest.fixture(scope="module")
def digits_net():
    from spikeforge.demo import demo_network
    return demo_network()


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("simboard")


def test_run_command_classifies_digits_on_the_simulated_board(digits_net, work_dir, capsys):
    from spikeforge import datasets
    net_dir = digits_net.save(work_dir / "net")
    with SimulatedBoard(digits_net, work_dir) as board:
        status = main(["run", "--port", board.port, "--dataset", "digits", "--samples", str(SAMPLES),
                       "--network", str(net_dir), "--json", str(work_dir / "run.json")])
    out = capsys.readouterr().out
    assert status == 0, out
    assert f"golden model: {SAMPLES}/{SAMPLES} agree" in out
    assert "samples/s measured at the host" in out
    import json
    labels = json.loads((work_dir / "run.json").read_text())["labels"]
    data = datasets.load("digits", "test").head(SAMPLES)
    np.testing.assert_array_equal(labels, golden.run(digits_net, data.samples).labels)


def test_recovers_from_a_dropped_byte(digits_net, work_dir):
    from spikeforge import datasets
    samples = datasets.load("digits", "test").samples[:6].reshape(6, -1)
    # The info request is 3 bytes on the wire; drop a pixel byte in the middle of the second sample.
    drop = 3 + len(sample_frame(0, samples[0])) + 30
    with SimulatedBoard(digits_net, work_dir, drop_rx_byte=drop) as board:
        with BoardClient(board.port, window=1) as client:
            stats = RunStats()
            results = client.classify(samples, stats=stats)
    expected = golden.run(digits_net, samples)
    assert [r.label for r in results] == list(expected.labels)
    assert [r.scores for r in results] == [tuple(int(v) for v in s) for s in expected.scores]
    assert stats.resent == 1 and stats.errors == {"SHORT": 1}
