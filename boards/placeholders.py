"""Placeholder weight ROMs on iCE40, and the icebram images that put real weights in their place.

An iCE40 build synthesises the weight ROMs with random *placeholder* contents; ``icebram from to``
then rewrites the placed design (``.asc``) with the real weights, and can later do it again with
other weights (:mod:`.patch`) without synthesis or place and route.

What icebram matches. It cuts the ``from`` image into *columns* — one bit of 256 consecutive words —
and looks for each column in every initialised block RAM of the ``.asc`` (whatever the RAM's width
mode), replacing it by the ``to`` image's column at the same place. It refuses an image in which two
columns are equal, and one whose columns it does not find the same number of times (once, here).
So every column of every placeholder ROM must be distinct from all others and from anything else
in block RAM:

* each ROM draws its words from its own generator, seeded by ``(seed, layer index)``, and the
  columns of all ROMs are checked distinct and non-zero (a collision is drawn again);
* a ROM is patched only when every one of its 256-word blocks holds at least
  :data:`MIN_BLOCK_WORDS` real words (the rest of the block is zero in block RAM and in the image),
  so that no column is nearly all zero; shallower ROMs keep their real contents;
* the images handed to icebram are not the ROMs' own ``$readmemh`` images: a ``w``-bit ROM written
  as hex has ``4·ceil(w/4) - w`` all-zero columns per block when ``w`` is not a multiple of 4 (equal
  columns, which icebram refuses). :func:`column_images` instead packs the columns of all patched
  ROMs, four to a 256-word block, into images of 4-bit words; when the count is not a multiple of 4,
  the remaining columns go first, in an image filled up with placeholder columns that map to
  themselves (each is found once and left unchanged, then replaced by the main image).
"""

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from .tools import ToolError, run_tool

__all__ = ["PATCHABLE_MIN_DEPTH", "MIN_BLOCK_WORDS", "BLOCK_WORDS", "rom_patchable", "weight_rom_width",
           "placeholder_words",
           "placeholder_plan", "rom_columns", "column_images", "hex_image", "parse_hex_image",
           "write_rom_images", "write_column_images", "icebram_replace"]

#: icebram's unit: a column is one bit of this many consecutive words.
BLOCK_WORDS = 256
#: A ROM shallower than this keeps its real contents.
PATCHABLE_MIN_DEPTH = 64
#: A ROM whose last 256-word block holds fewer real words keeps its real contents: its columns there
#: would have too few random bits to be told apart from each other and from other block RAM contents.
MIN_BLOCK_WORDS = 32
#: Draws of a ROM's placeholder before giving up on distinct columns (one is enough in practice).
_MAX_DRAWS = 8


def rom_patchable(depth: int, width: int) -> bool:
    """Whether a ``width``-bit, ``depth``-word weight ROM gets placeholder contents (see the module docstring)."""
    tail = depth % BLOCK_WORDS
    return depth >= PATCHABLE_MIN_DEPTH and (tail == 0 or tail >= MIN_BLOCK_WORDS) and width >= 1


def weight_rom_width(layer) -> int:
    """Bits of one word of a layer plan's weight ROM: ``lanes × weight_bits``, or what the plan's own memory
    list says (a conv core with tap lanes holds a weight slot per tap lane in a word)."""
    memories = getattr(layer, "memories", None)
    if callable(memories):
        for memory in memories():
            if memory["name"] == "weights":
                return int(memory["width"])
    return layer.lanes * layer.weight_bits


def placeholder_words(depth: int, width: int, rng: np.random.Generator) -> list:
    """``depth`` random ``width``-bit words."""
    return [int.from_bytes(rng.bytes((width + 7) // 8), "little") & ((1 << width) - 1) for _ in range(depth)]


def rom_columns(words, width: int) -> list:
    """The columns of a ROM image as icebram sees them, block by block, bit 0 first within a block.

    Each column is an int whose bit ``i`` is the column's bit in word ``i`` of its block; words past
    the end of the ROM are zero (as in block RAM).
    """
    padded = np.zeros(-(-len(words) // BLOCK_WORDS) * BLOCK_WORDS, dtype=object)
    padded[:len(words)] = [int(w) for w in words]
    columns = []
    for start in range(0, len(padded), BLOCK_WORDS):
        block = padded[start:start + BLOCK_WORDS]
        for bit in range(width):
            bits = "".join("1" if (int(w) >> bit) & 1 else "0" for w in reversed(block))
            columns.append(int(bits, 2))
    return columns


def placeholder_plan(plan, seed: int):
    """The plan with random weight ROM words for every ROM :func:`rom_patchable` accepts.

    ROM ``i`` (layer index) draws from ``numpy.random.default_rng((seed, i))``; the columns of all
    placeholder ROMs are distinct and non-zero (checked; a ROM whose columns collide is drawn again).
    The other layers keep their :class:`~spikeforge.hdl.plan.LayerPlan` unchanged (the same object).
    With fewer than four columns in all (icebram images hold four per block) nothing is replaced.
    """
    layers, seen = [], set()
    for index, layer in enumerate(plan.layers):
        width = weight_rom_width(layer)
        if rom_patchable(len(layer.weight_words), width):
            rng = np.random.default_rng((seed, index))
            for _ in range(_MAX_DRAWS):
                words = placeholder_words(len(layer.weight_words), width, rng)
                columns = rom_columns(words, width)
                if 0 not in columns and len(set(columns)) == len(columns) and seen.isdisjoint(columns):
                    break
            else:   # pragma: no cover - 2^-32 per pair of columns
                raise ToolError(f"no placeholder with distinct columns for {layer.name} after {_MAX_DRAWS} draws")
            seen.update(columns)
            layer = dataclasses.replace(layer, weight_words=words)
        layers.append(layer)
    if len(seen) < 4:
        return plan
    return dataclasses.replace(plan, layers=layers)


def _nibble_image(columns) -> str:
    """A hex image of 4-bit words holding ``columns`` (a multiple of 4), four to a 256-word block."""
    lines = []
    for start in range(0, len(columns), 4):
        group = columns[start:start + 4]
        for word in range(BLOCK_WORDS):
            lines.append("0123456789abcdef"[sum(((column >> word) & 1) << b for b, column in enumerate(group))])
    return "".join(line + "\n" for line in lines)


def column_images(from_columns, to_columns) -> list:
    """``[(from_text, to_text), ...]``: icebram images, applied in order, that turn each ``from`` column into its ``to`` column.

    Raises
    ------
    ToolError
        Fewer than 4 columns, or equal ``from`` columns (placeholders are made so that neither happens).
    """
    from_columns, to_columns = list(from_columns), list(to_columns)
    if len(from_columns) != len(to_columns):
        raise ToolError(f"{len(from_columns)} placeholder columns but {len(to_columns)} weight columns")
    if len(from_columns) < 4 or len(set(from_columns)) != len(from_columns):
        raise ToolError(f"placeholder columns must be at least 4 and distinct ({len(from_columns)} given, "
                        f"{len(set(from_columns))} distinct)")
    main = len(from_columns) - len(from_columns) % 4
    images = []
    if main < len(from_columns):
        rest = list(range(main, len(from_columns)))
        fillers = list(range(4 - len(rest)))       # placeholder columns that map to themselves here
        images.append((_nibble_image([from_columns[i] for i in rest + fillers]),
                       _nibble_image([to_columns[i] for i in rest] + [from_columns[i] for i in fillers])))
    images.append((_nibble_image(from_columns[:main]), _nibble_image(to_columns[:main])))
    return images


def hex_image(words, width: int) -> str:
    """A ``$readmemh`` image, one ``width``-bit word a line, padded with zeros to a multiple of 256 words."""
    digits = max(1, -(-width // 4))
    padded = [int(w) for w in words] + [0] * (-len(words) % BLOCK_WORDS)
    return "".join(f"{w:0{digits}x}\n" for w in padded)


def parse_hex_image(text: str) -> list:
    """The words of a :func:`hex_image` (padding included)."""
    return [int(line, 16) for line in text.split()]


def write_rom_images(rom_dir: Path, real_plan, placeholder_plan, layers) -> list:
    """Write the records of a patchable build and the icebram images that put the real weights in.

    ``<layer>.placeholder.hex`` and ``<layer>.weights.hex`` (one ROM word a line) and ``patch.json``
    record what was built; ``icebram.<n>.from.hex`` / ``.to.hex`` are :func:`column_images` of all
    patched layers. Returns the image pairs ``[(from, to)]`` as paths relative to ``rom_dir``'s parent.
    """
    rom_dir = Path(rom_dir)
    rom_dir.mkdir(parents=True, exist_ok=True)
    from_columns, to_columns = [], []
    for real, placeholder in zip(real_plan.layers, placeholder_plan.layers):
        if real.name not in layers:
            continue
        width = weight_rom_width(real)
        (rom_dir / f"{real.name}.placeholder.hex").write_text(hex_image(placeholder.weight_words, width))
        (rom_dir / f"{real.name}.weights.hex").write_text(hex_image(real.weight_words, width))
        from_columns += rom_columns(placeholder.weight_words, width)
        to_columns += rom_columns(real.weight_words, width)
    manifest = {"layers": list(layers), "width": {l.name: weight_rom_width(l) for l in real_plan.layers},
                "depth": {l.name: len(l.weight_words) for l in real_plan.layers}}
    (rom_dir / "patch.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return write_column_images(rom_dir, "icebram", from_columns, to_columns)


def write_column_images(rom_dir: Path, stem: str, from_columns, to_columns) -> list:
    """Write :func:`column_images` as ``<stem>.<n>.from.hex`` / ``.to.hex``; return their paths relative
    to ``rom_dir``'s parent."""
    pairs = []
    for index, (source, target) in enumerate(column_images(from_columns, to_columns)):
        names = (f"{stem}.{index}.from.hex", f"{stem}.{index}.to.hex")
        (rom_dir / names[0]).write_text(source)
        (rom_dir / names[1]).write_text(target)
        pairs.append(tuple(f"{rom_dir.name}/{name}" for name in names))
    return pairs


def icebram_replace(cwd: Path, in_asc: str, out_asc: str, images):
    """Run ``icebram from to < in > out`` once per (from, to) image pair, in ``cwd``.

    Raises
    ------
    ToolError
        icebram failed (e.g. a placeholder ROM was not found in block RAM).
    """
    cwd = Path(cwd)
    current = in_asc
    for index, (source, target) in enumerate(images):
        step = f"{out_asc}.{index}"
        with open(cwd / current) as stdin, open(cwd / step, "w") as stdout:
            try:
                run_tool(["yowasp-icebram", source, target], cwd, f"icebram.{index}.log", stdin=stdin, stdout=stdout)
            except ToolError as error:
                raise ToolError(f"icebram could not put the weights in place of the placeholder ROMs ({source}; "
                                f"was a ROM mapped to logic?): {error}") from None
        if current != in_asc:
            os.remove(cwd / current)
        current = step
    os.replace(cwd / current, cwd / out_asc)
