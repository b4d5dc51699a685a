"""DVC stage evaluate: every model on the whole noisy test images of both datasets, at the
reference level (the first comparison table, grayscale) and at every level of the sweep, beside
the classical baselines the classical stage scored on the same pixels; each model's mean PSNR
over the sweep's levels on the whole validation images, which alone chooses the champions."""

import argparse
from pathlib import Path

from denoiselab import catalogue, denoise, evaluation, files, noise, scoring, tracking
from denoiselab.config import load_params, to_dict
from denoiselab.errors import stage_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument(
        "--data", type=Path, required=True, help="folder of <dataset>/prepared and <dataset>/noisy"
    )
    parser.add_argument(
        "--models", type=Path, required=True, help="folder holding one folder per model"
    )
    parser.add_argument(
        "--classical", type=Path, required=True, help="folder of <dataset>.json classical scores"
    )
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--per-image", type=Path, required=True)
    parser.add_argument("--denoised", type=Path, required=True)
    args = parser.parse_args()

    params = load_params(args.params)
    tracking.check_store()
    sigma = params.base.noise_sigma
    sweeps = {
        dataset: getattr(params.add_noise.sweep, dataset) for dataset in catalogue.DATASET_CHANNELS
    }
    datasets = {
        dataset: scoring.load_dataset(args.data / dataset, tuple(sorted({*levels, sigma})))
        for dataset, levels in sweeps.items()
    }
    baselines = evaluation.read_baselines(args.classical, datasets)

    settings = denoise.Settings.from_mapping(to_dict(params.denoise))
    result = evaluation.evaluate(
        datasets,
        baselines,
        args.models,
        sweeps,
        table_level=noise.level_key(sigma),
        register=params.evaluate.register_models,
        settings=settings,
    )

    files.write_json(args.metrics, result.metrics)
    files.write_json(args.per_image, result.per_image)
    for name, arrays in result.denoised.items():
        files.save_arrays(args.denoised / f"{name}.npz", arrays)
    evaluation.log_to_runs(result, args.metrics, settings)
    print(evaluation.format_sweep(result.metrics["sweep"]))


if __name__ == "__main__":
    stage_main(main)
