# Two entry points: `make demo` (set up, then run the paper's study end to end) and
# `make test` (set up, then run the whole test suite). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build here; GPU users may override, e.g. `make demo TORCH=torch`.
TORCH ?= torch==2.13.0

.PHONY: setup demo test check lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, so that resolving the project does not pull a multi-GB CUDA build.
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[worker,test]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/noisetune demo

test: setup
	$(BIN)/pytest -q
	$(BIN)/ruff check .
	$(BIN)/mypy

# The fast lane for iterating: lint, types, and every test but the end-to-end runs of real
# fleets and the browser (about 1.5 minutes here). `make test` stays the whole suite.
check: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -q -m "not slow and not browser"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: setup
	$(BIN)/python benchmarks/noise_overhead.py
	$(BIN)/python benchmarks/dashboard_scale.py
	$(BIN)/python benchmarks/stacked.py
	$(BIN)/python benchmarks/control_plane.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
