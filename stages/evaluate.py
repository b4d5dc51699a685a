"""DVC stage evaluate: every model and classical baseline on the whole noisy test images;
each model's PSNR on the whole validation images, which alone chooses the champion."""

import argparse
import logging
from pathlib import Path

from denoiselab import classical, evaluation, files, model_store, registry, tracking
from denoiselab.config import load_params
from denoiselab.errors import UserError, stage_main

log = logging.getLogger("evaluate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--noisy", type=Path, required=True)
    parser.add_argument(
        "--val-clean", type=Path, required=True, help="whole clean validation images (.npz)"
    )
    parser.add_argument("--val-noisy", type=Path, required=True, help="their noisy copies (.npz)")
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
    data_hash = files.read_json(args.prepared / "manifest.json")["data_hash"]
    clean = files.load_arrays(args.prepared / "test.npz")
    noisy = files.load_arrays(args.noisy / "test.npz")
    val_clean = files.load_arrays(args.val_clean)
    val_noisy = files.load_arrays(args.val_noisy)
    tracking.setup()

    results, outputs, settings, val_psnr, infos = {}, {}, {}, {}, {}
    results["noisy"], outputs["noisy"] = evaluation.score_denoiser(
        lambda image: image, clean, noisy
    )
    for name in model_store.TRAINED_MODELS:
        folder = args.models / name
        infos[name] = files.read_json(folder / model_store.CONFIG_FILE)
        if infos[name].get("data_hash") != data_hash:
            raise UserError(
                f"{folder}: trained on data {infos[name].get('data_hash')}, not on "
                f"{args.prepared} ({data_hash}); run `dvc repro`"
            )
        # The same loader and denoising as `denoiselab denoise`, so scores are what users get.
        denoiser = model_store.load_folder(folder)
        run = evaluation.model_denoiser(denoiser)
        results[name], outputs[name] = evaluation.score_denoiser(run, clean, noisy)
        val_psnr[name] = evaluation.score_denoiser(run, val_clean, val_noisy)[0]["psnr"]
        print(
            f"{name}: validation PSNR {val_psnr[name]:.2f} dB; test PSNR "
            f"{results[name]['psnr']:.2f} dB, SSIM {results[name]['ssim']:.4f}",
            flush=True,
        )

    val_patches = params.evaluate.val_patches
    patches_clean = files.load_arrays(args.prepared / "val.npz")["patches"][:val_patches]
    patches_noisy = files.load_arrays(args.noisy / "val.npz")["patches"][:val_patches]
    for method in params.evaluate.classical:
        grid = classical.param_grid(method, params.evaluate)
        chosen, method_val_psnr = classical.select_params(
            method, grid, patches_clean, patches_noisy, sigma
        )
        settings[method] = {"params": chosen, "val_psnr": method_val_psnr}
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
    for name, value in val_psnr.items():
        summary[name]["val_psnr"] = round(value, 4)
    per_image = {name: scores["per_image"] for name, scores in results.items()}
    files.write_json(args.metrics, summary)
    files.write_json(args.per_image, {"per_image": per_image, "classical_params": settings})
    for name, images in outputs.items():
        files.save_arrays(args.denoised / f"{name}.npz", images)

    for name in model_store.TRAINED_MODELS:
        tracking.log_scores(infos[name]["mlflow_run_id"], results[name], val_psnr[name])
    if params.evaluate.register_models:
        candidates = [
            registry.Candidate(
                name=name,
                run_id=infos[name]["mlflow_run_id"],
                model_uri=infos[name]["mlflow_model_uri"],
                val_psnr=val_psnr[name],
                test_scores=results[name],
                data_hash=data_hash,
                channels=params.base.channels,
            )
            for name in model_store.TRAINED_MODELS
        ]
        for crowning in registry.register_and_crown(candidates):
            verb = "now" if crowning.changed else "stays"
            print(
                f"{crowning.alias} {verb} {crowning.model_name} (version {crowning.version}, "
                f"validation PSNR {crowning.val_psnr:.2f} dB): {crowning.reason}"
            )


if __name__ == "__main__":
    stage_main(main)
