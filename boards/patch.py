"""New weights in an existing iCE40 bitstream, without synthesis or place and route (icebram).

How it works: :func:`~spikeforge.boards.build.build` synthesises the weight ROMs of an iCE40 design
with random placeholder contents (recorded as ``build/roms/<layer>.placeholder.hex``), keeps
nextpnr's ``build/top.asc``, and puts the real weights in with icebram
(:mod:`~spikeforge.boards.placeholders` explains how the images are made). :func:`patch_weights`
does the same with another network's weights: the result is bit for bit the bitstream a full build
of that network would give.

Only a network that the built hardware computes exactly may be patched in: the same layers, sizes,
timesteps and weight widths (the *shape*), the same membrane and threshold widths, and the same
biases, thresholds and input lookup table (those live in small ROMs and logic, which are not patched).
Anything else is refused with the reason.

Identity (:mod:`spikeforge.ir.fingerprint`): the build's ``report.json`` records the fingerprints of
the network it was built from, and two are checked before anything is patched:

* the build's own copy, ``<build>/network``, must have the recorded *full* fingerprint. The
  comparison of biases, thresholds and input table below is made against that copy, so a copy
  replaced by another network (or a build of an older spikeforge, which records none: rebuild it)
  would let a bitstream through whose unpatched logic computes something else;
* the new network must have the recorded *structure* fingerprint: everything but the arrays'
  values (T, input shape, layer kinds, names, sizes, weight widths, ``fires``, class names). Its
  values legitimately differ, that is the point; what the unpatched parts hold is then compared
  value by value (:func:`check_patchable`). The structure check is stricter than the hardware
  strictly needs (class names and the input's 2-D or 1-D shape change no bit of the bitstream):
  patch-weights is for new weights of the same model, and a network that differs in more than its
  values is another model, which is rebuilt.
"""

import json
import os
from pathlib import Path

from .placeholders import (icebram_replace, parse_hex_image, rom_columns, rom_patchable, weight_rom_width,
                           write_column_images)
from .tools import run_tool
from spikeforge.hdl.folding import Folding
from spikeforge.hdl.plan import plan_network
from spikeforge.ir.atomic import copy_file
from spikeforge.ir.errors import InputError
from spikeforge.ir.fingerprint import check_identity
from spikeforge.ir.network import load

__all__ = ["PatchError", "check_patchable", "patch_weights"]


class PatchError(InputError):
    """The bitstream cannot take this network's weights; the message says why."""


def _layer_shape(layer) -> tuple:
    """What fixes a layer's hardware apart from its values: kind, sizes, window and weight width."""
    window = tuple(tuple(getattr(layer, key)) for key in ("in_shape", "out_shape", "kernel", "stride", "padding")
                   if layer.kind != "dense")
    return (layer.name, layer.kind, layer.in_features, layer.out_features, getattr(layer, "weight_bits", None),
            layer.fires, window)


def _describe(shape: tuple) -> str:
    name, kind, n_in, n_out, bits, _fires, window = shape
    if kind == "dense":
        return f"{name} {n_in}->{n_out} ({bits}-bit)"
    (c, h, w), (co, ho, wo) = window[0], window[1]
    if kind == "maxpool2d":
        return f"{name} maxpool {window[2][0]}x{window[2][1]} {c}x{h}x{w}->{co}x{ho}x{wo}"
    return (f"{name} conv {window[2][0]}x{window[2][1]} s{window[3][0]} p{window[4][0]} {c}x{h}x{w}->{co}x{ho}x{wo} "
            f"({bits}-bit)")


def check_patchable(built, new, folding):
    """Refuse ``new`` unless the hardware built for ``built`` computes it exactly with new weight ROMs.

    Returns the new network's plan.
    """
    built_layers, new_layers = [_layer_shape(l) for l in built.layers], [_layer_shape(l) for l in new.layers]
    if (built.timesteps, built.in_features) != (new.timesteps, new.in_features) or built_layers != new_layers:
        differ = [f"{old[0]!r} ({_describe(old)} in the bitstream, {_describe(fresh)} here)"
                  for old, fresh in zip(built_layers, new_layers) if old != fresh]
        if len(built_layers) != len(new_layers):
            differ.append(f"{len(new_layers)} layers here, {len(built_layers)} in the bitstream")
        if built.timesteps != new.timesteps:
            differ.append(f"T={new.timesteps} here, T={built.timesteps} in the bitstream")
        if built.in_features != new.in_features:
            differ.append(f"{new.in_features} inputs here, {built.in_features} in the bitstream")
        raise PatchError(f"the network has a different shape from the one in the bitstream: "
                         f"T={new.timesteps} [{', '.join(_describe(l) for l in new_layers)}] vs T={built.timesteps} "
                         f"[{', '.join(_describe(l) for l in built_layers)}]; differs at "
                         f"{'; '.join(differ)}; patch-weights needs the same shape, rebuild instead")
    old_plan, new_plan = plan_network(built, folding), plan_network(new, folding)
    problems = []
    if old_plan.input_lut != new_plan.input_lut:
        problems.append("the input lookup table differs")
    for old, fresh in zip(old_plan.layers, new_plan.layers):
        if fresh.membrane_bits != old.membrane_bits:
            problems.append(f"{old.name} needs {fresh.membrane_bits}-bit membranes, the bitstream has "
                            f"{old.membrane_bits}-bit ones")
            continue
        if fresh.threshold_bits != old.threshold_bits and old.fires:
            problems.append(f"{old.name} needs {fresh.threshold_bits}-bit thresholds, the bitstream has "
                            f"{old.threshold_bits}")
            continue
        if fresh.bias_words != old.bias_words:
            problems.append(f"{old.name} biases (b + v0) differ")
        if fresh.threshold_words != old.threshold_words:
            problems.append(f"{old.name} thresholds differ")
        if not rom_patchable(len(old.weight_words), weight_rom_width(old)) \
                and fresh.weight_words != old.weight_words:
            problems.append(f"{old.name} weights differ but its ROM ({len(old.weight_words)} words) is too small "
                            f"to patch")
    if problems:
        raise PatchError("patch-weights swaps weight ROMs only, and this network needs more: "
                         + "; ".join(problems) + "; rebuild instead")
    return new_plan


def patch_weights(bitstream, new_net, output, *, new_network_path=None) -> dict:
    """Write ``output``: the iCE40 bitstream ``bitstream`` (from ``spikeforge build``) with ``new_net``'s weights.

    ``new_network_path`` (where ``new_net`` was loaded from) only names it in messages.

    Raises
    ------
    PatchError
        Not an iCE40 build of this flow, a build whose network copy is not the one it was built from
        (or that records none: an older spikeforge), or a network it cannot take (another structure,
        see the module docstring, or see :func:`check_patchable`).
    """
    bitstream = Path(bitstream)
    out_dir = bitstream.parent
    report_path = out_dir / "report.json"
    build_dir = out_dir / "build"
    if not bitstream.is_file():
        raise PatchError(f"{bitstream} does not exist")
    if not report_path.is_file() or not (build_dir / "top.asc").is_file():
        raise PatchError(f"{bitstream} is not from `spikeforge build` (no {report_path.name} and build/top.asc "
                         f"beside it); patch-weights needs that build directory")
    report = json.loads(report_path.read_text())
    if report.get("family") != "ice40":
        raise PatchError(f"{bitstream} is for {report.get('board')} ({report.get('family')}); patch-weights "
                         f"supports iCE40 bitstreams only")
    if not report.get("patchable_layers"):
        raise PatchError(f"{bitstream} was built without placeholder ROMs (--no-patchable); rebuild to patch")
    built = load(out_dir / "network")
    recorded = report.get("network")
    check_identity(recorded, built, what="the build", where=report_path, network_path=out_dir / "network",
                   remedy="rebuild it with `spikeforge build`", error=PatchError)
    folding = Folding.for_network(built, report["folding"])
    new_plan = check_patchable(built, new_net, folding)
    check_identity(recorded, new_net, what="the build", where=report_path, network_path=new_network_path,
                   structure_only=True, remedy="patch-weights needs the same structure: rebuild instead",
                   error=PatchError)

    rom_dir = build_dir / "roms"
    from_columns, to_columns, layers = [], [], []
    for layer in new_plan.layers:
        if layer.name not in report["patchable_layers"]:
            continue
        width = weight_rom_width(layer)
        placeholder = parse_hex_image((rom_dir / f"{layer.name}.placeholder.hex").read_text())
        from_columns += rom_columns(placeholder[:len(layer.weight_words)], width)
        to_columns += rom_columns(layer.weight_words, width)
        layers.append(layer.name)
    images = write_column_images(rom_dir, "icebram.new", from_columns, to_columns)
    icebram_replace(build_dir, "top.asc", "top.new.asc", images)
    run_tool(["yowasp-icepack", "top.new.asc", "top.new.bin"], build_dir, "icepack.new.log")
    output = copy_file(build_dir / "top.new.bin", output)
    for name in ("top.new.asc", "top.new.bin"):
        os.remove(build_dir / name)
    return {"bitstream": str(output), "bytes": output.stat().st_size, "layers": layers, "board": report["board"]}
