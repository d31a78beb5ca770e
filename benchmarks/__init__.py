"""spikeforge's reproducible measurements: ``python -m benchmarks [--quick] [-o build/bench]``.

One module per measurement, each with ``measure(ctx) -> dict`` (JSON-serialisable numbers, nothing
estimated presented as measured) and ``render(result, ctx) -> str`` (a Markdown section, plots
written into ``ctx.plots``):

* :mod:`.accuracy_vs_timesteps` — iLIF k = 2 vs. the rate-coded IF baseline: accuracy vs. T,
  timesteps and spike-driven additions to ANN parity;
* :mod:`.amplification_sweep` — conversion error for k in 1..3 (the paper's choice of k = 2);
* :mod:`.golden_speed` — samples/s of the golden model;
* :mod:`.hardware` — cycles, latency, throughput and resources of generated accelerators beside
  published FPGA SNN/BNN designs;
* :mod:`.tool_speed` — how long the tool's own steps take;
* :mod:`.scaling` — cycles per sample, ROM bits and LUTs vs. layer width and T.

:mod:`.results` writes ``RESULTS.md``, the PNG plots and ``results.json``;
:mod:`.runner` holds the command line (``main``) that ``python -m benchmarks`` and ``spikeforge bench`` run.
"""
