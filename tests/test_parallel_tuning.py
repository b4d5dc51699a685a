"""Parallel tuning: `denoiselab tune-worker` processes share one Optuna study with the
tune_unet stage, which then takes the best trial of the whole study and warm-starts from it."""

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from denoiselab import config, files, noise, studies, tuning

ROOT = Path(__file__).resolve().parents[1]
STUDY_NAME = re.compile(r"^unet_tune-[0-9a-f]{12}$")


def tiny_params() -> dict:
    """The project's params with a search that takes seconds on 16x16 patches."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["prepare"]["patch_size"] = 16
    params["train"]["crop_size"] = None
    params["tune_unet"].update(
        n_trials=4,
        trial_epochs=2,
        trial_budget_s=0.04,
        final_epochs=1,
        final_budget_s=0.02,
        storage=None,
    )
    params["tune_unet"]["search"].update(base_filters=[4], depth=[2], batch_size=[8])
    params["tune_unet"]["train"]["precision"] = "float32"
    return params


def write_data(folder: Path, data_hash: str = "tiny") -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:16, 0:16] / 16
    clean = {
        split: np.stack(
            [0.5 + 0.3 * np.sin(6 * x * rng.random() + 4 * y * rng.random()) for _ in range(n)]
        )[..., None].astype(np.float32)
        for split, n in (("train", 32), ("val", 8))
    }
    for split, patches in clean.items():
        noisy = np.clip(patches + rng.normal(0, 0.1, patches.shape), 0, 1).astype(np.float32)
        files.save_arrays(folder / "data/gray/prepared" / f"{split}.npz", {"patches": patches})
        files.save_arrays(folder / "data/gray/noisy" / f"{split}.npz", {"patches": noisy})
    # The whole validation images at two levels, as add_noise writes them: what trials score on.
    val_images = {
        name: (0.5 + 0.3 * np.sin(5 * x + 3 * y * rng.random()))[..., None].astype(np.float32)
        for name in ("c", "d")
    }
    files.save_arrays(folder / "data/gray/prepared/val_images.npz", val_images)
    for level in (0.05, 0.1):
        levels_folder = folder / "data/gray/noisy" / noise.LEVELS_FOLDER / noise.level_key(level)
        files.save_arrays(
            levels_folder / "val_images.npz", noise.noisy_images(val_images, level, seed=0)
        )
    files.write_json(
        folder / "data/gray/prepared/manifest.json", {"data_hash": data_hash, "channels": 1}
    )


@pytest.fixture
def project(tmp_path):
    """A folder with params.yaml, tiny prepared/noisy data and its own MLflow store."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    write_data(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    # The MLflow store exists before workers start, as it does once a training stage ran:
    # MLflow's own schema set-up is not safe for two processes at once.
    import mlflow

    mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"]).search_experiments()
    return tmp_path, env


def finished(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-4000:]
    return output


@pytest.mark.slow
def test_two_workers_share_one_study_and_the_stage_takes_its_best(project):
    folder, env = project
    worker = [sys.executable, "-m", "denoiselab.cli", "tune-worker", "--n-trials", "2"]
    processes = [
        subprocess.Popen(
            worker,
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = {process.pid: finished(process) for process in processes}

    # Both joined the one study in the default storage, optuna.db at the repository root.
    storage = f"sqlite:///{folder / 'optuna.db'}"
    (name,) = optuna.get_all_study_names(storage)
    assert STUDY_NAME.match(name)
    study = optuna.load_study(study_name=name, storage=storage)
    numbers = [trial.number for trial in study.trials]
    assert sorted(numbers) == [0, 1, 2, 3]
    by_worker = {}
    for trial in study.trials:
        pid = int(trial.user_attrs["worker"].rpartition(":")[2])
        by_worker.setdefault(pid, []).append(trial.number)
    assert set(by_worker) == set(outputs)
    for pid, output in outputs.items():
        assert f"ran trials {sorted(by_worker[pid])}" in output
    # The worker that finished last saw the whole search.
    assert any(f"study {name} holds 4 finished trials" in out for out in outputs.values())
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = study.best_trial
    assert best.value == max(trial.value for trial in completed)
    assert tuning.weights_file(tuning.weights_folder(folder, name), best.number).is_file()

    stage = [
        sys.executable,
        str(ROOT / "stages/tune_unet.py"),
        "--prepared",
        "data/gray/prepared",
        "--noisy",
        "data/gray/noisy",
        "--model-dir",
        "models/unet_tuned",
        "--history",
        "history.json",
        "--best",
        "best.json",
    ]
    result = subprocess.run(stage, cwd=folder, env=env, capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "already holds 4 finished trials" in output
    assert "starts from scratch" not in output
    summary = json.loads((folder / "best.json").read_text())
    assert summary["study_name"] == name
    assert summary["best_trial"] == best.number
    assert summary["best_val_psnr"] == pytest.approx(best.value)
    assert sorted(trial["number"] for trial in summary["trials"]) == [0, 1, 2, 3]
    saved = json.loads((folder / "models/unet_tuned/config.json").read_text())
    assert saved["train_config"]["loss"] == best.params["loss"]

    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    run = mlflow.get_run(saved["mlflow_run_id"])
    assert run.data.params["warm_start"] == "True"
    assert run.data.tags["optuna.study"] == name


def test_the_study_name_changes_with_the_search_data_and_code_but_not_the_final_run():
    params = config.parse_params(tiny_params())
    tune, base = params.tune_unet, params.base
    reference = studies.study_fingerprint(tune, base, "data-a", "code-a")
    assert reference == studies.study_fingerprint(tune, base, "data-a", "code-a")
    changed = [
        studies.study_fingerprint(tune, base, "data-b", "code-a"),
        studies.study_fingerprint(tune, base, "data-a", "code-b"),
        studies.study_fingerprint(
            tune.model_copy(update={"search": tune.search.model_copy(update={"depth": (1,)})}),
            base,
            "data-a",
            "code-a",
        ),
        studies.study_fingerprint(
            tune.model_copy(update={"train": tune.train.model_copy(update={"augment": False})}),
            base,
            "data-a",
            "code-a",
        ),
        studies.study_fingerprint(tune, base.model_copy(update={"seed": 1}), "data-a", "code-a"),
    ]
    assert reference not in changed and len(set(changed)) == len(changed)
    # The trials set their own epochs and steps, so the shared ones leave the search alone.
    train = tune.train.model_copy(update={"epochs": 99, "steps_per_epoch": 7})
    unchanged = tune.model_copy(
        update={"n_trials": 9, "final_epochs": 5, "warm_start": False, "train": train}
    )
    assert studies.study_fingerprint(unchanged, base, "data-a", "code-a") == reference
    assert studies.full_study_name("unet_tune", reference) == f"unet_tune-{reference}"
    assert studies.full_study_name(f"unet_tune-{reference}", reference) == f"unet_tune-{reference}"


def test_relative_storages_are_taken_from_the_repository_root(tmp_path):
    root = tmp_path / "repo"
    assert studies.storage_location(None, root) == f"sqlite:///{root / 'optuna.db'}"
    assert studies.storage_location("sqlite:///s/o.db", root) == f"sqlite:///{root / 's/o.db'}"
    assert studies.storage_location("sqlite:////abs/o.db", root) == "sqlite:////abs/o.db"
    url = "postgresql+psycopg2://user:secret@db.example:5432/optuna"
    assert studies.storage_location(url, root) == url
    assert studies.storage_location(url.replace("+psycopg2", ""), root) == url
    assert studies.storage_location("runs/journal.log", root) == str(root / "runs/journal.log")


def test_a_journal_file_storage_is_shared_by_name(tmp_path):
    params = config.parse_params(tiny_params())
    first = tuning.study_for(params.tune_unet, params.base, "h", tmp_path, storage="j.log")
    first.enqueue_trial({"depth": 2})
    again = tuning.study_for(params.tune_unet, params.base, "h", tmp_path, storage="j.log")
    assert again.study_name == first.study_name
    assert len(again.trials) == 1
    assert (tmp_path / "j.log").is_file()


@pytest.mark.parametrize("storage", ["optuna.db", "sqlite", "redis://host/0", ""])
def test_a_bad_storage_param_names_the_key(storage):
    raw = tiny_params()
    raw["tune_unet"]["storage"] = storage
    with pytest.raises(ValueError, match=r"tune_unet\.storage must be null") as error:
        config.parse_params(raw)
    assert "\n" not in str(error.value)


def test_a_worker_rejects_a_bad_storage_in_one_line(project, capsys):
    from denoiselab import cli

    assert cli.main(["tune-worker", "--storage", "optuna.db"]) == 2
    assert capsys.readouterr().err.startswith("error: --storage must be null")


def test_without_saved_weights_the_final_run_starts_from_scratch(tmp_path, caplog):
    study = optuna.create_study(direction="maximize")
    study.add_trial(
        optuna.trial.create_trial(
            params={"depth": 2},
            distributions={"depth": optuna.distributions.CategoricalDistribution([2])},
            value=30.0,
            user_attrs={"worker": "elsewhere:42"},
        )
    )
    with caplog.at_level(logging.WARNING):
        assert tuning.trial_weights(study.best_trial, tmp_path) is None
    assert "no saved weights for trial 0 (run by elsewhere:42)" in caplog.text

    weights = [np.ones((3, 3, 1, 4), np.float32), np.zeros(4, np.float32)]
    path = tuning.weights_file(tmp_path, 0)
    files.save_arrays(path, {f"{i:04d}": w for i, w in enumerate(weights)})
    loaded = tuning.trial_weights(study.best_trial, tmp_path)
    assert [w.shape for w in loaded] == [(3, 3, 1, 4), (4,)]


def test_the_trials_and_the_final_run_train_with_the_settings_they_trained_with():
    # The default run's best trial and its final run's config: the shared train section's
    # settings with the drawn keys; the final run at 16 wide trains 664 steps of 16 per epoch
    # (860 reference seconds at 83 GFLOP/s), and a wider trial gets more FLOPs than at equal
    # compute (96 steps, not 88).
    tune = config.load_params(ROOT / "params.yaml").tune_unet
    best = {
        "base_filters": 16,
        "depth": 2,
        "batch_norm": False,
        "loss": "mse",
        "learning_rate": 0.0035652586673184067,
        "batch_size": 16,
    }
    common = {
        "model": "unet",
        "residual": True,
        "bias": False,
        "pixel_unshuffle": False,
        "noise_map": True,
        "noise_sigma_power": 1.5,
        "loss_level_power": 0.75,
        "lr_schedule": "cosine",
        "crop_size": 48,
        "fresh_noise": True,
        "noise_sigma_range": [0.0, 0.2],
        "augment": True,
        "jit_compile": False,
        "precision": "auto",
        "distribution": "none",
        "steps_per_execution": 8,
    }
    final = tuning.budgeted_config(best, tune, 1, 64, tune.final_epochs, tune.final_budget_s)
    assert config.to_dict(final) == {**common, **best, "epochs": 20, "steps_per_epoch": 664}
    drawn = {**best, "base_filters": 24, "depth": 3, "loss": "l1", "learning_rate": 0.001}
    trial = tuning.budgeted_config(drawn, tune, 1, 64, tune.trial_epochs, tune.trial_budget_s)
    assert config.to_dict(trial) == {**common, **drawn, "epochs": 3, "steps_per_epoch": 96}


def test_a_trial_budget_becomes_whole_executions_of_the_graph():
    model_config = config.ModelConfig(model="unet", base_filters=8, depth=2, channels=1)
    exact = tuning.steps_for_budget(model_config, 48, 16, 3, 5.0, {8: 100.0})
    rounded = tuning.steps_for_budget(model_config, 48, 16, 3, 5.0, {8: 100.0}, multiple_of=8)
    assert rounded % 8 == 0
    assert abs(rounded - exact) <= 4


def test_a_width_the_hardware_runs_faster_gets_more_flops_for_the_same_seconds():
    table = {16: 100.0, 64: 400.0}
    assert tuning.reference_gflops(table, 8) == 100.0
    assert tuning.reference_gflops(table, 16) == 100.0
    assert tuning.reference_gflops(table, 32) == pytest.approx(200.0)
    assert tuning.reference_gflops(table, 128) == 400.0

    def steps(width, gflops):
        network = config.ModelConfig(model="unet", base_filters=width, depth=2, channels=1)
        return tuning.steps_for_budget(network, 48, 16, 1, 60.0, gflops)

    # Twice as wide is four times the FLOPs per step: at equal GFLOP/s a quarter of the steps,
    # at twice the GFLOP/s half of them.
    assert steps(32, {16: 100.0}) == pytest.approx(steps(16, {16: 100.0}) / 4, rel=0.02)
    assert steps(32, table) == pytest.approx(steps(16, table) / 2, rel=0.02)


@pytest.mark.slow
def test_processes_creating_one_new_sqlite_storage_at_once_all_open_it(tmp_path):
    # Without the retry, about one process in twelve lost the table-creation race and stopped;
    # eight rounds of three catch that nearly nine times in ten.
    code = "import sys; from denoiselab import studies; studies.open_storage(sys.argv[1])"
    for attempt in range(8):
        location = f"sqlite:///{tmp_path / f'race-{attempt}' / 'optuna.db'}"
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", code, location],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(3)
        ]
        for process in processes:
            output, _ = process.communicate(timeout=120)
            assert process.returncode == 0, output[-2000:]


KILLED_WORKER = """
import sys, time
import optuna
from denoiselab import studies

storage = studies.open_storage(sys.argv[1], heartbeat_interval=1, grace_period=2)
study = optuna.create_study(study_name="s", storage=storage, load_if_exists=True)

def objective(trial):
    trial.suggest_int("x", 0, 1000)
    print("running", flush=True)
    time.sleep(600)

study.optimize(objective, n_trials=1)
"""


def test_a_trial_of_a_killed_worker_is_failed_and_retried_by_the_next_worker(tmp_path):
    location = f"sqlite:///{tmp_path / 'optuna.db'}"
    worker = subprocess.Popen(
        [sys.executable, "-c", KILLED_WORKER, location], stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout.readline().strip() == "running"
    finally:
        worker.kill()  # SIGKILL: no handler runs, the trial is left RUNNING
        worker.wait(timeout=60)
    storage = studies.open_storage(location, heartbeat_interval=1, grace_period=2)
    (killed,) = optuna.load_study(study_name="s", storage=storage).trials
    assert killed.state == TrialState.RUNNING
    time.sleep(3)  # past the grace period without a heartbeat

    tune = config.parse_params(tiny_params()).tune_unet
    study = studies.open_study(storage, "s", tune, seed=0)
    failed, retry = study.trials
    assert failed.state == TrialState.FAIL
    assert retry.state == TrialState.WAITING and retry.params == killed.params
    assert studies.count_finished(study) == 0  # the retry takes the killed trial's place

    tuning.optimize_shared(study, lambda trial: trial.suggest_int("x", 0, 1000), 5, n_trials=1)
    assert [trial.state for trial in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[1].value == killed.params["x"]
    assert studies.count_finished(study) == 1


def test_a_new_study_tries_every_depth_of_the_search_first():
    params = tiny_params()
    params["tune_unet"]["search"]["depth"] = [2, 3, 4]
    params["tune_unet"]["n_trials"] = 3
    tune = config.parse_params(params).tune_unet
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    tuning.enqueue_every_depth(study, tune)
    tuning.enqueue_every_depth(study, tune)  # a second process finds them queued
    study.optimize(lambda trial: float(tuning.suggest(trial, tune)["depth"]), n_trials=3)
    assert sorted(trial.params["depth"] for trial in study.trials) == [2, 3, 4]


def test_a_trial_another_worker_finished_first_does_not_stop_this_one(tmp_path, capsys):
    """Two workers on one sqlite study can pop the same queued trial; the one that finishes it
    second cannot record it, and goes on with the next trial instead of failing."""
    storage = studies.open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    ran = []

    def objective(trial):
        x = trial.suggest_int("x", 0, 1000)
        if not ran:  # the other worker records this trial while this one still runs it
            storage.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, [-1.0])
        ran.append(trial.number)
        return float(x)

    tuning.optimize_shared(study, objective, 5, n_trials=3)
    assert ran == [0, 1, 2]
    assert [trial.state for trial in study.trials] == [TrialState.COMPLETE] * 3
    assert study.trials[0].value == -1.0  # the first worker's result stands
    assert "finished by another process" in capsys.readouterr().out


def test_a_search_of_one_depth_queues_no_trial():
    tune = config.parse_params(tiny_params()).tune_unet
    assert list(tune.search.depth) == [2]
    study = optuna.create_study(direction="maximize")
    tuning.enqueue_every_depth(study, tune)
    assert study.trials == []
