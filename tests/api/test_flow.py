"""spikeforge.flow: one configuration, named steps, start/stop anywhere, typed reports and one flow report."""

import json

import numpy as np
import pytest

import spikeforge
from spikeforge.datasets import load as load_dataset
from spikeforge.demo_model import load_digits_mlp
from spikeforge.flow import (CONV_PREDICTION_SAMPLES, STEPS, ConvertReport, FlowConfig, FlowConfigError, FlowState,
                             GenerateReport, run_flow, run_step)
from spikeforge.hdl.cycle_model import predict
from spikeforge.ir import golden as golden_model
from spikeforge.ir.errors import InputError
from spikeforge.ir.network import load
from spikeforge.ir.random_network import random_conv_network, random_network


def _steps(path):
    return [step["name"] for step in json.loads(path.read_text())["steps"]]


def test_config_json_round_trip(tmp_path):
    config = FlowConfig(output=str(tmp_path), model="m.pt2", dataset="digits", timesteps=5, weight_bits=6,
                        method="search", per_channel=True, v0="floor", input_shape=[1, 8, 8], lanes={"fc1": 4},
                        membrane_banks=1, samples=7, stalls="random", board="icebreaker")
    path = config.save(tmp_path / "config.json")
    again = FlowConfig.load(path)
    assert again == config
    assert sorted(json.loads(path.read_text())) == sorted(FlowConfig.keys())
    assert FlowConfig.from_json(FlowConfig().to_json()) == FlowConfig()


def test_unknown_config_key_is_refused_with_the_accepted_keys(tmp_path):
    with pytest.raises(FlowConfigError, match=r"flow config key 'timestep' names nothing; accepted: output, model, "
                                              r"state_dict, dataset, .*timesteps"):
        FlowConfig.from_json({"timestep": 4})
    (tmp_path / "bad.json").write_text(json.dumps({"timesteps": 4, "lane_budget": 8, "boards": "x"}))
    with pytest.raises(FlowConfigError, match=r"keys 'boards', 'lane_budget' name nothing"):
        FlowConfig.load(tmp_path / "bad.json")
    with pytest.raises(FlowConfigError, match=r"'lanes_bugdet' name nothing"):
        FlowConfig().replace(lanes_bugdet=3)
    with pytest.raises(FlowConfigError, match=r"stalls 'sometimes' is not accepted; accepted: 'none', 'random'"):
        FlowConfig(stalls="sometimes")
    with pytest.raises(FlowConfigError, match=r"both lanes_budget and target_cycles"):
        FlowConfig(lanes_budget=8, target_cycles=100)


def test_unknown_step_is_refused(tmp_path):
    config = FlowConfig(output=str(tmp_path))
    with pytest.raises(FlowConfigError, match=r"start step 'synth' is not a step; steps: convert, generate, verify, "
                                              r"build"):
        run_flow(config, start="synth")
    with pytest.raises(FlowConfigError, match=r"stop step 'bitstream' is not a step"):
        run_flow(config, stop="bitstream")
    with pytest.raises(FlowConfigError, match=r"start step 'verify' comes after stop step 'generate'"):
        run_flow(config, start="verify", stop="generate")
    with pytest.raises(FlowConfigError, match=r"step 'lint' is not a step"):
        run_step("lint", FlowState(), config)
    assert list(STEPS) == ["convert", "generate", "verify", "build"]
    assert not any(tmp_path.iterdir())


def test_convert_then_generate_stops_before_verify(tmp_path):
    """The shipped digits MLP through convert and generate: artefacts of those steps only, reports that
    match what they wrote."""
    config = FlowConfig(output=str(tmp_path / "flow"), dataset="digits", timesteps=4, lanes_budget=12)
    lines = []
    flow = run_flow(config, "convert", "generate", state=FlowState(model=load_digits_mlp()), log=lines.append)
    out = tmp_path / "flow"
    assert sorted(p.name for p in out.iterdir()) == ["flow.json", "net", "rtl"]
    assert _steps(out / "flow.json") == ["convert", "generate"]
    assert "== convert: float model -> integer iLIF network" in lines and "== generate: done in" in lines[-1]

    net = load(out / "net")
    convert = flow["convert"]
    assert isinstance(convert, ConvertReport)
    assert convert.timesteps == net.timesteps == 4 and convert.layers == ["fc1", "fc2", "fc3"]
    assert convert.weight_bits == {"fc1": 8, "fc2": 8, "fc3": 8} and convert.method == "percentile"
    assert convert.weight_kib == pytest.approx((64 * 64 + 64 * 32 + 32 * 10) / 1024)
    assert 0.9 < convert.float_accuracy["digits/test"] <= 1.0
    design = json.loads((out / "rtl" / "design.json").read_text())
    generate = flow["generate"]
    assert isinstance(generate, GenerateReport)
    assert generate.folding == design["folding"] and generate.total_lanes == sum(design["folding"].values()) <= 12
    saved = json.loads((out / "flow.json").read_text())
    assert saved["ok"] is True and saved["config"] == config.to_json()
    assert saved["steps"][0]["report"] == convert.to_json() and saved["steps"][1]["report"] == generate.to_json()
    assert saved["steps"][0]["report"]["network_dir"] == str(out / "net") and saved["steps"][0]["seconds"] > 0
    json.dumps(saved)       # every report is plain JSON

    # convert alone: no design.
    only = FlowConfig(output=str(tmp_path / "only"), timesteps=4)
    run_flow(only, "convert", "convert", state=FlowState(model=load_digits_mlp()), log=lambda _: None)
    assert sorted(p.name for p in (tmp_path / "only").iterdir()) == ["flow.json", "net"]


def test_resume_from_generate_with_a_saved_network(tmp_path):
    net = random_network(3, sizes=(20, 9, 4), timesteps=4)
    saved = net.save(tmp_path / "mine")
    config = FlowConfig(output=str(tmp_path / "flow"), network_dir=str(saved), lanes={"fc1": 3})
    flow = run_flow(config, start="generate", stop="generate", log=lambda _: None)
    assert _steps(tmp_path / "flow" / "flow.json") == ["generate"]
    assert sorted(p.name for p in (tmp_path / "flow").iterdir()) == ["flow.json", "rtl"]
    design = json.loads((tmp_path / "flow" / "rtl" / "design.json").read_text())
    assert design["network"]["path"] == str(saved) and design["folding"]["fc1"] == 3
    assert flow["generate"].to_json()["folding"]["fc1"] == 3
    assert load(saved) == net

    # A network handed over in memory is the one generated, whatever lies in network_dir.
    other = random_network(4, sizes=(20, 9, 4), timesteps=4)
    run_flow(config.replace(rtl_dir=str(tmp_path / "rtl2")), "generate", "generate", state=FlowState(network=other),
             log=lambda _: None)
    design = json.loads((tmp_path / "rtl2" / "design.json").read_text())
    assert design["network"].get("path") is None
    assert design["network"] != json.loads((tmp_path / "flow" / "rtl" / "design.json").read_text())["network"]


def test_resuming_without_the_earlier_artefacts_names_the_missing_folder(tmp_path):
    config = FlowConfig(output=str(tmp_path / "flow"))
    with pytest.raises(FlowConfigError, match=r"no network at .*flow/net \(no network.json\): run the convert step"):
        run_flow(config, start="generate", log=lambda _: None)
    random_network(1, sizes=(64, 8, 10), timesteps=4).save(tmp_path / "flow" / "net")
    with pytest.raises(FlowConfigError, match=r"flow/rtl has no design.json: run the generate step first"):
        run_flow(config, start="verify", log=lambda _: None)
    with pytest.raises(FlowConfigError, match=r"the build step needs a board"):
        run_flow(config, start="build", stop="build", log=lambda _: None)
    with pytest.raises(FlowConfigError, match=r"the convert step needs a model"):
        run_flow(config, log=lambda _: None)


@pytest.mark.verilator
def test_generate_and_verify_with_verilator(tmp_path):
    """A random 64-12-10 network through generate and verify on digits samples (Verilator): bit exact."""
    net = random_network(5, sizes=(64, 12, 10), timesteps=4)
    config = FlowConfig(output=str(tmp_path), dataset="digits", samples=6, lanes={"fc1": 4})
    state = FlowState(network=net)
    flow = run_flow(config, "generate", "verify", state=state, log=lambda _: None)
    verify = flow["verify"]
    assert flow.ok and verify.ok and verify.samples == 6 and verify.mismatches == 0
    assert (tmp_path / "rtl" / "verify.json").is_file() and (tmp_path / "sim_build").is_dir()
    report = json.loads((tmp_path / "flow.json").read_text())
    assert [s["name"] for s in report["steps"]] == ["generate", "verify"]
    assert report["steps"][1]["report"]["ok"] is True
    assert report["steps"][1]["report"]["timing"] == verify.timing
    golden = net.run(load_dataset("digits", "test").samples[:6].reshape(6, -1))
    assert verify.golden_accuracy == pytest.approx(np.mean(golden.labels == load_dataset("digits", "test").labels[:6]))


def test_flow_command_runs_a_json_config(tmp_path, capsys):
    from spikeforge.cli import main
    from spikeforge.commands.flow import STEP_NAMES

    assert STEP_NAMES == tuple(STEPS)
    random_network(2, sizes=(16, 6, 3), timesteps=3).save(tmp_path / "flow" / "net")
    FlowConfig(output="ignored", lanes_budget=4).save(tmp_path / "config.json")
    assert main(["flow", str(tmp_path / "config.json"), "-o", str(tmp_path / "flow"), "--start", "generate",
                 "--stop", "generate"]) == 0
    out = capsys.readouterr().out
    assert "== generate: done in" in out and f"wrote {tmp_path / 'flow' / 'flow.json'} (1 step in" in out
    assert (tmp_path / "flow" / "rtl" / "design.json").is_file()
    (tmp_path / "bad.json").write_text('{"lane_budget": 4}')
    assert main(["flow", str(tmp_path / "bad.json")]) == 2
    assert "'lane_budget' names nothing; accepted: output" in capsys.readouterr().err


def test_a_flow_that_would_fail_late_is_refused_before_it_starts(tmp_path):
    """No board for a flow that ends in build: refused before convert spends any time."""
    config = FlowConfig(output=str(tmp_path / "flow"), model="m.pt2")
    with pytest.raises(FlowConfigError, match=r"the build step needs a board"):
        run_flow(config, stop="build", log=lambda _: None)
    assert not (tmp_path / "flow").exists()


def test_lanes_may_be_written_as_on_the_command_line():
    assert FlowConfig(lanes="fc1=8, fc2=4").lanes == {"fc1": 8, "fc2": 4}
    assert FlowConfig.from_json({"lanes": "fc1=2"}).to_json()["lanes"] == {"fc1": 2}
    with pytest.raises(InputError, match=r"lanes entry 'fc1:8' is not NAME=LANES"):
        FlowConfig(lanes="fc1:8")


def _count_golden_runs(monkeypatch) -> dict:
    """Count the golden model's runs (closed form and literal timestep model) from here on."""
    calls = {"run": 0, "run_timesteps": 0}
    for name in calls:
        def counted(*args, _name=name, _original=getattr(golden_model, name), **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)
        monkeypatch.setattr(golden_model, name, counted)
    return calls


def test_generate_with_spikes_from_predicts_beat_by_beat_on_those_samples(tmp_path, monkeypatch):
    """``spikes_from``: the folding is balanced on the dataset's measured spikes and the prediction follows
    its first ``spike_samples`` samples beat by beat (the exact model), which design.json says. The golden
    model runs once on them, for the balance, the balancer's check and the prediction."""
    train = load_dataset("digits", "train")
    net = spikeforge.convert(load_digits_mlp(), train.samples[:500], timesteps=4)
    config = FlowConfig(output=str(tmp_path / "flow"), lanes_budget=6, spikes_from="digits", spike_samples=40)
    calls = _count_golden_runs(monkeypatch)
    flow = run_flow(config, start="generate", stop="generate", state=FlowState(network=net), log=lambda _: None)
    assert calls == {"run": 1, "run_timesteps": 0}
    design = json.loads((tmp_path / "flow" / "rtl" / "design.json").read_text())
    samples = load_dataset("digits", "test").head(40).samples.reshape(40, -1)
    assert design["prediction"]["spikes_basis"] == "beat by beat on 40 samples"
    expected = predict(net, design["folding"], samples).cycles_per_sample
    assert design["prediction"]["cycles_per_sample"] == pytest.approx(expected)
    assert flow["generate"].spikes_basis == "beat by beat on 40 samples"


def test_generate_with_spikes_from_runs_a_conv_networks_timestep_model_once(tmp_path, monkeypatch):
    """A conv network: the closed form once on all ``spike_samples`` (the balance) and the literal timestep
    model once on the first CONV_PREDICTION_SAMPLES of them, shared by the balancer's check of the measured
    balance against the default folding (budget 12: they differ here) and the prediction."""
    net = random_conv_network(0, classes=10)
    config = FlowConfig(output=str(tmp_path / "flow"), lanes_budget=12, spikes_from="digits", spike_samples=200)
    calls = _count_golden_runs(monkeypatch)
    run_flow(config, start="generate", stop="generate", state=FlowState(network=net), log=lambda _: None)
    assert calls == {"run": 1, "run_timesteps": 1}
    design = json.loads((tmp_path / "flow" / "rtl" / "design.json").read_text())
    samples = load_dataset("digits", "test").head(200).samples.reshape(200, -1)
    assert design["prediction"]["spikes_basis"] == f"sample by sample on {CONV_PREDICTION_SAMPLES} samples"
    expected = predict(net, design["folding"], samples[:CONV_PREDICTION_SAMPLES]).cycles_per_sample
    assert design["prediction"]["cycles_per_sample"] == pytest.approx(expected)
