"""The evaluate stage on tiny synthetic data: validation PSNR per model, through the loader
and denoising `denoiselab denoise` uses, in the metrics and MLflow; the champion is the best
on validation, whatever the test scores say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from denoiselab import files, model_store, models, noise, registry, tracking
from denoiselab.config import ModelConfig

ROOT = Path(__file__).resolve().parents[1]
# Each trained model subtracts a constant: the smaller, the closer to the clean images.
SHIFTS = {"cae": 0.0, "unet": 0.04, "unet_tuned": 0.08, "unet_rgb": 0.02}


def shift_model(shift: float, channels: int = 1) -> tuple:
    config = ModelConfig(model="unet", base_filters=2, depth=2, channels=channels)
    model = models.build_model(config)
    for layer in model.layers:
        layer.set_weights([np.zeros_like(weight) for weight in layer.get_weights()])
    kernel, _ = model.get_layer("noise").get_weights()
    model.get_layer("noise").set_weights([kernel, np.full(channels, shift, np.float32)])
    return model, config


LEVELS = {"gray": (0.05, 0.1, 0.2), "colour": (0.1, 0.2)}
CHANNELS = {"gray": 1, "colour": 3}


def write_repo(root: Path) -> None:
    """Both datasets with noise at every level, classical reports, params and four trained
    models (three gray, one colour), each logged to MLflow."""
    rng = np.random.default_rng(0)
    for mode, levels in LEVELS.items():
        shape = (1, CHANNELS[mode])

        def images(names, size, shape=shape):
            return {
                name: rng.uniform(0.3, 0.7, (*size, shape[1])).astype(np.float32) for name in names
            }

        test, val = images(["a", "b"], (24, 20)), images(["c", "d"], (37, 29))
        data = root / "data" / mode
        files.save_arrays(data / "prepared/test.npz", test)
        files.save_arrays(data / "prepared/val_images.npz", val)
        files.write_json(
            data / "prepared/manifest.json", {"data_hash": f"tiny-{mode}", "channels": shape[1]}
        )
        report = {"mode": mode, "data_hash": f"tiny-{mode}", "levels": {}}
        for level in levels:
            folder = data / "noisy" / noise.LEVELS_FOLDER / noise.level_key(level)
            files.save_arrays(folder / "test.npz", noise.noisy_images(test, level, 0))
            files.save_arrays(folder / "val_images.npz", noise.noisy_images(val, level, 0))
            row = {"psnr": 30.0 - 10 * level, "ssim": 0.8, "seconds_per_megapixel": 1.0}
            row.update(per_image={"a": row.copy(), "b": row.copy()})
            row.update(params={"sigma_scale": 1.0}, val_psnr=None)
            report["levels"][noise.level_key(level)] = {"bm3d": row}
        files.write_json(root / f"reports/classical/{mode}.json", report)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["add_noise"]["sweep"] = {mode: list(levels) for mode, levels in LEVELS.items()}
    params["evaluate"]["register_models"] = True
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    tracking.setup()
    for name, shift in SHIFTS.items():
        mode = model_store.MODEL_MODES[name]
        model, config = shift_model(shift, CHANNELS[mode])
        folder = root / "models" / name
        with tracking.model_run(name, "test", {}) as run:
            info = {"data_hash": f"tiny-{mode}", "mlflow_run_id": run.info.run_id}
            models.save_model_dir(model, config, folder, info)
            logged = tracking.log_denoiser_model(folder, CHANNELS[mode])
        files.write_json(
            folder / "config.json",
            {**files.read_json(folder / "config.json"), "mlflow_model_uri": logged.model_uri},
        )


def run_evaluate(root: Path) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        str(ROOT / "stages/evaluate.py"),
        *["--data", "data", "--models", "models", "--classical", "reports/classical"],
        *["--metrics", "reports/metrics.json", "--per-image", "reports/per_image.json"],
        *["--denoised", "data/denoised"],
    ]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture
def repo(tmp_path, monkeypatch):
    import mlflow

    (tmp_path / ".dvc").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    write_repo(tmp_path)
    yield tmp_path
    mlflow.set_tracking_uri(None)


def test_evaluate_chooses_on_validation_across_the_levels_and_crowns_each_mode(repo):
    import mlflow

    result = run_evaluate(repo)
    summary = files.read_json(repo / "reports/metrics.json")
    gray_val = summary["sweep"]["validation"]["gray"]
    colour_val = summary["sweep"]["validation"]["colour"]
    assert gray_val["cae"] > gray_val["unet"] > gray_val["unet_tuned"]
    tags = registry.version_tags(registry.CHAMPION)
    assert tags["model_name"] == "cae"
    assert tags["champion.val_psnr"] == f"{gray_val['cae']:.4f}"
    assert tags["champion.val_levels"] == "0.05,0.1,0.2"
    assert tags["champion.data_hash"] == "tiny-gray" and tags["channels"] == "1"
    # The test scores tagged are the seed's level, as in the first table.
    assert float(tags["psnr"]) == summary["cae"]["psnr"]
    # Every model competes for the colour champion on the colour validation images: the gray
    # CAE, run on each channel as `denoiselab denoise` runs it, beats the colour model there.
    assert colour_val["cae"] > colour_val["unet_rgb"] > colour_val["unet"]
    rgb_tags = registry.version_tags(registry.CHAMPION_RGB)
    assert rgb_tags["model_name"] == "cae" and rgb_tags["channels"] == "1"
    assert rgb_tags["champion_rgb.val_levels"] == "0.1,0.2"
    assert rgb_tags["champion_rgb.data_hash"] == "tiny-colour"
    assert rgb_tags["champion_rgb.val_psnr"] == f"{colour_val['cae']:.4f}"
    assert registry.version_tags("unet_rgb")["champion_rgb.val_psnr"] == (
        f"{colour_val['unet_rgb']:.4f}"
    )
    run = mlflow.MlflowClient().get_run(tags["run_id"])
    assert run.data.metrics["val_image_psnr"] == pytest.approx(gray_val["cae"], abs=1e-4)
    assert run.data.metrics["sweep_gray_psnr_0.2"] == pytest.approx(
        summary["sweep"]["gray"]["0.2"]["cae"]["psnr"], abs=1e-4
    )
    assert run.data.metrics["sweep_colour_psnr_0.2"] == pytest.approx(
        summary["sweep"]["colour"]["0.2"]["cae"]["psnr"], abs=1e-4
    )
    assert "champion now cae" in result.stdout
    assert "champion_rgb now cae" in result.stdout


def test_the_sweep_holds_every_method_per_mode_and_level_with_the_champion(repo):
    run_evaluate(repo)
    summary = files.read_json(repo / "reports/metrics.json")
    # The first table: the seed's level, gray models and the classical baselines.
    assert {"noisy", "cae", "unet", "unet_tuned", "bm3d"} <= set(summary)
    assert "unet_rgb" not in summary
    sweep = summary["sweep"]
    assert sweep["champions"] == {"gray": "cae", "colour": "cae"}
    for mode, levels in LEVELS.items():
        assert list(sweep[mode]) == [noise.level_key(level) for level in levels]
        for level in levels:
            rows = sweep[mode][noise.level_key(level)]
            assert set(rows["champion"]) == {"psnr", "ssim"}
            champion = sweep["champions"][mode]
            assert rows["champion"] == rows[champion]
            assert rows["bm3d"]["psnr"] == pytest.approx(30.0 - 10 * level)
            # Scores of the stored noisy pixels: a model that subtracts 0.12 loses to one
            # that subtracts nothing at every level.
            if mode == "gray":
                assert rows["cae"]["psnr"] > rows["unet_tuned"]["psnr"]
    # The noisy input's PSNR falls as the noise rises.
    noisy = [sweep["gray"][key]["noisy"]["psnr"] for key in ("0.05", "0.1", "0.2")]
    assert noisy == sorted(noisy, reverse=True)
    per_image = files.read_json(repo / "reports/per_image.json")
    assert set(per_image["sweep"]["colour"]["0.2"]["unet_rgb"]) == {"a", "b"}


def test_a_model_trained_on_other_data_is_refused_naming_its_folder(repo):
    config = files.read_json(repo / "models/unet_rgb/config.json")
    files.write_json(repo / "models/unet_rgb/config.json", {**config, "data_hash": "tiny-gray"})
    command = [sys.executable, str(ROOT / "stages/evaluate.py")]
    command += ["--data", "data", "--models", "models", "--classical", "reports/classical"]
    command += ["--metrics", "m.json", "--per-image", "p.json", "--denoised", "d"]
    result = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "models/unet_rgb: trained on data tiny-gray" in result.stderr
    assert not (repo / "m.json").exists()
