# The two set-up commands of the README: `make run` (the grid, locally) and `make test`.
# `make test-fast` is the unit tier alone (about a minute, no system packages), for the edit-test loop.
# Each creates .venv and installs what it needs; reruns only reinstall when the inputs change.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)

.PHONY: run test test-fast system-deps bench clean

$(STAMP): pyproject.toml setup.py $(shell find csrc -type f 2>/dev/null)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0 ninja 'setuptools>=77' wheel
	$(BIN)/pip install -q --no-build-isolation -e '.[test,workflow,dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --profile profiles/local

system-deps:
	scripts/install-system-deps.sh

test: $(STAMP) system-deps
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit

bench: $(STAMP)
	$(BIN)/python bench/train.py
	$(BIN)/python bench/kernels.py

clean:
	rm -rf $(VENV) build pydiffusion/diffusion/*.so .snakemake results
