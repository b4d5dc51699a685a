"""MLflow Model Registry: test scores on the model runs and the ``champion`` alias."""

from __future__ import annotations

REGISTERED_MODEL = "denoiselab"
CHAMPION = "champion"


def log_test_scores(run_id: str, scores: dict) -> None:
    """Final test PSNR/SSIM (and per image) on a model's own run, beside its training curves."""
    import mlflow

    client = mlflow.MlflowClient()
    metrics = {"psnr": scores["psnr"], "ssim": scores["ssim"]}
    metrics["seconds_per_megapixel"] = scores["seconds_per_megapixel"]
    for image, values in scores["per_image"].items():
        metrics[f"psnr_{image}"] = values["psnr"]
        metrics[f"ssim_{image}"] = values["ssim"]
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))


def register_and_crown(
    run_ids: dict[str, str], model_uris: dict[str, str], scores: dict[str, dict]
) -> str:
    """Registers each run's model as a version of one registered model and points ``champion``
    at the version with the best test PSNR. Returns the champion's model name."""
    import mlflow

    client = mlflow.MlflowClient()
    try:
        client.get_registered_model(REGISTERED_MODEL)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(
            REGISTERED_MODEL, description="denoiselab denoisers; alias champion = best test PSNR"
        )
    versions = {}
    existing = client.search_model_versions(f"name = '{REGISTERED_MODEL}'")
    for name, run_id in run_ids.items():
        match = [version for version in existing if version.run_id == run_id]
        if match:
            version = match[0]
        else:
            version = mlflow.register_model(model_uris[name], REGISTERED_MODEL)
        versions[name] = version.version
        for key, value in (
            ("model_name", name),
            ("psnr", f"{scores[name]['psnr']:.4f}"),
            ("ssim", f"{scores[name]['ssim']:.4f}"),
            ("run_id", run_id),
        ):
            client.set_model_version_tag(REGISTERED_MODEL, version.version, key, value)
        client.set_registered_model_alias(REGISTERED_MODEL, name, version.version)
    champion = max(scores, key=lambda name: scores[name]["psnr"])
    client.set_registered_model_alias(REGISTERED_MODEL, CHAMPION, versions[champion])
    return champion
