"""spikeforge's reproducible measurements: ``spikeforge bench [--quick] [-o build/bench]``.

Installed as ``spikeforge.benchmarks`` (a checkout also runs ``python -m benchmarks``). One module per
section, each with ``measure(ctx) -> dict`` (JSON-serialisable numbers, nothing estimated presented
as measured) and ``render(result, ctx) -> str`` (a Markdown section, plots written into ``ctx.plots``):

* :mod:`.accuracy_vs_timesteps` — iLIF k = 2 vs. the rate-coded IF baseline: accuracy vs. T,
  timesteps and spike-driven additions to ANN parity;
* :mod:`.amplification_sweep` — conversion error for k in 1..3 (the paper's choice of k = 2);
* :mod:`.hardware` — cycles, latency, throughput and resources of generated accelerators beside
  published FPGA SNN/BNN designs;
* :mod:`.hdl_cycles` — Amaranth RTL cycles per sample against the cycle model;
* :mod:`.golden_speed` — samples/s of the golden model;
* :mod:`.tool_speed` — how long the tool's own steps take;
* :mod:`.verilator_speed` — the cocotb + Verilator sign-off's build time and simulation speed;
* :mod:`.scaling` — cycles per sample, ROM bits and LUTs vs. layer width and T.

:mod:`.options` lists the sections and the options (cheap to import); :mod:`.runner` runs them and
writes ``RESULTS.md``, the PNG plots and ``results.json``. :mod:`.common`, :mod:`.rate_coded` and
:mod:`.published` are shared by the sections.
"""
