"""The `spikeforge` command line: discovers the subcommands in :mod:`spikeforge.commands`."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from spikeforge import __version__, commands as _commands
from spikeforge.ir.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, InputError, SpikeforgeError


class CommandError(InputError):
    """A user-facing error: printed as ``spikeforge <cmd>: error: ...`` with exit status 2."""


def _command_modules():
    modules = []
    for info in sorted(pkgutil.iter_modules(_commands.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{_commands.__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "run"):
            modules.append(module)
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikeforge",
        description="Turn trained PyTorch networks into pipelined iLIF spiking accelerators for FPGAs.")
    parser.add_argument("--version", action="version", version=f"spikeforge {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an unexpected error (for bug reports)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        sub = subparsers.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv=None) -> int:
    """Run one command; map the error tree (:mod:`spikeforge.ir.errors`) to the documented exit codes.

    0 success; 1 a verification mismatch; 2 bad input or usage; 3 a missing or failing external tool;
    4 an internal error (a bug: one line, and ``--debug`` shows the traceback); 130 interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args._run(args) or 0)
    except SpikeforgeError as error:
        # Our own errors carry messages written for people: the message, never a traceback.
        print(f"spikeforge {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:
        # A file the user named that cannot be read or written (missing, a directory, no permission).
        print(f"spikeforge {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"spikeforge {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - the last resort: a bug, reported in one line
        if args.debug:
            raise
        print(f"spikeforge {args.command}: internal error: {type(error).__name__}: {error}\n"
              f"rerun with --debug for the traceback", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
