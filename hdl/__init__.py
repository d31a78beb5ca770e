"""Amaranth HDL: the pipelined, event-driven iLIF accelerator.

``Accelerator(net, folding=None)`` is the top-level ``wiring.Component`` (see :mod:`.top`);
:mod:`.generate` writes Verilog, ROM images and ``design.json``; :mod:`.cycle_model` predicts
cycles per sample; :mod:`.folding` chooses lanes.
"""

from .folding import Folding, FoldingError, auto_folding, parse_lanes, resolve_folding
from .top import Accelerator

__all__ = ["Accelerator", "Folding", "FoldingError", "auto_folding", "parse_lanes", "resolve_folding"]
