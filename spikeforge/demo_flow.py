"""The demo behind `spikeforge demo` (kept out of the CLI module so it can be called from Python).

The flow's steps (:mod:`spikeforge.flow`) do the work; the demo adds what only a demo needs: the
shipped (or retrained) model, its export, an accuracy-vs.-T sweep and the golden-model evaluation
between the convert and generate steps. The model is the digits MLP, or with ``model="cnn"``
(``spikeforge demo --cnn``) the digits CNN, through the same steps (:data:`~spikeforge.demo_model.DEMO_MODELS`);
with a ``board`` the flow's build step follows the sign-off.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from spikeforge.datasets import load as load_dataset
from spikeforge.demo_hardware import board_config, hardware_config, hardware_report
from spikeforge.demo_model import DEMO_MODELS, DemoModel
from spikeforge.evaluate import evaluate, format_evaluation
from spikeforge.flow import FlowConfig, FlowConfigError, FlowState, convert_network, run_flow
from spikeforge.ir.atomic import write_json
from spikeforge.progress import bar, step

__all__ = ["run_demo", "demo_config", "ACCURACY_SWEEP_TIMESTEPS"]

ACCURACY_SWEEP_TIMESTEPS = (1, 2, 3, 4, 6, 8, 12, 16)


def demo_config(output, timesteps: int | None = None, model: str = "mlp") -> FlowConfig:
    """The demo's flow configuration: digits, 8-bit weights, the shipped ``model`` (``mlp`` or ``cnn``)
    exported to model.pt2, at ``timesteps`` (default: the model's, 8 for the MLP and 4 for the CNN)."""
    spec = _spec(model)
    return hardware_config(FlowConfig(output=str(output), model=str(Path(output) / "model.pt2"), dataset="digits",
                                      timesteps=timesteps or spec.timesteps, weight_bits=8,
                                      input_scale=spec.input_scale))


def _spec(model: str) -> DemoModel:
    if model not in DEMO_MODELS:
        raise FlowConfigError(f"demo model {model!r} is not one of {', '.join(DEMO_MODELS)}")
    return DEMO_MODELS[model]


def _export(model, path: Path, example_shape: tuple):
    temporary = path.parent / f".{path.stem}.tmp.pt2"
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(model, (torch.zeros(2, *example_shape),), dynamic_shapes=({0: batch},)),
                      temporary)
    temporary.replace(path)


def run_demo(output: Path, timesteps: int | None = None, retrain: bool = False, rtl: bool = True,
             model: str = "mlp", board: str | None = None) -> int:
    """Model -> convert (flow) -> accuracy sweep and evaluation -> generate, verify (flow) [-> build]; report.json.

    ``model`` is ``mlp`` (the default) or ``cnn``; ``timesteps`` defaults to the model's (8 / 4). With
    ``board`` (and ``rtl``) the flow's build step runs after a passing sign-off, with the board's
    default folding (:func:`~spikeforge.demo_hardware.board_config`), into ``<output>/board``.

    Returns the exit status: 1 when the sign-off finds a mismatch, else 0.
    """
    started = time.perf_counter()
    spec = _spec(model)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    config = demo_config(output, timesteps, model)
    if board:
        config = config.replace(board=board)
    timesteps = config.timesteps
    config.save(output / "config.json")      # `spikeforge flow build/demo/config.json` reruns the flow's steps
    report = {"output": str(output), "model": spec.key}
    test = load_dataset("digits", "test")
    print(f"spikeforge demo: scikit-learn digits (8x8), {len(test)} test samples, the {spec.title} -> {output}/\n")

    if retrain:
        progress = bar(spec.epochs, "training", unit="epoch")
        with step(f"training the {spec.title} (seed 0)"):
            network = spec.train(lambda done, total: progress.update(1))
        progress.close()
    else:
        with step(f"loading the shipped {spec.title}"):
            network = spec.load()
    _export(network, Path(config.model), spec.example_shape)
    report["float_accuracy"] = spec.float_accuracy(network, test)
    print(f"   float ANN test accuracy {100 * report['float_accuracy']:.2f} %, exported to {config.model}\n")

    state = FlowState(model=network)
    flow = run_flow(config, "convert", "convert", state=state)
    net = state.network

    sweep = {}
    print()
    with step("accuracy vs. T: converting at T = " + ", ".join(map(str, ACCURACY_SWEEP_TIMESTEPS))):
        for t in ACCURACY_SWEEP_TIMESTEPS:
            candidate = net if t == timesteps else convert_network(network, config.replace(timesteps=t))
            sweep[t] = float(np.mean(candidate.run(test.samples).labels == test.labels))
    report["accuracy_vs_timesteps"] = sweep
    print("   T        " + "".join(f"{t:>8}" for t in sweep))
    print("   accuracy " + "".join(f"{100 * a:>7.2f}%" for a in sweep.values()))

    print()
    with step(f"evaluating at T = {timesteps} with the golden model (closed form and literal iLIF)"):
        evaluation = evaluate(net, test, float_accuracy=report["float_accuracy"])
    print(format_evaluation(evaluation) + "\n")
    report["evaluation"] = {k: v for k, v in evaluation.items() if k != "labels"}

    if rtl:
        flow = run_flow(config, "generate", "verify", state=state, into=flow)
        if board and flow.ok:
            flow = run_flow(board_config(config), "build", "build", state=state, into=flow)
        report.update(hardware_report(flow))

    report["seconds"] = time.perf_counter() - started
    write_json(output / "report.json", report)
    print(f"\nwrote {output / 'report.json'} and {config.report_path}; demo took {report['seconds']:.0f} s")
    return 0 if flow.ok else 1
