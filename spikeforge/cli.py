"""The `spikeforge` command line: discovers the subcommands in :mod:`spikeforge.commands`.

Each command module's ``NAME`` and ``HELP`` are read from its source, and only the command being run
is imported: ``spikeforge --help`` lists every command without loading what they load (Amaranth, the
boards, torch), and ``spikeforge CMD`` loads only CMD's imports.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import pkgutil
import shutil
import signal
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from spikeforge import __version__, commands as _commands
from spikeforge.ir.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE, SpikeforgeError


@dataclass(frozen=True)
class CommandInfo:
    """One subcommand: its name and help line, and the module that defines it (imported on use)."""

    name: str
    help: str
    module: str

    def load(self):
        return importlib.import_module(self.module)


def _constants(path: Path) -> dict:
    """The module-level ``NAME = "..."`` / ``HELP = "..."`` literals of a command module's source."""
    found = {}
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                found[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return found


def command_infos() -> list:
    """Every subcommand in :mod:`spikeforge.commands`, by name, read without importing them."""
    infos = []
    for info in pkgutil.iter_modules(_commands.__path__):
        if info.name.startswith("_"):
            continue
        module = f"{_commands.__name__}.{info.name}"
        constants = _constants(Path(info.module_finder.path) / f"{info.name}.py")
        if "NAME" not in constants or "HELP" not in constants:      # not literals: ask the module
            loaded = importlib.import_module(module)
            constants = {"NAME": loaded.NAME, "HELP": loaded.HELP}
        infos.append(CommandInfo(constants["NAME"], constants["HELP"], module))
    return sorted(infos, key=lambda info: info.name)


def _named_command(argv, names) -> str | None:
    """The subcommand ``argv`` names (its first word that is not an option), if it names one."""
    word = next((arg for arg in argv if not arg.startswith("-")), None)
    return word if word in names else None


def build_parser(argv=None) -> argparse.ArgumentParser:
    """The parser; with ``argv``, only the command it names gets its options (and its module imported)."""
    parser = argparse.ArgumentParser(
        prog="spikeforge",
        description="Turn trained PyTorch networks into pipelined iLIF spiking accelerators for FPGAs.")
    parser.add_argument("--version", action="version", version=f"spikeforge {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an unexpected error (for bug reports)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    infos = command_infos()
    chosen = None if argv is None else _named_command(argv, {info.name for info in infos})
    for info in infos:
        sub = subparsers.add_parser(info.name, help=info.help, description=info.help)
        if argv is None or info.name == chosen:
            module = info.load()
            module.add_arguments(sub)
            sub.set_defaults(_run=module.run)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (what CI, ``timeout`` and ``kill`` send), raised where the program is, like Ctrl-C.

    A :class:`KeyboardInterrupt`, so every cleanup that runs on Ctrl-C runs on it too: staged outputs
    (:mod:`spikeforge.ir.atomic`) are removed, child processes (simulators, synthesis) are killed by
    :mod:`subprocess`, a simulated board is stopped.
    """


@contextmanager
def _sigterm_as_interrupt():
    """Turn SIGTERM into :class:`Terminated` while a command runs (main thread only; restored after)."""
    def terminate(signum, frame):
        raise Terminated()
    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:              # not the main thread (a library caller's worker): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _without_torch_trailer(message: str) -> str:
    """A message quoting a torch.fx error, without the graph dump and log hints fx appends to it."""
    return message.split("\n\nWhile executing")[0].rstrip()


def _new_output_root(args) -> Path | None:
    """The highest folder (or file) of the command's ``--output`` that does not exist yet, if any."""
    output = getattr(args, "output", None)
    if output is None:
        return None
    path = Path(output).absolute()
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


def _remove_new_output(root: Path | None) -> None:
    """A refused or interrupted command leaves no output it started (nor the folders made for it)."""
    if root is None or not root.exists():
        return
    if root.is_dir() and not root.is_symlink():
        shutil.rmtree(root, ignore_errors=True)
    else:
        root.unlink(missing_ok=True)


def main(argv=None) -> int:
    """Run one command; map the error tree (:mod:`spikeforge.ir.errors`) to the documented exit codes.

    0 success; 1 a verification mismatch; 2 bad input or usage; 3 a missing or failing external tool;
    4 an internal error (a bug: one line, and ``--debug`` shows the traceback); 130 interrupted (Ctrl-C);
    143 terminated (SIGTERM, handled like Ctrl-C: partial outputs are removed).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USAGE
    # Refused input and interruptions leave nothing behind: an output folder this run created is removed
    # (a failing external tool's or a mismatch's outputs are kept: they are the evidence).
    new_output = _new_output_root(args)
    try:
        with _sigterm_as_interrupt():
            return int(args._run(args) or 0)
    except Terminated:
        _remove_new_output(new_output)
        print(f"spikeforge {args.command}: terminated (SIGTERM); partial outputs removed", file=sys.stderr)
        return EXIT_TERMINATED
    except SpikeforgeError as error:
        # Our own errors carry messages written for people: the message, never a traceback.
        if error.exit_code == EXIT_USAGE:
            _remove_new_output(new_output)
        print(f"spikeforge {args.command}: error: {_without_torch_trailer(str(error))}", file=sys.stderr)
        return error.exit_code
    except OSError as error:
        # A file the user named that cannot be read or written (missing, a directory, no permission).
        _remove_new_output(new_output)
        print(f"spikeforge {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        _remove_new_output(new_output)
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
