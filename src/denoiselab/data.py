"""Clean images: sources, the train/val/test split, patches and the manifest."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from denoiselab import files, images
from denoiselab.config import PrepareConfig
from denoiselab.errors import UserError

log = logging.getLogger(__name__)

# Natural photographs bundled in scikit-image's wheel (no network needed). Synthetic images
# (chessboards, phantom, logo, colour wheel, horse silhouette, rendered text), the motion-blurred
# clock and the right half of the stereo pair are left out.
BUILTIN_IMAGES = {
    "astronaut": "astronaut.png",
    "brick": "brick.png",
    "camera": "camera.png",
    "cell": "cell.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "coins": "coins.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png",
    "microaneurysms": "microaneurysms.png",
    "moon": "moon.png",
    "motorcycle": "motorcycle_left.png",
    "page": "page.png",
    "retina": "retina.jpg",
    "rocket": "rocket.jpg",
}


@dataclass
class SourceImages:
    """Clean images keyed by name (float32 HWC in [0, 1]) and what was skipped on the way."""

    images: dict[str, np.ndarray]
    file_hashes: dict[str, str]
    skipped: list[dict[str, str]] = field(default_factory=list)


def builtin_paths() -> dict[str, Path]:
    from skimage import data as skimage_data

    root = Path(skimage_data.data_dir)
    return {name: root / filename for name, filename in BUILTIN_IMAGES.items()}


def source_paths(config: PrepareConfig) -> dict[str, Path]:
    """Image name -> file for the configured source; raises ValueError naming the key."""
    if config.source == "builtin":
        return builtin_paths()
    folder = Path(config.folder)
    if not folder.is_dir():
        raise UserError(f"params.yaml: prepare.folder {str(folder)!r} is not a folder")
    paths = images.list_images(folder)
    if not paths:
        raise UserError(
            f"params.yaml: prepare.folder {str(folder)!r} holds no PNG/JPEG/TIFF/BMP images"
        )
    names: dict[str, Path] = {}
    for path in paths:
        if path.stem in names:
            raise UserError(
                f"{path}: two images share the name {path.stem!r}; rename one "
                f"(names identify images across the split)"
            )
        names[path.stem] = path
    return names


def is_colour(raw: np.ndarray) -> bool:
    """Whether decoded pixels (HW or HWC, any alpha last) hold colour: three colour channels
    that are not all equal. A gray photograph saved as RGB is not colour."""
    if raw.ndim != 3 or raw.shape[-1] < 3:
        return False
    red, green, blue = raw[..., 0], raw[..., 1], raw[..., 2]
    return not (np.array_equal(red, green) and np.array_equal(green, blue))


def load_sources(config: PrepareConfig, channels: int, colour_only: bool = False) -> SourceImages:
    """Reads every source image as float32 HWC in [0, 1].

    Unreadable files are skipped and listed (``on_bad_image: skip``) or stop the stage
    (``on_bad_image: fail``). Mixed bit depths and modes are fine: every image is converted
    to float [0, 1] and to ``channels`` per docs/protocol.md. With ``colour_only`` the
    grayscale images are left out (the colour dataset learns from colour photographs only), and
    the images ``prepare.exclude_images`` names are never read (a name that is no source
    image is refused, naming the key).
    """
    paths = source_paths(config)
    # A typo would otherwise keep the image in training unnoticed.
    unknown = sorted(set(config.exclude_images) - set(paths))
    if unknown:
        raise UserError(
            f"params.yaml: prepare.exclude_images names {', '.join(map(repr, unknown))}, which "
            f"is not among the source images ({', '.join(sorted(paths))})"
        )
    loaded: dict[str, np.ndarray] = {}
    hashes: dict[str, str] = {}
    skipped: list[dict[str, str]] = []
    for name, path in paths.items():
        if name in config.exclude_images:
            continue
        try:
            raw = images.read_image_raw(path)
        except images.ImageReadError as error:
            if config.on_bad_image == "fail":
                raise
            log.warning("skipping %s", error)
            skipped.append({"file": str(path), "reason": str(error)})
            continue
        if colour_only and not is_colour(raw):
            continue
        loaded[name] = images.to_channels(images.to_float(raw), channels)
        hashes[name] = files.sha256_of_file(path)
    return SourceImages(images=loaded, file_hashes=hashes, skipped=skipped)


def split_names(
    names: list[str], config: PrepareConfig, seed: int, colour_only: bool = False
) -> dict[str, list[str]]:
    """Assigns whole images to train/val/test, deterministically.

    Explicit test and validation lists win (``test_images`` / ``val_images``, or the
    ``colour_`` ones for the colour dataset); the rest are ordered by a hash of the name and the
    seed (stable when images are added or removed) and cut by the fractions.
    """
    prefix = "colour_" if colour_only else ""
    listed = {key: getattr(config, f"{prefix}{key}") for key in ("test_images", "val_images")}
    available = set(names)
    for key, members in listed.items():
        for name in members:
            if name not in available:
                kind = "colour " if colour_only else ""
                raise UserError(
                    f"params.yaml: prepare.{prefix}{key} names {name!r}, which is not among the "
                    f"{kind}source images ({', '.join(sorted(available))})"
                )
    test = list(listed["test_images"])
    val = [name for name in listed["val_images"] if name not in test]
    rest = sorted(
        (name for name in names if name not in test and name not in val),
        key=lambda name: hashlib.sha256(f"{seed}:{name}".encode()).hexdigest(),
    )
    if not listed["test_images"]:
        count = max(1, round(config.test_fraction * len(names)))
        test, rest = rest[:count], rest[count:]
    if not listed["val_images"]:
        count = max(1, round(config.val_fraction * len(names)))
        val, rest = rest[:count], rest[count:]
    splits = {"train": sorted(rest), "val": sorted(val), "test": sorted(test)}
    for split, members in splits.items():
        if not members:
            kind = "colour image(s)" if colour_only else "image(s)"
            raise UserError(
                f"too few images for the splits: {len(names)} usable {kind} leave none for "
                f"{split}; add images or change prepare.test_fraction / prepare.val_fraction"
            )
    return splits


def extract_patches(image: np.ndarray, patch_size: int, stride: int) -> np.ndarray:
    """All ``patch_size`` squares of an HWC image on a ``stride`` grid, as NHWC."""
    height, width, _ = image.shape
    if height < patch_size or width < patch_size:
        return np.zeros((0, patch_size, patch_size, image.shape[-1]), np.float32)
    rows = range(0, height - patch_size + 1, stride)
    cols = range(0, width - patch_size + 1, stride)
    return np.stack(
        [image[r : r + patch_size, c : c + patch_size] for r in rows for c in cols]
    ).astype(np.float32)


def sample_patches(
    images: list[np.ndarray],
    patch_size: int,
    stride: int,
    count: int,
    rng: np.random.Generator,
    min_std: float = 0.0,
    per_image: int | None = None,
) -> tuple[np.ndarray, int, int]:
    """Patches from several images, at most ``count`` of them chosen at random (seeded), of
    those whose pixels' standard deviation is at least ``min_std``, with at most ``per_image``
    from any one image; and how many patches that dropped as flat and over ``per_image``."""
    patches = []
    flat = capped = 0
    for image in images:
        cut = extract_patches(image, patch_size, stride)
        if min_std > 0 and len(cut):
            kept = cut[cut.std(axis=(1, 2, 3)) >= min_std]
            flat += len(cut) - len(kept)
            cut = kept
        if per_image is not None and len(cut) > per_image:
            capped += len(cut) - per_image
            cut = cut[np.sort(rng.choice(len(cut), size=per_image, replace=False))]
        patches.append(cut)
    stacked = np.concatenate(patches) if patches else np.zeros((0, patch_size, patch_size, 1))
    if len(stacked) > count:
        keep = np.sort(rng.choice(len(stacked), size=count, replace=False))
        stacked = stacked[keep]
    return stacked.astype(np.float32), flat, capped


def prepare(config: PrepareConfig, channels: int, seed: int, colour_only: bool = False) -> dict:
    """Loads, splits and cuts the clean data; with ``colour_only``, of the colour images only.

    Returns a dict with ``train`` and ``val`` patches (NHWC float32 in [0, 1]), the whole
    ``test`` and ``val_images`` (name -> HWC float32 in [0, 1], the same conversion for both)
    and the ``manifest``.
    """
    sources = load_sources(config, channels, colour_only)
    excluded = sorted(set(config.exclude_images))
    if not sources.images:
        kind = "colour" if colour_only else "readable"
        raise UserError(f"no {kind} source images; see the skipped files listed above")
    splits = split_names(sorted(sources.images), config, seed, colour_only)
    rng = np.random.default_rng(seed)
    result: dict = {}
    flat = capped = 0
    for split, count in (("train", config.max_train_patches), ("val", config.max_val_patches)):
        members = [sources.images[name] for name in splits[split]]
        # Only training drops flat patches and caps each image's share: validation patches
        # stay a sample of the images.
        training = split == "train"
        min_std = config.min_patch_std if training else 0.0
        per_image = config.max_patches_per_image if training else None
        patches, dropped, over = sample_patches(
            members, config.patch_size, config.stride, count, rng, min_std, per_image
        )
        capped += over
        if len(patches) == 0 and dropped:
            raise UserError(
                f"params.yaml: prepare.min_patch_std {min_std} drops every {split} patch "
                f"({dropped} flat ones); lower it"
            )
        flat += dropped
        if len(patches) == 0:
            raise UserError(
                f"params.yaml: prepare.patch_size {config.patch_size} is larger than every "
                f"{split} image; lower it"
            )
        result[split] = patches
    result["test"] = {name: sources.images[name] for name in splits["test"]}
    # Whole validation images, so that settings chosen on validation are scored the way the
    # test images are: on whole images, not on patches.
    result["val_images"] = {name: sources.images[name] for name in splits["val"]}
    entries = []
    for name in sorted(sources.images):
        image = sources.images[name]
        split = next(split for split, members in splits.items() if name in members)
        entries.append(
            {
                "name": name,
                "split": split,
                "height": int(image.shape[0]),
                "width": int(image.shape[1]),
                "file_sha256": sources.file_hashes[name],
                "pixels_sha256": files.sha256_of_array(image),
            }
        )
    digest = hashlib.sha256()
    for key in ("train", "val"):
        digest.update(files.sha256_of_array(result[key]).encode())
    for entry in entries:
        digest.update(entry["pixels_sha256"].encode())
    result["manifest"] = {
        "source": config.source if config.source == "builtin" else str(config.folder),
        "channels": channels,
        "colour_only": colour_only,
        "data_hash": digest.hexdigest()[:16],
        "counts": {
            "images": len(entries),
            "train_images": len(splits["train"]),
            "val_images": len(splits["val"]),
            "test_images": len(splits["test"]),
            "train_patches": int(len(result["train"])),
            "flat_train_patches_dropped": int(flat),
            "train_patches_over_image_cap": int(capped),
            "val_patches": int(len(result["val"])),
            "skipped": len(sources.skipped),
            "excluded": len(excluded),
        },
        "images": entries,
        "skipped": sources.skipped,
        "excluded": excluded,
    }
    return result
