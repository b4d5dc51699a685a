"""DVC stage train (train@cae, train@unet, train@unet_rgb): train one model from its params
section (the shared ``train`` with the section's changes) on its dataset (gray or colour),
tracked in MLflow."""

import argparse
from pathlib import Path

from denoiselab import runner, tracking
from denoiselab.config import load_params
from denoiselab.errors import stage_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--section", required=True, help="its params section, e.g. train_unet")
    parser.add_argument(
        "--name", required=True, help="MLflow run name, e.g. cae, unet or unet_rgb"
    )
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--noisy", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--history", type=Path, required=True)
    args = parser.parse_args()

    params = load_params(args.params)
    config = params.model_section(args.section)
    tracking.check_store()
    data = runner.load_training_data(args.prepared, args.noisy)
    runner.train_tracked(
        args.name,
        args.section,
        config,
        params.base,
        data,
        args.model_dir,
        args.history,
    )


if __name__ == "__main__":
    stage_main(main)
