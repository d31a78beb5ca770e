"""Sign-off of emitted Verilog against the golden model: cocotb + Verilator, bit-exact, with cycle counts.

:func:`verify` is what ``spikeforge verify`` and the demo call::

    report = verify(net, "build/rtl", dataset.samples, dataset.labels, stalls="random")
    print(format_report(report))

It builds the design (once per design, :mod:`.verilator`), then runs one simulation of several
*phases* (:mod:`.cocotb_signoff`):

* ``alone`` — sample 0 into the idle pipeline: the latency of one sample;
* ``stream`` — every sample back to back, no stalls: exactness, cycles per sample, throughput;
* with ``stalls="random"``, ``stalls-25``, ``stalls-50``, ``stalls-90`` — every sample again with
  seeded random input gaps *and* output back-pressure of that density.

Every ``results`` beat (label and all scores) is compared with the golden model's; the report counts
mismatches (with the first one decoded), the RTL's accuracy, cycles per sample (min/mean/max, from
the spacing of result beats in the ``stream`` phase), the latency, the steady-state throughput, and
the analytical cycle model's predictions beside them.

Payloads are encoded and decoded only through the layouts of :mod:`spikeforge.hdl.layouts`, sized
from the ``design.json`` written next to the Verilog.

**The AXI4-Stream top** (``design.json`` ``"interface": "axis"``, :mod:`spikeforge.hdl.axis`) is signed off
the same way: the testbench drives ``aclk``/``aresetn`` (active low) and ``s_axis_*``, takes ``m_axis_*``
(the ``m_axis_tdata`` layout of :func:`~spikeforge.hdl.axis.axis_result_layout`, ``m_axis_tlast`` compared as
part of every beat), with the same random ``tvalid`` gaps, ``tready`` back-pressure and mid-sample resets.
Before anything is built, the Verilog's top module must have the ports ``design.json`` says it has
(:meth:`Design.check_ports`): an ``axis`` design.json beside stream Verilog, or the other way round, is refused.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from spikeforge.hdl import cycle_model
from spikeforge.hdl.axis import axis_result_layout
from spikeforge.hdl.layouts import pixel_layout, result_layout
from spikeforge.ir import golden
from spikeforge.ir.atomic import write_json
from spikeforge.ir.errors import InputError
from spikeforge.ir.fingerprint import check_identity
from spikeforge.ir.network import Network

from . import verilator

__all__ = ["SignoffError", "Design", "PayloadCodec", "INTERFACES", "STALL_DENSITIES", "stall_phases", "run_phases",
           "verify", "format_report", "worst_case_cycles"]

TEST_MODULE = "spikeforge.sim.cocotb_signoff"
JOB_ENV = "SPIKEFORGE_SIGNOFF_JOB"
#: The pause densities of ``stalls="random"``: the fraction of cycles with no input beat offered,
#: and (independently) the fraction of cycles ``results`` is not ready while a beat is offered.
STALL_DENSITIES = (0.25, 0.5, 0.9)
CLOCK_PERIOD_NS = 10
#: The top-level interfaces the sign-off drives (``design.json`` ``interface``; absent means ``"stream"``).
INTERFACES = ("stream", "axis")


class SignoffError(InputError):
    """The design, the network and the samples do not fit together (a user error, not a mismatch)."""


# -- the design next to the Verilog ----------------------------------------------------------------

@dataclass
class Design:
    """What ``design.json`` in an RTL directory says about the emitted Verilog.

    Attributes
    ----------
    directory : Path
    top : str
        The Verilog top module.
    verilog : Path
    timesteps, classes, label_bits, score_bits, pixels_payload_bits, results_payload_bits, in_features
        As emitted by :func:`spikeforge.hdl.generate.generate`.
    info : dict
        The whole ``design.json``.
    interface : str
        ``"stream"`` (DESIGN.md §3) or ``"axis"`` (:mod:`spikeforge.hdl.axis`).
    """

    directory: Path
    top: str
    verilog: Path
    timesteps: int
    classes: list
    label_bits: int
    score_bits: int
    pixels_payload_bits: int
    results_payload_bits: int
    in_features: int
    info: dict = field(repr=False)
    interface: str = "stream"

    @classmethod
    def load(cls, directory, interfaces=("stream",)) -> "Design":
        """Read ``design.json`` in ``directory``.

        ``interfaces``: the top-level interfaces the caller can drive; a design with another is refused
        (the compiled fast engine and the benchmarks drive only the stream top; :func:`verify` takes both).
        """
        directory = Path(directory)
        path = directory / "design.json"
        if not path.is_file():
            raise SignoffError(f"{directory} has no design.json: give the directory written by "
                               f"`spikeforge generate` (the Verilog and design.json)")
        try:
            info = json.loads(path.read_text())
        except ValueError as error:
            raise SignoffError(f"{path} is not valid JSON: {error}") from None
        missing = [k for k in ("top", "verilog", "timesteps", "classes", "label_bits", "score_bits",
                               "pixels_payload_bits", "results_payload_bits", "in_features") if k not in info]
        if missing:
            raise SignoffError(f"{path} lacks {', '.join(missing)}")
        verilog = directory / info["verilog"]
        if not verilog.is_file():
            raise SignoffError(f"{path} names Verilog {info['verilog']!r}, which does not exist in {directory}")
        interface = info.get("interface", "stream")
        if interface not in INTERFACES:
            raise SignoffError(f"{path} says interface {interface!r}; known: {', '.join(map(repr, INTERFACES))}")
        if interface not in interfaces:
            raise SignoffError(f"{directory} holds an AXI4-Stream top (design.json interface {interface!r}); this "
                               f"simulation drives only the stream top ({', '.join(map(repr, interfaces))}): sign "
                               f"it off with the cocotb sign-off (`spikeforge verify`, --engine cocotb)")
        if interface == "axis" and not isinstance((info.get("axis") or {}).get("m_axis_tdata_bits"), int):
            raise SignoffError(f"{path} says interface 'axis' but records no axis.m_axis_tdata_bits")
        classes = info.get("class_names") or info["classes"]
        if isinstance(classes, int):
            classes = [str(i) for i in range(classes)]
        return cls(directory=directory, top=info["top"], verilog=verilog, timesteps=int(info["timesteps"]),
                   classes=list(classes), label_bits=int(info["label_bits"]), score_bits=int(info["score_bits"]),
                   pixels_payload_bits=int(info["pixels_payload_bits"]),
                   results_payload_bits=int(info["results_payload_bits"]), in_features=int(info["in_features"]),
                   info=info, interface=interface)

    def expected_ports(self) -> dict:
        """``{port: (direction, width)}`` the top module must have for this design's interface."""
        if self.interface == "axis":
            width = int(self.info["axis"]["m_axis_tdata_bits"])
            return {"aclk": ("input", 1), "aresetn": ("input", 1), "s_axis_tdata": ("input", 8),
                    "s_axis_tvalid": ("input", 1), "s_axis_tready": ("output", 1), "s_axis_tlast": ("input", 1),
                    "m_axis_tdata": ("output", width), "m_axis_tvalid": ("output", 1),
                    "m_axis_tready": ("input", 1), "m_axis_tlast": ("output", 1)}
        return {"clk": ("input", 1), "rst": ("input", 1),
                "pixels__valid": ("input", 1), "pixels__ready": ("output", 1),
                "pixels__payload": ("input", self.pixels_payload_bits),
                "results__valid": ("output", 1), "results__ready": ("input", 1),
                "results__payload": ("output", self.results_payload_bits)}

    def verilog_ports(self) -> dict:
        """``{port: (direction, width)}`` of the top module as the Verilog declares it (Amaranth's output:
        ``input [N:0] name;`` declarations inside ``module top(...);``)."""
        text = self.verilog.read_text(errors="replace")
        header = re.search(rf"\bmodule\s+{re.escape(self.top)}\s*\(([^)]*)\)\s*;", text)
        if header is None:
            raise SignoffError(f"{self.verilog} has no module {self.top!r}, the top design.json names")
        names = [n.strip() for n in header.group(1).split(",") if n.strip()]
        end = text.find("endmodule", header.end())
        body = text[header.end():end if end >= 0 else len(text)]
        ports = {}
        for direction, high, low, name in re.findall(r"^\s*(input|output)\s+(?:(?:wire|reg)\s+)?(?:signed\s+)?"
                                                     r"(?:\[(\d+):(\d+)\]\s*)?(\w+)\s*;", body, re.M):
            if name in names:
                ports[name] = (direction, int(high) - int(low) + 1 if high else 1)
        return ports

    def check_ports(self):
        """The Verilog's top module must have exactly the ports of the interface ``design.json`` records.

        Raises
        ------
        SignoffError
            Naming the missing, unexpected or mis-sized ports (an ``axis`` design.json beside stream Verilog,
            or the other way round, or a Verilog of another width).
        """
        expected, found = self.expected_ports(), self.verilog_ports()
        problems = []
        missing = [p for p in expected if p not in found]
        if missing:
            problems.append(f"missing {', '.join(missing)}")
        extra = [p for p in found if p not in expected]
        if extra:
            problems.append(f"unexpected {', '.join(extra)}")
        problems += [f"{p} is {found[p][0]} [{found[p][1]}] where {expected[p][0]} [{expected[p][1]}] is expected"
                     for p in expected if p in found and found[p] != expected[p]]
        if problems:
            kind = "an AXI4-Stream (interface 'axis')" if self.interface == "axis" else "a stream (DESIGN.md §3)"
            raise SignoffError(f"design.json in {self.directory} describes {kind} top, but module {self.top!r} "
                               f"in {self.verilog.name} does not have its ports: {'; '.join(problems)}; "
                               f"regenerate the design (`spikeforge generate`)")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def check_identity(self, net: Network, network_path=None):
        """The network must be the very one the design was generated from: its fingerprint
        (:mod:`spikeforge.ir.fingerprint`) must be the one ``design.json`` records.

        A design of an older spikeforge records none and is refused too (regenerate it): bit-exact
        results on a dataset prove nothing about weights on inputs the dataset never lights.
        """
        check_identity(self.info.get("network"), net, what="the RTL in", where=self.directory,
                       network_path=network_path, error=SignoffError)

    def check_network(self, net: Network):
        """The network must fit the design's ports and widths (shape, T, classes, score range)."""
        problems = []
        if net.timesteps != self.timesteps:
            problems.append(f"T = {net.timesteps} vs the design's {self.timesteps}")
        if net.in_features != self.in_features:
            problems.append(f"{net.in_features} inputs vs the design's {self.in_features}")
        if net.num_classes != self.num_classes:
            problems.append(f"{net.num_classes} classes vs the design's {self.num_classes}")
        bound = net.score_bound()
        if bound > (1 << (self.score_bits - 1)) - 1:
            problems.append(f"scores up to ±{bound} do not fit the design's {self.score_bits}-bit scores")
        if problems:
            raise SignoffError(f"the network does not match the design in {self.directory}: " + "; ".join(problems))


class PayloadCodec:
    """Encode ``pixels`` beats and encode/decode ``results`` beats through the HDL's payload layouts.

    For an AXI4-Stream design the input beats are the same numbers (``s_axis_tdata`` with ``s_axis_tlast``
    in bit 8); a result beat is ``m_axis_tdata`` (:func:`~spikeforge.hdl.axis.axis_result_layout`) with
    ``m_axis_tlast`` in the bit above it, which must be 1. :attr:`ports` is the testbench's port map
    (:mod:`.cocotb_signoff`).
    """

    def __init__(self, design: Design):
        self.pixels = pixel_layout()
        self.results = result_layout(design.num_classes, design.score_bits)
        self.axis = None
        self.ports = None
        if design.interface == "axis":
            self.axis = axis_result_layout(design.num_classes, design.score_bits)
            width = int(design.info["axis"]["m_axis_tdata_bits"])
            if self.axis.size != width:
                raise SignoffError(f"design.json says m_axis_tdata is {width} bits, the layout for "
                                   f"{design.num_classes} classes of {design.score_bits}-bit scores has "
                                   f"{self.axis.size}")
            self.ports = {"clock": "aclk", "reset": "aresetn", "reset_active_low": True,
                          "input": {"kind": "axis", "name": "s_axis", "tdata_bits": 8},
                          "output": {"kind": "axis", "name": "m_axis", "tdata_bits": width}}
        if self.pixels.size != design.pixels_payload_bits:
            raise SignoffError(f"design.json says pixels payloads are {design.pixels_payload_bits} bits, the "
                               f"layout has {self.pixels.size}")
        if self.results.size != design.results_payload_bits:
            raise SignoffError(f"design.json says results payloads are {design.results_payload_bits} bits, the "
                               f"layout for {design.num_classes} classes of {design.score_bits}-bit scores has "
                               f"{self.results.size}")
        if self.results["label"].shape.width != design.label_bits:
            raise SignoffError(f"design.json says labels are {design.label_bits} bits, the layout has "
                               f"{self.results['label'].shape.width}")
        # 512 possible pixel beats: encode each once.
        self._pixel_table = np.array([[self.pixels.const({"data": d, "last": last}).as_bits() for d in range(256)]
                                      for last in (0, 1)], dtype=np.int64)

    def encode_pixels(self, samples: np.ndarray) -> np.ndarray:
        """Raw samples (N, F) or (N, *shape) -> payloads (N, F), ``last`` on each sample's final beat."""
        samples = np.asarray(samples)
        samples = samples.reshape(len(samples), -1)
        last = np.zeros(samples.shape, dtype=np.int64)
        last[:, -1] = 1
        return self._pixel_table[last, samples.astype(np.int64)]

    def encode_result(self, label: int, scores) -> int:
        value = {"label": int(label), "scores": [int(s) for s in scores]}
        if self.axis is not None:
            return self.axis.const(value).as_bits() | (1 << self.axis.size)      # tlast = 1
        return self.results.const(value).as_bits()

    def decode_result(self, raw: int) -> dict:
        raw = int(raw)
        if self.axis is not None:
            view = self.axis.from_bits(raw & ((1 << self.axis.size) - 1))
            decoded = {"label": int(view.label), "scores": [int(s) for s in view.scores]}
            if not raw >> self.axis.size:
                decoded["tlast"] = 0
            return decoded
        view = self.results.from_bits(raw)
        return {"label": int(view.label), "scores": [int(s) for s in view.scores]}


# -- one simulation of several phases --------------------------------------------------------------

def worst_case_cycles(net: Network) -> int:
    """Cycles one sample can take in the slowest folding (one lane): every input bit a spike."""
    T = net.timesteps
    return sum(layer.in_features * T * layer.out_features + T * layer.out_features for layer in net.layers)


def stall_phases(count: int, densities=STALL_DENSITIES, seed: int = 1, start: int = 0) -> list:
    """``stalls-<percent>`` phases over samples ``start .. start+count-1``, seeded per density."""
    phases = []
    for k, density in enumerate(densities):
        spec_in = {"density": float(density), "seed": int(seed) * 1000 + 2 * k}
        spec_out = {"density": float(density), "seed": int(seed) * 1000 + 2 * k + 1}
        phases.append({"name": f"stalls-{round(density * 100)}", "samples": list(range(start, start + count)),
                       "input_pauses": spec_in, "output_pauses": spec_out})
    return phases


class _ProgressBar:
    """A tqdm bar fed by the simulator: the cocotb test rewrites ``path`` ("<results> <cycle>"), a thread
    here polls it (the simulation runs in another process) and shows samples done and simulated cycles/s."""

    def __init__(self, path: Path, total: int, enabled: bool):
        self.path, self.enabled = path, enabled
        self.bar = tqdm(total=total, desc="cocotb + Verilator", unit="sample", disable=not enabled, leave=False,
                        file=sys.stderr)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        started = time.perf_counter()
        while not self.stop.wait(0.25):
            try:
                done, cycle = (int(v) for v in self.path.read_text().split())
            except (OSError, ValueError):
                continue
            self.bar.update(min(done, self.bar.total) - self.bar.n)
            self.bar.set_postfix_str(f"{cycle / max(time.perf_counter() - started, 1e-9) / 1e3:,.0f} k cycles/s",
                                     refresh=False)

    def __enter__(self):
        if self.enabled:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()
        self.bar.close()


def run_phases(built: verilator.Build, codec: PayloadCodec, samples: np.ndarray, expected: list, phases: list, *,
               idle_limit: int, work_dir=None, waves: bool = False, waves_file=None,
               tail_cycles: int = 200, bar: bool | None = False) -> dict:
    """Run ``phases`` in one simulation of ``built``; returns the raw result of :mod:`.cocotb_signoff`.

    ``samples`` are raw (N, F) bytes, ``expected`` the N results payloads (ints). A failed cocotb test
    (mismatches, a deadlock) still returns its result file, with ``simulator_error`` set; a simulator
    that crashed before writing one raises :class:`~.verilator.SimulatorError`. ``bar``: a tqdm bar on
    stderr while the simulator runs (results checked of all phases, simulated cycles/s); ``None``: when
    stderr is a terminal.
    """
    own_dir = work_dir is None
    work_dir = Path(tempfile.mkdtemp(prefix="signoff-", dir=built.build_dir) if own_dir else work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    pixels = work_dir / "pixels.npz"
    np.savez(pixels, payloads=codec.encode_pixels(samples))
    result_path = work_dir / "result.json"
    if result_path.exists():
        result_path.unlink()
    job = {"period_ns": CLOCK_PERIOD_NS, "reset_cycles": 4, "idle_limit": int(idle_limit),
           "tail_cycles": int(tail_cycles), "pixels": str(pixels),
           "expected": [f"{int(p):x}" for p in expected], "phases": phases, "result": str(result_path)}
    enabled = sys.stderr.isatty() if bar is None else bool(bar)
    progress_path = work_dir / "progress.txt"
    if enabled:
        job["progress"] = str(progress_path)
    if codec.ports is not None:
        job["ports"] = codec.ports
    job_path = work_dir / "job.json"
    job_path.write_text(json.dumps(job))
    started = time.perf_counter()
    error = None
    try:
        with _ProgressBar(progress_path, sum(len(p.get("samples", [])) for p in phases), enabled):
            verilator.test(built, TEST_MODULE, test_dir=work_dir, env={JOB_ENV: str(job_path)}, waves=waves,
                           waves_file=waves_file)
    except verilator.SimulatorError as failure:
        if not result_path.is_file():
            raise
        error = str(failure)
    result = json.loads(result_path.read_text())
    result["simulator_error"] = error
    result["process_seconds"] = time.perf_counter() - started
    result["work_dir"] = str(work_dir)
    if own_dir and error is None and not waves:
        shutil.rmtree(work_dir, ignore_errors=True)
    return result


# -- the report ------------------------------------------------------------------------------------

def _stats(values) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"min": int(min(values)), "mean": float(np.mean(values)), "max": int(max(values))}


def _design_lanes(design: Design):
    """``{layer: lanes}`` from design.json's ``folding`` (a mapping, or one holding ``lanes``; a conv with
    tap lanes is ``"LxT"``, as :class:`~spikeforge.hdl.folding.Folding` takes it)."""
    folding = design.info.get("folding")
    if isinstance(folding, dict):
        lanes = folding.get("lanes", folding)
        if isinstance(lanes, dict) and all(isinstance(v, (int, str)) for v in lanes.values()):
            return lanes
    return None


def predict_cycles(net: Network, design: Design, samples) -> dict | None:
    """The analytical cycle model (:mod:`spikeforge.hdl.cycle_model`) for the ``stream`` phase.

    Returns ``None`` when design.json records no folding.
    The model's result cycles count from the first pixel beat of the stream, like the measurement.
    """
    lanes = _design_lanes(design)
    if lanes is None:
        return None
    kwargs = {key: int(design.info[key]) for key in ("fifo_depth", "membrane_banks") if key in design.info}
    prediction = cycle_model.predict(net, lanes, samples, **kwargs)
    results = np.asarray(prediction.result_cycles, dtype=np.float64)
    intervals = np.diff(results)
    return {"latency_cycles": float(results[0]), "stream_cycles": float(results[-1]),
            "cycles_per_sample": ({"min": float(intervals.min()), "mean": float(intervals.mean()),
                                   "max": float(intervals.max())} if len(intervals) else None),
            "steady_cycles_per_sample": float(prediction.cycles_per_sample),
            "slowest_stage_cycles": float(prediction.slowest_stage_cycles),
            "sum_of_stages": float(prediction.sum_of_stages), "stages": dict(prediction.stages),
            "result_cycles": results.tolist()}


def _relative_error(model: float, measured: float) -> float | None:
    return None if not measured else (model - measured) / measured


def model_agreement(timing: dict, model: dict, stream_result_cycles=None) -> dict:
    """Relative errors of the model against the measurement (``(model - measured) / measured``)."""
    agreement = {}
    for key in ("latency_cycles", "stream_cycles", "steady_cycles_per_sample"):
        if key in timing and model.get(key) is not None:
            agreement[key] = _relative_error(model[key], timing[key])
    if stream_result_cycles is not None and model.get("result_cycles") is not None:
        measured = np.asarray(stream_result_cycles, dtype=np.float64)
        predicted = np.asarray(model["result_cycles"], dtype=np.float64)
        if len(measured) == len(predicted) and len(measured):
            # Per sample: predicted vs measured completion time, relative to the measured time.
            errors = np.abs(predicted - measured) / np.maximum(measured, 1.0)
            agreement["per_result_max"] = float(errors.max())
    return agreement


def _phase_summary(phase: dict, expected: list, codec: PayloadCodec, labels) -> dict:
    samples = phase["samples"]
    got = phase["got"]
    received = sum(g is not None for g in got)
    wrong = [i for i, g in enumerate(got) if g is not None and int(g, 16) != expected[samples[i]]]
    missing = [samples[i] for i, g in enumerate(got) if g is None and samples[i] not in phase["dropped"]]
    summary = {"name": phase["name"], "samples": len(samples), "checked": received, "mismatches": len(wrong),
               "missing": len(missing), "stray": len(phase["stray"]),
               "cycles": (phase.get("end_cycle") or phase["start_cycle"]) - phase["start_cycle"]}
    if phase.get("reset_at") is not None:
        summary["reset_at"] = phase["reset_at"]
        summary["dropped"] = phase["dropped"]
    if wrong:
        i = wrong[0]
        summary["first_mismatch"] = {"sample": samples[i], "cycle": phase["result_cycle"][i],
                                     "expected": codec.decode_result(expected[samples[i]]),
                                     "got": codec.decode_result(int(got[i], 16))}
    if phase["stray"]:
        summary["first_stray"] = {"cycle": phase["stray"][0]["cycle"],
                                  "got": codec.decode_result(int(phase["stray"][0]["got"], 16))}
    if labels is not None and received:
        rtl = [codec.decode_result(int(g, 16))["label"] for g in got if g is not None]
        truth = [labels[samples[i]] for i, g in enumerate(got) if g is not None]
        summary["accuracy"] = float(np.mean(np.asarray(rtl) == np.asarray(truth)))
    return summary


def _timing(stream: dict, alone: dict | None) -> dict:
    # Cycles are counted from the stream's first pixel beat (the model's origin).
    """Latency, cycles per sample and throughput from the ``alone`` and ``stream`` phases."""
    timing = {}
    if alone and alone["result_cycle"][0] is not None:
        timing["latency_cycles"] = alone["result_cycle"][0] - alone["first_beat"][0]
    results = stream["result_cycle"]
    if results and all(r is not None for r in results):
        intervals = [b - a for a, b in zip(results, results[1:])]
        timing["cycles_per_sample"] = _stats(intervals) if intervals else None
        timing["per_sample_cycles"] = intervals
        span = results[-1] - stream["first_beat"][0]
        timing["stream_cycles"] = span
        if len(results) > 1:
            timing["steady_cycles_per_sample"] = (results[-1] - results[0]) / (len(results) - 1)
        else:
            timing["steady_cycles_per_sample"] = float(span)
    return timing


def verify(net: Network, rtl_dir, samples, labels=None, *, stalls: str = "none", waves: bool = False,
           build_root=None, seed: int = 1, report_path=None, clock_mhz: float = 100.0,
           phases=None, simulator: str = "verilator", progress=None, network_path=None,
           bar: bool | None = None) -> dict:
    """Sign off the Verilog in ``rtl_dir`` against the golden model of ``net`` on ``samples``.

    Parameters
    ----------
    net : Network
        The network the design was generated from.
    rtl_dir : path
        The directory holding the Verilog and ``design.json`` (``spikeforge generate``).
    samples : uint8 array (N, *input_shape)
        Raw samples; every one is streamed through ``pixels``.
    labels : int array (N,), optional
        Ground truth, for the RTL's accuracy.
    stalls : ``"none"`` or ``"random"``
        ``"random"`` adds a phase per density of :data:`STALL_DENSITIES` over all samples.
    waves : bool
        Keep a waveform, ``<rtl_dir>/signoff.fst`` (``signoff.vcd`` where Verilator's FST writer
        cannot be built: it needs the lz4 headers, Debian ``liblz4-dev``); builds a separate, traced model.
    build_root : path, optional
        Where Verilator builds go, one folder per design (default ``<rtl_dir>/sim_build``).
    report_path : path, optional
        Where the JSON report goes (default ``<rtl_dir>/verify.json``); ``False`` for none.
    clock_mhz : float
        Clock for the samples/s figure of the throughput.
    phases : list of dict, optional
        Replace the phases above (see :mod:`.cocotb_signoff` for their keys; reset phases, subsets).
        Timing figures come from phases named ``alone`` and ``stream`` when present.
    simulator : ``"verilator"`` or ``"icarus"``
    progress : callable, optional
        Called with one-line progress messages.
    network_path : path, optional
        Where ``net`` was loaded from, for the messages.
    bar : bool, optional
        A progress bar on stderr while the simulator runs (samples checked, simulated cycles/s);
        default: when stderr is a terminal.

    Returns
    -------
    dict
        The report (see :func:`format_report`); ``report["ok"]`` is False on any mismatch, missing
        or stray beat, or simulator error.

    Raises
    ------
    SignoffError
        Before anything is built or simulated, when ``design.json`` records another network's
        fingerprint than ``net``'s, or none (an older spikeforge's design), or the network does not
        fit the design; and for bad samples, labels or phases.
    """
    say = progress or (lambda message: None)
    if stalls not in ("none", "random"):
        raise SignoffError(f"stalls {stalls!r} is not supported; supported: 'none', 'random'")
    design = Design.load(rtl_dir, interfaces=INTERFACES)
    design.check_identity(net, network_path)
    design.check_network(net)
    design.check_ports()
    codec = PayloadCodec(design)
    samples = np.asarray(samples)
    if samples.ndim < 2 or len(samples) == 0:
        raise SignoffError(f"samples must be a non-empty (N, ...) array, got shape {samples.shape}")
    samples = samples.reshape(len(samples), -1)
    if samples.shape[1] != net.in_features:
        raise SignoffError(f"samples have {samples.shape[1]} values each, the network takes {net.in_features}")
    if samples.min() < 0 or samples.max() > 255:
        raise SignoffError(f"samples span {samples.min()}..{samples.max()}; raw samples are bytes 0..255")
    samples = samples.astype(np.uint8)
    if labels is not None:
        labels = np.asarray(labels).astype(np.int64).tolist()
        if len(labels) != len(samples):
            raise SignoffError(f"{len(labels)} labels for {len(samples)} samples")

    reference = golden.run(net, samples)
    expected = [codec.encode_result(l, s) for l, s in zip(reference.labels, reference.scores)]

    build_root = Path(build_root) if build_root else Path(rtl_dir) / "sim_build"
    sources = [design.verilog]
    build_dir = verilator.build_dir_for(build_root, sources, design.top, waves=waves, simulator=simulator)
    say(f"building {design.top} with {simulator.capitalize()} in {build_dir}")
    built = verilator.build(sources, design.top, build_dir, waves=waves, simulator=simulator)
    say(f"  {'reused the existing build' if built.reused else f'built in {built.seconds:.1f} s'}")

    n = len(samples)
    if phases is None:
        phases = [{"name": "alone", "samples": [0]},
                  {"name": "stream", "samples": list(range(n))}]
        if stalls == "random":
            phases += stall_phases(n, seed=seed)
    else:
        phases = [dict(p) for p in phases]
        for p in phases:
            bad = [s for s in p.get("samples", []) if not 0 <= int(s) < n]
            if not p.get("samples") or bad:
                raise SignoffError(f"phase {p.get('name')!r} names no samples or samples outside 0..{n - 1}")
    idle_limit = 2 * worst_case_cycles(net) + 4096
    waves_file = Path(rtl_dir).resolve() / f"signoff.{built.wave_format}" if waves else None
    say(f"simulating {n} samples ({', '.join(p['name'] for p in phases)})")
    raw = run_phases(built, codec, samples, expected, phases, idle_limit=idle_limit, waves=waves, bar=bar,
                     waves_file=waves_file)

    summaries = [_phase_summary(p, expected, codec, labels) for p in raw["phases"]]
    by_name = {p["name"]: p for p in raw["phases"]}
    timing = _timing(by_name["stream"], by_name.get("alone")) if "stream" in by_name else {}
    mismatches = sum(s["mismatches"] for s in summaries)
    missing = sum(s["missing"] for s in summaries)
    stray = sum(s["stray"] for s in summaries) + len((raw.get("tail") or {}).get("stray", []))
    first = next((dict(s["first_mismatch"], phase=s["name"]) for s in summaries if "first_mismatch" in s), None)
    stream_summary = next((s for s in summaries if s["name"] == "stream"), None)
    report = {
        "ok": mismatches == 0 and missing == 0 and stray == 0 and raw["error"] is None
              and raw["simulator_error"] is None,
        "design": {"top": design.top, "interface": design.interface, "verilog": str(design.verilog),
                   "timesteps": design.timesteps,
                   "classes": design.num_classes, "score_bits": design.score_bits,
                   "folding": design.info.get("folding")},
        "samples": n,
        "checked": sum(s["checked"] for s in summaries),
        "mismatches": mismatches, "missing": missing, "stray": stray,
        "first_mismatch": first,
        # A failed cocotb test is already explained by the counts above; say it only when nothing else does.
        "error": raw["error"] or (raw["simulator_error"] if not (mismatches or missing or stray) else None),
        "accuracy": stream_summary.get("accuracy") if stream_summary else None,
        "golden_accuracy": (float(np.mean(reference.labels == np.asarray(labels))) if labels is not None else None),
        "timing": {k: v for k, v in timing.items() if k != "per_sample_cycles"},
        "clock_mhz": clock_mhz,
        "phases": summaries,
        "simulation": {"simulator": simulator, "cycles": raw["cycles"], "seconds": raw["wall_seconds"],
                       "cycles_per_second": raw["cycles"] / raw["wall_seconds"] if raw["wall_seconds"] else None,
                       "process_seconds": raw["process_seconds"], "build_seconds": built.seconds,
                       "build_reused": built.reused, "build_dir": str(built.build_dir)},
        "waves": str(waves_file) if waves else None,
    }
    if "steady_cycles_per_sample" in timing:
        report["timing"]["samples_per_second"] = clock_mhz * 1e6 / timing["steady_cycles_per_sample"]
    try:
        model = predict_cycles(net, design, samples)
    except Exception as error:  # the model is reported beside the measurement, never blocks it
        model = {"error": f"{type(error).__name__}: {error}"}
    stream = by_name.get("stream")
    measured_results = None
    if stream and all(r is not None for r in stream["result_cycle"]):
        origin = stream["first_beat"][0]
        measured_results = [r - origin for r in stream["result_cycle"]]
    if model and "error" not in model:
        report["model_agreement"] = model_agreement(report["timing"], model, measured_results)
        model = {k: v for k, v in model.items() if k != "result_cycles"}
    report["model"] = model
    report["per_sample_cycles"] = timing.get("per_sample_cycles")
    if report_path is not False:
        path = Path(report_path) if report_path else Path(rtl_dir) / "verify.json"
        write_json(path, report)
        report["report_path"] = str(path)
    return report


def format_report(report: dict) -> str:
    """The human summary ``spikeforge verify`` prints."""
    lines = []
    sim = report["simulation"]
    axis = "AXI4-Stream top, " if report["design"].get("interface") == "axis" else ""
    lines.append(f"design      {report['design']['top']} ({axis}T = {report['design']['timesteps']}, "
                 f"{report['design']['classes']} classes, {report['design']['score_bits']}-bit scores)")
    for s in report["phases"]:
        extra = f", reset at cycle {s['reset_at']}" if "reset_at" in s else ""
        lines.append(f"  phase {s['name']:<10} {s['checked']:>5}/{s['samples']:<5} checked, {s['mismatches']} "
                     f"mismatches, {s['cycles']} cycles{extra}")
    lines.append(f"samples     {report['samples']} ({report['checked']} results beats checked over all phases)")
    lines.append(f"mismatches  {report['mismatches']}" + (f" (+{report['missing']} missing results)" if report["missing"] else "")
                 + (f" (+{report['stray']} stray beats)" if report["stray"] else ""))
    first = report.get("first_mismatch")
    if first:
        lines.append(f"  first: sample {first['sample']} (phase {first['phase']}, cycle {first['cycle']})")
        lines.append(f"    expected label {first['expected']['label']} scores {first['expected']['scores']}")
        lines.append(f"    got      label {first['got']['label']} scores {first['got']['scores']}")
    if report.get("error"):
        lines.append(f"error       {report['error'].splitlines()[0]}")
    if report.get("accuracy") is not None:
        lines.append(f"accuracy    {report['accuracy']:.4f} RTL, {report['golden_accuracy']:.4f} golden model")
    timing = report["timing"]
    model = report.get("model") or {}
    usable = model and "error" not in model
    cps, model_cps = timing.get("cycles_per_sample"), model.get("cycles_per_sample") if usable else None
    if cps:
        beside = (f"   (model {model_cps['min']:.0f} / {model_cps['mean']:.1f} / {model_cps['max']:.0f})"
                  if model_cps else "")
        lines.append(f"cycles/sample min {cps['min']} / mean {cps['mean']:.1f} / max {cps['max']}{beside}")
    if "latency_cycles" in timing:
        beside = f"   (model {model['latency_cycles']:.0f})" if usable else ""
        lines.append(f"latency     {timing['latency_cycles']} cycles, one sample alone (first pixel to result)"
                     f"{beside}")
    if "steady_cycles_per_sample" in timing:
        beside = f"   (model {model['steady_cycles_per_sample']:.1f})" if usable else ""
        lines.append(f"throughput  {timing['steady_cycles_per_sample']:.1f} cycles/sample in steady state = "
                     f"{timing['samples_per_second']:,.0f} samples/s at {report['clock_mhz']:g} MHz{beside}")
    agreement = report.get("model_agreement")
    if agreement:
        parts = [f"{name} {value * 100:+.2f} %" for name, value in
                 (("stream cycles", agreement.get("stream_cycles")), ("latency", agreement.get("latency_cycles")),
                  ("worst result time", agreement.get("per_result_max"))) if value is not None]
        lines.append("model error " + ", ".join(parts))
    if model and "error" in model:
        lines.append(f"model       unavailable: {model['error']}")
    elif not model:
        lines.append("model       unavailable (no cycle model or no folding in design.json)")
    if sim.get("engine") == "fast":
        engine = "Verilator, compiled harness" + (f", {sim['shards']} shards on {sim['where']}" if sim.get("shards", 1) > 1
                                                  else "")
    else:
        engine = f"{sim['simulator']} + cocotb"
    lines.append(f"simulation  {engine}: {sim['cycles']:,} cycles in {sim['seconds']:.1f} s "
                 f"({sim['cycles_per_second']:,.0f} cycles/s); build "
                 + ("reused" if sim["build_reused"] else f"{sim['build_seconds']:.1f} s"))
    if report.get("waves"):
        note = ("" if report["waves"].endswith(".fst")
                else "   (VCD: FST needs the lz4 headers, `apt-get install liblz4-dev`)")
        lines.append(f"waves       {report['waves']}{note}")
    if report.get("report_path"):
        lines.append(f"report      {report['report_path']}")
    lines.append("PASS: bit-exact" if report["ok"] else "FAIL")
    return "\n".join(lines)
