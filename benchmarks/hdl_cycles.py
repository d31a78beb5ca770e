"""HDL cycle benchmark: RTL simulation (Amaranth) vs the analytical cycle model, pipelining, utilisation.

    python -m benchmarks.hdl_cycles [--samples 100] [-o build/bench/hdl_cycles.json]

Measures, on back-to-back streams in Amaranth's simulator (results always taken):

* the digits demo network (64-64-32-10, T = 8) with lanes chosen automatically for <= 48 lanes in
  total (balanced on measured spike counts): cycles per sample, adder utilisation
  (useful additions / (lanes × cycles)), the slowest stage and the sum of stages (pipelining);
* measured vs predicted cycles per sample for the demo and for random networks and foldings
  (including non-divisible out/lanes);
* the time to generate the digits design (Amaranth elaboration + Verilog conversion);
* a Fashion-MNIST MLP 784-200-100-10 (trained here, :data:`FMNIST_MLP`, converted at T = 4) in
  Verilator (the compiled harness, :func:`spikeforge.sim.fast_engine.run_fast`) for the foldings the
  balancer proposes (the default for the lanes budget, the balance on measured spikes as the balancer
  found it and as it now picks it, one and two membrane banks) and one whose hidden FIFO fills:
  measured vs the model beat by beat (samples) and vs its per-sample form (spike counts only), and
  the latency of sample 0 alone (issue 15: the balance on measured spikes ran 19 % slower than the
  default while the per-sample form predicted it faster).

Bit-exactness is asserted on every simulated sample (a wrong result aborts the benchmark).

With ``--conv`` it measures the CNNs in Verilator instead (cocotb sign-off, :func:`spikeforge.sim.signoff.verify`):

    python -m benchmarks.hdl_cycles --conv [--digits-folding conv1=2x3,conv2=16x3,fc=1]
        [--fmnist-net DIR --fmnist-budget 128 --fmnist-samples 100] [-o build/bench/hdl_cycles_conv.json]

* the digits CNN (shipped, converted at T = 4) with channel and tap lanes: the whole test split (540)
  back to back and again at 50 % and 90 % random input gaps and output back-pressure, bit-exact; cycles
  per sample measured vs the cycle model; per-layer adder utilisation (useful additions / (lanes × taps
  × cycles));
* the Fashion-MNIST CNN (a converted network directory, ``--fmnist-net``) folded by the balancer at a
  lanes budget (adders): measured vs predicted cycles per sample on the first ``--fmnist-samples`` test
  samples.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from spikeforge.ir.random_network import random_network
from spikeforge.hdl import Accelerator
from spikeforge.hdl.balance import balanced_folding
from spikeforge.hdl.cycle_model import predict
from spikeforge.hdl.folding import Folding, FoldingError, auto_folding, layer_cycles, parse_lanes, resolve_folding
from spikeforge.hdl.plan import encoder_lanes_for
from spikeforge.sim.fast_engine import run_fast
from spikeforge.hdl.generate import generate
from spikeforge.ir import golden
from spikeforge.ir.network import load as load_network
from spikeforge.sim.signoff import format_report, stall_phases, verify
from spikeforge import datasets
from spikeforge.demo import demo_network
from spikeforge.testing.hdl_harness import simulate_accelerator
from .common import BenchNetwork, dataset, float_model, log

__all__ = ["measure", "render", "main"]


def _measure(net, folding, samples) -> dict:
    dut = Accelerator(net, folding)
    started = time.perf_counter()
    run = simulate_accelerator(dut, samples)
    sim_seconds = time.perf_counter() - started
    expected = golden.run(net, samples)
    if not (np.array_equal(run.scores, expected.scores) and np.array_equal(run.labels, expected.labels)):
        raise AssertionError("RTL simulation disagrees with the golden model")
    measured = (run.result_cycles[-1] - run.result_cycles[0]) / (len(samples) - 1)
    model = predict(net, dut.plan.folding, samples)
    useful = float(np.mean(golden.spike_driven_additions(net, expected.input_spikes())))
    lanes = dut.plan.folding.total_lanes()
    return {
        "folding": dict(dut.plan.folding.lanes), "total_lanes": lanes, "samples": len(samples),
        "measured_cycles_per_sample": measured, "predicted_cycles_per_sample": model.cycles_per_sample,
        "model_error": measured / model.cycles_per_sample - 1,
        "max_result_time_error_cycles": float(np.max(np.abs(np.array(run.result_cycles) - model.result_cycles))),
        "slowest_stage_cycles": model.slowest_stage_cycles, "slowest_stage": max(model.stages, key=model.stages.get),
        "sum_of_stages_cycles": model.sum_of_stages,
        "measured_over_slowest_stage": measured / model.slowest_stage_cycles,
        "latency_cycles_predicted": model.latency,
        "useful_additions_per_sample": useful,
        "adder_utilisation": useful / (lanes * measured),
        "stages": model.stages, "simulation_seconds": sim_seconds,
    }


#: The issue-15 user's network: Fashion-MNIST 784-200-100-10 (trained as the other benchmark MLPs).
FMNIST_MLP = BenchNetwork("fmnist-200-100", "Fashion-MNIST MLP 784-200-100-10", "fashion-mnist", (200, 100),
                          epochs=4)
#: Its lanes budget (the automatic default's).
FMNIST_MLP_BUDGET = 64


def measure(ctx) -> dict:
    """The section of ``python -m benchmarks``: 20 samples with ``--quick``, else 100; the Fashion-MNIST
    MLP in Verilator on 30 (quick) or 200 test samples."""
    results = run(20 if ctx.quick else 100)
    results["fmnist_mlp"] = run_fmnist_mlp(ctx, 30 if ctx.quick else 200)
    return results


def _measured_balance(net, budget: int, spikes: list, banks: int) -> Folding:
    """The folding the balancer found on measured ``spikes`` for ``budget`` before the guard against the
    default: the smallest per-layer target whose fewest-lanes folding fits the budget."""
    targets = sorted({layer_cycles(net, i, lanes, spikes, banks) for i, layer in enumerate(net.layers)
                      for lanes in range(1, layer.out_features + 1)})
    for target in targets:
        try:
            folding = auto_folding(net, target_cycles=target, spikes_in=spikes, membrane_banks=banks)
        except FoldingError:
            continue
        if folding.total_adders() <= budget:
            return folding
    raise AssertionError("no folding fits the budget")


def run_fmnist_mlp(ctx, n_samples: int) -> dict:
    """The Fashion-MNIST MLP's foldings in Verilator, beside the model (see the module docstring)."""
    # Function-level: the converter needs torch, an optional heavy dependency.
    from spikeforge.converter.convert import convert
    train, test = dataset("fashion-mnist", "train"), dataset("fashion-mnist", "test")
    net = convert(float_model(ctx, FMNIST_MLP), train.images[:2000], timesteps=4, weight_bits=8,
                  labels=train.labels[:2000])
    samples = test.samples[:n_samples].reshape(n_samples, -1)
    spikes = [float(s.mean()) for s in golden.run(net, test.samples[:1000].reshape(1000, -1)).input_spikes()]
    budget = FMNIST_MLP_BUDGET
    cases, picks = [], {}
    for banks in (2, 1):
        default = auto_folding(net, lanes_budget=budget, membrane_banks=banks)
        found = _measured_balance(net, budget, spikes, banks)
        picked = balanced_folding(net, lanes_budget=budget, spikes_in=spikes, membrane_banks=banks)
        cases.append(("default (estimate)", default, banks))
        if found.config() != default.config():
            cases.append(("balanced on measured spikes", found, banks))
        if picked.config() not in (default.config(), found.config()):
            cases.append(("balancer's pick", picked, banks))
        picks[banks] = picked.config()
        log(f"fmnist-mlp, {banks} bank(s): the balancer picks {picked.config()}")
    cases.append(("hidden FIFO filling", Folding.for_network(net, {"layer1": 10, "layer3": 2, "layer5": 1}), 2))
    rows = []
    work = ctx.out_dir / "hdl_cycles_fmnist"
    expected = golden.run(net, samples)
    counts = expected.input_spikes()
    for what, folding, banks in cases:
        design_dir = work / f"{'-'.join(str(v) for v in folding.lanes.values())}-b{banks}"
        shutil.rmtree(design_dir, ignore_errors=True)
        design = generate(net, design_dir, lanes=folding.config(), membrane_banks=banks, spikes_in=spikes)
        started = time.perf_counter()
        result = run_fast(design_dir, samples, build_root=work / "build", progress=False)
        seconds = time.perf_counter() - started
        if not (np.array_equal(result.labels, expected.labels) and np.array_equal(result.scores, expected.scores)):
            raise AssertionError(f"{what}: the RTL disagrees with the golden model")
        measured = float((result.result_cycle[-1] - result.result_cycle[0]) / (n_samples - 1))
        beats = predict(net, folding, samples, membrane_banks=banks)
        per_sample = predict(net, folding, counts, membrane_banks=banks)
        offsets = (result.result_cycle - result.first_beat[0]) - beats.result_cycles
        rows.append({
            "case": what, "folding": folding.config(), "membrane_banks": banks,
            "balancer_picks": picks.get(banks) == folding.config(),
            "encoder_lanes": encoder_lanes_for(net, folding, membrane_banks=banks),
            "total_lanes": folding.total_lanes(), "samples": n_samples,
            "measured_cycles_per_sample": measured, "predicted_cycles_per_sample": beats.cycles_per_sample,
            "model_error": measured / beats.cycles_per_sample - 1,
            "per_sample_form_cycles": per_sample.cycles_per_sample,
            "per_sample_form_error": measured / per_sample.cycles_per_sample - 1,
            "generate_prediction": design["prediction"]["cycles_per_sample"],
            "max_result_time_error_cycles": float(np.max(np.abs(offsets))),
            "latency_measured": int(result.latency_cycles), "latency_predicted": beats.latency,
            "simulation_seconds": seconds,
        })
        log(f"fmnist-mlp {what} {folding.config()} banks {banks}: measured {measured:.1f}, model "
            f"{beats.cycles_per_sample:.1f}, per-sample form {per_sample.cycles_per_sample:.1f}")
    return {"network": f"{FMNIST_MLP.title}, T = 4", "lanes_budget": budget, "spikes_in_mean": spikes,
            "rows": rows}


def run(n_samples: int = 100) -> dict:
    results = {}
    net = demo_network()
    data = datasets.load("digits", "test")
    samples = data.samples[:n_samples].reshape(n_samples, -1)
    spikes = [float(s.mean()) for s in golden.run(net, data.samples[:512]).input_spikes()]
    folding = balanced_folding(net, lanes_budget=48, spikes_in=spikes)
    results["digits"] = {"network": "demo digits MLP 64-64-32-10, T = 8", "spikes_in_mean": spikes,
                         **_measure(net, folding, samples)}
    with tempfile.TemporaryDirectory() as tmp:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            generate(net, Path(tmp) / "rtl", lanes=dict(folding.lanes))
            times.append(time.perf_counter() - started)
        verilog_bytes = (Path(tmp) / "rtl" / "spikeforge_top.v").stat().st_size
    results["digits"]["generate_seconds"] = min(times)
    results["digits"]["verilog_bytes"] = verilog_bytes

    rows = []
    cases = [((20, 16, 12, 5), 6, {"fc1": 3, "fc2": 5, "fc3": 5}),
             ((20, 16, 12, 5), 6, {"fc1": 16, "fc2": 1, "fc3": 2}),
             ((32, 24, 10), 4, {"fc1": 7, "fc2": 3}),
             ((16, 40, 8, 4), 8, None)]
    for index, (sizes, T, lanes) in enumerate(cases):
        rnet = random_network(40 + index, sizes=sizes, timesteps=T, weight_bits=8)
        rsamples = np.random.default_rng(index).integers(0, 256, size=(24, sizes[0]))
        row = _measure(rnet, resolve_folding(rnet, lanes), rsamples)
        rows.append({"sizes": list(sizes), "timesteps": T, **row})
    results["random"] = rows
    return results


def render(results: dict, ctx=None) -> str:
    """The Markdown section: the table of :func:`text` in a code block."""
    return "\n".join(["## Amaranth RTL cycles vs. the cycle model", "",
                      "Back-to-back streams in Amaranth's simulator, every sample checked against the golden "
                      "model; the cycle model's prediction beside each measurement.", "",
                      "```", text(results), "```", ""])


def text(results: dict) -> str:
    d = results["digits"]
    lines = [
        f"digits demo (64-64-32-10, T = 8), folding {d['folding']} ({d['total_lanes']} lanes), {d['samples']} samples:",
        f"  measured {d['measured_cycles_per_sample']:.1f} cycles/sample, model {d['predicted_cycles_per_sample']:.1f} "
        f"({100 * d['model_error']:+.2f} %)",
        f"  slowest stage {d['slowest_stage']} {d['slowest_stage_cycles']:.1f} cycles "
        f"(measured / slowest = {d['measured_over_slowest_stage']:.3f}); sum of stages {d['sum_of_stages_cycles']:.0f}",
        f"  adder utilisation {100 * d['adder_utilisation']:.1f} % "
        f"({d['useful_additions_per_sample']:.0f} useful additions / ({d['total_lanes']} lanes x "
        f"{d['measured_cycles_per_sample']:.1f} cycles))",
        f"  generate (elaborate + Verilog): {d['generate_seconds']:.2f} s, {d['verilog_bytes'] / 1024:.0f} KiB",
        "",
        f"{'network':<16}{'T':>3}  {'folding':<28}{'measured':>9}{'model':>9}{'error':>8}{'slowest':>9}{'util.':>7}",
    ]
    for row in [{"sizes": [64, 64, 32, 10], "timesteps": 8, **d}] + results["random"]:
        name = "-".join(map(str, row["sizes"]))
        folding = ",".join(f"{k}={v}" for k, v in row["folding"].items())
        lines.append(f"{name:<16}{row['timesteps']:>3}  {folding:<28}{row['measured_cycles_per_sample']:>9.1f}"
                     f"{row['predicted_cycles_per_sample']:>9.1f}{100 * row['model_error']:>7.2f}%"
                     f"{row['slowest_stage_cycles']:>9.1f}{100 * row['adder_utilisation']:>6.0f}%")
    if "fmnist_mlp" in results:
        lines += ["", fmnist_text(results["fmnist_mlp"])]
    return "\n".join(lines)


def fmnist_text(f: dict) -> str:
    """The Fashion-MNIST MLP's table: measured in Verilator vs the model, per folding."""
    rows = f["rows"]
    lines = [f"{f['network']}, lanes budget {f['lanes_budget']}, {rows[0]['samples']} test samples in Verilator "
             f"(compiled harness); mean spikes in {', '.join(f'{s:.0f}' for s in f['spikes_in_mean'])}:",
             f"{'case':<29}{'folding':<32}{'banks':>5}{'enc':>4}{'measured':>10}{'model':>9}{'error':>8}"
             f"{'worst':>7}{'per-sample':>11}{'error':>8}{'latency':>9}{'model':>8}"]
    for r in rows:
        folding = ",".join(f"{k}={v}" for k, v in r["folding"].items())
        case = r["case"] + (" *" if r.get("balancer_picks") else "")
        lines.append(f"{case:<29}{folding:<32}{r['membrane_banks']:>5}{r['encoder_lanes']:>4}"
                     f"{r['measured_cycles_per_sample']:>10.1f}{r['predicted_cycles_per_sample']:>9.1f}"
                     f"{100 * r['model_error']:>7.2f}%{r['max_result_time_error_cycles']:>7.0f}"
                     f"{r['per_sample_form_cycles']:>11.1f}{100 * r['per_sample_form_error']:>7.2f}%"
                     f"{r['latency_measured']:>9}{r['latency_predicted']:>8.0f}")
    picked = "*: what the balancer picks for the budget with --spikes-from; " \
        if any("balancer_picks" in r for r in rows) else ""
    lines.append(f"({picked}model: beat by beat from the samples; worst: the largest |result beat - predicted| "
                 "in cycles; per-sample: the model from spike counts alone, what generate prints without --spikes-from)")
    return "\n".join(lines)


def _conv_signoff(net, folding, samples, labels, out_dir: Path, phases, spikes_in) -> dict:
    """Generate ``net`` folded by ``folding``, run ``phases`` in Verilator, the model beside it."""
    shutil.rmtree(out_dir / "rtl", ignore_errors=True)
    design = generate(net, out_dir / "rtl", lanes=folding, spikes_in=spikes_in)
    started = time.perf_counter()
    report = verify(net, out_dir / "rtl", samples, labels, phases=phases, build_root=out_dir / "build",
                    report_path=False)
    seconds = time.perf_counter() - started
    if not report["ok"]:
        raise AssertionError("Verilator sign-off failed:\n" + format_report(report))
    stream = next(p for p in report["phases"] if p["name"] == "stream")
    measured = report["timing"]["cycles_per_sample"]["mean"]
    model = predict(net, design["folding"], np.asarray(samples).reshape(len(samples), -1))
    return {
        "folding": design["folding"], "total_adders": design["total_adders"], "samples": len(samples),
        "phases": {p["name"]: {"checked": p["checked"], "mismatches": p["mismatches"]} for p in report["phases"]},
        "accuracy": stream.get("accuracy"),
        "measured_cycles_per_sample": measured, "predicted_cycles_per_sample": model.cycles_per_sample,
        "model_error": measured / model.cycles_per_sample - 1,
        "stages": model.stages, "slowest_stage": max(model.stages, key=model.stages.get),
        "layers": [{**entry, "measured_utilisation": entry["useful_additions"] / (entry["adders"] * measured)}
                   for entry in model.layers],
        "adder_utilisation": model.useful_additions / (design["total_adders"] * measured),
        "verify_seconds": seconds,
    }


def run_conv(digits_folding: str, fmnist_net=None, fmnist_budget: int = 128, fmnist_samples: int = 100,
             work_dir=None) -> dict:
    """The ``--conv`` measurements (see the module docstring)."""
    # Function-level: the shipped CNN and the converter need torch, an optional heavy dependency.
    from spikeforge.cnn_models import load_digits_cnn
    from spikeforge.converter.convert import convert
    work = Path(work_dir or tempfile.mkdtemp(prefix="hdl-cycles-conv-"))
    results = {}
    if fmnist_net is not None:
        fnet = load_network(fmnist_net)
        ftest = datasets.load("fashion-mnist", "test")
        spikes = [float(s.mean()) for s in golden.run(fnet, ftest.samples[:1000]).input_spikes()]
        folding = balanced_folding(fnet, lanes_budget=fmnist_budget, spikes_in=spikes)
        samples = ftest.samples[:fmnist_samples]
        phases = [{"name": "alone", "samples": [0]}, {"name": "stream", "samples": list(range(len(samples)))}]
        results["fmnist_cnn"] = {"network": f"Fashion-MNIST CNN conv16-pool-conv32-pool-fc, T = 4 ({fmnist_net})",
                                 "lanes_budget": fmnist_budget,
                                 **_conv_signoff(fnet, folding.config(), samples, ftest.labels[:fmnist_samples],
                                                 work / "fmnist", phases, spikes)}
        print(conv_text({"fmnist_cnn": results["fmnist_cnn"]}), flush=True)
    train, test = datasets.load("digits", "train"), datasets.load("digits", "test")
    net = convert(load_digits_cnn(), train.images, timesteps=4, weight_bits=8, labels=train.labels)
    n = len(test.samples)
    phases = [{"name": "alone", "samples": [0]}, {"name": "stream", "samples": list(range(n))}] \
        + stall_phases(n, densities=(0.5, 0.9))
    spikes = [float(s.mean()) for s in golden.run(net, test.samples).input_spikes()]
    results["digits_cnn"] = {"network": "digits CNN conv16-pool-conv32-pool-fc, T = 4",
                             **_conv_signoff(net, parse_lanes(digits_folding), test.samples, test.labels,
                                             work / "digits", phases, spikes)}
    return results


def conv_text(results: dict) -> str:
    lines = []
    for key, r in results.items():
        phases = ", ".join(f"{name} {p['checked']} checked / {p['mismatches']} mismatches"
                           for name, p in r["phases"].items())
        lines += [f"{r['network']}: folding {r['folding']} ({r['total_adders']} adders), {r['samples']} samples, "
                  f"phases {phases}",
                  f"  measured {r['measured_cycles_per_sample']:.1f} cycles/sample, model "
                  f"{r['predicted_cycles_per_sample']:.1f} ({100 * r['model_error']:+.2f} %), slowest stage "
                  f"{r['slowest_stage']} {r['stages'][r['slowest_stage']]:.0f}; adder utilisation "
                  f"{100 * r['adder_utilisation']:.1f} % overall, by layer "
                  + ", ".join(f"{e['name']} {e['lanes']}x{e['taps']} {100 * e['measured_utilisation']:.1f} %"
                              for e in r["layers"])]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hdl_cycles", description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=100, help="digits test samples to simulate (100)")
    parser.add_argument("--conv", action="store_true", help="measure the CNNs in Verilator instead")
    parser.add_argument("--digits-folding", default="conv1=2x3,conv2=16x3,fc=1",
                        help="--conv: the digits CNN's folding (conv1=2x3,conv2=16x3,fc=1)")
    parser.add_argument("--fmnist-net", type=Path, help="--conv: a converted Fashion-MNIST CNN directory")
    parser.add_argument("--fmnist-budget", type=int, default=128, help="--conv: its lanes budget in adders (128)")
    parser.add_argument("--fmnist-samples", type=int, default=100, help="--conv: its test samples (100)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="--conv: where designs and Verilator builds go (a fresh temporary folder); "
                             "builds of an unchanged design there are reused")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="JSON results (build/bench/hdl_cycles.json, with --conv hdl_cycles_conv.json)")
    args = parser.parse_args(argv)
    if args.conv:
        results = run_conv(args.digits_folding, args.fmnist_net, args.fmnist_budget, args.fmnist_samples,
                           args.work_dir)
        print(conv_text(results))
        args.output = args.output or Path("build/bench/hdl_cycles_conv.json")
    else:
        results = run(args.samples)
        print(text(results))
        args.output = args.output or Path("build/bench/hdl_cycles.json")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
