"""One module per `spikeforge` subcommand.

Each module defines ``NAME`` (the subcommand), ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int`` (the exit status). :mod:`spikeforge.cli` discovers them, so adding a command is
adding a file.
"""

from pathlib import Path

__all__ = ["add_model_arguments"]


def add_model_arguments(parser, scale_help: str):
    """The arguments naming a trained model and how its input was normalised, shared by the commands that
    read one (``convert``, ``finetune``): ``model``, ``--state-dict``, ``--input-scale`` (its help says what
    the default is for that command: ``scale_help``), ``--input-mean``, ``--input-std``."""
    parser.add_argument("model", help="a torch.export program (.pt2), a pickled nn.Module (.pt), or "
                                      "file.py:factory (with --state-dict)")
    parser.add_argument("--state-dict", type=Path, help="state dict to load into the module made by file.py:factory")
    parser.add_argument("--input-scale", type=float, default=None, help=scale_help)
    parser.add_argument("--input-mean", type=float, default=0.0, help="... then (x - MEAN) / STD")
    parser.add_argument("--input-std", type=float, default=1.0)
