"""DVC stage add_noise: seeded, clipped Gaussian noise on train/val patches, whole val and test
images."""

import argparse
from pathlib import Path

import numpy as np

from denoiselab import files, noise
from denoiselab.config import load_params
from denoiselab.errors import stage_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    params = load_params(args.params)
    sigma, seed = params.base.noise_sigma, params.add_noise.seed
    for index, split in enumerate(("train", "val")):
        clean = files.load_arrays(args.prepared / f"{split}.npz")["patches"]
        rng = np.random.default_rng([seed, index])
        files.save_arrays(
            args.out / f"{split}.npz", {"patches": noise.add_gaussian_noise(clean, sigma, rng)}
        )
    # Whole images get one generator each (docs/protocol.md), the patches one per split.
    counts = {}
    for name in ("test", "val_images"):
        clean = files.load_arrays(args.prepared / f"{name}.npz")
        files.save_arrays(args.out / f"{name}.npz", noise.noisy_images(clean, sigma, seed))
        counts[name] = len(clean)
    print(
        f"added noise (sigma {sigma}, seed {seed}) to the train and val patches, "
        f"{counts['val_images']} whole val images and {counts['test']} test images"
    )


if __name__ == "__main__":
    stage_main(main)
