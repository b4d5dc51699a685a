"""DVC stage prepare (one per dataset): clean images -> train/val patches, whole val and test
images, manifest. The gray dataset holds every image (colour ones converted with rgb2gray), the
colour dataset the colour images only, as RGB."""

import argparse
from pathlib import Path

from denoiselab import data, files
from denoiselab.config import load_params
from denoiselab.errors import stage_main
from denoiselab.vocabulary import DATASET_CHANNELS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--dataset", required=True, choices=list(DATASET_CHANNELS))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    params = load_params(args.params)
    result = data.prepare(
        params.prepare,
        DATASET_CHANNELS[args.dataset],
        params.base.seed,
        colour_only=args.dataset == "colour",
    )

    files.save_arrays(args.out / "train.npz", {"patches": result["train"]})
    files.save_arrays(args.out / "val.npz", {"patches": result["val"]})
    files.save_arrays(args.out / "test.npz", result["test"])
    files.save_arrays(args.out / "val_images.npz", result["val_images"])
    files.write_json(args.out / "manifest.json", result["manifest"])
    counts = result["manifest"]["counts"]
    print(
        f"{args.dataset}: prepared {counts['images']} images ({counts['train_images']} train, "
        f"{counts['val_images']} val, {counts['test_images']} test): "
        f"{counts['train_patches']} train and {counts['val_patches']} val patches, "
        f"{counts['skipped']} skipped, {counts['excluded']} excluded"
    )
    for skipped in result["manifest"]["skipped"]:
        print(f"skipped {skipped['reason']}")


if __name__ == "__main__":
    stage_main(main)
