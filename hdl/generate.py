"""Write an accelerator: Verilog, the packed ROM images it uses, and ``design.json``.

:func:`generate` is what ``spikeforge generate`` runs. The output directory is written atomically
(a temporary sibling, then a rename), so it is never half-written; the Verilog is
``verilog.convert(..., emit_src=False)`` and byte-for-byte reproducible.

``rom/*.hex`` are ``$readmemh`` images of the memories *as the hardware packs them* (one word per
line, lane 0 in the least significant bits; see :mod:`spikeforge.hdl.plan`): ``input_lut.hex``,
``<layer>.weight.hex``, ``<layer>.bias.hex`` and, for firing layers, ``<layer>.threshold.hex``; a conv
layer (:mod:`spikeforge.hdl.conv_plan`) also has ``<layer>.in_map.hex``, ``<layer>.rows.hex`` and
``<layer>.cols.hex`` (its address-decode ROMs). The same contents are in the Verilog's ``initial``
blocks; the images are for inspection and for flows that load memories themselves.

A conv layer's ``design.json`` entry (``kind: "conv2d"``) adds its shapes (``in_shape``, ``conv_shape``,
``out_shape`` — the pooled map when a max pool is fused into it, ``pool``), its tap lanes (``taps``,
``adders`` = lanes × taps, ``column_banks``), ``memory_bits`` (every ROM and RAM by name), ``memories``
(every memory instance: name, kind, width, depth — :meth:`~spikeforge.hdl.conv_plan.ConvLayerPlan.memories`)
and its cycle figures; a max pool has no entry of its own. ``folding`` records a conv with tap lanes
as ``"LxT"`` (what ``--lanes`` and :class:`~spikeforge.hdl.folding.Folding` take back); designs with a
conv layer also record ``total_adders``.
"""

from __future__ import annotations

import json
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Shape

from spikeforge.ir import golden
from spikeforge.ir.network import Network, load
from spikeforge.ir.atomic import staged_directory
from spikeforge.ir.fingerprint import identity
from .cycle_model import predict
from .balance import balanced_folding
from .folding import estimate_spikes_in
from .layouts import pixel_layout, result_layout, spike_event_layout
from .conv_plan import ConvLayerPlan, readout_words
from .plan import check_supported
from .top import DEFAULT_FIFO_DEPTH, Accelerator
from .axis import AXIStreamAccelerator, axis_layout_description
from spikeforge.ir.errors import InputError

__all__ = ["generate", "design_report", "network_fingerprint", "summary", "DESIGN_FORMAT", "INTERFACES",
           "DEFAULT_NAMES"]

DESIGN_FORMAT = "spikeforge-design"
#: The top-level interfaces :func:`generate` writes: the Amaranth streams of DESIGN.md §3, or AXI4-Stream
#: (:mod:`spikeforge.hdl.axis`).
INTERFACES = ("stream", "axis")
#: The Verilog module name of each interface when none is given.
DEFAULT_NAMES = {"stream": "spikeforge_top", "axis": "spikeforge_axis"}
#: The conv stages' formulas in ``design.json``'s cycle-model note (only in designs with a conv layer,
#: so a dense design's ``design.json`` is unchanged).
_CONV_STAGE_CYCLES = {"conv accumulate": "sum over input spikes of ny*ceil(nx/taps)*C_l (ny x nx kept outputs "
                                         "reached, taps = tap lanes), + 3 decode + 5 drain",
                      "conv fire": "P*C_l*K + (T-1)*P*C_l + 4 (K: pool window, 1 without a pool)"}


def network_fingerprint(net: Network) -> dict:
    """The network's identity as ``design.json`` records it: ``fingerprint`` and ``structure_fingerprint``.

    See :mod:`spikeforge.ir.fingerprint`: ``spikeforge verify``, ``report --design`` and
    ``patch-weights`` compare these with the network they are given before trusting the design.
    """
    return identity(net)


def _hex_image(words, bits: int) -> str:
    digits = max(1, (bits + 3) // 4)
    return "".join(f"{int(w):0{digits}x}\n" for w in words)


def _rom_images(plan) -> dict:
    images = {"input_lut.hex": _hex_image(plan.input_lut, plan.timesteps)}
    for layer in plan.layers:
        if isinstance(layer, ConvLayerPlan):
            images[f"{layer.name}.in_map.hex"] = _hex_image(layer.in_map_words, sum(layer.in_map_fields))
            images[f"{layer.name}.rows.hex"] = _hex_image(layer.row_words, sum(layer.row_fields))
            images[f"{layer.name}.cols.hex"] = _hex_image(layer.col_words, sum(layer.col_fields))
        slots = layer.taps if isinstance(layer, ConvLayerPlan) else 1
        images[f"{layer.name}.weight.hex"] = _hex_image(layer.weight_words, slots * layer.lanes * layer.weight_bits)
        images[f"{layer.name}.bias.hex"] = _hex_image(layer.bias_words, layer.lanes * layer.bias_bits)
        if layer.fires:
            images[f"{layer.name}.threshold.hex"] = _hex_image(layer.threshold_words,
                                                               layer.lanes * layer.threshold_bits)
    return images


def design_report(accelerator: Accelerator, *, name: str = "spikeforge_top", spikes_in=None,
                  network_path=None, samples=None) -> dict:
    """The ``design.json`` dict of an :class:`Accelerator` or an
    :class:`~spikeforge.hdl.axis.AXIStreamAccelerator` (nothing is written).

    An AXI4-Stream design adds ``"interface": "axis"``, its ports and the ``m_axis_tdata`` byte layout
    (``"axis"``); a stream design's report has no ``interface`` key (it reads as ``"stream"``)."""
    axis = isinstance(accelerator, AXIStreamAccelerator)
    net, plan = accelerator.net, accelerator.plan
    estimated = spikes_in is None
    spikes = estimate_spikes_in(net, spikes_in)
    # Raw samples (or the golden model's result on them) are followed beat by beat (exact); spike counts alone
    # give the per-sample form.
    prediction = predict(net, plan.folding, spikes if samples is None else samples,
                         fifo_depth=accelerator.fifo_depth, membrane_banks=accelerator.membrane_banks)
    layers = []
    producer_group, producer_chunks = plan.encoder_lanes, plan.encoder_chunks
    for layer in plan.layers:
        source = net.layer(layer.name)
        event_bits = Shape.cast(spike_event_layout(producer_group, producer_chunks, plan.timesteps)).width
        if isinstance(layer, ConvLayerPlan):
            layers.append(_conv_entry(layer, source, event_bits, accelerator.fifo_depth))
            producer_group, producer_chunks = layer.lanes, layer.out_chunks
            continue
        layers.append({
            "name": layer.name, "kind": "dense", "fires": layer.fires,
            "in_features": layer.in_features, "out_features": layer.out_features,
            "lanes": layer.lanes, "chunks": layer.chunks, "padded_features": layer.padded_features,
            "weight_bits": layer.weight_bits,
            "accumulator_bits": layer.membrane_bits, "membrane_bits": layer.membrane_bits,
            "accumulator_bound": layer.accumulator_bound,
            "score_bits": None if layer.fires else layer.membrane_bits,
            "threshold_bits": layer.threshold_bits if layer.fires else None,
            "weight_rom_bits": layer.weight_rom_bits, "rom_bits": layer.rom_bits,
            "membrane_memory_bits": layer.membrane_memory_bits, "membrane_banks": layer.membrane_banks,
            **_membrane_memory_entry(layer),
            "input_event_bits": event_bits, "input_fifo_depth": accelerator.fifo_depth,
            "cycles_per_input_spike": layer.chunks * _rate(layer),
            "cycles_per_fire_step": layer.chunks * _rate(layer) if layer.fires else None,
            "cycles_per_score_sweep": None if layer.fires else layer.chunks,
            "roms": {"weight": f"rom/{layer.name}.weight.hex", "bias": f"rom/{layer.name}.bias.hex",
                     **({"threshold": f"rom/{layer.name}.threshold.hex"} if layer.fires else {})},
            "threshold_range": [int(source.threshold.min()), int(source.threshold.max())],
        })
        producer_group, producer_chunks = layer.lanes, layer.chunks
    network = {"timesteps": net.timesteps, "input_shape": list(net.input_shape), **network_fingerprint(net)}
    if network_path is not None:
        network["path"] = str(network_path)
    if axis:
        ports = {"clock": "aclk", "reset": "aresetn (synchronous, active low)",
                 "s_axis": "s_axis_tdata[7:0]/tvalid/tready/tlast: one raw value per beat, tlast on a sample's last",
                 "m_axis": f"m_axis_tdata[{Shape.cast(accelerator.m_axis_tdata.shape()).width - 1}:0]/tvalid/tready/"
                           f"tlast: one beat per sample (tlast = 1), layout in \"axis\""}
    else:
        ports = {"clock": "clk", "reset": "rst (synchronous, active high)",
                 "pixels": "pixels__valid/ready/payload: {data: u8, last: u1} from the LSB",
                 "results": f"results__valid/ready/payload: {{label: u{plan.label_bits}, "
                            f"scores: {plan.classes} x s{plan.score_bits}}} from the LSB"}
    return {
        "format": DESIGN_FORMAT, "version": 1,
        "top": name, "verilog": f"{name}.v",
        **({"interface": "axis", "axis": axis_layout_description(plan.classes, plan.score_bits)} if axis else {}),
        "timesteps": plan.timesteps, "in_features": plan.in_features,
        "classes": plan.classes, "class_names": list(net.classes),
        "label_bits": plan.label_bits, "score_bits": plan.score_bits,
        "pixels_payload_bits": Shape.cast(pixel_layout()).width,
        "results_payload_bits": Shape.cast(result_layout(plan.classes, plan.score_bits)).width,
        "ports": ports,
        "encoder": {"lanes": plan.encoder_lanes, "chunks": plan.encoder_chunks, "lut_rom": "rom/input_lut.hex",
                    "buffer_bits": 2 * plan.encoder_chunks * plan.encoder_lanes * plan.timesteps},
        "fifo_depth": accelerator.fifo_depth,
        "membrane_banks": accelerator.membrane_banks,
        "multiplier": accelerator.plan.multiplier,
        "layers": layers,
        "folding": plan.folding.config(),
        "total_lanes": plan.folding.total_lanes(),
        **({"total_adders": plan.folding.total_adders()} if net.has_conv else {}),
        "network": network,
        "cycle_model": {
            "module": "spikeforge.hdl.cycle_model",
            "stage_cycles": {"encoder load": "in + 1", "encoder emit": "T*Ce + 2",
                             "accumulate": "S_l*C_l + 4", "fire": "T*C_l + 2", "score": "C_L + 3",
                             **(_CONV_STAGE_CYCLES if net.has_conv else {})},
            "membrane_banks": accelerator.membrane_banks,
            "steady_state": ("max over stages (constant workload)" if accelerator.membrane_banks == 2 else
                             "max over stages, a layer's accumulate + readout as one (one bank; a pooled "
                             "conv's accumulate + its readout's step 0)")
                            + "; predict() runs the per-sample recurrence",
        },
        "prediction": {
            "spikes_in": [float(s) for s in spikes],
            "spikes_basis": ("estimate: T/2 ones per input code" if estimated else "given") if samples is None
            # A conv network's samples drive the per-sample recurrence (each sample's own work), a dense
            # network's every FIFO beat by beat.
            else f"{'sample by sample' if net.has_conv else 'beat by beat'} on {_sample_count(samples)} samples",
            "cycles_per_sample": prediction.cycles_per_sample,
            "latency": prediction.latency,
            "stages": prediction.stages,
            "bottleneck": max(prediction.stages, key=prediction.stages.get),
            "adder_utilisation": prediction.adder_utilisation,
        },
    }


def _sample_count(samples) -> int:
    """How many samples ``samples`` (raw samples or a golden result on them) holds."""
    return len(samples.labels) if isinstance(samples, golden.GoldenResult) else len(samples)


def _rate(layer) -> int:
    """Cycles per core cycle: 2 for a layer at half rate (membrane banks in single-port RAM), else 1."""
    return 2 if layer.half_rate else 1


def _membrane_memory_entry(layer) -> dict:
    """Where a layer's membrane banks live, and what that does to its clock enable (``design.json``)."""
    return {"membrane_memory": layer.membrane_memory,
            "core_rate": "half (membrane banks in single-port RAM: one access a cycle)" if layer.half_rate else "full"}


def _conv_entry(layer: ConvLayerPlan, source, event_bits: int, fifo_depth: int) -> dict:
    """A conv layer's ``design.json`` entry (the dense keys where they mean the same, plus shapes and memories)."""
    memory = layer.memory_bits
    rom_bits = sum(memory[k] for k in ("weight", "bias", "threshold", "in_map", "rows", "cols"))
    roms = {"weight": f"rom/{layer.name}.weight.hex", "bias": f"rom/{layer.name}.bias.hex",
            "threshold": f"rom/{layer.name}.threshold.hex", "in_map": f"rom/{layer.name}.in_map.hex",
            "rows": f"rom/{layer.name}.rows.hex", "cols": f"rom/{layer.name}.cols.hex"}
    return {
        "name": layer.name, "kind": "conv2d", "fires": True,
        "in_shape": list(layer.in_shape), "conv_shape": list(layer.conv_shape), "out_shape": list(layer.out_shape),
        "kernel": list(layer.kernel), "stride": list(layer.stride), "padding": list(layer.padding),
        "pool": None if not layer.pooled else {"kernel": list(layer.pool_kernel), "stride": list(layer.pool_stride)},
        "kept_map": list(layer.cover),
        "in_features": int(source.in_features), "out_features": int(layer.out_shape[0] * layer.out_positions),
        "lanes": layer.lanes, "taps": layer.taps, "adders": layer.adders, "column_banks": layer.taps,
        "chunks": layer.chunks, "padded_channels": layer.lanes * layer.chunks,
        "weight_bits": layer.weight_bits,
        "accumulator_bits": layer.membrane_bits, "membrane_bits": layer.membrane_bits,
        "accumulator_bound": layer.accumulator_bound, "score_bits": None,
        "threshold_bits": layer.threshold_bits,
        "weight_rom_bits": memory["weight"], "rom_bits": rom_bits,
        "membrane_memory_bits": memory["membrane"] + memory["pooled_residual"],
        "membrane_banks": layer.membrane_banks, "memory_bits": memory, "memories": layer.memories(),
        **_membrane_memory_entry(layer),
        "input_event_bits": event_bits, "input_fifo_depth": fifo_depth,
        "cycles_per_input_spike": max(layer.words(y, x) for y in range(layer.in_shape[1])
                                      for x in range(layer.in_shape[2])) * layer.chunks * _rate(layer),
        "cycles_per_input_spike_note": "at most: kernel rows reached x ceil(kernel columns reached / taps) x chunks"
                                       + (" x 2 (half rate)" if layer.half_rate else "") + "; border spikes cost less",
        "cycles_per_fire_step": layer.out_positions * layer.chunks * _rate(layer),
        "cycles_per_score_sweep": None,
        "readout_words": readout_words(layer),
        "roms": roms,
        "threshold_range": [int(source.threshold.min()), int(source.threshold.max())],
    }


def summary(design: dict) -> str:
    """The design as a table for people: per layer lanes, widths, ROM bits, cycles; then the prediction."""
    rows = [("layer", "in->out", "lanes", "chunks", "w bits", "acc bits", "bound", "ROM bits",
             "cyc/spike", "cyc/step", "est. cyc")]
    stages = design["prediction"]["stages"]
    for layer in design["layers"]:
        lanes = str(layer["lanes"]) if layer.get("taps", 1) == 1 else f"{layer['lanes']}x{layer['taps']}"
        rows.append((layer["name"], f"{layer['in_features']}->{layer['out_features']}", lanes,
                     str(layer["chunks"]), str(layer["weight_bits"]), str(layer["accumulator_bits"]),
                     str(layer["accumulator_bound"]), str(layer["rom_bits"]), str(layer["cycles_per_input_spike"]),
                     str(layer["cycles_per_fire_step"] or "-"),
                     f"{stages[layer['name'] + '.accumulate']:.0f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    pred = design["prediction"]
    lines += [
        "",
        f"T = {design['timesteps']}, {design['in_features']} inputs, {design['classes']} classes; "
        f"label {design['label_bits']} bits, scores {design['score_bits']} bits; "
        f"{design['total_lanes']} lanes in total"
        + (f" ({design['total_adders']} adders with tap lanes)" if design.get("total_adders", design["total_lanes"])
           != design["total_lanes"] else "")
        + f", {design['membrane_banks']} membrane bank(s) per layer"
        + "".join(f"; {layer['name']}'s in {layer['membrane_memory']} (half rate)" for layer in design["layers"]
                  if layer.get("membrane_memory", "block") != "block"),
        f"predicted: {pred['cycles_per_sample']:.0f} cycles/sample (bottleneck {pred['bottleneck']}), "
        f"latency {pred['latency']:.0f} cycles, adder utilisation {100 * pred['adder_utilisation']:.0f} % "
        f"[{pred['spikes_basis']}]",
    ]
    if design.get("interface") == "axis":
        axis = design["axis"]
        label = "byte 0" if axis["label_bytes"] == 1 else f"bytes 0..{axis['label_bytes'] - 1}"
        lines.append(f"AXI4-Stream top: aclk, aresetn, s_axis_tdata[7:0] in; "
                     f"m_axis_tdata[{axis['m_axis_tdata_bits'] - 1}:0] out, one beat per sample: label in {label}, "
                     f"score i in bytes {axis['label_bytes']}+{axis['score_bytes']}*i "
                     f"(sign-extended to {8 * axis['score_bytes']} bits)")
    return "\n".join(lines)


def generate(net, out_dir, *, lanes=None, target_cycles=None, lanes_budget=None, name: str | None = None,
             spikes_in=None, fifo_depth: int = DEFAULT_FIFO_DEPTH, membrane_banks: int = 2,
             interface: str = "stream", multiplier: str = "dsp", samples=None) -> dict:
    """Write ``<out_dir>/<name>.v``, ``<out_dir>/rom/*.hex`` and ``<out_dir>/design.json``; return the design.

    Parameters
    ----------
    net : Network or path
        The integer network (or its directory).
    lanes : dict of str -> int, optional
        Lanes per layer (partial: the rest are balanced to the slowest named layer); a conv layer may
        take ``(lanes, taps)`` or ``"LxT"`` (tap lanes, see :mod:`~spikeforge.hdl.folding`).
    target_cycles, lanes_budget : int, optional
        Automatic folding for a cycle target or a total lanes budget (see
        :func:`~spikeforge.hdl.folding.auto_folding`).
    name : str, optional
        The Verilog module name (an identifier); default ``spikeforge_top``, or ``spikeforge_axis`` for
        ``interface="axis"``.
    spikes_in : list of float, optional
        Mean input spikes per sample and layer, for the balance and the prediction (default: an
        estimate of T/2 ones per code).
    samples : array of raw samples or a golden result, optional
        The samples ``spikes_in`` came from: the cycle model then follows them beat by beat (exact, where
        counts alone give the per-sample form), for the prediction and for the balancer's check against
        the default folding. The golden model's result on them (:func:`spikeforge.ir.golden.run_timesteps`'
        for a conv network, :func:`spikeforge.ir.golden.run`'s for a dense one; see
        :func:`~spikeforge.hdl.cycle_model.predict`) does the same without running the model again for
        each of those predictions.
    membrane_banks : int
        2 (ping-pong, default) or 1 (compact); see :class:`~spikeforge.hdl.Accelerator`.
    interface : ``"stream"`` or ``"axis"``
        The top's ports: the Amaranth streams (``clk``, ``rst``, ``pixels__*``, ``results__*``; DESIGN.md §3)
        or AXI4-Stream for a Vivado/Quartus block design (``aclk``, ``aresetn``, ``s_axis_*``, ``m_axis_*``;
        :class:`~spikeforge.hdl.axis.AXIStreamAccelerator`). ``design.json`` records ``"interface": "axis"``
        and the ``m_axis_tdata`` byte layout for the latter.
    multiplier : ``"dsp"`` or ``"logic"``
        How lanes (dense lanes and conv adders) scale a weight by ``2^(T-1-t)``: a multiplier per lane (a DSP where the device has
        them, default) or a shifter in logic (no DSP); see :class:`~spikeforge.hdl.Accelerator`.

    Raises
    ------
    InputError
        For a network with a layer there is no core for (a conv output layer, a pool that does not
        follow a conv; see :func:`~spikeforge.hdl.plan.check_supported`), or an unknown ``interface`` or
        ``multiplier``.
    FoldingError
        For a bad folding.
    FileExistsError
        When ``out_dir`` exists and is not an earlier output of this function (or empty).
    """
    network_path = None
    if not isinstance(net, Network):
        network_path = Path(net)
        net = load(network_path)
    check_supported(net)
    if interface not in INTERFACES:
        raise InputError(f"interface {interface!r} is not supported; supported: {', '.join(map(repr, INTERFACES))}")
    if name is None:
        name = DEFAULT_NAMES[interface]
    if not isinstance(name, str) or not name.isidentifier():
        raise InputError(f"module name {name!r} is not an identifier")
    folding = balanced_folding(net, lanes, lanes_budget=lanes_budget, target_cycles=target_cycles,
                               spikes_in=spikes_in, membrane_banks=membrane_banks, samples=samples)
    top = AXIStreamAccelerator if interface == "axis" else Accelerator
    accelerator = top(net, folding, fifo_depth=fifo_depth, membrane_banks=membrane_banks, multiplier=multiplier)
    text = verilog.convert(accelerator, name=name, emit_src=False)
    design = design_report(accelerator, name=name, spikes_in=spikes_in, network_path=network_path, samples=samples)

    out_dir = Path(out_dir)
    if out_dir.exists() and not (out_dir / "design.json").is_file():
        if not out_dir.is_dir() or any(out_dir.iterdir()):
            raise FileExistsError(f"{out_dir} exists and is not a spikeforge design directory; refusing to "
                                  f"overwrite it")
    with staged_directory(out_dir) as staging:
        (staging / "rom").mkdir()
        for file_name, image in _rom_images(accelerator.plan).items():
            (staging / "rom" / file_name).write_text(image)
        (staging / f"{name}.v").write_text(text)
        (staging / "design.json").write_text(json.dumps(design, indent=2) + "\n")
    return design
