"""The payload layouts: one definition per stream, shared by the RTL, the tests and the testbenches.

* :func:`pixel_layout` — the ``pixels`` input (DESIGN.md §3): ``{data: unsigned(8), last: unsigned(1)}``.
* :func:`result_layout` — the ``results`` output: ``{label: unsigned(ceil(log2 C) or 1),
  scores: ArrayLayout(signed(S), C)}``.
* :func:`spike_event_layout` — the internal spike events between the encoder and the layers:

  ==========  =========================  ==================================================================
  field       shape                      meaning
  ==========  =========================  ==================================================================
  ``mask``    ``unsigned(group)``        spike bits of neurons ``chunk·group + k`` (bit ``k``), this step
  ``chunk``   ``unsigned(ceil_log2(chunks))`` (>= 1 bit)  which group of the producer's neurons
  ``step``    ``unsigned(ceil_log2(T))`` (>= 1 bit)       timestep ``t`` (0 = first = MSB of the codes)
  ``last``    ``unsigned(1)``            1 on the final beat of a sample (producer's last chunk at step
                                         ``T-1``); it is sent even when its ``mask`` is 0
  ==========  =========================  ==================================================================

  ``group`` is the producer's lanes (the encoder's lanes for the first layer): a fire cycle's spikes
  travel together, so the fire sweep never stalls to serialise them; the consumer walks the set bits.
  Beats with ``mask == 0`` are not sent except the ``last`` one. Fields are packed LSB first in the
  order above.
"""

from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data
from amaranth.utils import ceil_log2

__all__ = ["pixel_layout", "result_layout", "spike_event_layout", "index_shape", "signed_bits"]


def signed_bits(bound: int) -> int:
    """Two's-complement bits that hold every integer in ``-bound..bound``."""
    return int(bound).bit_length() + 1


def index_shape(count: int):
    """An unsigned shape for indices ``0..count-1``, at least 1 bit (no zero-width wires in the Verilog)."""
    return unsigned(max(1, ceil_log2(count)))


def pixel_layout() -> data.StructLayout:
    return data.StructLayout({"data": unsigned(8), "last": unsigned(1)})


def label_bits(classes: int) -> int:
    """``ceil(log2 C)``, at least 1 (one and two classes both need a 1-bit label)."""
    return max(1, ceil_log2(classes))


def result_layout(classes: int, score_bits: int) -> data.StructLayout:
    return data.StructLayout({"label": unsigned(label_bits(classes)),
                              "scores": data.ArrayLayout(signed(score_bits), classes)})


def spike_event_layout(group: int, chunks: int, timesteps: int) -> data.StructLayout:
    return data.StructLayout({
        "mask": unsigned(group),
        "chunk": index_shape(chunks),
        "step": index_shape(timesteps),
        "last": unsigned(1),
    })
