"""`spikeforge demo --cnn`: the shipped digits CNN through the demo's flow steps."""

import json

import pytest

pytest.importorskip("torch")

from spikeforge.cli import main  # noqa: E402  (after the torch check: the demo needs it)
from spikeforge.demo_flow import demo_config  # noqa: E402
from spikeforge.demo_hardware import board_config  # noqa: E402
from spikeforge.demo_model import DEMO_MODELS  # noqa: E402
from spikeforge.flow import FlowConfigError  # noqa: E402


def test_demo_config_per_model(tmp_path):
    mlp, cnn = demo_config(tmp_path / "mlp"), demo_config(tmp_path / "cnn", model="cnn")
    assert (mlp.timesteps, mlp.input_scale) == (8, None)        # the dataset's /255 applies
    assert (cnn.timesteps, cnn.input_scale) == (4, 1.0)         # the CNN divides by 255 itself
    assert cnn.model == str(tmp_path / "cnn" / "model.pt2") and cnn.lanes_budget == 48
    assert demo_config(tmp_path, 6, model="cnn").timesteps == 6
    built = board_config(cnn.replace(board="icebreaker"))
    assert built.lanes is None and built.lanes_budget is None and built.board == "icebreaker"
    with pytest.raises(FlowConfigError, match=r"demo model 'rnn' is not one of mlp, cnn"):
        demo_config(tmp_path, model="rnn")


def test_demo_models_load_and_take_their_example_shape():
    import torch
    for spec in DEMO_MODELS.values():
        model = spec.load()
        assert model(torch.zeros(2, *spec.example_shape)).shape == (2, 10), spec.key


@pytest.mark.slow
def test_demo_cnn_command_converts_and_evaluates(tmp_path, capsys):
    out = tmp_path / "demo-cnn"
    assert main(["demo", "--cnn", "--skip-rtl", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "the digits CNN (1x8x8 -> conv 16 -> pool -> conv 32 -> pool -> 10)" in printed
    assert "conv1      iLIF   conv 3x3 s1 p1  1x8x8 -> 16x8x8" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == "cnn" and report["float_accuracy"] > 0.98
    assert report["evaluation"]["spiking_accuracy"] >= report["float_accuracy"] - 0.005
    assert report["evaluation"]["timesteps"] == 4 and set(map(int, report["accuracy_vs_timesteps"])) == {
        1, 2, 3, 4, 6, 8, 12, 16}
    assert json.loads((out / "config.json").read_text())["input_scale"] == 1.0
