"""Writing outputs atomically: fill a temporary sibling, then swap it in by rename.

Every tool that writes a file or a directory (a network, a design, a report, a bitstream) goes
through here, so an interrupted or failed run leaves either the old output or the new one, never
half of either. It lives in ir/, the floor of the house, so every folder can use it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = ["staged_directory", "write_text", "write_json", "copy_file", "plain"]


@contextmanager
def staged_directory(path):
    """Yield an empty staging directory beside ``path``; on success it replaces ``path``.

    On an exception the staging directory is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(staging, 0o755)          # mkdtemp makes it private; outputs are ordinary directories
    try:
        yield staging
        if path.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, retired / path.name)
            os.replace(staging, path)
            shutil.rmtree(retired)
        else:
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextmanager
def _staged_file(path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def write_text(path, text: str) -> Path:
    with _staged_file(path) as temporary:
        temporary.write_text(text)
    return Path(path)


def copy_file(source, path) -> Path:
    """Copy ``source`` to ``path`` atomically (a bitstream out of a build directory, say)."""
    with _staged_file(path) as temporary:
        shutil.copyfile(source, temporary)
    return Path(path)


def write_json(path, data) -> Path:
    return write_text(path, json.dumps(data, indent=2, default=plain) + "\n")


def plain(value):
    """JSON ``default`` hook: numpy scalars and arrays, paths."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
