"""Bit-level helpers the dense and conv cores (and their plans) share.

* :func:`lowest_set_bit` — gateware: the index of a mask's lowest set bit, a log-depth tree; a core
  walks an event's spike mask with it, lowest bit first.
* :func:`at_most_one_set` — gateware for that walk without a carry chain: a wide mask (a 64-lane
  producer's) through ``(m & (m - 1)) == 0`` is a ripple chain, on the slowest path of a 64-lane
  Fashion-MNIST design on ECP5 (65 MHz); a log-depth tree of LUTs is not.
* :func:`lowest_one_hot` — gateware: a mask's lowest set bit alone, ``m & -m`` (one carry chain); the
  dense core registers it beside the bit's index so the walk clears the bit with one gate, not a
  decoder in front of the next priority encoder.
* :func:`times_constant` — gateware: a value times a constant as a sum of shifted copies: adders in
  LUTs and carry chains. yosys maps ``value * constant`` to a DSP on ECP5 (MULT18X18D), and a
  one-lane layer's weight address through one (``in_index × chunks``) was the slowest path of the
  64-lane Fashion-MNIST design (76.6 MHz: routing to and from the DSP column and its 3.9 ns).
* :func:`pack_lanes` — software: ``lanes`` integers per memory word, lane 0 in the least significant
  bits, each field two's complement; the plans build every ROM image (weights, biases, thresholds)
  with it.
"""

from __future__ import annotations

from amaranth.hdl import Const, Mux

__all__ = ["lowest_set_bit", "lowest_one_hot", "at_most_one_set", "times_constant", "pack_lanes"]


def times_constant(value, constant: int):
    """``value × constant`` (an unsigned Value, a constant >= 0) without a multiplier: the copies of
    ``value`` shifted by each set bit of ``constant``, summed by a balanced tree of adders."""
    if constant < 0:
        raise ValueError(f"constant {constant} must be >= 0")
    terms = [value << bit for bit in range(constant.bit_length()) if constant >> bit & 1]
    if not terms:
        return Const(0, 1)
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


def lowest_set_bit(mask):
    """The index of the lowest set bit of ``mask`` (a Value): a log-depth tree, the lower half wins.

    The result is ``ceil(log2(len(mask)))`` bits wide; it is meaningless when no bit is set (callers
    test ``mask.any()`` themselves).
    """
    def tree(lo, hi):
        if hi - lo == 1:
            return Const(0, 1), mask[lo]
        mid = lo + (1 << ((hi - lo - 1).bit_length() - 1))
        low_index, low_any = tree(lo, mid)
        high_index, high_any = tree(mid, hi)
        width = (hi - lo - 1).bit_length()
        high_index = high_index + (mid - lo)
        return Mux(low_any, low_index, high_index)[:width], low_any | high_any
    index, _ = tree(0, len(mask))
    return index


def lowest_one_hot(mask):
    """``mask``'s lowest set bit alone (``m & -m``: one carry chain); 0 when no bit is set. A core that
    registers it with the mask clears that bit without a decoder (``mask & ~one_hot``)."""
    return (mask & (-mask)[:len(mask)])[:len(mask)]


def at_most_one_set(mask):
    """1 when at most one bit of ``mask`` is set (``(mask & (mask - 1)) == 0``), as a log-depth tree of
    (any, several) pairs instead of a subtraction."""
    def tree(lo, hi):
        if hi - lo == 1:
            return mask[lo], Const(0, 1)
        mid = (lo + hi) // 2
        (low_any, low_several), (high_any, high_several) = tree(lo, mid), tree(mid, hi)
        return low_any | high_any, low_several | high_several | (low_any & high_any)
    _, several = tree(0, len(mask))
    return ~several


def pack_lanes(rows, bits: int) -> list:
    """``rows`` (depth × lanes integers) -> one int per row, lane 0 in the LSBs, each field ``bits`` wide
    in two's complement."""
    mask = (1 << bits) - 1
    words = []
    for row in rows:
        word = 0
        for k, value in enumerate(row):
            word |= (int(value) & mask) << (k * bits)
        words.append(word)
    return words
