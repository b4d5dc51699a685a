# Front door of the project. Every target creates the virtual environment and installs the
# pinned dependencies first, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# DVC runs each stage's `python` from the project's environment.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install gpu run smoke test bench lint plots ui serve clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[eval,dev]"
	touch $(STAMP)

# The page `dvc plots show` renders (.dvc/config names it): Vega, Vega-Lite and vega-embed
# inlined from an installed package, so the plots show without internet.
PLOTS_PAGE := .dvc/plots_offline.html

$(PLOTS_PAGE): src/denoiselab/plots_page.py $(STAMP)
	$(BIN)/python -m denoiselab.plots_page $@

install: $(STAMP) $(PLOTS_PAGE)

# One step for NVIDIA GPU users: swap the CPU build of TensorFlow for the CUDA one.
gpu: install
	$(BIN)/pip uninstall --quiet --yes tensorflow-cpu
	$(BIN)/pip install --quiet "tensorflow[and-cuda]==2.21.0"

# The whole pipeline with the default params: prepare@gray/colour, add_noise@gray/colour,
# train@cae/unet/unet_rgb, tune_unet, classical@gray/colour, evaluate, plot. Only stages whose
# inputs or params changed rerun.
run: install
	$(BIN)/denoiselab check-params params.yaml
	$(BIN)/dvc repro

# The whole DAG on tiny settings in a temporary DVC experiment; the workspace is untouched.
# DENOISELAB_EXPERIMENT logs its runs into the MLflow experiment denoiselab-smoke, apart from
# the real runs in denoiselab.
smoke: install
	eval "DENOISELAB_EXPERIMENT=denoiselab-smoke $(BIN)/dvc exp run --temp \
		$$($(BIN)/denoiselab profile-args profiles/smoke.yaml)"

test: install
	$(BIN)/pytest -q

bench: install
	$(BIN)/python -m denoiselab.bench --out reports/benchmark.json

lint: install
	$(BIN)/ruff check src stages tests
	$(BIN)/ruff format --check src stages tests

# The loss and PSNR curves of the current outputs in dvc_plots/index.html, offline.
plots: install
	$(BIN)/dvc plots show

ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --default-artifact-root ./mlartifacts \
		--host 127.0.0.1 --port 5000

# Serves the registry's champion on http://127.0.0.1:5001/invocations (see README).
serve: install
	$(BIN)/mlflow models serve -m "models:/denoiselab@champion" --env-manager local \
		--host 127.0.0.1 --port 5001

clean-venv:
	rm -rf $(VENV)

.PHONY: services services-stop test-integration

# The team stack on this host, bound to 127.0.0.1: PostgreSQL (MLflow's store, Optuna
# studies), SeaweedFS (S3: MLflow artifacts, DVC remote) and mlflow server; see README.
services: install
	$(BIN)/python -c "import psycopg2, boto3, dvc_s3" 2>/dev/null || $(BIN)/pip install --quiet -e ".[eval,dev,team]"
	services/start.sh

services-stop:
	services/stop.sh

# Starts a private copy of the stack, runs the smoke pipeline against it, stops it.
test-integration: install
	$(BIN)/python -c "import psycopg2, boto3, dvc_s3" 2>/dev/null || $(BIN)/pip install --quiet -e ".[eval,dev,team]"
	$(BIN)/pytest -q -o addopts="" tests/integration
