"""DVC stage add_noise (one per dataset, gray and colour): seeded, clipped Gaussian noise on the
train/val patches at base.noise_sigma, and on the whole val and test images at base.noise_sigma
and at every level of the dataset's sweep."""

import argparse
from pathlib import Path

import numpy as np

from denoiselab import files, noise
from denoiselab.config import load_params
from denoiselab.errors import stage_main

WHOLE_IMAGES = ("test", "val_images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--dataset", required=True, choices=["gray", "colour"])
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    params = load_params(args.params)
    sigma, seed = params.base.noise_sigma, params.add_noise.seed
    levels = getattr(params.add_noise.sweep, args.dataset)
    for index, split in enumerate(("train", "val")):
        clean = files.load_arrays(args.prepared / f"{split}.npz")["patches"]
        rng = np.random.default_rng([seed, index])
        files.save_arrays(
            args.out / f"{split}.npz", {"patches": noise.add_gaussian_noise(clean, sigma, rng)}
        )
    # Whole images get one generator each per level (docs/protocol.md), the patches one per
    # split; the sweep's copy at base.noise_sigma holds the same pixels as test.npz.
    clean = {name: files.load_arrays(args.prepared / f"{name}.npz") for name in WHOLE_IMAGES}
    for name, images in clean.items():
        files.save_arrays(args.out / f"{name}.npz", noise.noisy_images(images, sigma, seed))
    for level in sorted({*levels, sigma}):
        folder = args.out / noise.LEVELS_FOLDER / noise.level_key(level)
        for name, images in clean.items():
            files.save_arrays(folder / f"{name}.npz", noise.noisy_images(images, level, seed))
    print(
        f"{args.dataset}: added noise (sigma {sigma}, seed {seed}) to the train and val patches; "
        f"{len(clean['val_images'])} whole val and {len(clean['test'])} test images at sigma "
        f"{', '.join(noise.level_key(level) for level in sorted({*levels, sigma}))}"
    )


if __name__ == "__main__":
    stage_main(main)
