"""What a user can get wrong, through the CLI as they would: each is exit 2 with a message naming it.

Damaged or foreign model files, factories that fail, state dicts for another model, samples that are
not raw bytes, impossible option values, a board made from another network. No traceback, no exit 4
(a bug), and the message names the bad value and what is accepted.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from spikeforge import cli
from spikeforge.boards.host import BOARD_BUILD_FORMAT, PATCHED_BITSTREAM_FORMAT, board_record, check_board_shape
from spikeforge.boards.link import LinkConfig
from spikeforge.datasets import load as load_dataset
from spikeforge.ir.errors import EXIT_TERMINATED, EXIT_USAGE, InputError
from spikeforge.ir.fingerprint import identity
from spikeforge.ir.network import load as load_network
from spikeforge.ir.random_network import random_network

torch = pytest.importorskip("torch")


class Tiny(torch.nn.Module):
    """An 8x8-digits classifier small enough to convert in a blink."""

    def __init__(self, inputs=64):
        super().__init__()
        self.fc1 = torch.nn.Linear(inputs, 16)
        self.fc2 = torch.nn.Linear(16, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good and bad model, state-dict and calibration files, named by what they are."""
    root = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    model = Tiny()
    torch.save(model, root / "good.pt")
    torch.save(model.state_dict(), root / "state.pt")
    torch.save(torch.nn.Linear(3, 3).state_dict(), root / "other_state.pt")
    torch.save([1, 2], root / "list.pt")
    torch.save(Tiny(784), root / "wide.pt")
    (root / "empty.pt").write_bytes(b"")
    good = (root / "good.pt").read_bytes()
    (root / "truncated.pt").write_bytes(good[: len(good) // 2])
    (root / "garbage.pt2").write_bytes(bytes(range(256)) * 4)
    (root / "model.onnx").write_bytes(b"\x08\x07onnx")
    (root / "factory.py").write_text(
        "import torch\n"
        "def make():\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(),"
        " torch.nn.Linear(16, 10))\n"
        "def boom():\n    raise RuntimeError('factory exploded')\n"
        "def three():\n    return 3\n"
        "def needs(x):\n    return x\n")
    (root / "broken.py").write_text("def make(:\n")
    raw = load_dataset("digits", "train").samples[:100]
    np.save(root / "raw.npy", raw)
    np.save(root / "scaled.npy", raw.astype(np.float32) / 255)
    np.save(root / "signed.npy", raw.astype(np.int16) - 128)
    np.save(root / "wide.npy", raw.astype(np.int16) * 4)
    (root / "empty.npy").write_bytes(b"")
    test = load_dataset("digits", "test")
    np.savez(root / "mine.npz", x_test=test.samples[:20], y_test=test.labels[:20])
    np.savez(root / "mine_scaled.npz", x=test.samples[:20] / 255.0, y=test.labels[:20])
    np.savez(root / "mine_nolabels.npz", x=test.samples[:20])
    return root


@pytest.fixture(scope="module")
def network_dir(tmp_path_factory):
    net = random_network(0, sizes=(64, 12, 10), timesteps=4)
    net.input_shape = (8, 8)                      # digits' own shape (what a converted digits model records)
    return net.save(tmp_path_factory.mktemp("net") / "net")


def _fails(argv, message, capsys):
    status = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert status == EXIT_USAGE, err
    assert message in err and "Traceback" not in err and "internal error" not in err, err
    return err


@pytest.mark.parametrize("model, message", [
    ("empty.pt", "empty.pt is not a readable torch file (EOFError"),
    ("truncated.pt", "truncated.pt is not a readable torch file"),
    ("garbage.pt2", "garbage.pt2 is not a readable torch.export program (not a zip archive"),
    ("model.onnx", "model.onnx: ONNX models are not supported; export the PyTorch model with torch.export.save"),
    ("list.pt", "list.pt holds a list, not a torch.nn.Module"),
    ("state.pt", "state.pt holds a state dict, not a module: pass file.py:factory --state-dict"),
    ("raw.npy", "raw.npy: .npy is not a model file"),
    ("factory.py", "factory.py: name the function that makes the model, as factory.py:factory"),
    ("factory.py:boom", "factory.py:boom: calling boom() failed (RuntimeError: factory exploded)"),
    ("factory.py:three", "what factory.py:three returned is a int, not a torch.nn.Module"),
    ("factory.py:needs", "calling needs() failed (TypeError: needs() missing 1 required positional argument"),
    ("factory.py:absent", "factory.py has no callable 'absent'"),
    ("broken.py:make", "broken.py: importing it failed (SyntaxError"),
])
def test_a_model_file_that_cannot_be_used_is_named(files, tmp_path, capsys, monkeypatch, model, message):
    monkeypatch.chdir(files)
    _fails(["convert", model, "--calibrate", "raw.npy", "-o", tmp_path / "net"], message, capsys)
    assert not (tmp_path / "net").exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("state, message", [
    ("other_state.pt", "--state-dict other_state.pt does not fit the model factory.py:make makes: Error(s) in "
                       "loading state_dict"),
    ("good.pt", "good.pt holds more than tensors (a pickled module or other objects)"),
    ("list.pt", "--state-dict list.pt holds a list, not a state dict"),
    ("empty.pt", "empty.pt is not a readable torch file"),
    ("missing.pt", "missing.pt: no such file (expected a state dict)"),
])
def test_a_wrong_state_dict_is_named(files, tmp_path, capsys, monkeypatch, state, message):
    monkeypatch.chdir(files)
    _fails(["convert", "factory.py:make", "--state-dict", state, "--calibrate", "raw.npy", "-o", tmp_path / "n"],
           message, capsys)


@pytest.mark.parametrize("calibration, message", [
    ("scaled.npy", "the calibration samples in scaled.npy are not raw bytes: values span 0..1 (float32), they "
                   "look scaled already; spikeforge takes the raw bytes 0..255"),
    ("signed.npy", "values span -128..127 (int16), outside 0..255"),
    ("wide.npy", "values span 0..1020 (int16), outside 0..255"),
    ("empty.npy", "empty.npy is not a readable .npy array of raw samples"),
])
def test_calibration_samples_that_are_not_raw_bytes_are_refused_with_the_scale_hint(files, tmp_path, capsys,
                                                                                    monkeypatch, calibration,
                                                                                    message):
    monkeypatch.chdir(files)
    err = _fails(["convert", "good.pt", "--calibrate", calibration, "-o", tmp_path / "n"], message, capsys)
    if "raw bytes" in message:
        assert "--input-scale 255" in err


def test_eval_with_a_model_of_another_input_size_is_refused_in_one_line(files, network_dir, capsys):
    err = _fails(["eval", network_dir, "--samples", "5", "--model", files / "wide.pt"],
                 "failed: mat1 and mat2 shapes cannot be multiplied", capsys)
    assert len(err.strip().splitlines()) == 1 and "While executing" not in err, err


@pytest.mark.parametrize("argv, message", [
    (["--input-scale", "-1"], "--input-scale -1 must be a finite number > 0"),
    (["--input-scale", "nan"], "--input-scale nan must be a finite number > 0"),
    (["--input-scale", "255"], "--input-scale goes with --model"),
    (["--dataset", "{files}/mine_scaled.npz"], "'x' are not raw bytes: values span 0..1 (float64), they look "
                                               "scaled already"),
    (["--dataset", "{files}/mine_nolabels.npz"], "holds x; a dataset .npz holds x_train/y_train and x_test/y_test"),
])
def test_eval_refuses_bad_options_and_scaled_datasets(files, network_dir, capsys, argv, message):
    _fails(["eval", network_dir, *[a.format(files=files) for a in argv]], message, capsys)


def test_a_dataset_npz_of_raw_bytes_evaluates(files, network_dir, capsys):
    assert cli.main(["eval", str(network_dir), "--dataset", str(files / "mine.npz")]) == 0
    assert "dataset mine/test, 20 samples" in capsys.readouterr().out


def test_the_api_refuses_a_dataset_that_is_not_raw_bytes(network_dir):
    from spikeforge.evaluate import evaluate
    data = load_dataset("digits", "test").head(10)
    data.samples = data.samples / 255.0
    with pytest.raises(InputError, match="look scaled already.*--input-scale 255"):
        evaluate(load_network(network_dir), data)


def test_generate_refuses_a_bias_of_minus_2_to_the_63(network_dir, tmp_path, capsys):
    arrays = dict(np.load(network_dir / "weights.npz"))
    arrays["fc1.bias"] = arrays["fc1.bias"].copy()
    arrays["fc1.bias"][0] = -2**63
    broken = tmp_path / "net"
    broken.mkdir()
    for name in ("network.json", "rom"):
        os.symlink(network_dir / name, broken / name)
    np.savez(broken / "weights.npz", **arrays)
    _fails(["generate", broken, "-o", tmp_path / "rtl"], "bias -9223372036854775808 is out of range: |bias| must "
                                                         "be at most 2305843009213693952 (2^61)", capsys)
    assert not (tmp_path / "rtl").exists()


@pytest.mark.parametrize("argv, message", [
    (["--lanes", "fc9=2"], "folding names layer 'fc9', which does not exist; layers: fc1, fc2"),
    (["--lanes", "fc1=0"], "layer 'fc1': lanes 0 is not in 1..12"),
    (["--timesteps", ""], "--timesteps names no timesteps"),
    (["--samples", "100000000"], "--samples 100000000: without --dataset at most 100,000 random stimuli"),
])
def test_report_refuses_impossible_options(network_dir, tmp_path, capsys, argv, message):
    _fails(["report", network_dir, "-o", tmp_path / "r", *argv], message, capsys)
    assert not (tmp_path / "r").exists()


def _board_record(tmp_path, net, kind=BOARD_BUILD_FORMAT, name="report.json"):
    folder = tmp_path / "board"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(json.dumps({"format": kind, "version": 1, "network": identity(net)}))
    return folder


@pytest.mark.parametrize("argv, message", [
    (["--timeout", "0"], "--timeout 0 must be > 0 seconds"),
    (["--baud", "0"], "--baud 0 must be a positive integer"),
    (["--build", "somewhere"], "--build goes with --network"),
    (["--samples", "0"], "sample count 0 must be >= 1"),
])
def test_run_refuses_impossible_options_before_opening_the_port(capsys, argv, message):
    _fails(["run", "--port", "/dev/no-such-port", *argv], message, capsys)


@pytest.mark.parametrize("argv, message", [
    (["demo", "-T", "0"], "--timesteps 0 is out of range; T is 1..16"),
    (["demo", "--cnn", "-T", "17"], "--timesteps 17 is out of range"),
    (["build", "NET", "--board", "icebreaker", "-o", "OUT", "--baud", "0"], "--baud: baud rate 0 is not a positive integer"),
    (["verify", "NET", "--rtl", "RTL", "--clock-mhz", "nan"], "--clock-mhz nan must be a finite frequency > 0"),
    (["verify", "NET", "--rtl", "RTL", "--clock-mhz", "inf"], "--clock-mhz inf must be a finite frequency > 0"),
])
def test_demo_build_and_verify_refuse_impossible_options_before_any_work(network_dir, tmp_path, capsys, argv,
                                                                          message):
    replace = {"NET": network_dir, "OUT": tmp_path / "out", "RTL": tmp_path / "rtl"}
    _fails([replace.get(a, a) for a in argv], message, capsys)
    assert not (tmp_path / "out").exists()


def test_run_refuses_a_board_built_for_another_network_before_sending_anything(network_dir, tmp_path, capsys):
    other = random_network(1, sizes=(64, 12, 10), timesteps=4)      # same sizes, other weights
    build = _board_record(tmp_path, other)
    err = _fails(["run", "--port", "/dev/no-such-port", "--network", network_dir, "--build", build],
                 "the board", capsys)
    assert "their fingerprints differ" in err and "cannot open serial port" not in err
    # A patched bitstream's record (patch-weights writes <bitstream>.json) is the one that counts.
    (build / "new.bin").write_bytes(b"")
    (build / "new.bin.json").write_text(json.dumps({"format": PATCHED_BITSTREAM_FORMAT, "version": 1,
                                                    "network": identity(load_network(network_dir))}))
    # The record matches: the identity check passes and only the missing port stops the run.
    _fails(["run", "--port", "/dev/no-such-port", "--network", network_dir, "--build", build / "new.bin"],
           "cannot open serial port '/dev/no-such-port'", capsys)
    _fails(["run", "--port", "/dev/no-such-port", "--network", network_dir, "--build", tmp_path],
           "no record of a board's network there", capsys)


def test_a_board_of_other_sizes_is_refused():
    net = random_network(0, sizes=(64, 12, 10), timesteps=4)
    check_board_shape(LinkConfig(in_features=64, classes=10, score_bits=16, timesteps=4), net, "/dev/x", "net")
    with pytest.raises(InputError, match=r"runs a network of 64 inputs, 10 classes, T = 5, but net has 64 inputs, "
                                         r"10 classes, T = 4: it was built for another network"):
        check_board_shape(LinkConfig(in_features=64, classes=10, score_bits=16, timesteps=5), net, "/dev/x", "net")


def test_the_record_formats_are_the_builders_own():
    from spikeforge.boards.build import REPORT_FORMAT
    assert BOARD_BUILD_FORMAT == REPORT_FORMAT


def test_board_record_refuses_unreadable_json(tmp_path):
    (tmp_path / "report.json").write_text("{")
    with pytest.raises(InputError, match="is not readable JSON"):
        board_record(tmp_path)


# A command blocked inside its staged output until SIGTERM arrives (the swap never happens).
_BLOCKED_GENERATE = """
import sys, time
from spikeforge import cli
from spikeforge.ir import atomic
def blocked(staging, path):
    print("STAGED", flush=True)
    time.sleep(120)
atomic._swap_in = blocked
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sigterm_cleans_up_like_ctrl_c_and_leaves_nothing_behind(network_dir, tmp_path):
    """What CI and `timeout` send: a real signal to a real process, in the middle of writing an output."""
    out = tmp_path / "outputs" / "rtl"
    process = subprocess.Popen([sys.executable, "-c", _BLOCKED_GENERATE, "generate", str(network_dir), "-o",
                                str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "STAGED"
        assert [p.name for p in out.parent.iterdir()][0].startswith(".rtl.")       # the hidden staging folder
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == EXIT_TERMINATED, err
    assert "spikeforge generate: terminated (SIGTERM); partial outputs removed" in err and "Traceback" not in err
    assert not out.parent.exists()          # the command made outputs/ for its output: removed with it


def test_sigterm_handler_is_restored_after_a_command(network_dir, capsys):
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["eval", str(network_dir), "--samples", "3"]) == 0
    assert signal.getsignal(signal.SIGTERM) is before
    capsys.readouterr()


def test_sigterm_in_process_exits_143(network_dir, monkeypatch, capsys):
    from spikeforge.commands import eval as eval_command

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM did not interrupt the command")
    monkeypatch.setattr(eval_command, "evaluate", terminated)
    assert cli.main(["eval", str(network_dir), "--samples", "3"]) == EXIT_TERMINATED
    assert "terminated (SIGTERM)" in capsys.readouterr().err


def test_convert_warns_loudly_when_the_float_model_is_at_chance_level(files, tmp_path, capsys):
    """An untrained model stands in for a forgotten normalisation: the float model itself is at chance."""
    assert cli.main(["convert", str(files / "good.pt"), "--calibrate", "digits", "-T", "4", "-o",
                     str(tmp_path / "net")]) == 0
    err = capsys.readouterr().err
    assert "WARNING: the float model classifies only" in err and "(chance is 10.0 %)" in err, err
    assert "--input-scale/--input-mean/--input-std" in err


@pytest.mark.parametrize("argv, message", [
    (["build", "{net}", "--board", "icebreaker", "--lanes", "fc9=1", "-o", "{out}"], "folding names layer 'fc9'"),
    (["build", "{net}", "--board", "icebreaker", "--baud", "-5", "-o", "{out}"], "baud rate -5"),
    (["generate", "{net}", "--lanes", "fc1=0", "-o", "{out}"], "lanes 0 is not in 1..12"),
    (["report", "{net}", "--lanes", "fc9=2", "-o", "{out}"], "folding names layer 'fc9'"),
])
def test_a_refused_command_leaves_no_output_nor_the_folders_made_for_it(network_dir, tmp_path, capsys, argv,
                                                                        message):
    out = tmp_path / "new" / "deeper" / "out"
    _fails([a.format(net=network_dir, out=out) for a in argv], message, capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow      # a second Python process imports torch to pickle the model
def test_a_pickled_model_whose_class_lives_in_the_current_directory_loads(tmp_path, monkeypatch):
    """torch.save(model) from a script beside its class: the CLI finds the class as the script did."""
    (tmp_path / "my_digits_net.py").write_text(
        "import torch\n"
        "class MyNet(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.fc = torch.nn.Linear(64, 10)\n"
        "    def forward(self, x):\n        return self.fc(torch.flatten(x, 1))\n")
    subprocess.run([sys.executable, "-c", "import torch, my_digits_net; torch.save(my_digits_net.MyNet(), 'm.pt')"],
                   cwd=tmp_path, check=True, timeout=300)
    from spikeforge.converter.model_files import load_model
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "my_digits_net", raising=False)
    assert type(load_model("m.pt")).__name__ == "MyNet"
    monkeypatch.chdir(tmp_path.parent)
    monkeypatch.delitem(sys.modules, "my_digits_net", raising=False)
    with pytest.raises(InputError, match=r"the pickled model's class cannot be found \(ModuleNotFoundError"):
        load_model(str(tmp_path / "m.pt"))


@pytest.mark.parametrize("command", ["eval", "generate", "report"])
@pytest.mark.parametrize("breakage, message", [
    ("manifest_list", "the manifest must be a JSON object, got list"),
    ("layers_dict", "key 'layers' must be a list of layer objects"),
    ("layer_string", "layer 0 must be an object, got 'fc1'"),
    ("truncated_npz", "weights.npz: not a readable .npz archive (BadZipFile"),
    ("rom_contradicts", "rom/fc1.weight.hex contradicts weights.npz: address 0"),
])
def test_a_broken_network_directory_is_exit_2_on_every_command(network_dir, tmp_path, capsys, command, breakage,
                                                                message):
    broken = tmp_path / "net"
    broken.mkdir()
    manifest = json.loads((network_dir / "network.json").read_text())
    (broken / "rom").mkdir()
    for rom in (network_dir / "rom").iterdir():
        (broken / "rom" / rom.name).write_text(rom.read_text())
    weights = (network_dir / "weights.npz").read_bytes()
    if breakage == "manifest_list":
        manifest = []
    elif breakage == "layers_dict":
        manifest["layers"] = {"fc1": manifest["layers"][0]}
    elif breakage == "layer_string":
        manifest["layers"][0] = "fc1"
    elif breakage == "truncated_npz":
        weights = weights[: len(weights) // 2]
    else:
        lines = (broken / "rom" / "fc1.weight.hex").read_text().splitlines()
        lines[0] = "00" if lines[0] != "00" else "01"
        (broken / "rom" / "fc1.weight.hex").write_text("\n".join(lines) + "\n")
    (broken / "network.json").write_text(json.dumps(manifest))
    (broken / "weights.npz").write_bytes(weights)
    argv = {"eval": ["eval", broken], "generate": ["generate", broken, "-o", tmp_path / "rtl"],
            "report": ["report", broken, "-o", tmp_path / "report"]}[command]
    _fails(argv, message, capsys)


def test_patch_weights_records_the_network_the_bitstream_now_runs(network_dir, tmp_path, monkeypatch, capsys):
    """`run --build patched.bin` checks the patched network, not the one the build's report.json names."""
    from spikeforge.commands import patch_weights as patch_command

    def patched(bitstream, net, output, new_network_path=None):        # icebram itself is a synth test
        output.write_bytes(b"bitstream")
        return {"bitstream": str(output), "bytes": 9, "layers": ["build/roms/fc1.hex"], "board": "ICEBreakerPlatform"}
    monkeypatch.setattr(patch_command, "patch_weights", patched)
    build = _board_record(tmp_path, random_network(1, sizes=(64, 12, 10), timesteps=4))     # built from another
    assert cli.main(["patch-weights", str(build / "top.bin"), str(network_dir), "-o", str(build / "new.bin")]) == 0
    assert "and new.bin.json (the network it now runs)" in capsys.readouterr().out
    record = json.loads((build / "new.bin.json").read_text())
    assert record["format"] == PATCHED_BITSTREAM_FORMAT
    assert record["network"]["fingerprint"] == identity(load_network(network_dir))["fingerprint"]
    _fails(["run", "--port", "/dev/no-such-port", "--network", network_dir, "--build", build / "new.bin"],
           "cannot open serial port", capsys)
    _fails(["run", "--port", "/dev/no-such-port", "--network", network_dir, "--build", build / "top.bin"],
           "their fingerprints differ", capsys)
