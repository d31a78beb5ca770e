"""One error tree for the whole project.

Every error a user can cause, or that an external tool causes, is a :class:`SpikeforgeError`. The CLI
maps the tree to exit codes (README, "Exit codes"): ``exit_code`` is class data, so a new error picks
its code by choosing its base.

* :class:`InputError` (exit 2): bad input or usage; the message names the bad value and what is
  accepted. Also a :class:`ValueError`, so library callers may catch it as one.
* :class:`VerificationFailure` (exit 1): the only error that means "the design is wrong": a sign-off
  mismatch between the RTL and the golden model.
* :class:`ExternalToolError` (exit 3): Verilator, a C++ compiler, yosys/nextpnr (YoWASP) or a serial
  port is missing or failed; the message holds the tool's own last words.

The subclasses live beside the code that raises them (``ConversionError`` in the converter,
``FitError`` in the boards, ...) and all derive from one of these three.
"""

from __future__ import annotations

__all__ = ["SpikeforgeError", "InputError", "VerificationFailure", "ExternalToolError",
           "EXIT_OK", "EXIT_MISMATCH", "EXIT_USAGE", "EXIT_TOOL", "EXIT_INTERNAL", "EXIT_INTERRUPTED",
           "EXIT_TERMINATED"]

#: Exit codes of the ``spikeforge`` command (documented in the README).
EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_USAGE = 2
EXIT_TOOL = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130
#: SIGTERM (CI, ``timeout``, ``kill``): handled like Ctrl-C; 128 + 15, the shell's convention.
EXIT_TERMINATED = 143


class SpikeforgeError(Exception):
    """The root of every error spikeforge raises on purpose."""

    exit_code = EXIT_USAGE


class InputError(SpikeforgeError, ValueError):
    """Bad input: a value, a file or an option that spikeforge cannot accept (exit 2)."""

    exit_code = EXIT_USAGE


class VerificationFailure(SpikeforgeError):
    """The RTL disagrees with the golden model (exit 1)."""

    exit_code = EXIT_MISMATCH


class ExternalToolError(SpikeforgeError, RuntimeError):
    """An external tool (simulator, compiler, synthesis, serial port) is missing or failed (exit 3)."""

    exit_code = EXIT_TOOL
