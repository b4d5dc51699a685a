"""DVC stage evaluate: every model on the whole noisy test images of its dataset, at the seed's
level (the first comparison table, grayscale) and at every level of the sweep, beside the
classical baselines the classical stage scored on the same pixels; each model's mean PSNR over
the sweep's levels on the whole validation images, which alone chooses the champions."""

import argparse
from pathlib import Path

from denoiselab import evaluation, files, model_store, noise, registry, tracking
from denoiselab.config import MODE_CHANNELS, load_params
from denoiselab.errors import UserError, stage_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument(
        "--data", type=Path, required=True, help="folder of <mode>/prepared and <mode>/noisy"
    )
    parser.add_argument(
        "--models", type=Path, required=True, help="folder holding one folder per model"
    )
    parser.add_argument(
        "--classical", type=Path, required=True, help="folder of <mode>.json classical scores"
    )
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--per-image", type=Path, required=True)
    parser.add_argument("--denoised", type=Path, required=True)
    args = parser.parse_args()

    params = load_params(args.params)
    tracking.check_store()
    sigma = params.base.noise_sigma
    table_level = noise.level_key(sigma)
    sweeps = {mode: getattr(params.add_noise.sweep, mode) for mode in MODE_CHANNELS}
    datasets = {
        mode: evaluation.load_dataset(args.data / mode, tuple(sorted({*levels, sigma})))
        for mode, levels in sweeps.items()
    }
    baselines = {mode: files.read_json(args.classical / f"{mode}.json") for mode in MODE_CHANNELS}
    for mode, report in baselines.items():
        if report.get("data_hash") != datasets[mode].data_hash:
            raise UserError(
                f"{args.classical / f'{mode}.json'}: scored on other data than "
                f"{args.data / mode}; run `dvc repro`"
            )
    tracking.setup()

    infos, scores, outputs, val_psnr = {}, {}, {}, {}
    for mode, dataset in datasets.items():
        scores[f"noisy/{mode}"], outputs[f"noisy/{mode}"], _ = evaluation.score_levels(
            lambda image: image, dataset, ()
        )
    # Every model on both kinds of images, as `denoiselab denoise` would run it there: each
    # competes for both champions on their validation images.
    for name, own_mode in model_store.MODEL_MODES.items():
        folder = args.models / name
        infos[name] = files.read_json(folder / model_store.CONFIG_FILE)
        if infos[name].get("data_hash") != datasets[own_mode].data_hash:
            raise UserError(
                f"{folder}: trained on data {infos[name].get('data_hash')}, not on "
                f"{args.data / own_mode} ({datasets[own_mode].data_hash}); run `dvc repro`"
            )
        # The same loader and denoising as `denoiselab denoise`, so scores are what users get.
        run = evaluation.model_denoiser(model_store.load_folder(folder))
        for mode, dataset in datasets.items():
            key = f"{name}/{mode}"
            scores[key], outputs[key], val_psnr[key] = evaluation.score_levels(
                run, dataset, sweeps[mode]
            )
            levels = ", ".join(f"{level} {row['psnr']:.2f}" for level, row in scores[key].items())
            print(
                f"{name} on {mode} images: validation PSNR {val_psnr[key]:.2f} dB (mean over "
                f"the sweep); test PSNR by sigma: {levels}",
                flush=True,
            )

    if params.evaluate.register_models:
        candidates = [
            registry.Candidate(
                name=name,
                run_id=infos[name]["mlflow_run_id"],
                model_uri=infos[name]["mlflow_model_uri"],
                val_psnr=val_psnr[f"{name}/{mode}"],
                test_scores=scores[f"{name}/{own_mode}"][table_level],
                data_hash=dataset.data_hash,
                channels=datasets[own_mode].channels,
                val_levels=evaluation.levels_tag(sweeps[mode]),
                alias=registry.champion_alias(dataset.channels),
            )
            for name, own_mode in model_store.MODEL_MODES.items()
            for mode, dataset in datasets.items()
        ]
        for crowning in registry.register_and_crown(candidates):
            verb = "now" if crowning.changed else "stays"
            print(
                f"{crowning.alias} {verb} {crowning.model_name} (version {crowning.version}, "
                f"validation PSNR {crowning.val_psnr:.2f} dB): {crowning.reason}"
            )

    # The champion row of the sweep is the model `denoiselab denoise` uses for each mode.
    champions = evaluation.champions(tracking.repo_root(), infos)
    for mode, champion in champions.items():
        if champion.source is not None:
            run = evaluation.model_denoiser(model_store.load_denoiser(champion.source))
            key = f"{champion.label}/{mode}"
            scores[key], _, val_psnr[key] = evaluation.score_levels(
                run, datasets[mode], sweeps[mode]
            )

    metrics, per_image = evaluation.reports(
        scores, baselines, champions, val_psnr, sweeps, table_level
    )
    files.write_json(args.metrics, metrics)
    files.write_json(args.per_image, per_image)
    files.save_arrays(args.denoised / "noisy.npz", outputs["noisy/gray"][table_level])
    for name in model_store.GRAY_MODELS:
        files.save_arrays(args.denoised / f"{name}.npz", outputs[f"{name}/gray"][table_level])

    for name, own_mode in model_store.MODEL_MODES.items():
        tracking.log_scores(
            infos[name]["mlflow_run_id"],
            scores[f"{name}/{own_mode}"][table_level],
            val_psnr[f"{name}/{own_mode}"],
            sweep={mode: scores[f"{name}/{mode}"] for mode in datasets},
        )
        tracking.log_artifact(args.metrics, "evaluation", run_id=infos[name]["mlflow_run_id"])
    print(evaluation.format_sweep(metrics["sweep"]))


if __name__ == "__main__":
    stage_main(main)
