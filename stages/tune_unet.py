"""DVC stage tune_unet: Optuna search over the U-Net, then the best configuration trained to
completion as the tuned U-Net (warm-started from the best trial).

The study lives in ``tune_unet.storage`` (default: optuna.db at the repository root), named
``tune_unet.study_name`` plus a fingerprint of the search, data and code, so ``denoiselab
tune-worker`` processes can run trials of the same search while this stage runs. The stage
runs trials until the study holds ``tune_unet.n_trials`` finished ones and takes the best.
"""

import argparse
from pathlib import Path

from denoiselab import files, paths, runner, tracking, tuning
from denoiselab.config import flat_dict, load_params
from denoiselab.errors import stage_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--noisy", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--history", type=Path, required=True)
    parser.add_argument("--best", type=Path, required=True, help="JSON file for the best params")
    args = parser.parse_args()

    params = load_params(args.params)
    tracking.check_store()
    tune, base = params.tune_unet, params.base
    data = runner.load_training_data(args.prepared, args.noisy)
    data["val_images"] = tuning.load_validation_images(args.prepared, args.noisy)
    data_hash = data["manifest"]["data_hash"]
    root = paths.repo_root()
    study = tuning.study_for(tune, base, data_hash, root, seed=base.seed)
    folder = tuning.weights_folder(root, study.study_name)
    tracking.setup()
    search_params = flat_dict(tune, "tune")
    search_params.update({"data_hash": data_hash, "optuna.study": study.study_name})
    with tracking.model_run("unet_tune", "tune_unet", search_params) as parent:
        tuning.run_trials(study, tune, base, data, parent.info.run_id, folder)
        summary = tuning.best_summary(study)
        tracking.log_metrics({"best_val_psnr": summary["best_val_psnr"]})
        tracking.log_params({f"best.{key}": value for key, value in summary["params"].items()})
    print(f"best trial {summary['best_trial']}: {summary['params']}", flush=True)

    patch_size = data["clean_train"].shape[1]
    config = tuning.budgeted_config(
        summary["params"],
        tune,
        data["manifest"]["channels"],
        patch_size,
        tune.final_epochs,
        tune.final_budget_s,
    )
    initial = tuning.trial_weights(study.best_trial, folder) if tune.warm_start else None
    info = runner.train_tracked(
        "unet_tuned",
        "tune_unet",
        config,
        base,
        data,
        args.model_dir,
        args.history,
        extra_params={"warm_start": initial is not None, "best_trial": summary["best_trial"]},
        initial_weights=initial,
        extra_tags={"tune_parent_run_id": parent.info.run_id, "optuna.study": study.study_name},
    )
    summary["final_config"] = info["train_config"]
    files.write_json(args.best, summary)


if __name__ == "__main__":
    stage_main(main)
