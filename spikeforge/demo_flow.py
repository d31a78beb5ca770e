"""The demo flow behind `spikeforge demo` (kept out of the CLI module so it can be called from Python)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .progress import bar, step

__all__ = ["run_demo", "ACCURACY_SWEEP_TIMESTEPS"]

ACCURACY_SWEEP_TIMESTEPS = (1, 2, 3, 4, 6, 8, 12, 16)


def run_demo(output: Path, timesteps: int = 8, retrain: bool = False, rtl: bool = True) -> int:
    import torch

    from .converter.convert import convert
    from .datasets import load
    from .demo_model import float_accuracy, load_digits_mlp, train_digits_mlp
    from .evaluate import evaluate, format_evaluation
    from spikeforge.ir.atomic import write_json

    started = time.perf_counter()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    report = {"output": str(output)}
    test = load("digits", "test")
    print(f"spikeforge demo: scikit-learn digits (8x8), {len(test)} test samples -> {output}/\n")

    if retrain:
        progress = bar(200, "training", unit="epoch")
        with step("1. training the 64-64-32-10 MLP (seed 0)"):
            model = train_digits_mlp(progress=lambda done, total: progress.update(1))
        progress.close()
    else:
        with step("1. loading the shipped 64-64-32-10 MLP"):
            model = load_digits_mlp()
    model_path = output / "model.pt2"
    temporary = output / ".model.tmp.pt2"
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(model, (torch.zeros(2, 8, 8),), dynamic_shapes=({0: batch},)), temporary)
    temporary.replace(model_path)
    report["float_accuracy"] = float_accuracy(model, test)
    print(f"   float ANN test accuracy {100 * report['float_accuracy']:.2f} %, exported to {model_path}")

    sweep = {}
    with step("2. converting at T = " + ", ".join(map(str, ACCURACY_SWEEP_TIMESTEPS))):
        for t in ACCURACY_SWEEP_TIMESTEPS:
            candidate = convert(model, "digits", timesteps=t, weight_bits=8)
            sweep[t] = float(np.mean(candidate.run(test.samples).labels == test.labels))
            if t == timesteps:
                net = candidate
    if timesteps not in sweep:
        net = convert(model, "digits", timesteps=timesteps, weight_bits=8)
    report["accuracy_vs_timesteps"] = sweep
    print("   T        " + "".join(f"{t:>8}" for t in sweep))
    print("   accuracy " + "".join(f"{100 * a:>7.2f}%" for a in sweep.values()))
    net_path = net.save(output / "net")
    print(f"   wrote {net_path}/ (T = {timesteps})")
    print(net.describe())

    with step("3. evaluating with the golden model (closed form and literal iLIF)"):
        evaluation = evaluate(net, test, float_accuracy=report["float_accuracy"])
    print(format_evaluation(evaluation))
    report["evaluation"] = {k: v for k, v in evaluation.items() if k != "labels"}

    if rtl:
        from .demo_hardware import run_hardware_steps
        report.update(run_hardware_steps(net, test, output))

    report["seconds"] = time.perf_counter() - started
    write_json(output / "report.json", report)
    print(f"\nwrote {output / 'report.json'}; demo took {report['seconds']:.0f} s")
    verification = report.get("verification")
    return 0 if verification is None or verification.get("ok") else 1
