"""File I/O shared by the stages: atomic writes, safe array and JSON files, images.

Every writer goes through :func:`atomic_path`, so a stage killed mid-write never leaves a
half-written output that DVC could cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from denoiselab.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; renames it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    temporary = Path(temporary)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as error:
        raise UserError(f"{path}: file not found") from error
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON ({error.msg})") from error


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Saves named arrays as an uncompressed .npz, atomically and byte-for-byte reproducibly."""
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Loads an .npz written by :func:`save_arrays`; never unpickles."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found; run the stage that writes it (dvc repro)")
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def sha256_of_array(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def sha256_of_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ImageReadError(ValueError):
    """An input file that is not a readable image; the message names the file and why."""


def read_image_raw(path: str | Path) -> np.ndarray:
    """Decodes an image file to its native integer array (HW or HWC), with Pillow's bomb guard.

    Raises ImageReadError naming the file for empty, truncated, non-image or oversized files.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageReadError(f"{path}: empty file (0 bytes)")
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; treat it as an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                array = _pillow_to_array(image)
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageReadError(f"{path}: refused as a decompression bomb ({error})") from error
    except FileNotFoundError as error:
        raise ImageReadError(f"{path}: file not found") from error
    except Image.UnidentifiedImageError as error:
        raise ImageReadError(f"{path}: not an image Pillow can identify") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"{path}: cannot decode image ({error})") from error
    if array.size == 0:
        raise ImageReadError(f"{path}: image has no pixels")
    return array


def _pillow_to_array(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(image, dtype=np.uint16)
    if mode == "I":
        array = np.asarray(image)
        if array.min() >= 0 and array.max() <= 65535:
            return array.astype(np.uint16)
        raise UserError("32-bit integer images are not supported")
    if mode == "F":
        raise UserError("floating-point images are not supported")
    if mode in ("1", "L", "P", "LA", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        target = {"1": "L", "L": "L", "LA": "LA", "PA": "RGBA"}.get(mode, "RGB")
        if mode == "P":
            target = "RGBA" if "transparency" in image.info else "RGB"
        return np.asarray(image.convert(target))
    return np.asarray(image)


def to_float(array: np.ndarray) -> np.ndarray:
    """Integer image to float32 in [0, 1] (uint8 / 255, uint16 / 65535)."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if np.issubdtype(array.dtype, np.floating):
        return np.clip(array, 0.0, 1.0).astype(np.float32)
    if array.dtype == bool:
        return array.astype(np.float32)
    raise UserError(f"unsupported image dtype {array.dtype}")


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Float HW/HWC image to HWC with ``channels`` channels, per PROTOCOL.md.

    Colour to grayscale uses ``skimage.color.rgb2gray``; an alpha channel is dropped.
    """
    from skimage import color

    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] in (2, 4):
        image = image[..., :-1]
    if channels == 1:
        if image.shape[-1] == 3:
            return color.rgb2gray(image).astype(np.float32)[..., None]
        return image.astype(np.float32)
    if image.shape[-1] == 1:
        return np.repeat(image, 3, axis=-1).astype(np.float32)
    return image.astype(np.float32)


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Writes a uint8/uint16 HW, HWC (1, 2, 3 or 4 channels) array as PNG, atomically."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.dtype == np.uint16:
        if array.ndim == 2:
            image = Image.fromarray(array)
        else:
            raise UserError("16-bit colour PNG output needs imageio; see write_image")
    else:
        image = Image.fromarray(array)
    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG")


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
    )
