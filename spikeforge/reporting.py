"""Reports for people: Markdown tables, small PNG plots, and the per-network report of ``spikeforge report``.

Plots use matplotlib's object API (:class:`matplotlib.figure.Figure`, saved through the Agg canvas), so
nothing here touches pyplot's global backend state.

:func:`network_report` measures one integer network — spike density per layer and timestep (literal
golden model), accuracy vs. T (when a dataset is given), cycles per layer (the hardware cycle model,
from :mod:`spikeforge.hdl.cycle_model`) and the design's resources (when a generated ``design.json``
or a board report lies beside the network) — and :func:`write_network_report` renders it as
``REPORT.md`` + PNGs + ``report.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from spikeforge.hdl import cycle_model
from spikeforge.ir import amplification, atomic, golden
from spikeforge.ir.errors import InputError

__all__ = ["markdown_table", "new_figure", "save_figure", "fmt", "network_report", "write_network_report",
           "render_network_report", "REPORT_TIMESTEPS"]

#: Timesteps the accuracy-vs.-T sweep of a report covers.
REPORT_TIMESTEPS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16)


def fmt(value, digits: int = 2, unit: str = "") -> str:
    """A number for a table: thousands separators for big ones, ``—`` for ``None``."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)) or (float(value).is_integer() and abs(value) >= 1000):
        text = f"{int(value):,}"
    elif abs(value) >= 1000:
        text = f"{value:,.0f}"
    else:
        text = f"{value:.{digits}f}"
    return f"{text}{unit}"


def markdown_table(headers, rows, align: str | None = None) -> str:
    """A GitHub-flavoured Markdown table; ``align`` is one of ``l``/``r``/``c`` per column (default:
    first column left, the rest right)."""
    headers = [str(h) for h in headers]
    align = align or ("l" + "r" * (len(headers) - 1))
    if len(align) != len(headers):
        raise InputError(f"align {align!r} has {len(align)} columns, the table {len(headers)}")
    marks = {"l": ":--", "r": "--:", "c": ":-:"}
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    for row in rows:
        cells = [str(c).replace("|", "\\|") for c in row]
        if len(cells) != len(headers):
            raise InputError(f"row {row!r} has {len(cells)} cells, the table {len(headers)} columns")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def new_figure(width: float = 7.0, height: float = 4.0, ncols: int = 1, nrows: int = 1):
    """A figure and its axes (a single Axes for 1 x 1, else an array), not registered with pyplot."""
    # matplotlib is heavy (~0.5 s): imported only when a plot is drawn, not by every report or command.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots(nrows, ncols, squeeze=True)
    return figure, axes


def save_figure(figure, path, dpi: int = 90) -> Path:
    """Save as PNG (kept small: ~700 px wide at the default size) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, format="png", metadata={"Software": None})
    return path


def write_json(path, data, compact: bool = False) -> Path:
    """JSON for people (indented) or ``compact`` (one line per top-level key, for big result files);
    written atomically through :mod:`spikeforge.ir.atomic`."""
    if not compact:
        return atomic.write_json(path, data)
    text = "{\n" + ",\n".join(f"{json.dumps(key)}: {json.dumps(value, default=atomic.plain, separators=(',', ':'))}"
                              for key, value in data.items()) + "\n}\n"
    return atomic.write_text(path, text)


# --- the per-network report -------------------------------------------------------------------------


def _spike_density(net, samples) -> dict:
    """Mean fraction of each layer's inputs that spike at each timestep (literal golden model)."""
    literal = golden.run_timesteps(net, samples)
    widths = [net.in_features] + [layer.out_features for layer in net.hidden_layers]
    names = ["input"] + [layer.name for layer in net.hidden_layers]
    density = {}
    for name, width, counts in zip(names, widths, literal.spike_counts):
        density[name] = (counts.mean(axis=0) / width).tolist()
    spikes = [counts.sum(axis=1) for counts in literal.spike_counts]
    return {"per_timestep": density,
            "spikes_per_sample": {name: float(s.mean()) for name, s in zip(names, spikes)},
            # per-feature counts: a conv spike's fan-out depends on its position
            "additions_per_sample": float(golden.spike_driven_additions(
                net, literal.input_spikes(per_feature=True)).mean()),
            "spike_counts": literal.spike_counts}


def _accuracy_vs_timesteps(net, data, timesteps) -> dict:
    """Accuracy of the network re-timed to each T (ir.amplification, k = 2), exact at its own T."""
    rows = []
    for T in timesteps:
        result = amplification.run(net, data.samples, amplification=2.0, timesteps=T)
        additions = golden.spike_driven_additions(net, result.input_spikes())
        rows.append({"timesteps": T, "accuracy": float(np.mean(result.labels == data.labels)),
                     "additions_per_sample": float(additions.mean()), "exact": T == net.timesteps})
    own = golden.run(net, data.samples)
    return {"dataset": f"{data.name}/{data.split}", "samples": len(data), "points": rows,
            "accuracy": float(np.mean(own.labels == data.labels)),
            "float_accuracy": net.calibration.get("float_accuracy", {}).get(f"{data.name}/{data.split}")}


def _cycles(net, spike_counts, lanes=None) -> dict:
    """Cycles per layer from the hardware cycle model (``available: False`` with the reason if it fails)."""
    try:
        prediction = cycle_model.predict(net, lanes, spike_counts)
    except Exception as error:  # report what went wrong instead of failing the whole report
        return {"available": False, "why": f"cycle model failed: {type(error).__name__}: {error}"}
    return {"available": True, "source": "spikeforge.hdl.cycle_model.predict (analytical, checked against RTL)",
            "cycles_per_sample": float(prediction.cycles_per_sample), "latency": float(prediction.latency),
            "sum_of_stages": float(prediction.sum_of_stages),
            "adder_utilisation": float(prediction.adder_utilisation),
            "useful_additions": float(prediction.useful_additions),
            "stages": {k: float(v) for k, v in prediction.stages.items()},
            "layers": [{k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in layer.items()}
                       for layer in prediction.layers]}


def _design_files(network_dir: Path | None, design_dir: Path | None) -> dict:
    """Resources and folding from a generated ``design.json`` / board ``report.json``, if present."""
    found = {}
    candidates = []
    for folder in (design_dir, network_dir):
        if folder is not None:
            candidates += [folder / "design.json", folder / "rtl" / "design.json", folder / "report.json",
                           folder / "board" / "report.json"]
    for path in candidates:
        if path.is_file():
            try:
                found[str(path)] = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
    return found


def network_report(net, *, dataset=None, samples: int | None = 1000, network_dir=None, design_dir=None,
                   timesteps=REPORT_TIMESTEPS, lanes=None) -> dict:
    """Measure one integer network for people (see the module docstring). JSON-serialisable.

    Parameters
    ----------
    net : Network
    dataset : spikeforge.datasets.Dataset, optional
        Enables accuracy vs. T; its first ``samples`` samples also drive the spike statistics.
        Without one, uniformly random bytes (seed 0) drive them and the report says so.
    lanes : folding for the cycle model (layer name -> lanes), default: the generator's automatic one.
    """
    start = time.perf_counter()
    report = {"network": {"dir": str(network_dir) if network_dir else None, "timesteps": net.timesteps,
                          "layers": [{"name": l.name, "in": l.in_features, "out": l.out_features,
                                      "weight_bits": l.weight_bits, "fires": l.fires,
                                      "rom_bits": l.in_features * l.out_features * l.weight_bits}
                                     for l in net.layers],
                          "classes": len(net.classes), "calibration": net.calibration}}
    if dataset is not None:
        data = dataset.head(min(samples, len(dataset)) if samples else None)
        stimulus, source = data.samples, f"{data.name}/{data.split}, first {len(data)} samples"
    else:
        rng = np.random.default_rng(0)
        stimulus = rng.integers(0, 256, size=(samples or 1000, net.in_features), dtype=np.uint8)
        source = f"{len(stimulus)} uniformly random byte vectors (seed 0): no dataset given"
        data = None
    density = _spike_density(net, stimulus)
    designs = _design_files(Path(network_dir) if network_dir else None, Path(design_dir) if design_dir else None)
    if lanes is None:
        for design in designs.values():
            if design.get("format") in ("spikeforge-design", "spikeforge-board-build") and design.get("folding"):
                lanes = design["folding"]
                break
    report["stimulus"] = source
    report["spikes"] = {k: v for k, v in density.items() if k != "spike_counts"}
    if data is not None:
        report["accuracy"] = _accuracy_vs_timesteps(net, data, timesteps)
    report["cycles"] = _cycles(net, density["spike_counts"], lanes)
    report["design"] = designs
    report["seconds"] = time.perf_counter() - start
    return report


def _plot_density(report: dict, path: Path) -> Path:
    per_step = report["spikes"]["per_timestep"]
    figure, axes = new_figure(7, 3.8)
    for name, values in per_step.items():
        axes.plot(range(1, len(values) + 1), 100 * np.asarray(values), marker="o", label=name)
    axes.set_xlabel("timestep (1 = first, most significant)")
    axes.set_ylabel("neurons spiking (%)")
    axes.set_title("spike density per layer and timestep")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return save_figure(figure, path)


def _plot_accuracy(report: dict, path: Path) -> Path:
    acc = report["accuracy"]
    points = acc["points"]
    figure, axes = new_figure(7, 3.8)
    axes.plot([p["timesteps"] for p in points], [100 * p["accuracy"] for p in points], marker="o",
              label="iLIF k = 2 (re-timed network)")
    axes.plot([report["network"]["timesteps"]], [100 * acc["accuracy"]], marker="*", markersize=14,
              linestyle="none", label=f"this network (T = {report['network']['timesteps']}, exact)")
    if acc.get("float_accuracy") is not None:
        axes.axhline(100 * acc["float_accuracy"], color="grey", linestyle="--", label="float ANN")
    axes.set_xlabel("timesteps T")
    axes.set_ylabel(f"accuracy on {acc['dataset']} (%)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return save_figure(figure, path)


def _plot_cycles(report: dict, path: Path) -> Path:
    stages = report["cycles"]["stages"]
    figure, axes = new_figure(7, 0.8 + 0.35 * len(stages))
    names = list(stages)
    axes.barh(names, [stages[n] for n in names], color="tab:blue")
    axes.invert_yaxis()
    axes.axvline(report["cycles"]["cycles_per_sample"], color="tab:red", linestyle="--",
                 label="cycles per sample (pipelined)")
    axes.set_xlabel("mean cycles per sample")
    axes.set_title("cycles per pipeline stage")
    axes.legend(fontsize=8)
    return save_figure(figure, path)


def render_network_report(report: dict, plots: dict) -> str:
    """Markdown for :func:`network_report`; ``plots`` maps a plot name to its path relative to the Markdown."""
    net = report["network"]
    lines = [f"# spikeforge report: {net['dir'] or 'network'}", "",
             f"T = {net['timesteps']} timesteps, {len(net['layers'])} layers, {net['classes']} classes. "
             f"Spike statistics from {report['stimulus']}.", ""]
    lines.append(markdown_table(
        ["layer", "in", "out", "weight bits", "fires", "ROM bits", "spikes in / sample"],
        [[l["name"], l["in"], l["out"], l["weight_bits"], fmt(l["fires"]), fmt(l["rom_bits"]),
          fmt(list(report["spikes"]["spikes_per_sample"].values())[i])]
         for i, l in enumerate(net["layers"])]))
    lines += ["", f"Spike-driven additions per sample (events × fan-out): "
                  f"**{fmt(report['spikes']['additions_per_sample'], 0)}**.", ""]
    if "density" in plots:
        lines += ["## Spike density per layer and timestep", "", f"![spike density]({plots['density']})", ""]
        steps = len(next(iter(report["spikes"]["per_timestep"].values())))
        lines.append(markdown_table(["layer"] + [f"t{t + 1}" for t in range(steps)],
                                    [[name] + [f"{100 * v:.1f}%" for v in values]
                                     for name, values in report["spikes"]["per_timestep"].items()]))
        lines.append("")
    if "accuracy" in report:
        acc = report["accuracy"]
        lines += ["## Accuracy vs. timesteps", ""]
        float_text = fmt(100 * acc["float_accuracy"], 2, " %") if acc.get("float_accuracy") is not None else \
            "not recorded in the network (convert with a named dataset to record it)"
        lines += [f"On {acc['dataset']} ({acc['samples']} samples). This network at its own T: "
                  f"**{100 * acc['accuracy']:.2f} %**; float ANN: {float_text}. Other T re-time the same integer "
                  f"network (biases and input codes rescaled, `spikeforge.ir.amplification`), which is close to "
                  f"but not the same as converting again at that T.", ""]
        if "accuracy" in plots:
            lines += [f"![accuracy vs T]({plots['accuracy']})", ""]
        lines.append(markdown_table(["T", "accuracy", "additions / sample", ""],
                                    [[p["timesteps"], f"{100 * p['accuracy']:.2f} %", fmt(p["additions_per_sample"], 0),
                                      "this network" if p["exact"] else ""] for p in acc["points"]]))
        lines.append("")
    cycles = report["cycles"]
    lines += ["## Cycles per layer", ""]
    if cycles.get("available"):
        lines += [f"From {cycles['source']}: **{fmt(cycles['cycles_per_sample'], 1)} cycles per sample** "
                  f"pipelined (sum of stages {fmt(cycles['sum_of_stages'], 1)}), latency "
                  f"{fmt(cycles['latency'], 1)} cycles, adder utilisation {100 * cycles['adder_utilisation']:.1f} %.", ""]
        if "cycles" in plots:
            lines += [f"![cycles per stage]({plots['cycles']})", ""]
        layer_rows = []
        for layer in cycles["layers"]:
            layer_rows.append([layer.get("name"), layer.get("lanes"), fmt(layer.get("spikes_in"), 1),
                               fmt(layer.get("accumulate_cycles"), 1), fmt(layer.get("fire_cycles"), 1)])
        lines.append(markdown_table(["layer", "lanes", "spikes in", "accumulate cycles", "fire cycles"], layer_rows))
    else:
        lines.append(f"Not available: {cycles.get('why')}.")
    lines += ["", "## Resources", ""]
    if report["design"]:
        for path, design in report["design"].items():
            lines.append(f"* `{path}`: {_describe_design(design)}")
    else:
        lines.append("No `design.json` or board `report.json` beside the network: run `spikeforge generate` / a "
                     "board build and pass `--design DIR` to include resource use.")
    lines.append("")
    return "\n".join(lines)


def _describe_design(design: dict) -> str:
    """One line for a generated ``design.json`` or a board ``report.json``."""
    if design.get("format") == "spikeforge-board-build":
        if design.get("status") != "built":
            return design.get("message") or f"board build status {design.get('status')!r}"
        syn = design.get("synthesis") or {}
        fmax = design.get("fmax_mhz")
        return (f"{design.get('board')} ({design.get('device')}): {fmt(syn.get('luts'))} LUT4, {fmt(syn.get('ffs'))} FF, "
                f"{fmt(syn.get('block_rams'))} block RAM, {fmt(syn.get('dsps'))} DSP; Fmax "
                f"{fmt(fmax, 1, ' MHz')} (board clock {fmt(design.get('clock_mhz'), 1, ' MHz')}); lanes "
                f"{design.get('folding')}")
    if design.get("format") == "spikeforge-design":
        rom = sum(layer.get("rom_bits", 0) for layer in design.get("layers", []))
        prediction = design.get("prediction") or {}
        return (f"generated design, lanes {design.get('folding')} ({design.get('total_lanes')} in total), "
                f"{fmt(rom)} ROM bits, predicted {fmt(prediction.get('cycles_per_sample'), 0)} cycles/sample "
                f"[{prediction.get('spikes_basis', '')}]; LUTs need a board build (`spikeforge build`)")
    return "not a spikeforge design or board report"


def write_network_report(report: dict, out_dir) -> dict:
    """Write ``REPORT.md``, ``report.json`` and the PNGs into ``out_dir``; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {"density": _plot_density(report, out_dir / "spike_density.png")}
    if "accuracy" in report:
        plots["accuracy"] = _plot_accuracy(report, out_dir / "accuracy_vs_timesteps.png")
    if report["cycles"].get("available"):
        plots["cycles"] = _plot_cycles(report, out_dir / "cycles_per_stage.png")
    relative = {name: path.name for name, path in plots.items()}
    markdown = out_dir / "REPORT.md"
    markdown.write_text(render_network_report(report, relative))
    data = write_json(out_dir / "report.json", report)
    return {"markdown": markdown, "json": data, **plots}
