"""The compiled regression engine: a Verilator C++ harness streams a sample file through the top.

No Python runs per cycle: :func:`build_fast` verilates the generated top together with
``fast_harness.cpp`` into one executable (cached per design, like :func:`.verilator.build_dir_for`);
:func:`run_fast` writes the samples to a file, runs the executable, and reads back every result beat
(label and scores, decoded through :func:`spikeforge.hdl.layouts.result_layout`) with the cycle of
each sample's first pixel beat and of its result beat::

    from spikeforge.sim.fast_engine import run_fast, verify_fast
    result = run_fast("build/rtl", samples)          # FastResult: labels, scores, cycles
    report = verify_fast(net, "build/rtl", samples, labels)   # bit-exact vs the golden model

The harness streams with no stalls and no reset (cocotb's sign-off, :mod:`.signoff`, keeps those);
it runs sample 0 alone first (the latency), then every sample back to back (the throughput).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["FastBuild", "FastResult", "build_fast", "run_fast", "verify_fast", "format_fast_report"]


@dataclass
class FastBuild:
    """A compiled harness for one design: ``executable``, ``build_dir``, build ``seconds``, ``reused``."""

    executable: Path
    build_dir: Path
    seconds: float
    reused: bool


@dataclass
class FastResult:
    """What one run of the harness measured.

    Attributes
    ----------
    labels : int64 array (N,)
    scores : int64 array (N, C)
    first_beat : int64 array (N,)
        Cycle of each sample's first pixel beat in the back-to-back stream.
    result_cycle : int64 array (N,)
        Cycle of each sample's result beat in the stream.
    latency_cycles : int
        Sample 0 alone in an idle pipeline: first pixel beat to result beat.
    cycles : int
        Simulated cycles in all.
    seconds : float
        Wall time of the simulation (the executable, without the build).
    """

    labels: np.ndarray
    scores: np.ndarray
    first_beat: np.ndarray
    result_cycle: np.ndarray
    latency_cycles: int
    cycles: int
    seconds: float
    build: FastBuild | None = field(default=None, repr=False)


def build_fast(rtl_dir, build_root=None) -> FastBuild:
    """Compile the harness for the design in ``rtl_dir`` (reused when up to date)."""
    raise NotImplementedError("filled in by the next commit")


def run_fast(rtl_dir, samples, *, build_root=None, progress: bool | None = None) -> FastResult:
    """Stream raw ``samples`` (N, F) uint8 through the design in ``rtl_dir``; see :class:`FastResult`."""
    raise NotImplementedError("filled in by the next commit")


def verify_fast(net, rtl_dir, samples, labels=None, **options) -> dict:
    """Bit-exact sign-off of ``rtl_dir`` against the golden model of ``net`` with the fast engine."""
    raise NotImplementedError("filled in by the next commit")


def format_fast_report(report: dict) -> str:
    raise NotImplementedError("filled in by the next commit")
