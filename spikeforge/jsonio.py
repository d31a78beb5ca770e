"""Writing files atomically: a temporary sibling, then a rename (nothing is ever half-written)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

__all__ = ["write_json", "write_text", "plain"]


def write_text(path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return path


def write_json(path, data) -> Path:
    return write_text(path, json.dumps(data, indent=2, default=plain) + "\n")


def plain(value):
    """JSON ``default`` hook: numpy scalars and arrays, paths."""
    import numpy as np
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
