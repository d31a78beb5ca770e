"""``python -m benchmarks [--quick] [-o build/bench]``: see :mod:`benchmarks.runner`."""

import sys

from .runner import main

sys.exit(main())
