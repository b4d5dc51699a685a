"""The champion against BM3D / CBM3D on photographs of your own, as a user meets them.

    python -m denoiselab.photo_check --images DIR [--sigmas 0.05 0.1 0.15 0.2] [--out FILE]
        [--model MODEL] [--model MODEL2 ...]

Each photo of DIR (and, for a colour photo, its grayscale version, rgb2gray) gets noise per
docs/protocol.md at each sigma (seed 0), is saved as an 8-bit PNG and handed to ``denoiselab
denoise`` in its own process, with no sigma named and, without ``--model``, no model: the
champion of its kind, with params.yaml's ``denoise`` settings (``--model`` names one, as
``denoiselab denoise --model`` takes it, for every photo; given several times, each model is
scored against the same BM3D run). BM3D (CBM3D for colour) denoises
the same 8-bit pixels, given the true sigma. Prints PSNR / SSIM per photo and level and the
mean margin, and writes them to ``--out`` as JSON. Keep the photos out of training and of
every choice.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from denoiselab import classical, files, images, metrics, noise
from denoiselab.errors import UserError, stage_main

DEFAULT_SIGMAS = (0.05, 0.1, 0.15, 0.2)


def load_photos(folder: Path) -> dict[str, np.ndarray]:
    """Every photo of ``folder`` as float HWC in [0, 1]; a colour photo also as ``<name>
    (gray)``, converted with rgb2gray."""
    found = images.list_images(folder) if folder.is_dir() else []
    if not found:
        raise UserError(f"{folder}: not a folder of PNG, JPEG, TIFF or BMP images")
    photos = {}
    for path in found:
        image = images.to_float(images.read_image(path).pixels)
        image = image if image.ndim == 3 else image[..., None]
        channels = 3 if image.shape[-1] in (3, 4) else 1
        photos[path.stem] = images.to_channels(image, channels)
        if channels == 3:
            photos[f"{path.stem} (gray)"] = images.to_channels(image, 1)
    return photos


def quantised(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def denoise_folder(
    noisy: dict[str, np.ndarray], scratch: Path, model: str | None = None
) -> dict[str, np.ndarray]:
    """``denoiselab denoise`` on each noisy 8-bit image, in one process as a user runs it, with
    ``model`` if given (else the champion of each image's kind)."""
    source, target = scratch / "noisy", scratch / "denoised"
    source.mkdir()
    names = {}
    for index, (name, image) in enumerate(noisy.items()):
        pixels = quantised(image)
        names[name] = f"{index:03d}.png"
        images.write_png(
            source / names[name],
            images.DecodedImage(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels),
        )
    command = [sys.executable, "-m", "denoiselab.cli", "denoise", str(source), "-o", str(target)]
    if model is not None:
        command += ["--model", model]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"denoiselab denoise failed: {result.stderr.strip()[-500:]}")
    return {
        name: images.to_channels(
            images.to_float(images.read_image(target / file).pixels), noisy[name].shape[-1]
        )
        for name, file in names.items()
    }


def label(model: str | None) -> str:
    """How a model's rows are named in the report: ``champion`` without ``--model``."""
    return "champion" if model is None else model


def mean_margin(rows: dict, photos: dict[str, np.ndarray], method: str, kind: str) -> float:
    """``method``'s mean PSNR margin to BM3D / CBM3D over the photos of ``kind`` (gray or
    colour) in one level's ``rows``; NaN without such photos."""
    margins = [
        row[method]["psnr"] - row["bm3d"]["psnr"]
        for name, row in rows.items()
        if (photos[name].shape[-1] == 3) == (kind == "colour")
    ]
    return round(float(np.mean(margins)), 3) if margins else float("nan")


def check(
    photos: dict[str, np.ndarray],
    sigmas: tuple[float, ...],
    seed: int = 0,
    models: Sequence[str | None] = (None,),
) -> dict:
    """Scores of each of ``models`` (None = the champion of each photo's kind) and of BM3D /
    CBM3D, run once for all of them, per sigma and photo, and each model's mean margin."""
    models = list(dict.fromkeys(models))  # a model named twice is checked once
    labels = [label(model) for model in models]
    report: dict = {"levels": {}}
    for sigma in sigmas:
        noisy = {
            name: images.to_float(quantised(image))
            for name, image in noise.noisy_images(photos, sigma, seed).items()
        }
        denoised = {}
        for model in models:
            with tempfile.TemporaryDirectory(prefix="denoiselab-photos-") as scratch:
                denoised[label(model)] = denoise_folder(noisy, Path(scratch), model)
        rows = {}
        for name, clean in photos.items():
            outputs = {method: denoised[method][name] for method in labels}
            outputs["bm3d"] = classical.DENOISERS["bm3d"](noisy[name], sigma, sigma_scale=1.0)
            row = rows[name] = {
                method: {
                    "psnr": round(metrics.psnr(clean, output), 3),
                    "ssim": round(metrics.ssim(clean, output), 4),
                }
                for method, output in outputs.items()
            }
            scores = ", ".join(
                f"{method} {row[method]['psnr']:.2f} / {row[method]['ssim']:.3f} "
                f"({row[method]['psnr'] - row['bm3d']['psnr']:+.2f} dB)"
                for method in labels
            )
            print(
                f"sigma {sigma}: {name}: {scores}; "
                f"BM3D {row['bm3d']['psnr']:.2f} / {row['bm3d']['ssim']:.3f}",
                flush=True,
            )
        report["levels"][noise.level_key(sigma)] = rows
    report["mean_margin_db"] = {
        method: {
            kind: {
                level: mean_margin(rows, photos, method, kind)
                for level, rows in report["levels"].items()
            }
            for kind in ("gray", "colour")
        }
        for method in labels
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=Path, required=True, help="folder of clean photos")
    parser.add_argument("--sigmas", type=float, nargs="+", default=list(DEFAULT_SIGMAS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the scores to this JSON file")
    parser.add_argument(
        "--model",
        action="append",
        help="a model to check, as `denoiselab denoise --model` takes it; repeat it to check "
        "several against one BM3D run (default: the champion of each photo's kind)",
    )
    args = parser.parse_args()
    report = check(load_photos(args.images), tuple(args.sigmas), args.seed, args.model or [None])
    for method, margins in report["mean_margin_db"].items():
        print(f"{method}: mean PSNR margin to BM3D / CBM3D (dB): {margins}")
    if args.out:
        files.write_json(args.out, report)


if __name__ == "__main__":
    stage_main(main)
