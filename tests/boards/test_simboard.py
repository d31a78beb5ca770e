"""The simulated board (cocotb + Verilator on a pty) driven by `spikeforge run` and the host client: the link at
the iCEBreaker's 3 Mbaud (4 clock cycles a bit), batches, the compact mode and the board's counters."""

import json

import numpy as np
import pytest

from spikeforge import datasets
from spikeforge.boards.host import BoardClient, RunStats
from spikeforge.boards.link import SlipStreamDecoder, Status, batch_frame, info_request, parse_frame
from spikeforge.boards.simboard import SimulatedBoard
from spikeforge.cli import main
from spikeforge.hdl.cycle_model import ACCUMULATE_DRAIN, predict
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


def test_run_command_streams_then_runs_a_batch_split_at_the_buffer(digits_net, work_dir, capsys):
    net_dir = digits_net.save(work_dir / "net")
    data = datasets.load("digits", "test").head(SAMPLES)
    expected = golden.run(digits_net, data.samples)
    with SimulatedBoard(digits_net, work_dir, batch_depth=8) as board:
        # The demo network is T = 8: no compact mode (it needs T <= 4), batches yes.
        assert (board.config.baud, board.config.clk_freq, board.config.code_bits) == (3_000_000, 12_000_000, 0)
        status = main(["run", "--port", board.port, "--dataset", "digits", "--samples", str(SAMPLES),
                       "--network", str(net_dir), "--json", str(work_dir / "run.json"), "--quiet"])
        out = capsys.readouterr().out
        assert status == 0, out
        assert f"golden model: {SAMPLES}/{SAMPLES} agree" in out and "samples/s measured at the host" in out
        assert "samples/s measured by the board" in out and "as the link feeds it" in out
        # 20 samples in batches of at most 8 (the buffer): split 8 + 8 + 4, every one answered. The simulation
        # uploads a batch far slower than the wire would: a timeout it never reaches, so no batch is sent twice
        # (a batch sent twice runs twice and its counters are dropped: test_host.py).
        status = main(["run", "--port", board.port, "--dataset", "digits", "--samples", "20", "--batch", "20",
                       "--timeout", "60", "--network", str(net_dir), "--json", str(work_dir / "batch.json"), "--quiet"])
        out = capsys.readouterr().out
        assert status == 0, out
        assert "golden model: 20/20 agree" in out and "back-to-back batches" in out
        # A batch frame above the buffer is refused, not run.
        with BoardClient(board.port, answer_timeout=60) as client:
            client.serial.write(batch_frame(3, [bytes(64)] * 9))
            decoder, answer = SlipStreamDecoder(), None
            while answer is None:
                for frame in decoder.feed(client.serial.read(64)):
                    answer = parse_frame(frame, client.config)
            assert (answer.seq, answer.status) == (3, Status.REFUSED)
    streamed = json.loads((work_dir / "run.json").read_text())
    np.testing.assert_array_equal(streamed["labels"], expected.labels)
    batched = json.loads((work_dir / "batch.json").read_text())
    np.testing.assert_array_equal(batched["labels"], expected.labels[:20])
    assert [c["samples"] for c in batched["board_counters"]] == [8, 8, 4]
    # Back-to-back on the board: the cycles per sample the cycle model predicts for these samples (within 5 %:
    # a batch of 8 has a pipeline start-up of its own).
    model = predict(digits_net, None, data.samples[:20].reshape(20, -1))
    assert batched["board_cycles_per_sample"] == pytest.approx(model.cycles_per_sample, rel=0.05)
    # Per layer (the printed table and --json): each reading's layers split its busy cycles; a layer is busy at
    # least its spike work and at most its accumulate and fire phases, two cycles a sample to spare (test_link.py).
    assert "counters for 3 layers" in out and "per layer, board cycles per sample" in out
    assert [row["name"] for row in batched["board_layers"]] == ["fc1", "fc2", "fc3"]
    assert all(sum(layer.values()) == c["busy"] for c in batched["board_counters"] for layer in c["layers"])
    for row, predicted in zip(batched["board_layers"], model.layers):
        assert 20 * (predicted["accumulate_cycles"] - ACCUMULATE_DRAIN) <= row["busy"] + row["stalled"], row
        assert row["busy"] <= 20 * (predicted["accumulate_cycles"] + predicted["fire_cycles"] + 2), row
    # A batch frame's overhead is shared by its samples.
    assert batched["bytes_sent"] < streamed["bytes_sent"] * 20 / SAMPLES


def test_recovers_from_a_dropped_byte_in_a_batch_and_in_a_stream(digits_net, work_dir):
    samples = datasets.load("digits", "test").samples[:12].reshape(12, -1)
    # The info request is 3 bytes on the wire; drop a pixel byte of the first batch.
    drop = 3 + 100
    with SimulatedBoard(digits_net, work_dir, drop_rx_byte=drop, batch_depth=8) as board:
        with BoardClient(board.port, window=1, answer_timeout=60) as client:
            stats = RunStats()
            batched = client.classify(samples[:8], stats=stats, batch=8)
            streamed = client.classify(samples[8:], stats=stats)
    expected = golden.run(digits_net, samples)
    results = batched + streamed
    assert [r.label for r in results] == list(expected.labels)
    assert [r.scores for r in results] == [tuple(int(v) for v in s) for s in expected.scores]
    assert stats.errors == {"SHORT": 1} and stats.resent == 8
