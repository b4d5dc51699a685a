"""The champion against BM3D / CBM3D on photographs of your own, as a user meets them.

    python -m denoiselab.photo_check --images DIR [--sigmas 0.05 0.1 0.15 0.2] [--out FILE]
        [--model MODEL]

Each photo of DIR (and, for a colour photo, its grayscale version, rgb2gray) gets noise per
docs/protocol.md at each sigma (seed 0), is saved as an 8-bit PNG and handed to ``denoiselab
denoise`` in its own process, with no sigma named and, without ``--model``, no model: the
champion of its kind, with params.yaml's ``denoise`` settings (``--model`` names one, as
``denoiselab denoise --model`` takes it, for every photo). BM3D (CBM3D for colour) denoises
the same 8-bit pixels, given the true sigma. Prints PSNR / SSIM per photo and level and the
mean margin, and writes them to ``--out`` as JSON. Keep the photos out of training and of
every choice.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
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


def check(
    photos: dict[str, np.ndarray],
    sigmas: tuple[float, ...],
    seed: int = 0,
    model: str | None = None,
) -> dict:
    """Scores of the champion (or ``model``) and BM3D / CBM3D per sigma and photo, and their
    mean margin."""
    report: dict = {"levels": {}}
    for sigma in sigmas:
        noisy = {
            name: images.to_float(quantised(image))
            for name, image in noise.noisy_images(photos, sigma, seed).items()
        }
        with tempfile.TemporaryDirectory(prefix="denoiselab-photos-") as scratch:
            denoised = denoise_folder(noisy, Path(scratch), model)
        rows = {}
        for name, clean in photos.items():
            bm3d = classical.DENOISERS["bm3d"](noisy[name], sigma, sigma_scale=1.0)
            rows[name] = {
                method: {
                    "psnr": round(metrics.psnr(clean, output), 3),
                    "ssim": round(metrics.ssim(clean, output), 4),
                }
                for method, output in (("champion", denoised[name]), ("bm3d", bm3d))
            }
            margin = rows[name]["champion"]["psnr"] - rows[name]["bm3d"]["psnr"]
            champion, bm3d_row = rows[name]["champion"], rows[name]["bm3d"]
            print(
                f"sigma {sigma}: {name}: champion {champion['psnr']:.2f} / {champion['ssim']:.3f}"
                f", BM3D {bm3d_row['psnr']:.2f} / {bm3d_row['ssim']:.3f} ({margin:+.2f} dB)",
                flush=True,
            )
        report["levels"][noise.level_key(sigma)] = rows
    report["mean_margin_db"] = {
        kind: {
            level: round(
                float(
                    np.mean(
                        [
                            row["champion"]["psnr"] - row["bm3d"]["psnr"]
                            for name, row in rows.items()
                            if (photos[name].shape[-1] == 3) == (kind == "colour")
                        ]
                        or [np.nan]
                    )
                ),
                3,
            )
            for level, rows in report["levels"].items()
        }
        for kind in ("gray", "colour")
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
        "--model", help="the model to check, as `denoiselab denoise --model` takes it"
    )
    args = parser.parse_args()
    report = check(load_photos(args.images), tuple(args.sigmas), args.seed, args.model)
    print("mean PSNR margin to BM3D / CBM3D (dB):", report["mean_margin_db"])
    if args.out:
        files.write_json(args.out, report)


if __name__ == "__main__":
    stage_main(main)
