"""Writing output directories atomically: fill a temporary sibling, then swap it in by rename.

Every tool that writes a directory (a network, a design) goes through :func:`staged_directory`, so
an interrupted or failed run leaves either the old directory or the new one, never half of either.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["staged_directory"]


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
