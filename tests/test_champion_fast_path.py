"""`--model champion` uses the workspace's copy of the registered model when it is the same run,
so the default denoise needs neither MLflow nor TensorFlow."""

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from denoiselab import denoise, models, registry, tracking
from denoiselab.config import ModelConfig


def test_champion_resolves_to_the_local_folder_of_its_run(tmp_path, monkeypatch):
    import mlflow

    (tmp_path / ".dvc").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    tracking.setup()
    config = ModelConfig(model="unet", base_filters=4, depth=2)
    model = models.build_model(config)
    run_ids = {}
    for name in ("unet", "unet_tuned"):
        with mlflow.start_run(run_name=name) as run:
            info = tracking.log_keras_model(model, 1)
        run_ids[name] = run.info.run_id
        extra = {"mlflow_run_id": run.info.run_id, "mlflow_model_uri": info.model_uri}
        models.save_model_dir(model, config, tmp_path / "models" / name, extra)
    uris = {
        name: json.loads((tmp_path / f"models/{name}/config.json").read_text())["mlflow_model_uri"]
        for name in run_ids
    }
    scores = {"unet": {"psnr": 30.0, "ssim": 0.8}, "unet_tuned": {"psnr": 31.0, "ssim": 0.85}}
    assert registry.register_and_crown(run_ids, uris, scores) == "unet_tuned"

    aliases = denoise.registered_aliases()
    assert aliases["champion"] == run_ids["unet_tuned"]
    source = denoise.locate_model("champion", tmp_path, aliases)
    assert source == denoise.ModelSource(str(tmp_path / "models/unet_tuned"), is_mlflow=False)
    assert denoise.runs_without_keras(source)

    # A champion whose run is not in the workspace loads from the registry instead.
    (tmp_path / "models/unet_tuned/config.json").write_text(json.dumps({"mlflow_run_id": "x"}))
    source = denoise.locate_model("champion", tmp_path, aliases)
    assert source.location == "models:/denoiselab@champion" and source.is_mlflow


def test_denoise_with_an_onnx_folder_never_imports_tensorflow(tmp_path):
    config = ModelConfig(model="unet", base_filters=4, depth=2)
    models.save_model_dir(models.build_model(config), config, tmp_path / "model", {})
    Image.fromarray(np.full((20, 30), 128, np.uint8)).save(tmp_path / "in.png")
    probe = (
        "import sys; from denoiselab import cli; code = cli.main(['denoise', sys.argv[1], '-o', "
        "sys.argv[2], '--model', sys.argv[3]]); "
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'; sys.exit(code)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "in.png"), str(tmp_path / "out"),
         str(tmp_path / "model")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "out/in.png").size == (30, 20)
