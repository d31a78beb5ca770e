"""The flow: named steps convert → generate → verify → build over one configuration.

FINN's ``build_dataflow_steps`` is the model: each step is a function ``(state, config) -> report``
that reads what the steps before it left in the :class:`FlowState` (the model, the integer network,
the design), writes its artefacts under the output folder and returns a typed report
(``to_json()``, ``lines()``)::

    from spikeforge.flow import FlowConfig, run_flow
    config = FlowConfig(output="build/flow", model="model.pt2", dataset="digits", timesteps=8,
                        lanes_budget=48)
    report = run_flow(config, start="convert", stop="verify")   # build/flow/{net,rtl,flow.json}
    report = run_flow(config, start="verify")                   # again, from the saved rtl/

Artefacts (each path may be set on its own in the configuration):

========== ============================= ===================================================
step       reads                         writes
========== ============================= ===================================================
convert    ``model`` (or a module),      ``network_dir`` (default ``<output>/net``)
           the calibration dataset
generate   ``network_dir``               ``rtl_dir`` (default ``<output>/rtl``)
verify     ``network_dir``, ``rtl_dir``  ``<rtl_dir>/verify.json``, Verilator builds in ``sim_build``
build      ``network_dir``               ``board_dir`` (default ``<output>/board``)
========== ============================= ===================================================

Dataset names are resolved here (and in the CLI): the folders below take arrays.
A configuration key that names nothing is an error, never ignored.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from distributed import as_completed

from spikeforge.boards.build import ROUTERS, BuildOptions
from spikeforge.boards.build import build as build_bitstream
from spikeforge.boards.build import format_report as format_build_report
from spikeforge.cluster import client as dask_client
from spikeforge.cluster import describe as describe_cluster
from spikeforge.conversion import convert as convert_named
from spikeforge.conversion import load_calibration
from spikeforge.converter.calibrate import InputNormalization
from spikeforge.converter.model_files import load_model
from spikeforge.datasets import Dataset
from spikeforge.datasets import load as load_dataset
from spikeforge.hdl.folding import parse_lanes
from spikeforge.hdl.generate import generate as generate_design
from spikeforge.hdl.generate import summary as design_summary
from spikeforge.ir import golden
from spikeforge.ir.atomic import write_json
from spikeforge.ir.errors import InputError
from spikeforge.ir.network import Network
from spikeforge.ir.network import load as load_network
from spikeforge.sim.fast_engine import verify_fast
from spikeforge.sim.signoff import format_report as format_verify_report
from spikeforge.sim.signoff import verify as verify_design

__all__ = ["FlowConfig", "FlowConfigError", "FlowState", "FlowReport", "StepReport", "ConvertReport",
           "GenerateReport", "VerifyReport", "BuildReport", "STEPS", "run_flow", "run_step", "convert_network",
           "spikes_in_from"]


class FlowConfigError(InputError):
    """A flow configuration (or a step name) that names nothing or holds a value that is not accepted."""


@dataclass
class FlowConfig:
    """Everything the flow's steps need, in one serialisable place.

    Attributes
    ----------
    output : str
        The flow's folder: artefacts go under it unless their own path is set, and ``flow.json``.
    model, state_dict : str, optional
        convert: a ``torch.export`` program (.pt2), a pickled module (.pt) or ``file.py:factory``
        (with ``state_dict``). Python callers may put a module in :attr:`FlowState.model` instead.
    dataset : str
        A :mod:`spikeforge.datasets` name (``digits``, ``fashion-mnist``) or an IDX directory: the
        calibration data (its training split) unless ``calibration`` is set, and the samples of verify.
    calibration : str, optional
        convert: other calibration data: a dataset name or directory, or a .npy/.pt file of raw samples.
    timesteps, weight_bits, method, percentile, v0, per_channel
        convert: see :func:`spikeforge.converter.convert.convert`.
    input_scale, input_mean, input_std, input_shape
        convert: the model saw ``(raw / input_scale - mean) / std`` (``input_scale`` defaults to the
        dataset's, 1 for raw data files); ``input_shape`` defaults to the data's.
    lanes, lanes_budget, target_cycles
        generate and build: the folding: lanes per layer (``{"fc1": 8}``, or ``"fc1=8,fc2=4"``), or
        automatic within a total or a cycle target.
    membrane_banks : int, optional
        1 or 2. generate: 2 when unset; build: 2, falling back to 1 when 2 do not fit.
    module_name : str
        generate: the Verilog module name.
    interface : str
        generate: the top's ports, ``"stream"`` (DESIGN.md §3) or ``"axis"`` (AXI4-Stream, :mod:`spikeforge.hdl.axis`).
    multiplier : str
        generate and build: how dense lanes scale weights, ``"dsp"``, ``"logic"`` (a shifter, no DSP) or
        ``"auto"`` (generate: dsp; build: logic once the device's DSPs run out).
    spikes_from : str, optional
        generate: measure the input spikes per layer on this dataset's test split (the first
        ``spike_samples``, all when ``None``) for the folding and the prediction; otherwise estimated.
    split, samples, stalls, seed, waves, clock_mhz
        verify: which split of ``dataset`` and how many of its samples (all when ``None``), random
        stalls (``"none"``/``"random"``) and their seed, a waveform, the clock of the throughput figure.
    verify_report : str, optional
        verify: the JSON report path (default ``<rtl_dir>/verify.json``).
    engine, shards, scheduler
        verify: ``"cocotb"`` (the sign-off: stalls, waves) or ``"fast"`` (the compiled Verilator
        harness, :mod:`spikeforge.sim.fast_engine`); the fast engine may split the samples into
        ``shards`` simulations run on Dask (:mod:`spikeforge.cluster`: an embedded local cluster, or
        the running scheduler at ``scheduler``, ``tcp://HOST:PORT``).
    board, baud, scores, patchable, build_seed
        build: the board (icebreaker, ulx3s-85f, an amaranth-boards class name) and its options.
    build_clock_mhz : float, optional
        build: run the bitstream at this clock (a PLL output or the board oscillator) instead of
        searching for the fastest that meets timing.
    batch_depth : int, optional
        build: samples the board's on-chip batch buffer holds (default: what the spare block RAM holds, at
        most 64; 0: none).
    layer_counters : bool, optional
        build: per-layer performance counters on the board (default: yes, except on iCE40).
    router : str, optional
        build: nextpnr's router, ``"router1"`` (its default) or ``"router2"`` (for congested designs).
    network_dir, rtl_dir, sim_build, board_dir, report
        Where the artefacts go (defaults under ``output``: ``net``, ``rtl``, ``sim_build``, ``board``,
        ``flow.json``).
    """

    output: str = "build/flow"
    model: str | None = None
    state_dict: str | None = None
    dataset: str = "digits"
    calibration: str | None = None
    timesteps: int = 8
    weight_bits: int = 8
    method: str = "percentile"
    percentile: float = 99.9
    v0: str = "round"
    per_channel: bool = False
    input_scale: float | None = None
    input_mean: float | list = 0.0
    input_std: float | list = 1.0
    input_shape: list | None = None
    lanes: dict | None = None
    lanes_budget: int | None = None
    target_cycles: int | None = None
    membrane_banks: int | None = None
    module_name: str = "spikeforge_top"
    interface: str = "stream"
    multiplier: str = "auto"
    spikes_from: str | None = None
    spike_samples: int | None = 512
    split: str = "test"
    samples: int | None = None
    stalls: str = "none"
    seed: int = 1
    waves: bool = False
    clock_mhz: float = 100.0
    verify_report: str | None = None
    engine: str = "cocotb"
    shards: int = 1
    scheduler: str | None = None
    board: str | None = None
    baud: int | None = None
    scores: bool = True
    patchable: bool = True
    build_seed: int = 1
    build_clock_mhz: float | None = None
    batch_depth: int | None = None
    layer_counters: bool | None = None
    router: str | None = None
    network_dir: str | None = None
    rtl_dir: str | None = None
    sim_build: str | None = None
    board_dir: str | None = None
    report: str | None = None

    def __post_init__(self):
        choices = {"stalls": ("none", "random"), "split": ("train", "test"), "membrane_banks": (None, 1, 2),
                   "engine": ("cocotb", "fast"), "interface": ("stream", "axis"),
                   "multiplier": ("dsp", "logic", "auto"), "router": (None, *ROUTERS)}
        for key, accepted in choices.items():
            if getattr(self, key) not in accepted:
                raise FlowConfigError(f"flow config {key} {getattr(self, key)!r} is not accepted; accepted: "
                                      f"{', '.join(map(repr, accepted))}")
        for key in ("samples", "spike_samples", "lanes_budget", "target_cycles", "shards"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise FlowConfigError(f"flow config {key} {value!r} must be a positive integer (or null)")
        if self.lanes_budget is not None and self.target_cycles is not None:
            raise FlowConfigError("flow config sets both lanes_budget and target_cycles; choose one")
        if isinstance(self.lanes, str):
            self.lanes = parse_lanes(self.lanes)        # "fc1=8,fc2=4", as the command line writes it
        if self.lanes is not None and not (isinstance(self.lanes, dict) and all(
                isinstance(k, str) and isinstance(v, (int, str)) for k, v in self.lanes.items())):
            raise FlowConfigError(f"flow config lanes {self.lanes!r} must map layer names to integers "
                                  f"(or \"LANESxTAPS\" for a conv), e.g. {{\"fc1\": 8, \"conv2\": \"32x3\"}}")
        if self.clock_mhz <= 0:
            raise FlowConfigError(f"flow config clock_mhz {self.clock_mhz} must be > 0")
        if self.engine == "fast" and (self.stalls != "none" or self.waves):
            raise FlowConfigError("flow config engine 'fast' streams without stalls or waves; use engine 'cocotb' "
                                  "for stalls 'random' and waves")
        if self.engine != "fast" and (self.shards != 1 or self.scheduler is not None):
            raise FlowConfigError(f"flow config shards {self.shards} / scheduler {self.scheduler!r} need engine "
                                  f"'fast' (the cocotb sign-off runs as one simulation)")

    # --- paths -------------------------------------------------------------------------------------
    def _path(self, value, default: str) -> Path:
        return Path(value) if value is not None else Path(self.output) / default

    @property
    def network_path(self) -> Path:
        return self._path(self.network_dir, "net")

    @property
    def rtl_path(self) -> Path:
        return self._path(self.rtl_dir, "rtl")

    @property
    def sim_build_path(self) -> Path:
        return self._path(self.sim_build, "sim_build")

    @property
    def board_path(self) -> Path:
        return self._path(self.board_dir, "board")

    @property
    def report_path(self) -> Path:
        return self._path(self.report, "flow.json")

    # --- serialisation -----------------------------------------------------------------------------
    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "FlowConfig":
        """A configuration from a dict (of :meth:`to_json`); a key that names nothing is refused."""
        if not isinstance(data, dict):
            raise FlowConfigError(f"a flow config is a JSON object, not {type(data).__name__}")
        unknown = sorted(set(data) - set(cls.keys()))
        if unknown:
            raise FlowConfigError(f"flow config key{'s' if len(unknown) > 1 else ''} "
                                  f"{', '.join(map(repr, unknown))} name{'' if len(unknown) > 1 else 's'} "
                                  f"nothing; accepted: {', '.join(cls.keys())}")
        return cls(**data)

    def save(self, path) -> Path:
        return write_json(path, self.to_json())

    @classmethod
    def load(cls, path) -> "FlowConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except ValueError as error:
            raise FlowConfigError(f"{path} is not JSON: {error}") from None
        return cls.from_json(data)

    def replace(self, **changes) -> "FlowConfig":
        unknown = sorted(set(changes) - set(self.keys()))
        if unknown:
            raise FlowConfigError(f"flow config keys {', '.join(map(repr, unknown))} name nothing; accepted: "
                                  f"{', '.join(self.keys())}")
        return dataclasses.replace(self, **changes)


@dataclass
class FlowState:
    """What the steps hand each other (the flow's "IR"): set by a step, read by the next.

    Attributes
    ----------
    model : torch.nn.Module, optional
        The float model for convert (else loaded from ``config.model``).
    network : Network, optional
        The integer network (convert's output; else loaded from ``config.network_path``).
    network_dir : Path, optional
        Where ``network`` is saved, when it is (set by convert and by loading; ``None`` for a network
        handed over in memory).
    design : dict, optional
        generate's design report (``design.json``).
    spikes_in : list of float, optional
        Mean input spikes per sample and layer for generate's folding and prediction (else measured
        on ``config.spikes_from``, else estimated).
    log : callable
        Where the steps' lines for people go (``print`` by default).
    """

    model: object = None
    network: Network | None = None
    network_dir: Path | None = None
    design: dict | None = None
    spikes_in: list | None = None
    log: Callable[[str], None] = print

    def require_network(self, config: FlowConfig) -> Network:
        if self.network is None:
            path = config.network_path
            if not (path / "network.json").is_file():
                raise FlowConfigError(f"no network at {path} (no network.json): run the convert step first, "
                                      f"or set network_dir to a folder written by `spikeforge convert`")
            self.network = load_network(path)
            self.network_dir = path
        return self.network


# --- reports ---------------------------------------------------------------------------------------

@dataclass
class StepReport:
    """What a step did: ``to_json()`` for the flow report, ``lines()`` for people."""

    def to_json(self) -> dict:
        return {key: _plain(value) for key, value in dataclasses.asdict(self).items()}

    def lines(self) -> list[str]:
        return []


def _plain(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass
class ConvertReport(StepReport):
    """convert: where the network went, its layers and weight widths (by layer name), the clip
    (method, percentile, the clip search's candidates) and the float model's recorded accuracy."""

    network_dir: str
    timesteps: int
    weight_bits: dict
    layers: list
    method: str
    percentile: float | None
    description: str = ""
    search: dict | None = None
    float_accuracy: dict = field(default_factory=dict)
    weight_kib: float = 0.0

    def lines(self) -> list[str]:
        lines = [self.description]
        if self.search:
            tried = ", ".join(f"{c['percentile']:g}: {100 * c['agreement']:.2f} %" for c in self.search["candidates"])
            lines.append(f"clip search (agreement with the {self.search['reference']}): {tried} -> percentile "
                         f"{self.percentile:g}")
        for key, value in self.float_accuracy.items():
            lines.append(f"float ANN accuracy on {key}: {100 * value:.2f} %")
        lines.append(f"wrote {self.network_dir}/ (network.json, weights.npz, rom/*.weight.hex; "
                     f"{self.weight_kib:.1f} KiB of weights)")
        return lines


@dataclass
class GenerateReport(StepReport):
    """generate: where the design went, its Verilog file, folding (lanes per layer), membrane banks and
    the cycle model's prediction (``design.json`` holds the rest)."""

    rtl_dir: str
    verilog: str
    folding: dict
    total_lanes: int
    membrane_banks: int
    prediction: dict | None
    spikes_basis: str
    summary: str = ""

    def lines(self) -> list[str]:
        return [self.summary, f"wrote {self.rtl_dir}/ ({self.verilog}, rom/*.hex, design.json)"]


@dataclass
class VerifyReport(StepReport):
    """verify: bit-exactness (``ok``, mismatches), accuracies, measured timing beside the cycle model;
    ``details`` is the sign-off's whole report (``verify.json``), kept out of :meth:`to_json`."""

    ok: bool
    samples: int
    checked: int | None
    mismatches: int | None
    accuracy: float | None
    golden_accuracy: float | None
    timing: dict | None
    model_agreement: dict | None
    simulation: dict | None
    report_path: str | None
    details: dict = field(default_factory=dict, repr=False)

    def to_json(self) -> dict:
        data = super().to_json()
        data.pop("details")
        return data

    def lines(self) -> list[str]:
        return [format_verify_report(self.details)]


@dataclass
class BuildReport(StepReport):
    """build: the board, the status (``built`` or ``build-plan``), the device and Fmax; :meth:`to_json`
    is the board flow's whole ``report.json``."""

    board: str
    board_dir: str
    status: str
    device: str | None
    fmax_mhz: float | None
    membrane_banks: int | None
    details: dict = field(default_factory=dict, repr=False)

    def to_json(self) -> dict:
        return _plain(self.details)

    def lines(self) -> list[str]:
        return [format_build_report(self.details), f"wrote {self.board_dir}/report.json"]


# --- name resolution ---------------------------------------------------------------------------------

def _dataset(name: str, split: str) -> Dataset:
    return load_dataset(name, split)


def spikes_in_from(net: Network, samples) -> list[float]:
    """Mean input spikes per sample and layer on ``samples`` (golden model): the folding's basis."""
    return _mean_input_spikes(golden.run(net, samples))


def _mean_input_spikes(result: golden.GoldenResult) -> list[float]:
    return [float(s.mean()) for s in result.input_spikes()]


def convert_network(model, config: FlowConfig) -> Network:
    """Convert ``model`` as ``config`` says (nothing is written).

    The calibration data (``calibration``, else ``dataset``) is a dataset name or IDX directory,
    resolved by :func:`spikeforge.conversion.convert` (its training split and labels, class names and
    input scale; the float accuracy on its test split is recorded), or a .npy/.pt file of raw samples
    (input scale 1).
    """
    calibration, default_scale = load_calibration(config.calibration or config.dataset)
    normalization = InputNormalization(
        scale=default_scale if config.input_scale is None else config.input_scale,
        mean=config.input_mean, std=config.input_std)
    untouched = config.input_scale is None and config.input_mean == 0.0 and config.input_std == 1.0
    if isinstance(calibration, str) and untouched:
        # Nothing given: the dataset's default applies, and conversion checks that the model does not
        # normalise its input itself (x / 255 in forward would be applied twice).
        normalization = None
    return convert_named(model, calibration, timesteps=config.timesteps, weight_bits=config.weight_bits,
                         method=config.method, percentile=config.percentile, v0=config.v0,
                         per_channel=config.per_channel, normalization=normalization,
                         input_shape=tuple(config.input_shape) if config.input_shape else None)


# --- the steps ---------------------------------------------------------------------------------------

def step_convert(state: FlowState, config: FlowConfig) -> ConvertReport:
    """The float model -> the integer iLIF network, saved to ``network_dir``."""
    if state.model is None:
        if not config.model:
            raise FlowConfigError("the convert step needs a model: set model (a .pt2, a .pt or file.py:factory) "
                                  "or pass one in FlowState.model")
        state.log(f"loading {config.model}")
        state.model = load_model(config.model, config.state_dict)
    net = convert_network(state.model, config)
    path = config.network_path
    net.save(path)
    state.network, state.network_dir = net, path
    state.design = None
    calibration = net.calibration
    weighted = [layer for layer in net.layers if hasattr(layer, "weight")]     # a max pool has none
    return ConvertReport(
        network_dir=str(path), timesteps=net.timesteps, layers=[layer.name for layer in net.layers],
        weight_bits={layer.name: layer.weight_bits for layer in weighted},
        method=calibration.get("method", config.method), percentile=calibration.get("percentile"),
        description=net.describe(), search=calibration.get("search"),
        float_accuracy=dict(calibration.get("float_accuracy", {})),
        weight_kib=sum(layer.weight.size * layer.weight_bits for layer in weighted) / 8 / 1024)


#: Samples of ``--spikes-from`` the cycle model follows beat by beat for a conv network's prediction.
CONV_PREDICTION_SAMPLES = 128


def step_generate(state: FlowState, config: FlowConfig) -> GenerateReport:
    """The integer network -> Verilog, ROM images and design.json in ``rtl_dir``."""
    net = state.require_network(config)
    spikes_in, samples = state.spikes_in, None
    if spikes_in is None and config.spikes_from:
        data = _dataset(config.spikes_from, "test").head(config.spike_samples)
        result = golden.run(net, data.samples)
        spikes_in = _mean_input_spikes(result)
        # The cycle model follows the samples beat by beat (exact) on the golden model's result, computed once
        # here for the balancer and the prediction: a dense network's is the closed form's above (every layer's
        # codes); a conv network's the literal timestep model's (per-timestep counts), so on fewer of them
        # (CONV_PREDICTION_SAMPLES: it took 19 s for 512 Fashion-MNIST CNN samples).
        if net.has_conv:
            flat = np.asarray(data.samples).reshape(len(data.samples), -1)
            samples = golden.run_timesteps(net, flat[:CONV_PREDICTION_SAMPLES])
        else:
            samples = result
    # Hand the generator the saved folder when there is one, so design.json records where it came from.
    source = state.network_dir if state.network_dir is not None else net
    design = generate_design(source, config.rtl_path, lanes=config.lanes, target_cycles=config.target_cycles,
                             lanes_budget=config.lanes_budget, name=config.module_name, spikes_in=spikes_in,
                             samples=samples, membrane_banks=config.membrane_banks or 2, interface=config.interface,
                             multiplier="dsp" if config.multiplier == "auto" else config.multiplier)
    state.design = design
    prediction = design.get("prediction")
    return GenerateReport(rtl_dir=str(config.rtl_path), verilog=design["verilog"], folding=dict(design["folding"]),
                          total_lanes=int(design["total_lanes"]), membrane_banks=int(design["membrane_banks"]),
                          prediction=prediction, spikes_basis=(prediction or {}).get("spikes_basis", ""),
                          summary=design_summary(design))


def step_verify(state: FlowState, config: FlowConfig) -> VerifyReport:
    """Sign the design in ``rtl_dir`` off against the golden model on the dataset (Verilator)."""
    net = state.require_network(config)
    rtl = config.rtl_path
    if not (rtl / "design.json").is_file():
        raise FlowConfigError(f"{rtl} has no design.json: run the generate step first, or set rtl_dir to a "
                              f"folder written by `spikeforge generate`")
    data = _dataset(config.dataset, config.split).head(config.samples)
    source = state.network_dir if state.network_dir is not None else "(in memory)"
    state.log(f"network {source}, RTL {rtl}, {len(data)} samples of {config.dataset} "
              f"({config.split}), stalls: {config.stalls}")
    say = lambda message: state.log(f"   {message}")     # noqa: E731
    if config.engine == "fast":
        report = _verify_fast(net, rtl, data, config, say, state.network_dir)
    else:
        report = verify_design(net, rtl, data.samples, data.labels, stalls=config.stalls, seed=config.seed,
                               waves=config.waves, build_root=config.sim_build_path,
                               report_path=config.verify_report, clock_mhz=config.clock_mhz,
                               progress=say, network_path=state.network_dir)
    return VerifyReport(ok=bool(report["ok"]), samples=len(data), checked=report.get("checked"),
                        mismatches=report.get("mismatches"), accuracy=report.get("accuracy"),
                        golden_accuracy=report.get("golden_accuracy"), timing=report.get("timing"),
                        model_agreement=report.get("model_agreement"), simulation=report.get("simulation"),
                        report_path=str(config.verify_report or rtl / "verify.json"), details=report)


def _dask_mapper(dask):
    """``mapper(function, items)`` for :func:`~spikeforge.sim.fast_engine.verify_fast` on a Dask client:
    yields ``(index, result)`` as the tasks finish."""
    def mapper(function, items):
        futures = dask.map(function, items, pure=False)
        index = {future.key: i for i, future in enumerate(futures)}
        for future in as_completed(futures, loop=dask.loop):     # the client is not the default one
            yield index[future.key], future.result()
    return mapper


def _verify_fast(net: Network, rtl: Path, data, config: FlowConfig, say, network_path) -> dict:
    """verify with the compiled engine, on Dask when asked to shard or given a scheduler."""
    options = dict(build_root=config.sim_build_path, report_path=config.verify_report, clock_mhz=config.clock_mhz,
                   network_path=network_path, say=say)
    if config.shards == 1 and config.scheduler is None:
        return verify_fast(net, rtl, data.samples, data.labels, **options)
    workers = None if config.scheduler is not None else max(1, min(config.shards, len(data)))
    with dask_client(config.scheduler, workers) as dask:
        where = describe_cluster(dask)
        return verify_fast(net, rtl, data.samples, data.labels, shards=config.shards, mapper=_dask_mapper(dask),
                           where=where, **options)


_NO_BOARD = "the build step needs a board: set board (icebreaker, ulx3s-85f or an amaranth-boards platform class name)"


def step_build(state: FlowState, config: FlowConfig) -> BuildReport:
    """The integer network -> a bitstream (or a vendor build plan) for ``board`` in ``board_dir``."""
    if not config.board:
        raise FlowConfigError(_NO_BOARD)
    net = state.require_network(config)
    options = BuildOptions(baud=config.baud, lanes=config.lanes, lanes_budget=config.lanes_budget,
                           scores=config.scores, patchable=config.patchable, seed=config.build_seed,
                           membrane_banks=config.membrane_banks, clock_mhz=config.build_clock_mhz,
                           multiplier=config.multiplier, batch_depth=config.batch_depth,
                           layer_counters=config.layer_counters, router=config.router)
    report = build_bitstream(net, config.board, config.board_path, options=options, log=state.log)
    return BuildReport(board=config.board, board_dir=str(config.board_path), status=report.get("status", ""),
                       device=report.get("device"), fmax_mhz=report.get("fmax_mhz"),
                       membrane_banks=report.get("membrane_banks"), details=report)


#: The registry of named steps, in flow order: name -> (function, what it does).
STEPS: dict[str, tuple[Callable[[FlowState, FlowConfig], StepReport], str]] = {
    "convert": (step_convert, "float model -> integer iLIF network"),
    "generate": (step_generate, "integer network -> Verilog (Amaranth)"),
    "verify": (step_verify, "RTL vs. golden model (cocotb + Verilator, or the compiled Verilator engine)"),
    "build": (step_build, "integer network -> bitstream (YoWASP)"),
}


def _check_step(name: str, what: str) -> int:
    if name not in STEPS:
        raise FlowConfigError(f"{what} step {name!r} is not a step; steps: {', '.join(STEPS)}")
    return list(STEPS).index(name)


def run_step(name: str, state: FlowState, config: FlowConfig) -> StepReport:
    """Run one named step (no headers, no flow report): what the single-step CLI commands call."""
    _check_step(name, "the")
    return STEPS[name][0](state, config)


# --- the runner --------------------------------------------------------------------------------------

@dataclass
class FlowReport:
    """The steps that ran, each with its report and wall time; ``ok`` is False after a sign-off mismatch."""

    config: FlowConfig
    steps: list = field(default_factory=list)       # (name, seconds, StepReport)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(getattr(report, "ok", True) for _, _, report in self.steps)

    def __getitem__(self, name: str) -> StepReport:
        for step_name, _, report in self.steps:
            if step_name == name:
                return report
        raise KeyError(name)

    def to_json(self) -> dict:
        return {"config": self.config.to_json(), "ok": self.ok, "seconds": self.seconds,
                "steps": [{"name": name, "seconds": seconds, "report": report.to_json()}
                          for name, seconds, report in self.steps]}


def run_flow(config: FlowConfig, start: str = "convert", stop: str = "verify", *, state: FlowState | None = None,
             log: Callable[[str], None] | None = None, write_report: bool = True,
             into: FlowReport | None = None) -> FlowReport:
    """Run the steps from ``start`` to ``stop`` (both included, flow order) and write the flow report.

    Starting after convert reads the network from ``network_dir``; starting at verify reads the design
    from ``rtl_dir``. The flow stops after a verify step whose sign-off fails (``report.ok`` is False;
    nothing is built from a design that disagrees with the golden model). ``into`` continues an
    earlier flow report (a caller that runs its own steps between two parts of the flow). The flow report
    (``config.report_path``, default ``<output>/flow.json``) is written atomically after every step, so
    it holds the steps that ran when a later one raises.
    """
    first, last = _check_step(start, "start"), _check_step(stop, "stop")
    if first > last:
        raise FlowConfigError(f"start step {start!r} comes after stop step {stop!r}; steps: {', '.join(STEPS)}")
    state = state or FlowState()
    if log is not None:
        state.log = log
    names = list(STEPS)[first:last + 1]
    # Refuse what a later step would refuse before the earlier ones spend minutes.
    if "convert" in names and state.model is None and not config.model:
        raise FlowConfigError("the convert step needs a model: set model (a .pt2, a .pt or file.py:factory) "
                              "or pass one in FlowState.model")
    if "build" in names and not config.board:
        raise FlowConfigError(_NO_BOARD)
    flow = into or FlowReport(config)
    began = time.perf_counter() - flow.seconds
    for name in names:
        function, title = STEPS[name]
        state.log(f"== {name}: {title}")
        started = time.perf_counter()
        report = function(state, config)
        seconds = time.perf_counter() - started
        for line in report.lines():
            state.log(line)
        state.log(f"== {name}: done in {seconds:.1f} s")
        flow.steps.append((name, seconds, report))
        flow.seconds = time.perf_counter() - began
        if write_report:
            write_json(config.report_path, flow.to_json())
        if not getattr(report, "ok", True):
            state.log(f"{name} failed: the flow stops here")
            break
    return flow
