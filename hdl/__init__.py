"""Amaranth HDL: the pipelined, event-driven iLIF accelerator.

* :class:`Accelerator` (``Accelerator(net, folding=None)``) — the top-level ``wiring.Component``
  (:mod:`.top`), built from :mod:`.encoder`, :mod:`.layer`, :mod:`.fifo`;
* :mod:`.generate` — ``generate(net, out_dir, ...)`` writes Verilog, ROM images and ``design.json``;
  :func:`summary` renders a design as a table;
* :mod:`.cycle_model` — ``predict(net, folding, spike_counts_or_samples)``;
* :mod:`.folding` — lanes per layer, validated or chosen automatically; :mod:`.balance` — on measured
  spikes, never slower than the default folding by the cycle model;
* :mod:`.plan` — every width, depth and ROM image; :mod:`.layouts` — every stream payload.
"""

from .balance import balanced_folding
from .folding import Folding, FoldingError, auto_folding, parse_lanes, resolve_folding
from .generate import summary
from .top import Accelerator

__all__ = ["Accelerator", "Folding", "FoldingError", "auto_folding", "balanced_folding", "parse_lanes", "resolve_folding",
           "summary"]
