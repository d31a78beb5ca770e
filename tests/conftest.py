"""Fixtures shared across the test folders."""

import pytest


@pytest.fixture(scope="session")
def signoff_build_root(tmp_path_factory):
    """Every Verilator build of the session goes under here, one folder per design (keyed by hash), so
    Verilator's runtime objects are compiled once per session."""
    return tmp_path_factory.mktemp("verilator")
