# The two commands a new user runs are `make demo` and `make test`; CI runs `make lint test`.
# Every target creates or reuses .venv by itself.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev
# Test processes (pytest-xdist): one per CPU; modules and the Ray tests stay whole per worker.
TEST_WORKERS ?= auto

.PHONY: demo test lint bench clean venv dev

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[report]"
	touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev,postgres,ray,onnx,report]"
	touch $@ $(STAMP_RUN)

venv: $(STAMP_RUN)

dev: $(STAMP_DEV)

demo: $(STAMP_RUN)
	$(BIN)/loopline demo

test: $(STAMP_DEV)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup

lint: $(STAMP_DEV)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP_DEV)
	$(BIN)/python benchmarks/store.py
	$(BIN)/python benchmarks/lineage.py
	$(BIN)/python benchmarks/data.py
	$(BIN)/python benchmarks/pipelines.py
	$(BIN)/python benchmarks/registry.py
	$(BIN)/python benchmarks/governance.py
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/monitoring.py
	$(BIN)/python benchmarks/api.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
