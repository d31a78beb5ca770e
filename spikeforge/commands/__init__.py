"""One module per `spikeforge` subcommand.

Each module defines ``NAME`` (the subcommand), ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int`` (the exit status). :mod:`spikeforge.cli` discovers them, so adding a command is
adding a file.
"""
