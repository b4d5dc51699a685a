"""`--model champion` uses the workspace's copy of the registered model when it is the same run,
so the default denoise needs neither MLflow nor TensorFlow."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from denoiselab import model_store, models, registry, selection, serving, tracking
from denoiselab.config import ModelConfig
from denoiselab.errors import UserError


def test_champion_resolves_to_the_local_folder_of_its_run(tmp_path, repo_root):
    import mlflow

    tracking.setup()
    config = ModelConfig(model="unet", base_filters=4, depth=2)
    model = models.build_model(config)
    candidates = []
    for name, val_psnr in (("unet", 30.0), ("unet_tuned", 31.0)):
        folder = tmp_path / "models" / name
        with mlflow.start_run(run_name=name) as run:
            models.save_model_dir(model, config, folder, {"mlflow_run_id": run.info.run_id})
            info = serving.log_denoiser_model(folder, 1)
        candidates.append(
            registry.Candidate(
                name=name,
                run_id=run.info.run_id,
                model_uri=info.model_uri,
                val_psnr=val_psnr,
                test_scores={"psnr": 40.0 - val_psnr, "ssim": 0.8},
                data_hash="data",
                channels=1,
                val_levels="0.1",
            )
        )
    [crowning] = registry.register_and_crown(candidates)
    assert crowning.model_name == "unet_tuned"

    aliases = registry.registered_aliases()
    assert aliases["champion"] == candidates[1].run_id
    source = selection.locate_model("champion", tmp_path, aliases)
    expected = selection.ModelSource(str(tmp_path / "models/unet_tuned"), is_mlflow=False)
    assert source == expected
    assert selection.runs_without_keras(source)

    # A champion whose run is not in the workspace loads from the registry instead.
    (tmp_path / "models/unet_tuned/config.json").write_text(json.dumps({"mlflow_run_id": "x"}))
    source = selection.locate_model("champion", tmp_path, aliases)
    assert source.location == "models:/denoiselab@champion" and source.is_mlflow


def test_champion_resolution_needs_no_mlflow_while_the_store_is_unchanged(tmp_path, monkeypatch):
    """The alias cache answers without importing MLflow; it was written by the registry."""
    (tmp_path / ".dvc").mkdir()
    store = tmp_path / "mlflow.db"
    store.write_bytes(b"not read while the cache is fresh")
    stat = store.stat()
    cache = {"store": [stat.st_mtime_ns, stat.st_size], "aliases": {"champion": "run-1"}}
    (tmp_path / f"mlflow.db{registry.ALIAS_CACHE_SUFFIX}").write_text(json.dumps(cache))
    probe = (
        "import sys; from denoiselab import registry; "
        "assert registry.registered_aliases() == {'champion': 'run-1'}; "
        "assert 'mlflow' not in sys.modules, 'mlflow was imported'"
    )
    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_denoise_with_an_onnx_folder_never_imports_tensorflow_or_pydantic(tmp_path):
    """One photo through an ONNX folder imports neither TensorFlow nor what only other
    commands need: pydantic (params checking), tqdm (the bar for several images) and
    urllib.request (a tracking server's health check), a quarter of a second together."""
    config = ModelConfig(model="unet", base_filters=4, depth=2, noise_map=True)
    models.save_model_dir(models.build_model(config), config, tmp_path / "model", {})
    Image.fromarray(np.full((20, 30), 128, np.uint8)).save(tmp_path / "in.png")
    probe = (
        "import sys; from denoiselab import cli; code = cli.main(['denoise', sys.argv[1], '-o', "
        "sys.argv[2], '--model', sys.argv[3]]); "
        "unwanted = {'tensorflow', 'pydantic', 'tqdm', 'urllib.request'} & set(sys.modules); "
        "assert not unwanted, f'imported {sorted(unwanted)}'; sys.exit(code)"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            probe,
            str(tmp_path / "in.png"),
            str(tmp_path / "out"),
            str(tmp_path / "model"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "out/in.png").size == (30, 20)


def test_a_malformed_onnx_folder_config_names_the_file_and_the_key(tmp_path):
    config = ModelConfig(model="unet", base_filters=4, depth=2)
    folder = tmp_path / "model"
    models.save_model_dir(models.build_model(config), config, folder, {})
    info = json.loads((folder / "config.json").read_text())
    info["model_config"]["depth"] = "two"
    (folder / "config.json").write_text(json.dumps(info))
    with pytest.raises(UserError, match=r"config\.json.*depth"):
        model_store.load_folder(folder)
