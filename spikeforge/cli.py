"""The `spikeforge` command line: discovers the subcommands in :mod:`spikeforge.commands`."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import commands as _commands


class CommandError(Exception):
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
    from . import __version__
    parser.add_argument("--version", action="version", version=f"spikeforge {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        sub = subparsers.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (CommandError, ValueError, OSError) as error:
        # Library errors (ConversionError, NetworkFormatError, ... are ValueErrors) carry messages
        # written for people: show the message, not a traceback.
        print(f"spikeforge {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spikeforge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
