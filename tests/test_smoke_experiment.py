"""Smoke runs land in an MLflow experiment of their own: `make smoke` and the end-to-end tests
set DENOISELAB_EXPERIMENT, and without it the runs go to the experiment `denoiselab`."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SMOKE_EXPERIMENT

ROOT = Path(__file__).resolve().parents[1]


def experiment_name(**variables: str) -> str:
    """The experiment tracking logs into, in a fresh process with these variables."""
    env = {key: value for key, value in os.environ.items() if key != "DENOISELAB_EXPERIMENT"}
    env.update(variables)
    probe = "from denoiselab import tracking; print(tracking.EXPERIMENT_NAME)"
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_runs_go_to_denoiselab_unless_the_variable_names_another_experiment():
    assert experiment_name() == "denoiselab"
    assert experiment_name(DENOISELAB_EXPERIMENT="") == "denoiselab"
    assert experiment_name(DENOISELAB_EXPERIMENT=SMOKE_EXPERIMENT) == SMOKE_EXPERIMENT


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_smoke_runs_the_pipeline_in_the_smoke_experiment():
    # An outer `make test` passes its flags down; this make only prints what it would run.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    result = subprocess.run(
        ["make", "--dry-run", "smoke"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    [command] = [line for line in result.stdout.splitlines() if "dvc exp run" in line]
    assert f"DENOISELAB_EXPERIMENT={SMOKE_EXPERIMENT} " in command
