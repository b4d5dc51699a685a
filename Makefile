# Front door of the project. Every target creates the virtual environment and installs the
# pinned dependencies first, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# DVC runs each stage's `python` from the project's environment.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install run smoke test bench lint ui clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -e ".[eval,dev]"
	touch $(STAMP)

install: $(STAMP)

# The whole pipeline with the default params: prepare, add_noise, train_cae, train_unet,
# tune_unet, evaluate, plot. Only stages whose inputs or params changed rerun.
run: install
	$(BIN)/dvc repro

# The whole DAG on tiny settings in a temporary DVC experiment; the workspace is untouched.
smoke: install
	eval "$(BIN)/dvc exp run --temp $$($(BIN)/denoiselab profile-args profiles/smoke.yaml)"

test: install
	$(BIN)/pytest -q

bench: install
	$(BIN)/python -m denoiselab.bench --out reports/benchmark.json

lint: install
	$(BIN)/ruff check src stages tests
	$(BIN)/ruff format --check src stages tests

ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

clean-venv:
	rm -rf $(VENV)
