"""`spikeforge simboard` + `spikeforge run` at its defaults, as a user runs them (two processes, a real pty)."""

import re
import signal
import subprocess
import sys

import pytest

from spikeforge import cli
from spikeforge.ir.errors import EXIT_USAGE
from spikeforge.ir.random_network import random_network

pytestmark = pytest.mark.verilator      # the simulated board is the board design running in Verilator


def test_simboard_serves_run_at_its_defaults_and_stops_cleanly_on_sigterm(tmp_path, signoff_build_root, capsys):
    from spikeforge.demo import demo_network
    net_dir = demo_network().save(tmp_path / "net")
    other = random_network(1, sizes=(64, 16, 10), timesteps=demo_network().timesteps)
    other.input_shape = (8, 8)
    other_dir = other.save(tmp_path / "other")
    work = tmp_path / "board"
    board = subprocess.Popen([sys.executable, "-m", "spikeforge", "simboard", str(net_dir), "-o", str(work),
                              "--build-dir", str(signoff_build_root)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in board.stdout:
            found = re.search(r"spikeforge run --port (\S+) --network", line)
            if found:
                port = found.group(1)
                break
        assert port, board.stderr.read()
        # The defaults: no --baud, no --timeout.
        status = cli.main(["run", "--port", port, "--samples", "8", "--network", str(net_dir), "--build", str(work),
                           "--quiet"])
        out = capsys.readouterr().out
        assert status == 0 and "golden model: 8/8 agree" in out and "not identified" not in out, out
        assert "12 MHz, 3000000 baud" in out and "samples/s measured by the board" in out, out
        # A network the board was not made from is refused before any sample is sent.
        assert cli.main(["run", "--port", port, "--network", str(other_dir), "--build", str(work)]) == EXIT_USAGE
        assert "their fingerprints differ" in capsys.readouterr().err
        board.send_signal(signal.SIGTERM)
        _, err = board.communicate(timeout=120)
    finally:
        board.kill()
    assert board.returncode == 0 and "simulated board stopped" in err, err
    assert not list(work.glob("run-*")), "the run's folder is removed"
