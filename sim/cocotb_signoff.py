"""The cocotb test that signs off an accelerator: runs a job of phases and writes a result file.

This module runs *inside* the simulator (cocotb imports it); :mod:`.signoff` writes its job and reads
its result. The job is a JSON file named by the environment variable ``SPIKEFORGE_SIGNOFF_JOB``::

    {"period_ns": 10, "reset_cycles": 4, "idle_limit": 20000, "tail_cycles": 200,
     "pixels": "<npz path>",            # array "payloads": (N, beats) pixel payloads, already encoded
     "expected": ["<hex>", ...],        # the results payload each sample must produce, encoded
     "phases": [{"name": ..., "samples": [i, ...], "input_pauses": {"density": d, "seed": s} | null,
                 "output_pauses": {...} | null,
                 "reset_after_beats": k | null, "reset_delay_cycles": d, "reset_cycles": r}],
     "result": "<json path>",
     "progress": "<text path>" | null,  # optional: "<results seen> <cycle>" rewritten every 0.2 s
     "ports": {...} | null}             # optional: the top's port names (below)

``ports`` names the clock, the reset and the two streams; absent, it is the stream top of DESIGN.md §3
(``clk``, ``rst`` active high, ``pixels__*``, ``results__*``). The AXI4-Stream top
(:mod:`spikeforge.hdl.axis`) is ``{"clock": "aclk", "reset": "aresetn", "reset_active_low": true,
"input": {"kind": "axis", "name": "s_axis", "tdata_bits": 8}, "output": {"kind": "axis", "name": "m_axis",
"tdata_bits": W}}``: an AXI4-Stream beat's payload is ``tdata`` with ``tlast`` in the bit above it, so the
input payloads are the same numbers as ``pixels`` payloads.

Phases run one after the other, each on an empty pipeline. A phase streams its samples through the
``pixels`` stream while a sink takes ``results`` beats; a scoreboard compares every beat in order with
the expected payload. A phase with ``reset_after_beats`` asserts the reset once that many pixel beats
have been taken (plus ``reset_delay_cycles``), then expects nothing more of that phase. After the
last phase the sink keeps watching ``tail_cycles`` cycles for stray beats.

Deadlocks fail loudly: whenever ``idle_limit`` cycles pass with work outstanding and no beat moving
on either stream, the run stops with an error naming the phase and what was outstanding.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import Event, FallingEdge, SimTimeoutError, with_timeout

from .cocotb_streams import Clocking, Scoreboard, StreamSink, StreamSource, axis_signals, random_pauses, stream_signals

JOB_ENV = "SPIKEFORGE_SIGNOFF_JOB"
#: The stream top's ports (DESIGN.md §3), the default of a job's ``ports``.
STREAM_PORTS = {"clock": "clk", "reset": "rst", "reset_active_low": False,
                "input": {"kind": "stream", "name": "pixels"}, "output": {"kind": "stream", "name": "results"}}


class Deadlock(AssertionError):
    pass


def _port_signals(dut, spec):
    if spec["kind"] == "axis":
        return axis_signals(dut, spec["name"], int(spec["tdata_bits"]))
    return stream_signals(dut, spec["name"])


def _pauses(spec):
    if not spec:
        return None
    return random_pauses(float(spec["density"]), int(spec["seed"]))


class _Bench:
    def __init__(self, dut, job):
        self.dut = dut
        self.job = job
        self.period_ns = job.get("period_ns", 10)
        self.ports = job.get("ports") or STREAM_PORTS
        self.clock = getattr(dut, self.ports["clock"])
        self.reset_signal = getattr(dut, self.ports["reset"])
        self.reset_level = 0 if self.ports.get("reset_active_low") else 1
        self.clocking = Clocking(self.clock, self.period_ns, "ns")
        with np.load(job["pixels"]) as arrays:
            self.payloads = arrays["payloads"].tolist()
        self.expected = [int(h, 16) for h in job["expected"]]
        self.idle_limit = int(job.get("idle_limit", 20000))
        self.scoreboard = Scoreboard()
        self.source = None
        self.sink = None
        self.record = None          # the phase being recorded
        self.phases = []
        self.models = []
        self.error = None
        self.beats_taken = 0        # all pixel beats, all phases (watchdog progress)
        self.results_seen = 0
        self.resets = 0
        # Progress for the parent process (a bar): a small file it polls, rewritten at most every 0.2 s.
        self.progress_path = job.get("progress")
        self.progress_written = 0.0

    # -- bus-functional models, (re)started per phase ------------------------------------------------

    def start_models(self, phase):
        self.source = StreamSource(self.dut, "pixels", self.clocking, _pauses(phase.get("input_pauses")),
                                   signals=_port_signals(self.dut, self.ports["input"]))
        self.sink = StreamSink(self.dut, "results", self.clocking, _pauses(phase.get("output_pauses")), keep=False,
                               signals=_port_signals(self.dut, self.ports["output"]))
        self.models += [self.source, self.sink]
        if "results" in self.scoreboard.expected:
            queue = self.scoreboard.expected["results"]
            self.scoreboard.add_interface(self.sink, queue)
        else:
            self.scoreboard.add_interface(self.sink)
        self.source.callbacks.append(self._on_pixel)
        self.sink.callbacks.append(self._on_result)
        self.source.start()
        self.sink.start()

    def stop_models(self):
        self.source.stop()
        self.sink.stop()

    def _on_pixel(self, transfer):
        self.beats_taken += 1
        record = self.record
        position, beat = transfer.tag
        if beat == 0:
            record["first_beat"][position] = transfer.cycle
        record["last_beat"][position] = transfer.cycle
        record["beats_taken"] += 1
        trigger = record.get("_reset_trigger")
        if trigger is not None and record["beats_taken"] == trigger[0]:
            trigger[1].set()

    def _on_result(self, transfer):
        self.results_seen += 1
        if self.progress_path:
            self.report_progress()
        record = self.record
        # The scoreboard's callback ran first (registered first) and tagged the beat.
        tag = transfer.tag
        if tag is None or tag[0] != record["index"]:
            record["stray"].append({"cycle": transfer.cycle, "got": f"{transfer.payload:x}"})
            return
        position = tag[1]
        record["result_cycle"][position] = transfer.cycle
        record["got"][position] = f"{transfer.payload:x}"

    def progress(self):
        return (self.beats_taken, self.results_seen, self.resets)

    def report_progress(self, force: bool = False):
        now = time.perf_counter()
        if not force and now - self.progress_written < 0.2:
            return
        self.progress_written = now
        staging = f"{self.progress_path}.tmp"
        with open(staging, "w") as f:
            f.write(f"{self.results_seen} {self.clocking.now()}\n")
        os.replace(staging, self.progress_path)

    async def wait_until(self, event, what: str):
        """Wait for ``event``; a stretch of ``idle_limit`` cycles without any beat is a deadlock."""
        last = self.progress()
        while True:
            try:
                await with_timeout(event.wait(), self.idle_limit * self.clocking.period_steps, "step")
                return
            except SimTimeoutError:
                now = self.progress()
                if now == last:
                    record = self.record
                    raise Deadlock(
                        f"deadlock in phase {record['name']!r} while waiting for {what}: no beat moved for "
                        f"{self.idle_limit} cycles (cycle {self.clocking.now()}); pixel beats taken "
                        f"{record['beats_taken']}, queued {len(self.source.queue)}; results received "
                        f"{sum(c is not None for c in record['result_cycle'])} of {len(record['samples'])}; "
                        f"{self.source.ready._name}={self.source.ready.value}, "
                        f"{self.sink.valid._name}={self.sink.valid.value}")
                last = now

    # -- phases --------------------------------------------------------------------------------------

    async def reset(self, cycles: int):
        """Assert the reset (``rst`` high, or ``aresetn`` low) for ``cycles`` rising edges; call on a falling
        edge, returns on one."""
        self.reset_signal.value = self.reset_level
        await self.clocking.cycles(max(1, cycles))
        self.reset_signal.value = 1 - self.reset_level
        self.resets += 1

    async def run_phase(self, index: int, phase: dict):
        samples = [int(s) for s in phase["samples"]]
        record = {"index": index, "name": phase["name"], "samples": samples,
                  "first_beat": [None] * len(samples), "last_beat": [None] * len(samples),
                  "result_cycle": [None] * len(samples), "got": [None] * len(samples),
                  "beats_taken": 0, "stray": [], "start_cycle": self.clocking.now(), "reset_at": None,
                  "dropped": []}
        started = time.perf_counter()
        self.record = record
        self.phases.append(record)
        reset_after = phase.get("reset_after_beats")
        if reset_after is not None:
            record["_reset_trigger"] = (int(reset_after), Event())
        self.start_models(phase)
        for position, sample in enumerate(samples):
            beats = self.payloads[sample]
            for beat, payload in enumerate(beats):
                self.source.send_nowait(payload, (position, beat))
            self.scoreboard.expect("results", (index, position), self.expected[sample])
        if reset_after is not None:
            await self.wait_until(record["_reset_trigger"][1], f"pixel beat {reset_after}")
            await self.clocking.cycles(int(phase.get("reset_delay_cycles", 0)))
            await FallingEdge(self.clock)
            self.stop_models()
            record["reset_at"] = self.clocking.next_edge()
            await self.reset(int(phase.get("reset_cycles", 3)))
            dropped = self.scoreboard.forget("results")
            record["dropped"] = [samples[tag[1]] for tag in dropped]
            # Watch the (empty) pipeline after the reset: anything that comes out is stray.
            self.start_models({})
            await self.clocking.cycles(int(phase.get("watch_cycles", 200)))
        else:
            await self.wait_until(self.scoreboard.drained["results"], "results")
        record["end_cycle"] = self.clocking.now()
        await FallingEdge(self.clock)       # (out of the ReadOnly phase the last beat was seen in)
        self.stop_models()
        record["wall_seconds"] = time.perf_counter() - started

    async def tail(self, cycles: int):
        """Watch for stray result beats after the last phase."""
        record = {"index": len(self.phases), "name": "tail", "samples": [], "first_beat": [], "last_beat": [],
                  "result_cycle": [], "got": [], "beats_taken": 0, "stray": [], "start_cycle": self.clocking.now(),
                  "reset_at": None, "dropped": []}
        self.record = record
        self.start_models({})
        await self.clocking.cycles(cycles)
        await FallingEdge(self.clock)
        self.stop_models()
        record["end_cycle"] = self.clocking.now()
        return record


@cocotb.test()
async def signoff(dut):
    """Stream the job's phases through the design and compare every results beat."""
    with open(os.environ[JOB_ENV]) as f:
        job = json.load(f)
    bench = _Bench(dut, job)
    Clock(bench.clock, bench.period_ns, unit="ns").start(start_high=True)
    bench.reset_signal.value = bench.reset_level
    _port_signals(dut, bench.ports["input"])[0].value = 0       # valid
    _port_signals(dut, bench.ports["output"])[1].value = 0      # ready
    wall_start = time.perf_counter()
    tail_record = None
    try:
        await FallingEdge(bench.clock)
        await bench.reset(int(job.get("reset_cycles", 4)))
        for index, phase in enumerate(job["phases"]):
            await bench.run_phase(index, phase)
        tail_record = await bench.tail(int(job.get("tail_cycles", 200)))
        if bench.progress_path:
            bench.report_progress(force=True)
    except Exception as error:
        bench.error = f"{type(error).__name__}: {error}" if not isinstance(error, Deadlock) else str(error)
        raise
    finally:
        wall = time.perf_counter() - wall_start
        failures = [model.failure for model in bench.models if model.failure]
        if failures and bench.error is None:
            bench.error = failures[0]
        phases = [{k: v for k, v in record.items() if not k.startswith("_")} for record in bench.phases]
        mismatches = [{**m, "expected": None if m["expected"] is None else f"{m['expected']:x}",
                       "got": f"{m['got']:x}"} for m in bench.scoreboard.mismatches]
        result = {"phases": phases, "tail": tail_record, "mismatches": mismatches,
                  "matched": bench.scoreboard.matched, "error": bench.error,
                  "cycles": bench.clocking.now(), "wall_seconds": wall}
        with open(job["result"], "w") as f:
            json.dump(result, f)
    stray = sum(len(p["stray"]) for p in bench.phases) + (len(tail_record["stray"]) if tail_record else 0)
    assert not bench.scoreboard.mismatches and not stray, (
        f"{len(bench.scoreboard.mismatches)} results beats differ from the golden model, {stray} stray beats")
