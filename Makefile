# spikeforge: `make demo` and `make test` are the two commands a new user needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch is pinned here (the dev/CI path) to the CPU build on this machine's disk; the package itself
# accepts a range.
TORCH  ?= torch==2.13.0

.PHONY: all venv demo test test-fast bench lint clean

all: test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/spikeforge demo

# Everything: unit tests, Verilator sign-off, synthesis (CI runs this), on two workers (pytest-xdist;
# --dist loadscope keeps a test file's module fixtures, such as one Verilator build, on one worker).
# The slowest tests are listed at the end.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadscope --durations=15

# The inner loop: no slow, Verilator or synthesis test (markers in pyproject.toml), on two workers
# (pytest-xdist); the tier is ~230 s of CPU, about 2 minutes here.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "not slow and not verilator and not synth"

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf build sim_build .pytest_cache
