"""`spikeforge bench --quick` code paths on the digits network (the Fashion-MNIST ones train models: too slow here)."""

import json

import pytest

from spikeforge import cli


@pytest.mark.slow      # trains and converts the digits network at every T, runs five sections
def test_bench_quick_digits_writes_results_markdown_and_plots(tmp_path, capsys):
    out = tmp_path / "bench"
    code = cli.main(["bench", "--quick", "-o", str(out), "--networks", "digits",
                     "--only", "accuracy,k_sweep,hardware,golden_speed,tool_speed"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    results = json.loads((out / "results.json").read_text())
    assert results["quick"] is True and results["command"].startswith("spikeforge bench")
    sections = results["sections"]
    assert all("error" not in sections[name] for name in sections), {n: s.get("error") for n, s in sections.items()}
    accuracy = sections["accuracy"]["result"]["networks"]["digits"]
    # The rate-coded curve covers every T up to the maximum; the iLIF one the quick T list.
    assert len(accuracy["curves"]["rate-spikes"]["points"]) == sections["accuracy"]["result"]["rate_max_timesteps"]
    assert [p["timesteps"] for p in accuracy["curves"]["ilif"]["points"]] == [1, 2, 3, 4, 6, 8]
    assert all(accuracy["literal_check"]["agree"].values())
    # The calibration study sits one step below the 1-point parity T; the default clip's row there is
    # the iLIF curve's point at that T.
    study = accuracy["calibration_sensitivity"]
    assert study["timesteps"] == accuracy["parity"]["ilif"]["1.0"]["timesteps"] - 1
    default = next(p for p in study["points"] if p["percentile"] == 99.9)
    curve = {p["timesteps"]: p["accuracy"] for p in accuracy["curves"]["ilif"]["points"]}
    assert study["timesteps"] in curve and default["accuracy"] == curve[study["timesteps"]]
    # Retrained seeds, both conversions, at the parity T.
    robustness = accuracy["seed_robustness"]
    assert robustness["seeds"] == [1, 2] and len(robustness["rows"]) == 2
    assert set(robustness["rows"][0]["accuracy"]) == {f"{m}@{t}" for m in ("ilif", "ilif-search")
                                                      for t in robustness["timesteps"]}
    # k = 2 is the golden model: the k-sweep's k = 2 accuracy equals the iLIF curve's at the same T.
    sweep = sections["k_sweep"]["result"]["networks"]["digits"]["sweep"]
    ilif = {p["timesteps"]: p["accuracy"] for p in accuracy["curves"]["ilif"]["points"]}
    assert sweep["4"]["2.0"]["accuracy"] == ilif[4] and sweep["8"]["2.0"]["accuracy"] == ilif[8]
    assert sections["golden_speed"]["result"]["digits_samples_per_s"] > 0
    markdown = (out / "RESULTS.md").read_text()
    assert "## 1. Timesteps and work to ANN parity" in markdown and "quick smoke test" in markdown
    assert f"Calibration sensitivity at T = {study['timesteps']}" in markdown
    assert "Robustness: the same network retrained with 2 other seeds" in markdown
    for png in ("accuracy_digits.png", "amplification_sweep.png"):
        assert (out / "plots" / png).read_bytes()[:4] == b"\x89PNG" and f"(plots/{png})" in markdown
    # Nothing is published from a quick run.
    hardware = sections["hardware"]["result"]["cases"][0]
    assert hardware["verify"].get("skipped") and "not run with --quick" in markdown

    # --only reruns one section and keeps the others.
    assert cli.main(["bench", "--quick", "-o", str(out), "--networks", "digits", "--only", "golden_speed"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert set(again["sections"]) == set(sections)
    assert again["sections"]["accuracy"] == sections["accuracy"]


def test_bench_rejects_unknown_sections_and_networks(tmp_path, capsys):
    assert cli.main(["bench", "--quick", "-o", str(tmp_path), "--only", "speed"]) == 2
    assert "unknown section(s) 'speed'" in capsys.readouterr().err
    assert cli.main(["bench", "--quick", "-o", str(tmp_path), "--networks", "mnist"]) == 2
    assert "unknown network(s) 'mnist'" in capsys.readouterr().err
