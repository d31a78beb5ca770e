"""`spikeforge report` on a small network: files, numbers that must hold, and messages."""

import json

import numpy as np
import pytest

from spikeforge import cli
from spikeforge.ir.random_network import random_network
from spikeforge.ir import golden
from spikeforge.ir.fingerprint import identity
from spikeforge.ir.network import load


@pytest.fixture(scope="module")
def network_dir(tmp_path_factory):
    import spikeforge
    from spikeforge.demo_model import load_digits_mlp

    folder = tmp_path_factory.mktemp("report") / "net"
    spikeforge.convert(load_digits_mlp(), "digits", timesteps=5, weight_bits=8).save(folder)
    return folder


def test_report_with_dataset_writes_markdown_plots_and_json(network_dir, tmp_path, capsys):
    out = tmp_path / "report"
    assert cli.main(["report", str(network_dir), "--dataset", "digits", "--samples", "200",
                     "--timesteps", "2,5,8", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "spike-driven additions per sample" in printed and f"wrote {out / 'REPORT.md'}" in printed
    report = json.loads((out / "report.json").read_text())
    markdown = (out / "REPORT.md").read_text()
    for png in ("spike_density.png", "accuracy_vs_timesteps.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 200_000
        assert f"]({png})" in markdown
    # The network's own T is exact: the report's accuracy equals the golden model's.
    from spikeforge.ir.network import load
    from spikeforge.datasets import load as load_dataset
    net = load(network_dir)
    data = load_dataset("digits", "test").head(200)
    expected = float(np.mean(golden.run(net, data.samples).labels == data.labels))
    assert report["accuracy"]["accuracy"] == expected
    own = [p for p in report["accuracy"]["points"] if p["exact"]]
    assert [p["timesteps"] for p in own] == [5] and own[0]["accuracy"] == expected
    assert [p["timesteps"] for p in report["accuracy"]["points"]] == [2, 5, 8]
    # Spike density per layer and timestep: T values per layer, each a fraction.
    density = report["spikes"]["per_timestep"]
    assert list(density) == ["input"] + [layer.name for layer in net.hidden_layers]
    assert all(len(v) == 5 and all(0 <= x <= 1 for x in v) for v in density.values())
    additions = golden.spike_driven_additions(net, golden.run(net, data.samples).input_spikes()).mean()
    assert report["spikes"]["additions_per_sample"] == pytest.approx(additions)
    if report["cycles"]["available"]:
        assert report["cycles"]["cycles_per_sample"] > 0 and (out / "cycles_per_stage.png").is_file()
        assert "cycles per sample" in markdown


def test_report_without_dataset_uses_random_bytes(tmp_path, capsys):
    net = random_network(3, sizes=(10, 6, 3), timesteps=4, weight_bits=6)
    net.save(tmp_path / "net")
    assert cli.main(["report", str(tmp_path / "net")]) == 0
    report = json.loads((tmp_path / "net" / "report" / "report.json").read_text())
    assert "accuracy" not in report and "uniformly random" in report["stimulus"]
    assert "no dataset given" in capsys.readouterr().out


@pytest.mark.parametrize("argument, message", [("--timesteps=0,3", "--timesteps entry '0' is not an integer in 1..16"),
                                               ("--samples=-1", "--samples -1 must be >= 0")])
def test_report_bad_arguments_are_named(network_dir, tmp_path, capsys, argument, message):
    assert cli.main(["report", str(network_dir), argument, "-o", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err


def test_markdown_table_checks_its_shape():
    from spikeforge.reporting import markdown_table

    assert markdown_table(["a", "b"], [[1, "x|y"]]).splitlines() == ["| a | b |", "|:--|--:|", "| 1 | x\\|y |"]
    with pytest.raises(ValueError, match="row \\[1\\] has 1 cells, the table 2 columns"):
        markdown_table(["a", "b"], [[1]])


def test_report_summarises_a_board_build_beside_the_network(network_dir, tmp_path):
    design = tmp_path / "design"
    (design / "board").mkdir(parents=True)
    (design / "board" / "report.json").write_text(json.dumps({
        "format": "spikeforge-board-build", "status": "built", "board": "ULX3S_85F_Platform", "device": "LFE5U-85F",
        "synthesis": {"luts": 9286, "ffs": 2158, "block_rams": 55, "dsps": 2}, "fmax_mhz": 50.2, "clock_mhz": 25.0,
        "folding": {"fc1": 16, "fc2": 8, "fc3": 2}, "network": identity(load(network_dir))}))
    out = tmp_path / "report"
    assert cli.main(["report", str(network_dir), "--design", str(design), "-o", str(out)]) == 0
    markdown = (out / "REPORT.md").read_text()
    assert "9,286 LUT4, 2,158 FF, 55 block RAM, 2 DSP; Fmax 50.2 MHz" in markdown
    report = json.loads((out / "report.json").read_text())
    if report["cycles"]["available"]:
        # The board's folding drives the cycle model.
        assert [layer["lanes"] for layer in report["cycles"]["layers"]] == [16, 8, 2]
