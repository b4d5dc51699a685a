"""DVC stage classical (one per dataset, gray and colour): at every noise level of the dataset's
sweep and base.noise_sigma, each classical method's setting chosen on the whole validation
images at that level, then scored on the whole test images at that level."""

import argparse
from pathlib import Path

from denoiselab import classical, files, noise
from denoiselab.config import load_params
from denoiselab.errors import stage_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--dataset", required=True, choices=["gray", "colour"])
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--noisy", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    params = load_params(args.params)
    # The whole validation and test images only (dvc.yaml lists these files, not the training
    # patches beside them), so an edit of the training data alone never reruns BM3D.
    clean_val = files.load_arrays(args.prepared / "val_images.npz")
    clean_test = files.load_arrays(args.prepared / "test.npz")
    levels = sorted({*getattr(params.add_noise.sweep, args.dataset), params.base.noise_sigma})
    report = {
        "dataset": args.dataset,
        "channels": int(next(iter({**clean_val, **clean_test}.values())).shape[-1]),
        "images_sha256": {},
        "levels": {},
    }
    for level in levels:
        key = noise.level_key(level)
        folder = args.noisy / noise.LEVELS_FOLDER / key
        noisy_val = files.load_arrays(folder / "val_images.npz")
        noisy_test = files.load_arrays(folder / "test.npz")
        report["images_sha256"][key] = classical.images_digest(
            clean_val, noisy_val, clean_test, noisy_test
        )
        report["levels"][key] = classical.score_level(
            params.classical,
            level,
            clean_val=clean_val,
            noisy_val=noisy_val,
            clean_test=clean_test,
            noisy_test=noisy_test,
        )
    files.write_json(args.out, report)
    print(f"{args.dataset}: wrote {args.out}")


if __name__ == "__main__":
    stage_main(main)
