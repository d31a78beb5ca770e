"""Harnesses shared by ``tests/`` and ``benchmarks/``, importable as ``spikeforge.testing``.

* :mod:`.hdl_harness` — Amaranth-simulator stream drivers and checkers, and a whole-accelerator run;
* :mod:`.signoff_support` — a small reference accelerator with the real top-level ports (and a
  deliberate-bug mode) that tests the cocotb sign-off independently of the real design;
* :mod:`.boards_standin` — a stand-in accelerator for the UART link and board tests;
* :mod:`.uart_bench` — bit-level UART drivers for simulator testbenches.

It sits above the library in the house (DESIGN.md §6): it may import any of ir, converter, hdl, sim,
boards and spikeforge; nothing but tests/ and benchmarks/ imports it.
"""
