"""spikeforge.sweep and `spikeforge sweep`: the spec, the points and their keys, the Pareto front, the
outputs; a tiny digits sweep end to end on a real process LocalCluster (cache resume, a failing point,
a changed generator, an interrupt)."""

from __future__ import annotations

import csv
import json
import os
import socket

import pytest

import spikeforge.sweep as sweep_module
from spikeforge.cli import main
from spikeforge.cluster import client
from spikeforge.sweep import (AXES, SETTINGS, SweepResult, SweepSpecError, load_spec, pareto_front, parse_spec,
                              point_key, points, run_sweep, write_outputs)


def _spec(tmp_path, text: str, name: str = "tiny"):
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return load_spec(path)


# --- the spec -------------------------------------------------------------------------------------

def test_unknown_keys_are_refused_naming_the_accepted_ones(tmp_path):
    with pytest.raises(SweepSpecError, match=r"key 'timestep' names nothing; accepted: model, state_dict") as caught:
        _spec(tmp_path, 'model = "digits-mlp"\ntimestep = 4\n')
    assert "axes" in str(caught.value)
    with pytest.raises(SweepSpecError, match=r"\[axes\]: key 'lanes' names nothing; accepted: timesteps, "
                                             r"weight_bits, method") as caught:
        _spec(tmp_path, 'model = "digits-mlp"\n[axes]\nlanes = [4]\n')
    assert all(axis in str(caught.value) for axis in AXES)


@pytest.mark.parametrize("text, fragment", [
    ('dataset = "digits"', "set exactly one of model"),
    ('model = "digits-mlp"\nnetwork = "n"', "set exactly one of model"),
    ('model = "nothing.pt2"', "model 'nothing.pt2' is not a file"),
    ('model = "digits-mlp"\nrtl_engine = "icarus"', "rtl_engine 'icarus' is not accepted; accepted: 'fast', 'cocotb'"),
    ('model = "digits-mlp"\nrtl_samples = -1', "rtl_samples -1 must be an integer >= 0"),
    ('model = "digits-mlp"\nclock_mhz = 0', "clock_mhz 0 must be a number > 0"),
    ('model = "digits-mlp"\n[axes]\ntimesteps = [4, 17]', "axes.timesteps: 17 is outside 1..16"),
    ('model = "digits-mlp"\n[axes]\nmethod = ["percentile", "mean"]', "axes.method: 'mean' is not accepted"),
    ('model = "digits-mlp"\n[axes]\nmembrane_banks = [3]', "axes.membrane_banks: 3 is not accepted; accepted: 1, 2"),
    ('model = "digits-mlp"\n[axes]\nweight_bits = ["8"]', "axes.weight_bits: '8' is not a int"),
    ('model = "digits-mlp"\n[axes]\ntimesteps = []', "axes.timesteps: an empty list gives no points"),
    ('model = "digits-mlp"\n[axes]\ntimesteps = [4, 4]', "repeats a value"),
    ('model = "digits-mlp"\n[axes]\nlanes_budget = [8]\ntarget_cycles = [500]', "sweep one of them"),
    ('model = "digits-mlp"\nrtl_samples = 0\n[axes]\nstalls = ["random"]', "random stalls need an RTL regression"),
    ('model = "digits-mlp"\naxes = 3', "axes must be a table"),
])
def test_bad_specs_are_refused(tmp_path, text, fragment):
    with pytest.raises(SweepSpecError, match=None) as caught:
        _spec(tmp_path, text)
    assert fragment in str(caught.value)


def test_a_network_spec_refuses_conversion_axes(tmp_path):
    (tmp_path / "net").mkdir()
    with pytest.raises(SweepSpecError, match="axes timesteps, weight_bits need a conversion"):
        _spec(tmp_path, 'network = "net"\n[axes]\ntimesteps = [4]\nweight_bits = [8]\nlanes_budget = [8]\n')
    spec = _spec(tmp_path, 'network = "net"\noutput = "runs/a"\n[axes]\nlanes_budget = [8, 16]\n')
    assert spec.network == str(tmp_path / "net")           # relative to the spec's folder
    assert spec.output == str(tmp_path / "runs" / "a")


def test_not_toml_is_refused(tmp_path):
    with pytest.raises(SweepSpecError, match="is not TOML"):
        _spec(tmp_path, "model = \n")


def test_points_are_the_product_of_the_axes_with_defaults_filled_in(tmp_path):
    spec = _spec(tmp_path, 'model = "digits-mlp"\n[axes]\ntimesteps = [4, 8]\nlanes_budget = [8, 16, 32]\n'
                           'membrane_banks = 1\n')
    grid = points(spec)
    assert len(grid) == 6
    assert [(p["timesteps"], p["lanes_budget"]) for p in grid[:3]] == [(4, 8), (4, 16), (4, 32)]
    assert all(p["membrane_banks"] == 1 and p["weight_bits"] == 8 and p["board"] is None and p["stalls"] == "none"
               for p in grid)
    assert set(grid[0]) == set(AXES)
    assert spec.rtl_samples == SETTINGS["rtl_samples"][0] and spec.rtl_engine == "fast"


def test_point_keys_follow_every_input(tmp_path):
    spec = _spec(tmp_path, 'model = "digits-mlp"\n[axes]\ntimesteps = [4, 8]\n')
    first, second = points(spec)
    key = point_key(first, spec, "model:a", "gen:1")
    assert key == point_key(dict(first), spec, "model:a", "gen:1")
    others = {point_key(second, spec, "model:a", "gen:1"), point_key(first, spec, "model:b", "gen:1"),
              point_key(first, spec, "model:a", "gen:2"),
              point_key(first, parse_spec({"model": "digits-mlp", "rtl_samples": 50}), "model:a", "gen:1")}
    assert key not in others and len(others) == 4
    # Where the sweep writes is not part of a point's identity.
    moved = parse_spec({"model": "digits-mlp", "output": "elsewhere", "axes": {"timesteps": [4, 8]}})
    assert point_key(first, moved, "model:a", "gen:1") == key


def test_the_generator_digest_covers_the_generator_source(monkeypatch):
    digest = sweep_module.generator_digest()
    assert len(digest) == 64 and digest == sweep_module.generator_digest()
    sweep_module.generator_digest.cache_clear()
    monkeypatch.setattr(sweep_module, "__version__", "0.0.0-changed")
    try:
        assert sweep_module.generator_digest() != digest
    finally:
        sweep_module.generator_digest.cache_clear()


# --- the front and the outputs ------------------------------------------------------------------------

def _result(key, accuracy, us, luts=None, status="ok"):
    point = {axis: default for axis, (_, default, _) in AXES.items()}
    result = {"key": key, "label": key, "point": point, "status": status, "golden_accuracy": accuracy,
              "us_per_sample": us, "cycles_per_sample": None if us is None else 100 * us, "cycles_basis": "cycle model",
              "clock_mhz": 100.0, "clock_basis": "clock_mhz", "total_lanes": 8, "seconds": 1.0}
    if luts is not None:
        result["build"] = {"luts": luts, "fmax_mhz": 50.0}
    return result


def test_pareto_front_keeps_the_points_nothing_beats():
    results = [_result("fast", 0.90, 1.0), _result("accurate", 0.98, 5.0), _result("beaten", 0.90, 2.0),
               _result("middle", 0.95, 2.0), _result("tie", 0.95, 2.0), _result("broken", 0.99, 0.5, status="failed")]
    assert [r["key"] for r in pareto_front(results)] == ["fast", "middle", "tie", "accurate"]
    # With LUTs on every point they count too: a slower, less accurate point with fewer LUTs stays.
    built = [_result("a", 0.98, 1.0, luts=5000), _result("b", 0.97, 2.0, luts=1000), _result("c", 0.97, 2.0, luts=6000)]
    assert [r["key"] for r in pareto_front(built)] == ["a", "b"]


@pytest.mark.slow      # matplotlib's import and the PNG: seconds on a busy machine
def test_outputs_list_every_point_and_mark_the_front(tmp_path):
    spec = parse_spec({"model": "digits-mlp", "axes": {"timesteps": [4, 8]}}, name="outputs")
    failed = _result("failed", None, None, status="failed") | {"failed_step": "generate",
                                                                 "error": "FoldingError: too small\nmore"}
    sweep = SweepResult(spec=spec, output=tmp_path, results=[_result("a", 0.98, 1.0), failed,
                                                             _result("b", 0.90, 2.0)])
    files = write_outputs(sweep)
    assert set(files) == {"csv", "json", "plot"}
    rows = list(csv.DictReader((tmp_path / "sweep.csv").read_text().splitlines()))
    assert [(r["key"], r["status"], r["pareto"]) for r in rows] == [("a", "ok", "True"), ("failed", "failed", "False"),
                                                                     ("b", "ok", "False")]
    assert rows[1]["error"] == "FoldingError: too small" and rows[1]["failed_step"] == "generate"
    summary = json.loads((tmp_path / "sweep.json").read_text())
    assert summary["pareto"] == ["a"] and summary["failed"] == 1 and summary["finished"] == 3
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_the_command_refuses_a_bad_spec_with_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('model = "digits-mlp"\n[axes]\nwidth = [3]\n')
    assert main(["sweep", str(path)]) == 2
    assert "[axes]: key 'width' names nothing; accepted: timesteps" in capsys.readouterr().err


# --- end to end on a real LocalCluster --------------------------------------------------------------

TINY = """
model = "digits-mlp"
dataset = "digits"
golden_samples = 120
spike_samples = 64
rtl_samples = 0
[axes]
timesteps = [4]
lanes_budget = [1, 16]
"""


@pytest.fixture(scope="module")
def dask(tmp_path_factory):
    with client(workers=2) as connected:
        yield connected


@pytest.mark.slow
def test_a_tiny_sweep_end_to_end_resumes_from_its_cache(tmp_path, dask):
    spec = _spec(tmp_path, TINY)
    out = tmp_path / "out"
    lines = []
    first = run_sweep(spec, output=out, dask=dask, log=lines.append)
    assert (first.cached, first.ran) == (0, 2)
    failed, *done = first.results
    # lanes_budget = 1 cannot give three layers a lane: recorded with its step and error, the others go on.
    assert failed["status"] == "failed" and failed["failed_step"] == "generate"
    assert "lanes budget 1 is too small" in failed["error"]
    for result, budget in zip(done, (16,)):
        assert result["status"] == "ok", result.get("error")
        assert result["total_lanes"] <= budget and result["point"]["lanes_budget"] == budget
        assert 0.9 < result["golden_accuracy"] <= 1 and result["golden_samples"] == 120
        assert result["cycles_basis"] == "cycle model" and result["clock_mhz"] == 100.0
        assert result["us_per_sample"] == pytest.approx(result["model_cycles_per_sample"] / 100)
        assert result["worker_pid"] != os.getpid()
        assert (out / "points" / result["key"] / "rtl" / "design.json").is_file()
    assert sum(line.startswith("[") for line in lines) == 2
    assert any("FAILED in generate" in line for line in lines)
    rows = list(csv.DictReader((out / "sweep.csv").read_text().splitlines()))
    assert [(row["status"], row["pareto"]) for row in rows] == [("failed", "False"), ("ok", "True")]
    assert (out / "sweep.png").is_file() and json.loads((out / "sweep.json").read_text())["ran"] == 2

    # A rerun takes the finished points from the cache and tries the failed one again.
    again = run_sweep(spec, output=out, dask=dask, log=lines.append)
    assert (again.cached, again.ran) == (1, 1)
    assert again.results[1] == done[0] and again.results[0]["status"] == "failed"

    # A changed generator gives every point a new key: nothing is taken from the cache. The rerun is
    # interrupted (Ctrl-C) as its point finishes: the finished point stays cached for the next run.
    spec_one = _spec(tmp_path, TINY.replace("[1, 16]", "[16]"), name="one")
    assert run_sweep(spec_one, output=out, dask=dask, log=lines.append).cached == 1
    original = sweep_module.generator_digest()

    def interrupt(line):
        if line.startswith("[1/1]"):
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sweep_module, "generator_digest", lambda: original[::-1])    # its source changed
        with pytest.raises(KeyboardInterrupt):
            run_sweep(spec_one, output=out, dask=dask, log=interrupt)
        summary = json.loads((out / "sweep.json").read_text())
        assert summary["interrupted"] and (summary["cached"], summary["finished"]) == (0, 1)
        (key,) = summary["pareto"]
        assert key != done[0]["key"] and (out / "points" / key / "result.json").is_file()
        resumed = run_sweep(spec_one, output=out, dask=dask, log=lines.append)
    assert (resumed.cached, resumed.ran) == (1, 0) and resumed.results[0]["key"] == key


@pytest.mark.slow
def test_the_command_names_a_scheduler_that_does_not_answer(tmp_path, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    assert main(["sweep", str(path), "-o", str(tmp_path / "out"), "--scheduler", address]) == 2
    assert f"cannot connect to the Dask scheduler at {address}" in capsys.readouterr().err
