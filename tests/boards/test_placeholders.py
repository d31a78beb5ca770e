"""Placeholder weight ROMs and icebram images (no tools): every ROM shape gives distinct columns, and the
images, applied the way icebram applies them, turn exactly the placeholder columns into the weights."""

from collections import Counter

import numpy as np
import pytest

from spikeforge.boards.placeholders import (BLOCK_WORDS, MIN_BLOCK_WORDS, column_images, hex_image,
                                            parse_hex_image, placeholder_plan, rom_columns, rom_patchable)
from spikeforge.boards.tools import ToolError
from spikeforge.hdl.folding import Folding
from spikeforge.hdl.plan import plan_network
from spikeforge.ir.random_network import random_network


def icebram(asc_columns: Counter, from_text: str, to_text: str) -> Counter:
    """What icebram does to the columns of a design: refuse equal ``from`` columns or uneven matches,
    then replace every ``from`` column by its ``to`` column."""
    from_words, to_words = parse_hex_image(from_text), parse_hex_image(to_text)
    width = 4 * len(from_text.split()[0])
    pattern = {}
    for source, target in zip(rom_columns(from_words, width), rom_columns(to_words, width)):
        assert source not in pattern, "Conflicting from pattern"
        pattern[source] = target
    found = [asc_columns[source] for source in pattern]
    assert min(found) == max(found) == 1, f"found some bit slices {max(found)} times, others {min(found)} times"
    result = Counter(asc_columns)
    for source, target in pattern.items():
        result[source] -= 1
        result[target] += 1
    return +result


def test_rom_columns_are_icebram_bit_slices():
    words = [0b101, 0b011] + [0] * 300
    columns = rom_columns(words, 3)
    assert len(columns) == 6                              # 2 blocks of 256 words x 3 bits
    assert columns[:3] == [0b11, 0b10, 0b01] and columns[3:] == [0, 0, 0]


@pytest.mark.parametrize("depth,width,patchable", [(63, 8, False), (64, 8, True), (256, 6, True),
                                                   (256 + MIN_BLOCK_WORDS - 1, 6, False),
                                                   (256 + MIN_BLOCK_WORDS, 6, True), (2560, 6, True)])
def test_patchable_rom_shapes(depth, width, patchable):
    assert rom_patchable(depth, width) is patchable


@pytest.mark.parametrize("sizes,timesteps,weight_bits,lanes", [
    ((64, 40, 24, 10), 5, 6, 1),        # the shape icebram refused (6-bit words: zero hex columns)
    ((64, 64, 32, 10), 8, 8, 1),
    ((70, 9, 5), 3, 3, 2),              # 3-bit lanes, odd depths
    ((33, 12, 7), 4, 5, 3),
])
def test_images_turn_placeholders_into_weights(sizes, timesteps, weight_bits, lanes):
    net = random_network(5, sizes=sizes, timesteps=timesteps, weight_bits=weight_bits)
    plan = plan_network(net, Folding.for_network(net, {layer.name: lanes for layer in net.layers}))
    placeholders = placeholder_plan(plan, seed=1)
    from_columns, to_columns, other = [], [], Counter()
    for real, fake in zip(plan.layers, placeholders.layers):
        width = real.lanes * real.weight_bits
        if fake.weight_words is real.weight_words:
            assert not rom_patchable(len(real.weight_words), width)
            other.update(rom_columns(real.weight_words, width))
            continue
        assert rom_patchable(len(real.weight_words), width)
        from_columns += rom_columns(fake.weight_words, width)
        to_columns += rom_columns(real.weight_words, width)
    assert from_columns, "no ROM of this shape was made patchable"
    assert len(set(from_columns)) == len(from_columns) and 0 not in from_columns
    # The design holds each placeholder column once, beside other block RAM contents (zeros, small ROMs).
    design = Counter(from_columns) + other + Counter({0: 40})
    for source, target in column_images(from_columns, to_columns):
        assert len(set(rom_columns(parse_hex_image(source), 4))) == len(parse_hex_image(source)) // BLOCK_WORDS * 4
        design = icebram(design, source, target)
    assert design == Counter(to_columns) + other + Counter({0: 40})


def test_placeholders_depend_on_seed_and_layer_only():
    net = random_network(2, sizes=(64, 40, 24, 10), timesteps=5, weight_bits=6)
    plan = plan_network(net, Folding.for_network(net, {"fc1": 1, "fc2": 1, "fc3": 1}))
    first, again, other = placeholder_plan(plan, 1), placeholder_plan(plan, 1), placeholder_plan(plan, 2)
    assert [l.weight_words for l in first.layers] == [l.weight_words for l in again.layers]
    assert first.layers[0].weight_words != other.layers[0].weight_words
    assert first.layers[0].weight_words != first.layers[1].weight_words[:len(first.layers[0].weight_words)]


def test_hex_image_pads_to_whole_blocks():
    text = hex_image([1, 0x3f, 7], 6)
    assert text.split()[:3] == ["01", "3f", "07"] and len(text.split()) == BLOCK_WORDS
    assert parse_hex_image(text)[:3] == [1, 0x3f, 7]


def test_column_images_refuse_what_icebram_would():
    with pytest.raises(ToolError, match=r"at least 4 and distinct \(3 given"):
        column_images([1, 2, 3], [0, 0, 0])
    with pytest.raises(ToolError, match=r"\(4 given, 3 distinct\)"):
        column_images([1, 2, 3, 3], [0, 0, 0, 0])
    rng = np.random.default_rng(0)
    columns = [int(v) for v in rng.integers(1, 1 << 62, size=6)]
    images = column_images(columns, columns[::-1])
    assert len(images) == 2        # 6 = 4 + 2: the remaining two first, filled up with two that map to themselves


def test_too_few_columns_for_an_image_leave_the_plan_unpatched():
    net = random_network(3, sizes=(64, 1, 2), timesteps=2, weight_bits=2)     # fc1: 64 words of 2 bits
    plan = plan_network(net, Folding.for_network(net, {"fc1": 1, "fc2": 1}))
    assert rom_patchable(len(plan.layers[0].weight_words), 2)
    assert placeholder_plan(plan, seed=1) is plan
