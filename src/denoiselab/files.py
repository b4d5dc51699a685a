"""File I/O shared by the stages: atomic writes, safe array and JSON files, images.

Every writer goes through :func:`atomic_path`, so a stage killed mid-write never leaves a
half-written output that DVC could cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from denoiselab.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yields a new, empty temporary file beside ``path``; renames it into place on success.

    ``suffix`` ends the temporary file's name, for writers that choose the format by it
    (Keras writes weights only to a name ending in ``.weights.h5``).

    The temporary file is created with mode 0666 less the process umask, as ``open`` creates
    files, so that outputs get the usual permissions (``tempfile.mkstemp`` would make them
    0600). After an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _create_temporary(path, suffix)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _create_temporary(path: Path, suffix: str) -> Path:
    for _ in range(100):
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return temporary
    raise FileExistsError(f"{path.parent}: no free name for a temporary file beside {path.name}")


def write_json(path: str | Path, data: Any) -> None:
    """Writes ``data`` as strict JSON: NaN and infinities, which JSON has no words for (and
    which strict parsers reject), become ``null``."""
    text = json.dumps(finite_or_none(data), indent=2, sort_keys=False, allow_nan=False)
    with atomic_path(path) as temporary:
        temporary.write_text(text + "\n")


def finite_or_none(data: Any) -> Any:
    """A copy of nested dicts, lists and tuples with every non-finite float replaced by None."""
    if isinstance(data, dict):
        return {key: finite_or_none(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [finite_or_none(value) for value in data]
    if isinstance(data, float | np.floating):
        return float(data) if math.isfinite(data) else None
    return data


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
                if image.format == "PNG" and _png_is_16bit_colour(path):
                    array = _decode_png(path)
                else:
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


# PNG colour types with more than one sample per pixel: gray + alpha, RGB, RGBA.
PNG_MULTISAMPLE_COLOUR_TYPES = (2, 4, 6)


def _png_is_16bit_colour(path: Path) -> bool:
    """Whether a PNG holds 16-bit gray + alpha, RGB or RGBA samples, per its IHDR chunk."""
    with open(path, "rb") as handle:
        header = handle.read(26)
    return len(header) == 26 and header[24] == 16 and header[25] in PNG_MULTISAMPLE_COLOUR_TYPES


def _decode_png(path: Path) -> np.ndarray:
    """All samples of a PNG at their own depth, by libpng (through imagecodecs): Pillow has no
    16-bit colour mode and would keep only each sample's high byte."""
    import imagecodecs

    try:
        return imagecodecs.png_decode(path.read_bytes())
    except imagecodecs.PngError as error:
        raise ImageReadError(f"{path}: cannot decode image ({error})") from error


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
    """Float HW/HWC image to HWC with ``channels`` channels, per docs/protocol.md.

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
            raise UserError(
                "files.write_png writes 16-bit grayscale only; use images.write_png for "
                "16-bit colour"
            )
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
