"""Progress reporting for long steps: one place decides how progress looks (tqdm on a terminal)."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

from tqdm import tqdm

__all__ = ["bar", "step"]


def bar(total: int, description: str, unit: str = "it", enabled: bool | None = None):
    """A progress bar on stderr (disabled when stderr is not a terminal unless ``enabled``)."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(total=total, desc=description, unit=unit, disable=not enabled, leave=False, file=sys.stderr)


@contextmanager
def step(description: str, stream=None):
    """Print ``description ...`` then ``done in N s`` around a block."""
    stream = stream or sys.stdout
    print(f"{description} ...", end="", flush=True, file=stream)
    start = time.perf_counter()
    try:
        yield
    except BaseException:
        print(" failed", file=stream, flush=True)
        raise
    print(f" done in {time.perf_counter() - start:.1f} s", file=stream, flush=True)
