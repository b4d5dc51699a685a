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

from denoiselab import files, model_store, models, registry, tracking
from denoiselab.config import ModelConfig

ROOT = Path(__file__).resolve().parents[1]
# Each trained model subtracts a constant: the smaller, the closer to the clean images.
SHIFTS = {"cae": 0.0, "unet": 0.04, "unet_tuned": 0.08}


def shift_model(shift: float) -> tuple:
    config = ModelConfig(model="unet", base_filters=2, depth=2)
    model = models.build_model(config)
    for layer in model.layers:
        layer.set_weights([np.zeros_like(weight) for weight in layer.get_weights()])
    kernel, _ = model.get_layer("noise").get_weights()
    model.get_layer("noise").set_weights([kernel, np.array([shift], np.float32)])
    return model, config


def write_repo(root: Path) -> None:
    """Prepared and noisy data, params and three trained models, each logged to MLflow."""
    rng = np.random.default_rng(0)

    def images(names, shape):
        return {name: rng.uniform(0.3, 0.7, (*shape, 1)).astype(np.float32) for name in names}

    def noisy(clean):
        return {
            name: np.clip(image + rng.normal(0, 0.1, image.shape), 0, 1).astype(np.float32)
            for name, image in clean.items()
        }

    test, val = images(["a", "b"], (24, 20)), images(["c", "d"], (37, 29))
    patches = rng.uniform(0, 1, (4, 16, 16, 1)).astype(np.float32)
    for folder, arrays in (
        ("data/prepared", {"test": test, "val_images": val, "val": {"patches": patches}}),
        (
            "data/noisy",
            {"test": noisy(test), "val_images": noisy(val), "val": {"patches": patches}},
        ),
    ):
        for stem, content in arrays.items():
            files.save_arrays(root / folder / f"{stem}.npz", content)
    files.write_json(root / "data/prepared/manifest.json", {"data_hash": "tiny"})
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["evaluate"].update(classical=["tv"], tv_weights=[0.1], register_models=True)
    params["base"]["channels"] = 1
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    tracking.setup()
    for name, shift in SHIFTS.items():
        model, config = shift_model(shift)
        folder = root / "models" / name
        with tracking.model_run(name, "test", {}) as run:
            info = {"data_hash": "tiny", "mlflow_run_id": run.info.run_id}
            models.save_model_dir(model, config, folder, info)
            logged = tracking.log_denoiser_model(folder, 1)
        files.write_json(
            folder / "config.json",
            {**files.read_json(folder / "config.json"), "mlflow_model_uri": logged.model_uri},
        )


def test_evaluate_records_validation_psnr_and_crowns_the_best_on_validation(tmp_path, monkeypatch):
    import mlflow

    (tmp_path / ".dvc").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    write_repo(tmp_path)
    command = [
        sys.executable,
        str(ROOT / "stages/evaluate.py"),
        "--prepared",
        "data/prepared",
        "--noisy",
        "data/noisy",
        "--val-clean",
        "data/prepared/val_images.npz",
        "--val-noisy",
        "data/noisy/val_images.npz",
        "--models",
        "models",
        "--metrics",
        "reports/metrics.json",
        "--per-image",
        "reports/per_image.json",
        "--denoised",
        "data/denoised",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    summary = files.read_json(tmp_path / "reports/metrics.json")
    val_psnr = {name: summary[name]["val_psnr"] for name in model_store.TRAINED_MODELS}
    assert val_psnr["cae"] > val_psnr["unet"] > val_psnr["unet_tuned"]
    assert "val_psnr" not in summary["tv"] and "psnr" in summary["tv"]
    tags = registry.version_tags(registry.CHAMPION)
    assert tags["model_name"] == "cae"
    assert tags["val_psnr"] == f"{val_psnr['cae']:.4f}"
    assert tags["data_hash"] == "tiny" and tags["channels"] == "1"
    assert float(tags["psnr"]) == summary["cae"]["psnr"]
    run = mlflow.MlflowClient().get_run(tags["run_id"])
    assert run.data.metrics["val_image_psnr"] == pytest.approx(val_psnr["cae"], abs=1e-4)
    assert "champion now cae" in result.stdout
    mlflow.set_tracking_uri(None)
