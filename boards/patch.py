"""New weights in an existing iCE40 bitstream, without synthesis or place and route (icebram).

How it works: :func:`~.build.build` synthesises the weight ROMs of an iCE40 design with random
placeholder contents (``build/roms/<layer>.placeholder.hex``), keeps nextpnr's ``build/top.asc``, and
puts the real weights in with ``icebram placeholder.hex real.hex``. icebram finds each 256-word bit
column of the placeholder in the block RAM initialisation data (a random column is unique, which real
weights need not be) and replaces it. :func:`patch_weights` does the same with another network's
weights: the result is bit for bit the bitstream a full build of that network would give.

Only a network that the built hardware computes exactly may be patched in: the same layers, sizes,
timesteps and weight widths (the *shape*), the same membrane and threshold widths, and the same
biases, thresholds and input lookup table (those live in small ROMs and logic, which are not patched).
Anything else is refused with the reason.
"""

import json
import os
from pathlib import Path

from spikeforge.ir.atomic import copy_file
from .build import PATCHABLE_MIN_DEPTH, ToolError, _run, _script, hex_image
from spikeforge.ir.errors import InputError

__all__ = ["PatchError", "write_rom_images", "icebram_replace", "check_patchable", "patch_weights"]


class PatchError(InputError):
    """The bitstream cannot take this network's weights; the message says why."""


def write_rom_images(rom_dir: Path, real_plan, placeholder_plan, layers) -> list:
    """Write ``<layer>.placeholder.hex`` and ``<layer>.weights.hex``; return [(from, to)] relative to the build dir."""
    rom_dir = Path(rom_dir)
    rom_dir.mkdir(parents=True, exist_ok=True)
    images = []
    for real, placeholder in zip(real_plan.layers, placeholder_plan.layers):
        if real.name not in layers:
            continue
        width = real.lanes * real.weight_bits
        (rom_dir / f"{real.name}.placeholder.hex").write_text(hex_image(placeholder.weight_words, width))
        (rom_dir / f"{real.name}.weights.hex").write_text(hex_image(real.weight_words, width))
        images.append((f"{rom_dir.name}/{real.name}.placeholder.hex", f"{rom_dir.name}/{real.name}.weights.hex"))
    manifest = {"layers": list(layers), "width": {l.name: l.lanes * l.weight_bits for l in real_plan.layers}}
    (rom_dir / "patch.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return images


def icebram_replace(cwd: Path, in_asc: str, out_asc: str, images):
    """Run ``icebram from to < in > out`` once per (from, to) image pair, in ``cwd``."""
    cwd = Path(cwd)
    current = in_asc
    for index, (source, target) in enumerate(images):
        step = f"{out_asc}.{index}"
        with open(cwd / current) as stdin, open(cwd / step, "w") as stdout:
            try:
                _run([_script("yowasp-icebram"), source, target], cwd, f"icebram.{index}.log",
                     stdin=stdin, stdout=stdout)
            except ToolError as error:
                raise ToolError(f"icebram could not find the ROM {source} in block RAM (was it mapped to logic?): "
                                f"{error}") from None
        if current != in_asc:
            os.remove(cwd / current)
        current = step
    os.replace(cwd / current, cwd / out_asc)


def check_patchable(built, new, folding):
    """Refuse ``new`` unless the hardware built for ``built`` computes it exactly with new weight ROMs.

    Returns the new network's plan.
    """
    from ..hdl.plan import plan_network

    def shape(net):
        return ([(l.name, l.in_features, l.out_features, l.weight_bits, l.fires) for l in net.layers],
                net.timesteps, net.in_features)
    if shape(built) != shape(new):
        old_layers, new_layers = shape(built)[0], shape(new)[0]
        describe = lambda ls: ", ".join(f"{n} {i}->{o} ({b}-bit)" for n, i, o, b, _ in ls)
        raise PatchError(f"the network has a different shape from the one in the bitstream: "
                         f"T={new.timesteps} [{describe(new_layers)}] vs T={built.timesteps} "
                         f"[{describe(old_layers)}]; patch-weights needs the same shape, rebuild instead")
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
        if len(old.weight_words) < PATCHABLE_MIN_DEPTH and fresh.weight_words != old.weight_words:
            problems.append(f"{old.name} weights differ but its ROM ({len(old.weight_words)} words) is too small "
                            f"to patch")
    if problems:
        raise PatchError("patch-weights swaps weight ROMs only, and this network needs more: "
                         + "; ".join(problems) + "; rebuild instead")
    return new_plan


def patch_weights(bitstream, new_net, output) -> dict:
    """Write ``output``: the iCE40 bitstream ``bitstream`` (from ``spikeforge build``) with ``new_net``'s weights.

    Raises
    ------
    PatchError
        Not an iCE40 build of this flow, or a network it cannot take (see :func:`check_patchable`).
    """
    from spikeforge.ir.network import load
    from ..hdl.folding import Folding

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
    folding = Folding.for_network(built, report["folding"])
    new_plan = check_patchable(built, new_net, folding)

    rom_dir = build_dir / "roms"
    images = []
    for layer in new_plan.layers:
        if layer.name not in report["patchable_layers"]:
            continue
        target = rom_dir / f"{layer.name}.new.hex"
        target.write_text(hex_image(layer.weight_words, layer.lanes * layer.weight_bits))
        images.append((f"roms/{layer.name}.placeholder.hex", f"roms/{layer.name}.new.hex"))
    icebram_replace(build_dir, "top.asc", "top.new.asc", images)
    _run([_script("yowasp-icepack"), "top.new.asc", "top.new.bin"], build_dir, "icepack.new.log")
    output = copy_file(build_dir / "top.new.bin", output)
    for name in ("top.new.asc", "top.new.bin"):
        os.remove(build_dir / name)
    return {"bitstream": str(output), "bytes": output.stat().st_size, "layers": [i[0] for i in images],
            "board": report["board"]}
