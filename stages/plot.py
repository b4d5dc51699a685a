"""DVC stage plot: loss, SSIM and sample comparison figures (the gray comparison at the
reference noise level) and PSNR against noise sigma, from the recorded data; each figure also
goes into every model's MLflow run."""

import argparse
from pathlib import Path

from denoiselab import catalogue, files, paths, plots, tracking
from denoiselab.config import load_params
from denoiselab.errors import UserError, stage_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument(
        "--history", type=Path, required=True, help="folder of <model>.json histories"
    )
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--denoised", type=Path, required=True)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    params = load_params(args.params)
    tracking.check_store()
    dpi = params.plot.dpi
    histories = {
        name: files.read_json(args.history / f"{name}.json") for name in catalogue.GRAY_MODELS
    }
    summary = files.read_json(args.metrics)
    if "sweep" not in summary:
        raise UserError(f'{args.metrics} has no noise sweep ("sweep"); run `dvc repro`')
    clean = files.load_arrays(args.prepared / "test.npz")
    columns = ["noisy", *catalogue.GRAY_MODELS]
    denoised = {name: files.load_arrays(args.denoised / f"{name}.npz") for name in columns}

    figures = {
        "loss_comparison.png": plots.loss_comparison(histories, dpi),
        "ssim_comparison.png": plots.ssim_comparison(summary, dpi),
        "sample_comparison.png": plots.sample_comparison(
            clean, denoised, columns, params.plot.n_samples, dpi
        ),
        "psnr_vs_sigma.png": plots.psnr_vs_sigma(summary["sweep"], dpi),
    }
    for filename, figure in figures.items():
        with files.atomic_path(args.out / filename) as temporary:
            figure.savefig(temporary, format="png", dpi=dpi, metadata={"Software": None})
        print(f"wrote {args.out / filename}")

    # Artifact files only: the store itself is left as the evaluate stage left it, so the
    # registry's alias cache it wrote stays fresh.
    tracking.setup()
    for name in catalogue.MODEL_NAMES:
        info = files.read_json(args.models / name / paths.MODEL_CONFIG_FILE)
        for filename in figures:
            tracking.log_artifact(args.out / filename, "figures", run_id=info["mlflow_run_id"])


if __name__ == "__main__":
    stage_main(main)
