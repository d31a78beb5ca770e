"""Writing outputs atomically: fill a temporary sibling, then swap it in by rename.

Every tool that writes a file or a directory (a network, a design, a report, a bitstream) goes
through here, so an interrupted or failed run leaves either the old output or the new one, never
half of either. It lives in ir/, the floor of the house, so every folder can use it.

Outputs keep the user's umask: files get ``0666 & ~umask`` and directories ``0777 & ~umask``, as
``open``/``mkdir`` would give them (the temporary names come from ``mkstemp``/``mkdtemp``, which
make private ones, so the mode is set explicitly). A failure or an interrupt (an exception,
``KeyboardInterrupt`` included) removes the hidden temporary; a signal that kills the process
outright (SIGKILL, or SIGTERM without a handler) cannot be cleaned up here.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = ["staged_directory", "write_text", "write_json", "copy_file", "plain", "current_umask"]

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows.

    Linux (>= 4.7) reports it in ``/proc/self/status``; that read changes nothing. Elsewhere the
    only way is ``os.umask(0)`` and back: the lock serialises this module's own reads, but the umask
    is process-wide, so a file another thread creates during those two calls would get mode bits
    the umask should have cleared. It is read per call (not once at import) so a umask changed
    after import is honoured.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0)
        os.umask(mask)
    return mask


def _mode(base: int) -> int:
    return base & ~current_umask()


def _remove(path: Path) -> None:
    """Remove a temporary file or directory of ours, if it is still there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _swap_in(staging: Path, path: Path) -> None:
    """Rename ``staging`` to ``path``; an existing ``path`` is retired first and removed after."""
    if not os.path.lexists(path):
        os.replace(staging, path)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
    old = retired / path.name
    try:
        os.replace(path, old)
        try:
            os.replace(staging, path)
        except BaseException:
            os.replace(old, path)          # the old output goes back where it was
            raise
    finally:
        # Keep the retired folder only if the old output could not be put back (never lose it).
        if not os.path.lexists(old) or os.path.lexists(path):
            shutil.rmtree(retired, ignore_errors=True)


@contextmanager
def staged_directory(path):
    """Yield an empty staging directory beside ``path``; on success it replaces ``path``.

    The directory gets mode ``0777 & ~umask`` (an ordinary directory; what callers create in it
    follows the umask by itself). On an exception (``KeyboardInterrupt`` included) the staging
    directory is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        os.chmod(staging, _mode(0o777))     # mkdtemp makes it private (0700)
        yield staging
        _swap_in(staging, path)
    except BaseException:
        _remove(staging)
        raise


@contextmanager
def _staged_file(path):
    """Yield a temporary sibling of ``path`` (mode ``0666 & ~umask``); on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    temporary = Path(temporary)
    try:
        try:
            os.fchmod(fd, _mode(0o666))     # mkstemp makes it private (0600)
        finally:
            os.close(fd)
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        _remove(temporary)
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
