"""The compiled regression engine: a Verilator C++ harness streams a sample file through the top.

No Python runs per cycle: :func:`build_fast` verilates the generated top together with
``fast_harness.cpp`` into one executable (cached per design under the build root, keyed by a hash
of the Verilog, the harness and the tool versions, like :func:`.verilator.build_dir_for`);
:func:`run_fast` writes the samples to a file, runs the executable and reads back every result beat
(label and scores, decoded through :func:`spikeforge.hdl.layouts.result_layout`, the layout the RTL
packs) with the cycle of each sample's first pixel beat and of its result beat::

    from spikeforge.sim.fast_engine import run_fast, verify_fast
    result = run_fast("build/rtl", samples)                   # FastResult: labels, scores, cycles
    report = verify_fast(net, "build/rtl", samples, labels)   # bit-exact vs the golden model
    print(format_report(report))                              # spikeforge.sim.signoff.format_report

What the harness runs (the cocotb sign-off's ``alone`` and ``stream`` phases, without stalls or
resets — :mod:`.signoff` keeps those): 4 cycles of reset; sample 0 alone into the idle pipeline (the
latency: first pixel beat taken to result beat taken); every sample back to back with ``results``
always ready (cycles per sample from the spacing of result beats); 200 more cycles in which any
result beat is stray. A stretch of ``idle_limit`` cycles with work outstanding and no beat moving is
a deadlock, reported as such.

:func:`verify_fast` splits a split into ``shards`` contiguous parts, each streamed through its own
simulation (its own pipeline), through ``mapper`` — serially by default; ``spikeforge verify
--shards N --scheduler ...`` hands a Dask client's map (:mod:`spikeforge.cluster`). A shard carries
the design itself (:class:`FastDesign`: the Verilog's bytes), so a worker on another machine builds
it in its own cache; workers on this machine reuse the build :func:`verify_fast` made first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from spikeforge.hdl.layouts import result_layout
from spikeforge.ir import golden
from spikeforge.ir.atomic import write_json
from spikeforge.ir.network import Network

from . import verilator
from .signoff import Design, SignoffError, model_agreement, predict_cycles, worst_case_cycles

__all__ = ["FastDesign", "FastBuild", "FastResult", "build_fast", "run_fast", "verify_fast", "serial_map",
           "HARNESS", "RESET_CYCLES", "TAIL_CYCLES"]

#: The C++ harness (package data beside this module).
HARNESS = Path(__file__).with_name("fast_harness.cpp")
RESET_CYCLES = 4
TAIL_CYCLES = 200
_STAMP = "spikeforge-fast.json"
_MAGIC = b"SFFAST01"
_HEADER = 8 + 8 * 8
# How the harness is compiled. Verilator's own makefile precompiles its headers twice (fast and slow)
# and compiles every generated file apart; for one design built once that costs more than it saves.
# The build instead compiles two translation units at once (one per core): the design's per-cycle
# code together with the harness (whose loop calls the design's scheduler), and its construction code (reset
# values, ROM initialisers: run once) at -O0. Checked on the Fashion-MNIST design: the per-cycle
# code at -O1 runs as fast as at -O2 (within this shared machine's noise) and compiles faster,
# faster than at -Os, and ten times faster than at -O0, which compiles no faster; -march=native
# gained nothing.
_OPT_RUN = "-O1"
_OPT_SLOW = "-O0"
#: Verilator's runtime (context, messages; nothing per cycle: the harness calls the design's
#: scheduler directly) is compiled once per build root.
_OPT_RUNTIME = "-O0"
# Verilator's -O3: its costlier optimisations (about 9 % faster per cycle on the Fashion-MNIST design).
_ARGS = ("-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "fast", "--x-initial", "fast", "--noassert", "-O3")
_RUNTIME_OBJECTS = ("verilated", "verilated_threads")


# -- the design, in a form that travels to a worker -------------------------------------------------

@dataclass(frozen=True)
class FastDesign:
    """What the harness needs of a generated design: the Verilog itself and ``design.json``.

    Built from an RTL directory by :meth:`load` (which checks ``design.json`` like the cocotb
    sign-off); it pickles with the Verilog's bytes, so a Dask worker needs no shared filesystem.
    """

    top: str
    verilog_name: str
    verilog: bytes = field(repr=False)
    info: dict = field(repr=False)

    @classmethod
    def load(cls, rtl_dir) -> "FastDesign":
        design = Design.load(rtl_dir)
        return cls(top=design.top, verilog_name=design.verilog.name, verilog=design.verilog.read_bytes(),
                   info=design.info)

    @property
    def in_features(self) -> int:
        return int(self.info["in_features"])

    @property
    def num_classes(self) -> int:
        classes = self.info.get("class_names") or self.info["classes"]
        return classes if isinstance(classes, int) else len(classes)

    def layout(self):
        """The ``results`` payload layout (:func:`spikeforge.hdl.layouts.result_layout`), checked against design.json."""
        layout = result_layout(self.num_classes, int(self.info["score_bits"]))
        if layout.size != int(self.info["results_payload_bits"]):
            raise SignoffError(f"design.json says results payloads are {self.info['results_payload_bits']} bits, "
                               f"the layout for {self.num_classes} classes of {self.info['score_bits']}-bit scores "
                               f"has {layout.size}")
        return layout

    def idle_limit(self) -> int:
        """Cycles without a beat that mean a deadlock: twice the slowest folding's worst case, plus slack."""
        T = int(self.info["timesteps"])
        worst = sum(int(layer.get("in_features", 0)) * T * int(layer.get("out_features", 0))
                    + T * int(layer.get("out_features", 0)) for layer in self.info.get("layers", []))
        return 2 * max(worst, 1) + 4096 + 4 * self.in_features


def _resolve(design) -> FastDesign:
    return design if isinstance(design, FastDesign) else FastDesign.load(design)


# -- the build ---------------------------------------------------------------------------------------

@dataclass
class FastBuild:
    """A compiled harness for one design."""

    executable: Path
    build_dir: Path
    seconds: float
    reused: bool
    #: Whether the harness skips Verilator's input-combinational region on cycles whose inputs did not change
    #: (``SF_FAST_CLOCK``, see :func:`build_fast`).
    fast_clock: bool = False


def _key(design: FastDesign, install: verilator.VerilatorInstall, fast_clock: bool = True) -> str:
    digest = hashlib.sha256()
    header = {"top": design.top, "args": list(_ARGS), "opt": [_OPT_RUN, _OPT_SLOW], "fast_clock": fast_clock,
              "makefile": _MAKEFILE, "verilator": list(install.version), "root": str(install.root),
              "cxx": os.environ.get("CXX", ""), "cxxflags": os.environ.get("CXXFLAGS", "")}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for blob in (HARNESS.read_bytes(), design.verilog):
        digest.update(len(blob).to_bytes(8, "little"))
        digest.update(blob)
    return digest.hexdigest()


def _runtime_key(install: verilator.VerilatorInstall) -> str:
    identity = [str(install.root), list(install.version), list(_ARGS), _OPT_RUNTIME, os.environ.get("CXX", ""),
                os.environ.get("CXXFLAGS", "")]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:12]


def default_build_root() -> Path:
    """Where builds go when no root is given: ``$XDG_CACHE_HOME/spikeforge/fast`` (``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spikeforge" / "fast"


def build_dir_for(design, build_root) -> Path:
    """``<build_root>/<top>-fast-<hash12>``: one folder per design, harness and tool version."""
    design = _resolve(design)
    return Path(build_root) / f"{design.top}-fast-{_key(design, verilator.find_verilator())[:12]}"


def _run(command, cwd, env, what: str, log: Path):
    with open(log, "ab") as out:
        out.write(("$ " + " ".join(map(str, command)) + "\n").encode())
        out.flush()
        try:
            done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        except OSError as error:
            raise verilator.SimulatorError(f"cannot run {command[0]} ({what}): {error}") from None
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise verilator.SimulatorError(f"{what} failed (exit status {done.returncode}); end of {log}:\n{tail}")


# The build's own rules on top of Verilator's generated makefile (its flags, include paths, runtime
# rules): two unity translation units, listed by _unity_sources from Vtop_classes.mk, and the link.
_MAKEFILE = """\
include Vtop.mk
spikeforge_fast.o: spikeforge_fast.cpp
\t$(OBJCACHE) $(CXX) $(SF_OPT_FAST) $(CXXFLAGS) $(CPPFLAGS) -c -o $@ $<
spikeforge_slow.o: spikeforge_slow.cpp
\t$(OBJCACHE) $(CXX) $(SF_OPT_SLOW) $(CXXFLAGS) $(CPPFLAGS) -c -o $@ $<
harness: spikeforge_fast.o spikeforge_slow.o $(VK_GLOBAL_OBJS)
\t$(LINK) $(LDFLAGS) $^ $(LOADLIBES) $(LDLIBS) $(LIBS) -o $@
"""


def _classes(obj: Path, *variables: str) -> list:
    """The generated files' stems a ``Vtop_classes.mk`` variable lists (``VAR += \\`` then one per line)."""
    names, current = [], None
    for line in (obj / "Vtop_classes.mk").read_text().splitlines():
        head = line.split("+=")[0].strip() if "+=" in line else None
        if head is not None:
            current = head if head in variables else None
            continue
        if current and line.strip() and not line.lstrip().startswith("#"):
            names += [word for word in line.replace("\\", " ").split()]
        elif not line.strip():
            current = None
    return names


def _unity_sources(obj: Path):
    """Write ``spikeforge_fast.cpp`` (per-cycle code + the harness) and ``spikeforge_slow.cpp`` (the rest)."""
    fast = _classes(obj, "VM_CLASSES_FAST", "VM_SUPPORT_FAST")
    slow = _classes(obj, "VM_CLASSES_SLOW", "VM_SUPPORT_SLOW")
    if not fast:
        raise verilator.SimulatorError(f"Verilator listed no generated sources in {obj / 'Vtop_classes.mk'}")
    (obj / "spikeforge_fast.cpp").write_text("".join(f'#include "{name}.cpp"\n' for name in fast)
                                             + f'#include "{HARNESS}"\n')
    (obj / "spikeforge_slow.cpp").write_text("".join(f'#include "{name}.cpp"\n' for name in slow))


#: The scheduler's triggers the harness's quiet-cycle skip allows: the input-combinational region's first-iteration
#: trigger and the clock's rising edge (as Verilator names them in its generated trigger dumps), and the settle
#: region's, which runs once, in the first eval.
_FAST_CLOCK_TRIGGERS = {"Internal 'ico' trigger - first iteration", "@(posedge clk)"}
_SETTLE_TRIGGER = "Internal 'stl' trigger - first iteration"


def _fast_clock(obj: Path) -> bool:
    """Whether the harness may skip Verilator's input-combinational region on a cycle whose inputs did not change
    (``SF_FAST_CLOCK``): the generated scheduler's triggers are exactly the input region's first iteration and the
    clock's rising edge (no falling edge, no logic on the clock's level; read from its trigger dumps), its one edge
    detector is the clock's (``__Vtrigprevexpr___TOP__clk__0``) and its active and NBA phases are functions.
    Otherwise (or where a Verilator names them otherwise) the harness calls the whole scheduler on both edges, as
    Verilator's own ``eval()`` does."""
    header = (obj / "Vtop___024root.h").read_text()
    detectors = re.findall(r"\b(__Vtrigprevexpr\w*)\s*;", header)
    code = "".join(path.read_text() for path in sorted(obj.glob("Vtop___024root__*.cpp")))
    triggers = set(re.findall(r"region trigger index \d+ is active: (.*?)\\n", code))
    return (detectors == ["__Vtrigprevexpr___TOP__clk__0"] and triggers - {_SETTLE_TRIGGER} == _FAST_CLOCK_TRIGGERS
            and all(f"bool Vtop___024root___eval_phase__{phase}(Vtop___024root* vlSelf) {{" in code
                    for phase in ("act", "nba")))


def build_fast(design, build_root=None, *, force: bool = False, jobs: int | None = None,
               fast_clock: bool = True) -> FastBuild:
    """Compile the harness for ``design`` (an RTL directory or a :class:`FastDesign`); reuse an up-to-date build.

    Parameters
    ----------
    build_root : path, optional
        Builds go to ``<build_root>/<top>-fast-<hash12>`` (default :func:`default_build_root`). The
        Verilator runtime's objects, which do not depend on the design, are cached beside them.
    jobs : int, optional
        Parallel compiler jobs (default: the cores this process may use, at most 4: the build compiles
        two translation units, and the runtime's two when they are not cached yet).
    fast_clock : bool
        Let the harness skip Verilator's input-combinational region on a cycle whose inputs did not change
        (a quarter of the instructions per cycle on the Fashion-MNIST MLP), where the generated scheduler allows
        it (:func:`_fast_clock`); ``False`` builds the plain harness, Verilator's scheduler on both clock edges
        (the tests compare the two).

    Raises
    ------
    SimulatorError
        Missing toolchain (with what to install) or a failed build (with the end of its log).
    """
    design = _resolve(design)
    install = verilator.check_toolchain()
    root = Path(build_root) if build_root is not None else default_build_root()
    key = _key(design, install, fast_clock)
    build_dir = (root / f"{design.top}-fast-{key[:12]}").resolve()
    executable = build_dir / "harness"
    stamp = build_dir / _STAMP
    if not force and executable.is_file() and stamp.is_file():
        try:
            stamped = json.loads(stamp.read_text())
            if stamped.get("hash") == key:
                return FastBuild(executable, build_dir, 0.0, True, bool(stamped.get("fast_clock")))
        except (OSError, ValueError):
            pass
    started = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{build_dir.name}-", dir=root.resolve()))
    try:
        source = staging / design.verilog_name
        source.write_bytes(design.verilog)
        obj = staging / "obj"
        env = {**os.environ, **install.environment()}
        log = staging / "build.log"
        _run([install.executable, "--cc", *_ARGS, "--top-module", design.top, "--prefix", "Vtop", "--Mdir", obj,
              source], staging, env, f"verilating {design.top}", log)
        _unity_sources(obj)
        fast_clock = fast_clock and _fast_clock(obj)
        (obj / "spikeforge.mk").write_text(_MAKEFILE)
        cache = root / f".fast-runtime-{_runtime_key(install)}"
        cached = verilator.runtime_objects(cache, _RUNTIME_OBJECTS)
        if all(path.is_file() for path in cached):
            for path in cached:           # copied after verilating: newer than Vtop.mk, so make keeps them
                shutil.copyfile(path, obj / path.name)
        if not jobs:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            jobs = max(1, min(4, cores))
        opt_fast = f"{_OPT_RUN} -DSF_FAST_CLOCK" if fast_clock else _OPT_RUN
        _run(["make", "-C", obj, "-f", "spikeforge.mk", f"-j{jobs}", f"SF_OPT_FAST={opt_fast}",
              f"SF_OPT_SLOW={_OPT_SLOW}", f"OPT_GLOBAL={_OPT_RUNTIME}", "harness"], staging, env,
             f"compiling the harness for {design.top}", log)
        built = obj / "harness"
        if not built.is_file():
            raise verilator.SimulatorError(f"the harness build for {design.top} produced no executable; see {log}")
        verilator.save_runtime_objects(obj, cache, _RUNTIME_OBJECTS)
        shutil.move(str(built), str(staging / "harness"))
        shutil.rmtree(obj, ignore_errors=True)
        (staging / _STAMP).write_text(json.dumps({"hash": key, "top": design.top, "verilator": list(install.version),
                                                  "opt": {"per_cycle": _OPT_RUN, "construction": _OPT_SLOW,
                                                          "runtime": _OPT_RUNTIME},
                                                  "fast_clock": fast_clock,
                                                  "args": list(_ARGS)}, indent=2) + "\n")
        if build_dir.exists():
            shutil.rmtree(build_dir, ignore_errors=True)
        try:
            os.replace(staging, build_dir)
        except OSError:
            # Another process finished the same build first: use its.
            if not (build_dir / "harness").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return FastBuild(executable, build_dir, time.perf_counter() - started, False, fast_clock)


# -- one run -----------------------------------------------------------------------------------------

@dataclass
class FastResult:
    """What one run of the harness measured.

    Attributes
    ----------
    labels : int64 array (N,)
    scores : int64 array (N, C)
        The RTL's result beats of the stream, decoded; only the ``received`` first samples are valid
        when the run stopped early (a deadlock).
    first_beat, result_cycle : int64 arrays (N,)
        Cycle of each sample's first pixel beat and of its result beat in the stream.
    latency_cycles : int or None
        Sample 0 alone in the idle pipeline: first pixel beat to result beat (``None`` without ``alone``).
    cycles : int
        Simulated cycles in all (reset, alone, stream, tail).
    seconds : float
        Wall time of the simulation (the executable; not the build).
    received, stray : int
        Result beats of the stream, and beats nobody asked for (after the stream).
    error : str or None
        A deadlock, with what was outstanding.
    """

    labels: np.ndarray
    scores: np.ndarray
    first_beat: np.ndarray
    result_cycle: np.ndarray
    latency_cycles: int | None
    cycles: int
    seconds: float
    received: int
    stray: int
    error: str | None = None
    build: FastBuild | None = field(default=None, repr=False)
    #: Cycles whose inputs did not change, on which the harness skipped Verilator's input-combinational region
    #: (:attr:`FastBuild.fast_clock`; 0 for the plain harness).
    quiet_cycles: int = 0

    @property
    def sample_cycles(self) -> np.ndarray:
        """Per sample, first pixel beat to result beat in the stream (queueing included)."""
        return self.result_cycle - self.first_beat

    @property
    def steady_cycles_per_sample(self) -> float | None:
        """Mean spacing of result beats in the stream (``None`` with fewer than two)."""
        done = self.result_cycle[:self.received]
        return float((done[-1] - done[0]) / (len(done) - 1)) if len(done) > 1 else None

    @property
    def cycles_per_second(self) -> float | None:
        return self.cycles / self.seconds if self.seconds else None


def _check_samples(samples, in_features: int) -> np.ndarray:
    samples = np.asarray(samples)
    if samples.ndim < 2 or len(samples) == 0:
        raise SignoffError(f"samples must be a non-empty (N, ...) array, got shape {samples.shape}")
    samples = samples.reshape(len(samples), -1)
    if samples.shape[1] != in_features:
        raise SignoffError(f"samples have {samples.shape[1]} values each, the design takes {in_features}")
    if samples.dtype != np.uint8:
        if samples.dtype.kind not in "iuf" or (samples.dtype.kind == "f" and not np.all(samples == np.round(samples))):
            raise SignoffError(f"samples of dtype {samples.dtype} are not raw bytes (whole numbers 0..255); "
                               f"give the dataset's raw values, not normalised ones")
        if samples.min() < 0 or samples.max() > 255:
            raise SignoffError(f"samples span {samples.min()}..{samples.max()}; raw samples are bytes 0..255")
    return np.ascontiguousarray(samples, dtype=np.uint8)


def decode_results(layout, words: np.ndarray):
    """Labels (N,) and scores (N, C) from result payloads given as (N, W) little-endian uint32 words.

    The fields sit where ``layout`` (a :func:`~spikeforge.hdl.layouts.result_layout`) puts them.
    """
    label_field, scores_field = layout["label"], layout["scores"]
    element = scores_field.shape.elem_shape
    classes = scores_field.shape.length
    width = element.width
    n = len(words)
    # Python ints: exact at any payload width.
    raws = [int.from_bytes(row.tobytes(), "little") for row in np.asarray(words, dtype="<u4")]
    label_mask = (1 << label_field.shape.width) - 1
    labels = np.fromiter(((raw >> label_field.offset) & label_mask for raw in raws), dtype=np.int64, count=n)
    mask, sign = (1 << width) - 1, 1 << (width - 1)
    scores = np.empty((n, classes), dtype=np.int64)
    for k in range(classes):
        shift = scores_field.offset + k * width
        column = [(raw >> shift) & mask for raw in raws]
        scores[:, k] = [v - (1 << width) if (element.signed and v & sign) else v for v in column]
    return labels, scores


def run_fast(design, samples, *, build_root=None, alone: bool = True, progress: bool | None = None,
             idle_limit: int | None = None, tail_cycles: int = TAIL_CYCLES, build: FastBuild | None = None,
             description: str = "fast engine") -> FastResult:
    """Stream raw ``samples`` (N, F) bytes through ``design`` (an RTL directory or a :class:`FastDesign`).

    Parameters
    ----------
    build_root : path, optional
        Where the harness is built (:func:`build_fast`); a matching build is reused.
    alone : bool
        Run sample 0 alone first (:attr:`FastResult.latency_cycles`).
    progress : bool, optional
        A tqdm bar on stderr (samples done, simulated cycles/s); default: when stderr is a terminal.
    idle_limit : int, optional
        Cycles without a beat that count as a deadlock (default from design.json).
    build : FastBuild, optional
        A build to use as is.

    Raises
    ------
    SignoffError
        Samples that are not (N, F) bytes of the design's F.
    SimulatorError
        Toolchain, build or a harness that crashed.
    """
    design = _resolve(design)
    layout = design.layout()
    samples = _check_samples(samples, design.in_features)
    build = build or build_fast(design, build_root)
    n, f = samples.shape
    words = (layout.size + 31) // 32
    with tempfile.TemporaryDirectory(prefix="fast-run-") as work:
        work = Path(work)
        (work / "samples.bin").write_bytes(samples.tobytes())
        out = work / "results.bin"
        command = [str(build.executable), str(work / "samples.bin"), str(n), str(f), str(out),
                   "--alone", "1" if alone else "0", "--reset", str(RESET_CYCLES),
                   "--idle-limit", str(int(idle_limit or design.idle_limit())), "--tail", str(int(tail_cycles)),
                   "--progress", "0.2"]
        enabled = sys.stderr.isatty() if progress is None else bool(progress)
        started = time.perf_counter()
        with tqdm(total=n, desc=description, unit="sample", disable=not enabled, leave=False,
                  file=sys.stderr) as bar:
            try:
                process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                           bufsize=1)
            except OSError as error:
                raise verilator.SimulatorError(f"cannot run the harness {build.executable}: {error}") from None
            with process:
                quiet_cycles = 0
                for line in process.stdout:
                    parts = line.split()
                    if len(parts) == 2 and parts[0] == "Q":
                        quiet_cycles = int(parts[1])
                    if len(parts) == 3 and parts[0] == "P":
                        done, cycle = int(parts[1]), int(parts[2])
                        bar.update(done - bar.n)
                        elapsed = time.perf_counter() - started
                        if elapsed > 0:
                            bar.set_postfix_str(f"{cycle / elapsed / 1e6:.2f} M cycles/s", refresh=False)
                stderr = process.stderr.read()
                status = process.wait()
        seconds = time.perf_counter() - started
        if status not in (0, 1) or not out.is_file():
            raise verilator.SimulatorError(f"the harness {build.executable} exited with status {status}: "
                                           f"{stderr.strip()[-2000:]}")
        data = out.read_bytes()
    if data[:8] != _MAGIC:
        raise verilator.SimulatorError(f"the harness wrote no result file ({stderr.strip()[-500:]})")
    kwords, count, alone_first, alone_result, cycles, received, stray, failed = np.frombuffer(
        data[8:_HEADER], dtype="<u8").tolist()
    if kwords != words or count != n:
        raise verilator.SimulatorError(f"the harness was built for {kwords}-word results of another design "
                                       f"(expected {words} words, {n} samples)")
    record = np.dtype([("first", "<u8"), ("result", "<u8"), ("payload", "<u4", (words,))])
    records = np.frombuffer(data[_HEADER:], dtype=record, count=received)
    labels = np.full(n, -1, dtype=np.int64)
    scores = np.zeros((n, design.num_classes), dtype=np.int64)
    first_beat = np.zeros(n, dtype=np.int64)
    result_cycle = np.zeros(n, dtype=np.int64)
    if received:
        labels[:received], scores[:received] = decode_results(layout, records["payload"])
        first_beat[:received] = records["first"]
        result_cycle[:received] = records["result"]
    error = (stderr.strip() or "the harness reported a deadlock") if failed else None
    latency = int(alone_result - alone_first) if alone and alone_result else None
    return FastResult(labels=labels, scores=scores, first_beat=first_beat, result_cycle=result_cycle,
                      latency_cycles=latency, cycles=int(cycles), seconds=seconds, received=int(received),
                      stray=int(stray), error=error, build=build, quiet_cycles=quiet_cycles)


# -- sharded sign-off --------------------------------------------------------------------------------

def serial_map(function: Callable, items: list) -> Iterator[tuple]:
    """The default mapper: ``(index, function(item))`` for each item, in order, in this process."""
    for index, item in enumerate(items):
        yield index, function(item)


def run_shard(task: dict) -> FastResult:
    """One shard of :func:`verify_fast` (module level, so a Dask worker can import it)."""
    return run_fast(task["design"], task["samples"], build_root=task["build_root"], alone=task["alone"],
                    progress=False, idle_limit=task["idle_limit"])


def _shards(n: int, shards: int) -> list:
    bounds = np.linspace(0, n, min(shards, n) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds, bounds[1:]) if b > a]


def verify_fast(net: Network, rtl_dir, samples, labels=None, *, build_root=None, shards: int = 1,
                mapper: Callable[[Callable, list], Iterable[tuple]] | None = None, report_path=None,
                clock_mhz: float = 100.0, network_path=None, progress: bool | None = None,
                say: Callable[[str], None] | None = None, where: str = "") -> dict:
    """Sign off the Verilog in ``rtl_dir`` against the golden model of ``net`` with the fast engine.

    Refuses, before building anything, a design generated from another network (design.json's
    fingerprint, as :func:`.signoff.verify` does) or one the network does not fit. Every result beat
    (label and all scores) of every sample is compared with the golden model's.

    Parameters
    ----------
    shards : int
        Split the samples into this many contiguous parts, each streamed through its own simulation.
    mapper : callable, optional
        ``mapper(function, items)`` yields ``(index, function(item))`` as items finish (any order);
        default :func:`serial_map`. The CLI passes a Dask client's.
    report_path : path, optional
        The JSON report (default ``<rtl_dir>/verify.json``); ``False`` for none.
    where : str
        Where the shards run, for the report (e.g. ``"LocalCluster, 2 workers"``).

    Returns
    -------
    dict
        The report, in the shape :func:`.signoff.format_report` prints (``ok`` is False on any
        mismatch, missing or stray beat, or deadlock), with ``simulation.engine == "fast"``.
    """
    say = say or (lambda message: None)
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise SignoffError(f"shards {shards!r} must be a positive integer")
    design = Design.load(rtl_dir)
    design.check_identity(net, network_path)
    design.check_network(net)
    fast = FastDesign.load(rtl_dir)
    layout = fast.layout()
    samples = _check_samples(samples, net.in_features)
    n = len(samples)
    if labels is not None:
        labels = np.asarray(labels).astype(np.int64)
        if len(labels) != n:
            raise SignoffError(f"{len(labels)} labels for {n} samples")
    reference = golden.run(net, samples)

    root = Path(build_root) if build_root is not None else Path(rtl_dir) / "sim_build"
    say(f"building the fast engine for {design.top} in {root}")
    build = build_fast(fast, root)
    say(f"  {'reused the existing build' if build.reused else f'built in {build.seconds:.1f} s'}")

    parts = _shards(n, shards)
    idle_limit = 2 * worst_case_cycles(net) + 4096 + 4 * net.in_features
    say(f"simulating {n} samples with the fast engine" + (f" in {len(parts)} shards" + (f" on {where}" if where else "")
                                                          if len(parts) > 1 else ""))
    started = time.perf_counter()
    results: list = [None] * len(parts)
    if len(parts) == 1 and mapper is None:
        results[0] = run_fast(fast, samples, alone=True, progress=progress, idle_limit=idle_limit, build=build)
    else:
        tasks = [{"design": fast, "samples": samples[a:b], "build_root": str(root.resolve()), "alone": i == 0,
                  "idle_limit": idle_limit} for i, (a, b) in enumerate(parts)]
        enabled = sys.stderr.isatty() if progress is None else bool(progress)
        with tqdm(total=n, desc="fast engine shards", unit="sample", disable=not enabled, leave=False,
                  file=sys.stderr) as bar:
            for index, result in (mapper or serial_map)(run_shard, tasks):
                results[index] = result
                bar.update(parts[index][1] - parts[index][0])
                done = [r for r in results if r is not None]
                elapsed = time.perf_counter() - started
                bar.set_postfix_str(f"{sum(r.cycles for r in done) / elapsed / 1e6:.2f} M cycles/s", refresh=False)
    wall = time.perf_counter() - started

    rtl_labels = np.concatenate([r.labels for r in results])
    rtl_scores = np.concatenate([r.scores for r in results])
    received = np.concatenate([np.arange(len(r.labels)) < r.received for r in results])
    wrong = received & ((rtl_labels != reference.labels) | np.any(rtl_scores != reference.scores, axis=1))
    mismatches, missing = int(wrong.sum()), int((~received).sum())
    stray = sum(r.stray for r in results)
    errors = [f"shard {i} (samples {parts[i][0]}..{parts[i][1] - 1}): {r.error}" if len(parts) > 1 else r.error
              for i, r in enumerate(results) if r.error]
    first = None
    if mismatches:
        i = int(np.flatnonzero(wrong)[0])
        shard = next(k for k, (a, b) in enumerate(parts) if a <= i < b)
        first = {"sample": i, "phase": "stream", "cycle": int(results[shard].result_cycle[i - parts[shard][0]]),
                 "expected": {"label": int(reference.labels[i]), "scores": reference.scores[i].tolist()},
                 "got": {"label": int(rtl_labels[i]), "scores": rtl_scores[i].tolist()}}

    # Timing: intervals of result beats within each shard's stream; the latency from shard 0's alone run.
    intervals = np.concatenate([np.diff(r.result_cycle[:r.received]) for r in results])
    timing = {}
    if results[0].latency_cycles is not None:
        timing["latency_cycles"] = int(results[0].latency_cycles)
    if len(intervals):
        timing["cycles_per_sample"] = {"min": int(intervals.min()), "mean": float(intervals.mean()),
                                       "max": int(intervals.max())}
        timing["steady_cycles_per_sample"] = float(intervals.mean())
        timing["samples_per_second"] = clock_mhz * 1e6 / float(intervals.mean())
    whole = results[0]
    if len(parts) == 1 and whole.received == n:
        timing["stream_cycles"] = int(whole.result_cycle[-1] - whole.first_beat[0])
    cycles = sum(r.cycles for r in results)
    sim_seconds = sum(r.seconds for r in results)
    phases = [{"name": "alone", "samples": 1, "checked": int(results[0].latency_cycles is not None),
               "mismatches": 0, "missing": 0, "stray": 0, "cycles": timing.get("latency_cycles", 0)}]
    for i, ((a, b), r) in enumerate(zip(parts, results)):
        phases.append({"name": "stream" if len(parts) == 1 else f"shard-{i}", "samples": b - a,
                       "checked": int(r.received), "mismatches": int(wrong[a:b].sum()),
                       "missing": int((b - a) - r.received), "stray": int(r.stray),
                       "cycles": int(r.result_cycle[r.received - 1] - r.first_beat[0]) if r.received else 0})
    accuracy = None
    if labels is not None and received.any():
        accuracy = float(np.mean(rtl_labels[received] == labels[received]))
    report = {
        "ok": mismatches == 0 and missing == 0 and stray == 0 and not errors,
        "design": {"top": design.top, "verilog": str(design.verilog), "timesteps": design.timesteps,
                   "classes": design.num_classes, "score_bits": design.score_bits,
                   "folding": design.info.get("folding")},
        "samples": n, "checked": int(received.sum()), "mismatches": mismatches, "missing": missing, "stray": stray,
        "first_mismatch": first, "error": "; ".join(errors) if errors else None,
        "accuracy": accuracy,
        "golden_accuracy": float(np.mean(reference.labels == labels)) if labels is not None else None,
        "timing": timing, "clock_mhz": clock_mhz, "phases": phases,
        "simulation": {"simulator": "verilator", "engine": "fast", "shards": len(parts), "where": where or "this process",
                       "cycles": int(cycles), "seconds": wall, "simulator_seconds": sim_seconds,
                       "cycles_per_second": cycles / wall if wall else None,
                       "cycles_per_second_per_simulator": cycles / sim_seconds if sim_seconds else None,
                       "build_seconds": build.seconds, "build_reused": build.reused, "build_dir": str(build.build_dir),
                       "fast_clock": build.fast_clock, "quiet_cycles": int(sum(r.quiet_cycles for r in results))},
        "waves": None,
    }
    try:
        model = predict_cycles(net, design, samples)
    except Exception as error:  # the model is reported beside the measurement, never blocks it
        model = {"error": f"{type(error).__name__}: {error}"}
    if model and "error" not in model:
        measured = None
        if "stream_cycles" in timing:
            measured = (whole.result_cycle - whole.first_beat[0]).tolist()
        agreement = model_agreement({k: v for k, v in timing.items() if k != "stream_cycles" or len(parts) == 1},
                                    model, measured)
        report["model_agreement"] = agreement
        model = {k: v for k, v in model.items() if k != "result_cycles"}
    report["model"] = model
    report["per_sample_cycles"] = intervals.tolist()
    if report_path is not False:
        path = Path(report_path) if report_path else Path(rtl_dir) / "verify.json"
        write_json(path, report)
        report["report_path"] = str(path)
    return report
