"""The benchmark report's target table: only a full run's measurement is "met" or "not met"."""

from spikeforge.benchmarks.runner import NOT_MEASURED, TARGETS, _targets


def _rows(results):
    lines = [line for line in "\n".join(_targets(results)).splitlines() if line.startswith("| ")][1:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def _fmnist(accuracy, float_accuracy=0.90):
    return {"networks": {"fmnist": {"float_accuracy": float_accuracy,
                                    "curves": {"ilif": {"points": [{"timesteps": 4, "accuracy": accuracy}]}}}}}


def test_every_target_is_listed_and_one_whose_section_did_not_run_reads_not_measured():
    rows = _rows({"quick": False, "sections": {"hardware": {"error": "boom"}}})
    assert [row[0] for row in rows] == [what for what, _ in TARGETS.values()]
    assert all(row[1] == "—" and row[2].startswith(NOT_MEASURED) for row in rows)
    assert rows[2][2] == "not measured (its section failed: `--only hardware`)"
    assert rows[0][2] == "not measured (its section did not run: `--only accuracy`)"


def test_a_quick_run_never_marks_a_target_met_or_not_met():
    speed = {"result": {"digits_samples_per_s": 1234.0, "meets_target": False}}
    full = _rows({"quick": False, "sections": {"golden_speed": speed}})
    assert full[-1][1:] == ["1,234", "not met"]
    quick = _rows({"quick": True, "sections": {"golden_speed": speed}})
    assert quick[-1][1:] == ["1,234", "not measured (--quick: small subsets, not the reported numbers)"]


def test_fashion_mnist_parity_without_an_rtl_run_is_not_measured_not_failed(monkeypatch):
    from spikeforge.benchmarks import runner
    monkeypatch.setattr(runner, "headline", lambda accuracy, *args: {})
    close = _rows({"quick": False, "sections": {"accuracy": {"result": _fmnist(0.899)}}})
    assert close[0][2] == "not measured (RTL not simulated)"
    far = _rows({"quick": False, "sections": {"accuracy": {"result": _fmnist(0.80)}}})
    assert far[0][2] == "not met"
    verified = {"cases": [{"network": "fmnist", "timesteps": 4, "verify": {"ok": True, "samples": 10000}}]}
    monkeypatch.setattr(runner, "hw_headline", lambda hardware: None)
    met = _rows({"quick": False, "sections": {"accuracy": {"result": _fmnist(0.899)},
                                             "hardware": {"result": verified}}})
    assert met[0][1:] == ["89.90 % vs. 90.00 % (0.10 points); RTL = golden on 10,000 samples", "met"]
