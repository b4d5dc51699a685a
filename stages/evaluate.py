"""DVC stage evaluate: every model and classical baseline on the whole noisy test images."""

import argparse
import logging
from pathlib import Path

from denoiselab import classical, denoise, evaluation, files, registry, tracking
from denoiselab.config import load_params
from denoiselab.errors import stage_main

log = logging.getLogger("evaluate")
MODEL_NAMES = ("cae", "unet", "unet_tuned")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--noisy", type=Path, required=True)
    parser.add_argument(
        "--models", type=Path, required=True, help="folder holding one folder per model"
    )
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--per-image", type=Path, required=True)
    parser.add_argument("--denoised", type=Path, required=True)
    args = parser.parse_args()

    params = load_params(args.params)
    tracking.check_store()
    sigma = params.base.noise_sigma
    clean = files.load_arrays(args.prepared / "test.npz")
    noisy = files.load_arrays(args.noisy / "test.npz")
    tracking.setup()

    results, outputs, settings = {}, {}, {}
    results["noisy"], outputs["noisy"] = evaluation.score_denoiser(
        lambda image: image, clean, noisy
    )
    run_ids, model_uris = {}, {}
    for name in MODEL_NAMES:
        info = files.read_json(args.models / name / "config.json")
        run_ids[name] = info["mlflow_run_id"]
        model_uris[name] = info["mlflow_model_uri"]
        # The same loader as `denoiselab denoise`, so scores and timings are what users get.
        denoiser = denoise.load_denoiser(denoise.ModelSource(str(args.models / name), False))
        results[name], outputs[name] = evaluation.score_denoiser(
            evaluation.model_denoiser(denoiser.model, denoiser.depth), clean, noisy
        )
        print(
            f"{name}: PSNR {results[name]['psnr']:.2f} dB, SSIM {results[name]['ssim']:.4f}",
            flush=True,
        )

    val_clean = files.load_arrays(args.prepared / "val.npz")["patches"][
        : params.evaluate.val_patches
    ]
    val_noisy = files.load_arrays(args.noisy / "val.npz")["patches"][: params.evaluate.val_patches]
    for method in params.evaluate.classical:
        grid = classical.param_grid(method, params.evaluate)
        chosen, val_psnr = classical.select_params(method, grid, val_clean, val_noisy, sigma)
        settings[method] = {"params": chosen, "val_psnr": val_psnr}
        results[method], outputs[method] = evaluation.score_denoiser(
            evaluation.classical_denoiser(method, sigma, chosen), clean, noisy
        )
        print(
            f"{method} {chosen}: PSNR {results[method]['psnr']:.2f} dB, "
            f"SSIM {results[method]['ssim']:.4f}, "
            f"{results[method]['seconds_per_megapixel']:.2f} s/MP",
            flush=True,
        )

    summary = {name: evaluation.summary_row(scores) for name, scores in results.items()}
    per_image = {name: scores["per_image"] for name, scores in results.items()}
    files.write_json(args.metrics, summary)
    files.write_json(args.per_image, {"per_image": per_image, "classical_params": settings})
    for name, images in outputs.items():
        files.save_arrays(args.denoised / f"{name}.npz", images)

    for name in MODEL_NAMES:
        registry.log_test_scores(run_ids[name], results[name])
    if params.evaluate.register_models:
        champion = registry.register_and_crown(
            run_ids, model_uris, {name: results[name] for name in MODEL_NAMES}
        )
        print(f"registered {', '.join(MODEL_NAMES)}; champion: {champion}")


if __name__ == "__main__":
    stage_main(main)
