"""Bit-level helpers the dense and conv cores (and their plans) share.

* :func:`lowest_set_bit` — gateware: the index of a mask's lowest set bit, a log-depth tree; a core
  walks an event's spike mask with it, lowest bit first.
* :func:`pack_lanes` — software: ``lanes`` integers per memory word, lane 0 in the least significant
  bits, each field two's complement; the plans build every ROM image (weights, biases, thresholds)
  with it.
"""

from __future__ import annotations

from amaranth.hdl import Const, Mux

__all__ = ["lowest_set_bit", "pack_lanes"]


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
