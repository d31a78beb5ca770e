"""The board's link and its own measurements, on the simulated board (cocotb + Verilator on a pty).

    python -m benchmarks --only board_link [--quick]

Three numbers of issue 17, each measured through the real host client (:class:`~spikeforge.boards.host.BoardClient`)
against the simulated board (the board design: UART, link, batch buffer, counters, accelerator):

* **Simulated ULX3S, Fashion-MNIST 784-128-10 T = 4** (the ``fmnist`` benchmark network, folded as the
  verilator_speed section does: lanes budget 36), its sync clock at :data:`ULX3S_CLOCK_HZ` (a PLL clock below
  the design's ECP5 Fmax; every clock from 46 MHz up gives the FT231X's 3 Mbaud): a batch of
  :data:`FMNIST_BATCH` test samples uploaded compactly, run back-to-back; the cycles per sample the board's
  counters measure against the Verilator sign-off's (the compiled engine's steady state on the same samples;
  target ±1 %); and each layer's busy, stalled and starved cycles per sample that the board's per-layer
  counters measure, beside the cycle model's per-layer figures on the same samples (its spike work, its
  accumulate phase = work + drain, its fire sweep): a layer's busy cycles lie between its work and its
  accumulate + fire (the two overlap with two membrane banks), and the slowest layer is busy nearly all the time.
* The same board's **link-bound rate**: the new baud rate over the bits a sample takes on the wire (raw and
  compact frames, as the host sent them), against today's 127 samples/s (1 Mbaud, 789-byte frames; target >= 3x).
* **Simulated iCEBreaker, digits**: host-visible samples/s in the board's own time (the first sample frame on
  the wire to the last answer, in its clock cycles), streamed (host window 4): the demo network (T = 8, raw
  frames) at the 12 MHz oscillator (3 Mbaud) and at a 24 MHz PLL clock (6 Mbaud), and the digits benchmark
  network at T = 4 in the compact form at 12 MHz; against today's link-bound rate (1 Mbaud, 69-byte frames:
  1,449 samples/s; target >= 5x).
  The host's wall clock is no measure here: the simulation runs thousands of times slower than a board.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from spikeforge.boards.host import BoardClient, RunStats
from spikeforge.boards.simboard import SimulatedBoard
from spikeforge.demo import demo_network
from spikeforge.hdl.balance import balanced_folding
from spikeforge.hdl.cycle_model import ACCUMULATE_DRAIN, predict
from spikeforge.hdl.generate import generate
from spikeforge.ir import golden
from spikeforge.reporting import markdown_table
from spikeforge.sim.fast_engine import verify_fast

from .accuracy_vs_timesteps import converted
from .common import dataset, log

__all__ = ["measure", "render", "summary_lines"]

ULX3S_CLOCK_HZ = 48_000_000
FMNIST_BATCH = 32
FMNIST_TIMESTEPS = 4
FMNIST_LANES_BUDGET = 36
#: Today's rates (1 Mbaud, raw frames: 10 bits a byte, 'S' seq pixels crc and two ENDs).
TODAY_BAUD = 1_000_000
TARGETS = {"cycles_rel": 0.01, "link_ratio": 3.0, "icebreaker_ratio": 5.0}
SAMPLE_KINDS = {ord("S"), ord("P"), ord("B"), ord("Q")}


def today_rate(in_features: int) -> float:
    return TODAY_BAUD / (10 * (in_features + 5))


def board_time_rate(wire: dict, samples: int, clk_freq: float) -> float | None:
    """Samples/s in the board's time: the first sample frame's first bit to the last answer's END."""
    starts = [c for c, kind in wire["rx_frames"] if kind in SAMPLE_KINDS]
    ends = [c for c, kind in wire["tx_frames"] if kind == ord("R")]
    if not starts or not ends or ends[-1] <= starts[0]:
        return None
    return samples * clk_freq / (ends[-1] - starts[0])


def _fmnist(ctx, work: Path) -> dict:
    net = converted(ctx, "fmnist", FMNIST_TIMESTEPS)
    test = dataset("fashion-mnist", "test")
    count = 16 if ctx.quick else FMNIST_BATCH
    samples = test.samples[:count].reshape(count, -1)
    spikes_in = [float(s.mean()) for s in golden.run(net, test.samples).input_spikes()]
    lanes = dict(balanced_folding(net, spikes_in=spikes_in, lanes_budget=FMNIST_LANES_BUDGET).lanes)
    net_dir, rtl = work / "fmnist-net", work / "fmnist-rtl"
    net.save(net_dir)
    generate(net_dir, rtl, lanes=lanes, spikes_in=spikes_in)
    log(f"board_link: Verilator sign-off (compiled engine) of {count} Fashion-MNIST samples")
    signoff = verify_fast(net, rtl, samples, test.labels[:count], build_root=work / "fast", report_path=False,
                          network_path=net_dir)
    reference = signoff["timing"]["steady_cycles_per_sample"]
    expected = golden.run(net, samples)
    log(f"board_link: simulated ULX3S at {ULX3S_CLOCK_HZ / 1e6:g} MHz, a compact batch of {count}")
    with SimulatedBoard(net, work / "ulx3s", lanes=lanes, board="ulx3s-85f", clk_freq=ULX3S_CLOCK_HZ,
                        batch_depth=count, build_root=work / "sim_build") as board:
        config = board.config
        with BoardClient(board.port, answer_timeout=600) as client:
            batch_stats = RunStats()
            batched = client.classify(samples, stats=batch_stats, batch=count, compact=True)
            raw_stats = RunStats()
            streamed = client.classify(samples[:2], stats=raw_stats)
    # The batch is samples 0..count-1, the stream after it samples 0 and 1 again.
    exact = all(r.label == expected.labels[i] and tuple(r.scores) == tuple(int(v) for v in expected.scores[i])
                for results in (batched, streamed) for i, r in enumerate(results))
    board_cycles = batch_stats.board_cycles_per_sample
    model = predict(net, lanes, samples)            # the cycle model, beat by beat, on the same samples
    layers = []
    for counted, predicted in zip(batch_stats.board_layers, model.layers):
        total = counted.busy + counted.stalled + counted.starved
        layers.append({"name": predicted["name"], "lanes": predicted["lanes"],
                       "busy": counted.busy / count, "stalled": counted.stalled / count,
                       "starved": counted.starved / count, "busy_share": counted.busy / total if total else 0.0,
                       "model_work": predicted["accumulate_cycles"] - ACCUMULATE_DRAIN,
                       "model_accumulate": predicted["accumulate_cycles"], "model_fire": predicted["fire_cycles"]})
    compact_bytes = batch_stats.bytes_sent / count          # the batch frame's share per sample
    raw_bytes = raw_stats.bytes_sent / 2
    today = today_rate(config.in_features)
    return {
        "network": f"Fashion-MNIST {net.in_features}-128-10, T = {net.timesteps}", "folding": lanes,
        "samples": count, "clock_hz": config.clk_freq, "baud": config.baud, "exact": bool(exact),
        "signoff_cycles_per_sample": reference, "board_cycles_per_sample": board_cycles,
        "cycles_rel_error": abs(board_cycles - reference) / reference if board_cycles else None,
        "board_samples_per_second": batch_stats.board_samples_per_second,
        "board_latency_cycles": batch_stats.board_latency_cycles,
        "counters": [{**c.__dict__, "layers": [layer.__dict__ for layer in c.layers]} for c in batch_stats.counters],
        "model_cycles_per_sample": model.cycles_per_sample, "layers": layers,
        "wire_bytes_per_sample": {"raw": raw_bytes, "compact": compact_bytes},
        "link_bound": {"raw": config.baud / (10 * raw_bytes), "compact": config.baud / (10 * compact_bytes)},
        "today_link_bound": today,
        "link_ratio": {"raw": config.baud / (10 * raw_bytes) / today,
                       "compact": config.baud / (10 * compact_bytes) / today},
    }


def _icebreaker(ctx, work: Path) -> dict:
    demo = demo_network()                                   # T = 8: raw frames (compact needs T <= 4)
    digits_t4 = converted(ctx, "digits", 4)                 # the digits benchmark network at T = 4: compact
    test = dataset("digits", "test")
    count = 24 if ctx.quick else 64
    samples = test.samples[:count].reshape(count, -1)
    rows = {}
    modes = (("12 MHz (oscillator), 3 Mbaud, raw, demo T = 8", demo, None, {}),
             ("24 MHz (PLL), 6 Mbaud, raw, demo T = 8", demo, 24e6, {}),
             ("12 MHz (oscillator), 3 Mbaud, compact, T = 4", digits_t4, None, {"compact": True}))
    for mode, net, clk, kwargs in modes:
        log(f"board_link: simulated iCEBreaker, digits, {count} samples, {mode}")
        expected = golden.run(net, samples)
        with SimulatedBoard(net, work / "icebreaker", board="icebreaker", clk_freq=clk,
                            build_root=work / "sim_build") as board:
            config = board.config
            with BoardClient(board.port, answer_timeout=600, window=4) as client:
                stats = RunStats()
                results = client.classify(samples, stats=stats, **kwargs)
        exact = all(r.label == expected.labels[i] for i, r in enumerate(results))
        rows[mode] = {"samples": count, "exact": bool(exact), "clock_hz": config.clk_freq, "baud": config.baud,
                      "host_visible": board_time_rate(board.wire, count, config.clk_freq),
                      "board_samples_per_second": stats.board_samples_per_second,
                      "wire_bytes_per_sample": stats.bytes_sent / count}
    today = today_rate(demo.in_features)
    best = max((r["host_visible"] or 0) for r in rows.values())
    return {"network": "digits (8x8)", "clock_hz": 12e6, "baud": 3_000_000, "rows": rows,
            "today_link_bound": today, "best_host_visible": best, "ratio": best / today}


def measure(ctx) -> dict:
    work = Path(tempfile.mkdtemp(prefix="board-link-", dir=ctx.out_dir))
    try:
        icebreaker = _icebreaker(ctx, work)
        fmnist = _fmnist(ctx, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"ulx3s": fmnist, "icebreaker": icebreaker, "targets": TARGETS,
            "met": {"cycles": fmnist["cycles_rel_error"] is not None
                    and fmnist["cycles_rel_error"] <= TARGETS["cycles_rel"],
                    "link": fmnist["link_ratio"]["compact"] >= TARGETS["link_ratio"],
                    "icebreaker": icebreaker["ratio"] >= TARGETS["icebreaker_ratio"]}}


def _fmt(value, digits=0):
    return "—" if value is None else f"{value:,.{digits}f}"


def render(result: dict, ctx=None) -> str:
    u, i, met = result["ulx3s"], result["icebreaker"], result["met"]
    verdict = lambda ok: "met" if ok else "NOT met"     # noqa: E731
    lines = ["## Board link: batch mode, on-chip counters, link rates (simulated boards)", "",
             f"`python -m benchmarks --only board_link`: the host client against the simulated board (the board "
             f"design under cocotb + Verilator on a pty); rates in the board's clock cycles, not the host's wall "
             f"clock.", "",
             f"**Simulated ULX3S, {u['network']}**, {u['clock_hz'] / 1e6:g} MHz, {u['baud']:,} baud, a compact "
             f"batch of {u['samples']} (bit-exact: {u['exact']}):", ""]
    lines.append(markdown_table(
        ["measure", "value", "reference", "target"],
        [["cycles/sample, board counters (batch)", _fmt(u["board_cycles_per_sample"], 1),
          f"{_fmt(u['signoff_cycles_per_sample'], 1)} (Verilator sign-off, same samples)",
          f"±1 %: {_fmt(100 * u['cycles_rel_error'], 2) if u['cycles_rel_error'] is not None else '—'} % "
          f"({verdict(met['cycles'])})"],
         ["samples/s measured by the board", _fmt(u["board_samples_per_second"]), "", ""],
         ["link-bound samples/s, raw frames", _fmt(u["link_bound"]["raw"]),
          f"{_fmt(u['today_link_bound'])} today", f"{u['link_ratio']['raw']:.2f}x"],
         ["link-bound samples/s, compact frames", _fmt(u["link_bound"]["compact"]),
          f"{_fmt(u['today_link_bound'])} today",
          f">= 3x: {u['link_ratio']['compact']:.2f}x ({verdict(met['link'])})"],
         ["wire bytes/sample (raw, compact)",
          f"{_fmt(u['wire_bytes_per_sample']['raw'], 1)}, {_fmt(u['wire_bytes_per_sample']['compact'], 1)}", "789",
          ""]]))
    if u.get("layers"):
        lines += ["", f"Per layer, the board's per-layer counters (cycles per sample over the batch) beside the cycle "
                      f"model on the same samples (model cycles/sample {_fmt(u.get('model_cycles_per_sample'), 1)}):", ""]
        lines.append(markdown_table(
            ["layer", "lanes", "busy", "stalled", "starved", "busy %", "model: spike work", "model: accumulate",
             "model: fire"],
            [[row["name"], row["lanes"], _fmt(row["busy"], 1), _fmt(row["stalled"], 1), _fmt(row["starved"], 1),
              f"{100 * row['busy_share']:.1f}", _fmt(row["model_work"], 1), _fmt(row["model_accumulate"], 1),
              _fmt(row["model_fire"], 1)] for row in u["layers"]]))
    lines += ["", f"**Simulated iCEBreaker, {i['network']}** (host window 4):", ""]
    lines.append(markdown_table(
        ["mode", "host-visible samples/s (board time)", "board-measured samples/s", "wire bytes/sample", "exact"],
        [[mode, _fmt(r["host_visible"]), _fmt(r["board_samples_per_second"]), _fmt(r["wire_bytes_per_sample"], 1),
          r["exact"]] for mode, r in i["rows"].items()]))
    lines += ["", f"Today's link-bound rate {_fmt(i['today_link_bound'])} samples/s; best {_fmt(i['best_host_visible'])}"
                  f" = {i['ratio']:.2f}x (target >= 5x: {verdict(met['icebreaker'])}).", ""]
    return "\n".join(lines)


def summary_lines(result: dict) -> list:
    u, i = result["ulx3s"], result["icebreaker"]
    return [f"board link: ULX3S batch {_fmt(u['board_cycles_per_sample'], 1)} cycles/sample on the board vs "
            f"{_fmt(u['signoff_cycles_per_sample'], 1)} sign-off; link {u['link_ratio']['compact']:.2f}x today; "
            f"iCEBreaker digits {i['ratio']:.2f}x today"]
