"""``python -m denoiselab.screen``: a setting trained briefly and scored on the validation images
of both datasets at every sweep level, reproducible from its seed."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from denoiselab import config, files, noise, screen
from denoiselab.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
LEVELS = {"gray": (0.05, 0.2), "colour": (0.1,)}
CHANNELS = {"gray": 1, "colour": 3}
# A tiny network on tiny crops, so that a screen takes seconds.
TINY = ["base_filters=2", "crop_size=16", "batch_size=2", "steps_per_execution=1"]


def write_data(root: Path) -> None:
    """Both datasets as the prepare and add_noise stages leave them, at a few levels, with
    smooth images (a ramp) so that denoising them is learnable."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0.2, 0.8, 24, dtype=np.float32)
    for kind, levels in LEVELS.items():
        data = root / "data" / kind
        shape = (24, 24, CHANNELS[kind])
        image = np.broadcast_to(ramp[:, None, None], shape).copy()
        val = {"c": image, "d": image[::-1].copy()}
        test = {"a": image.T.copy() if kind == "gray" else image}
        patches = rng.uniform(0.2, 0.8, (6, 24, 24, 1)).astype(np.float32)
        files.save_arrays(data / "prepared/train.npz", {"patches": patches})
        files.save_arrays(data / "prepared/val_images.npz", val)
        files.save_arrays(data / "prepared/test.npz", test)
        files.write_json(
            data / "prepared/manifest.json", {"data_hash": f"tiny-{kind}", "channels": shape[2]}
        )
        for level in levels:
            folder = data / "noisy" / noise.LEVELS_FOLDER / noise.level_key(level)
            files.save_arrays(folder / "val_images.npz", noise.noisy_images(val, level, 0))
            files.save_arrays(folder / "test.npz", noise.noisy_images(test, level, 0))
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["add_noise"]["sweep"] = {kind: list(levels) for kind, levels in LEVELS.items()}
    (root / "params.yaml").write_text(yaml.safe_dump(raw))


@pytest.fixture
def project(tmp_path) -> Path:
    write_data(tmp_path)
    return tmp_path


def params_of(root: Path) -> config.Params:
    return config.load_params(root / "params.yaml")


def test_a_screen_scores_every_level_of_both_kinds_and_each_seed_reproduces(project):
    params = params_of(project)
    overrides = screen.parse_overrides(TINY)
    report = screen.run(params, overrides, [0, 1, 0], 4, project / "data", ["gray", "colour"])
    runs = report["runs"]
    assert [run["seed"] for run in runs] == [0, 1, 0]
    for run in runs:
        assert list(run["scores"]) == ["gray", "colour"]
        assert list(run["scores"]["gray"]) == ["0.05", "0.2"]
        assert list(run["scores"]["colour"]) == ["0.1"]
        for levels in run["scores"].values():
            for row in levels.values():
                assert math.isfinite(row["psnr"]) and 0 <= row["ssim"] <= 1
    # The same seed trains the same model; another seed draws other weights and patches.
    assert runs[0]["scores"] == runs[2]["scores"]
    assert runs[0]["scores"] != runs[1]["scores"]
    assert report["train"]["base_filters"] == 2
    assert report["denoise"]["self_ensemble"] == params.denoise.self_ensemble


def test_the_screened_config_is_the_tuned_u_nets_with_the_settings_set(project):
    params = params_of(project)
    overrides = screen.parse_overrides(["loss_level_power=0.5", "denoise.level_exponent=1.1"])
    trained = screen.screen_config(params, overrides.train, 100)
    tune = params.tune_unet
    low, high = tune.search.learning_rate
    assert trained.loss_level_power == 0.5
    assert trained.steps_per_epoch == 100 and trained.epochs == 1
    assert trained.learning_rate == pytest.approx(math.sqrt(low * high))
    assert trained.base_filters == tune.search.base_filters[0]
    assert trained.noise_map == tune.train.noise_map
    settings = screen.screen_settings(params, overrides.denoise)
    assert settings.level_exponent == 1.1
    assert settings.chroma_gain == params.denoise.chroma_gain


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["loss_level_power"], "--set 'loss_level_power': expected KEY=VALUE"),
        (["no_such_key=1"], "--set: unknown key no_such_key"),
        (["loss_level_power=5"], "--set: loss_level_power"),
        (["denoise.bogus=1"], "--set denoise.bogus: unknown denoise setting"),
        (["denoise.self_ensemble=3"], "denoise.self_ensemble: must be one of"),
    ],
)
def test_a_bad_setting_is_refused_in_one_line_naming_it(project, pairs, message):
    params = params_of(project)
    with pytest.raises(UserError) as error:
        overrides = screen.parse_overrides(pairs)
        screen.screen_config(params, overrides.train, 10)
        screen.screen_settings(params, overrides.denoise)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_the_command_writes_its_report_and_refuses_a_bad_key(project):
    out = project / "reports/screen.json"
    args = [sys.executable, "-m", "denoiselab.screen", "--steps", "2", "--seeds", "3"]
    done = subprocess.run(
        [*args, "--kinds", "gray", "--out", str(out), "--set", *TINY],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert [run["seed"] for run in report["runs"]] == [3]
    assert list(report["runs"][0]["scores"]) == ["gray"]
    assert "seed 3" in done.stdout and "gray" in done.stdout
    refused = subprocess.run(
        [*args, "--set", "no_such_key=1"], cwd=project, capture_output=True, text=True, timeout=600
    )
    assert refused.returncode != 0
    assert "unknown key no_such_key" in refused.stderr
    assert "Traceback" not in refused.stderr
