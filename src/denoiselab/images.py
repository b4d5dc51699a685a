"""Image files: reading PNG/JPEG/TIFF/BMP at their own colour mode and bit depth, converting
pixels to float images of the channels a model takes, planning where each denoised copy goes,
and writing PNG back in the same mode and depth.

Pixels travel as the file's own integers: HW (grayscale) or HWC with 2 (grayscale + alpha),
3 (RGB) or 4 (RGBA) channels, dtype uint8 or uint16.
"""

from __future__ import annotations

import dataclasses
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from denoiselab import files
from denoiselab.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
ORIENTATION_TAG = 0x0112
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}
PNG_LEVEL = 3  # zlib level of written PNGs: half the time of the default 6 for ~13% more bytes
# Modes read_image_raw converts to RGB: their colour profile does not fit the output.
CONVERTED_MODES = ("CMYK", "YCbCr", "LAB", "HSV")


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


# skimage.color.rgb2gray's weights (ITU-R 709 luma).
GRAY_WEIGHTS = (0.2125, 0.7154, 0.0721)


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """Float HWC RGB to HW grayscale: ``skimage.color.rgb2gray``, the same bits on every CPU.

    rgb2gray multiplies by its weights as a matrix product, which OpenBLAS computes with other
    roundings on AVX-512 CPUs than on others: the gray dataset came out as other bytes, and a
    fresh clone reran the classical stage on them. Here the three products are summed in one
    fixed order, in the image's float type: what rgb2gray gives on a CPU without AVX-512.
    Integer pixels are refused (a ``TypeError`` naming the type): the weights in an integer
    type are 0. Convert them with :func:`to_float` first.
    """
    if not np.issubdtype(rgb.dtype, np.floating):
        raise TypeError(f"rgb_to_gray takes float pixels in [0, 1], not {rgb.dtype}")
    red, green, blue = (
        rgb[..., channel] * rgb.dtype.type(weight) for channel, weight in enumerate(GRAY_WEIGHTS)
    )
    return ((red + green) + blue).astype(np.float32)


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Float HW/HWC image to HWC with ``channels`` channels, per docs/protocol.md.

    Colour to grayscale is rgb2gray's (:func:`rgb_to_gray`); an alpha channel is dropped.
    """
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] in (2, 4):
        image = image[..., :-1]
    if channels == 1:
        if image.shape[-1] == 3:
            return rgb_to_gray(image)[..., None]
        return image.astype(np.float32)
    if image.shape[-1] == 1:
        return np.repeat(image, 3, axis=-1).astype(np.float32)
    return image.astype(np.float32)


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
    )


@dataclasses.dataclass(frozen=True)
class DecodedImage:
    """An image file's pixels (HW or HWC, uint8 or uint16) and the metadata a PNG can carry."""

    pixels: np.ndarray
    icc_profile: bytes | None = None
    orientation: int = 1
    note: str | None = None


@dataclasses.dataclass(frozen=True)
class Job:
    """One input file and the PNG its denoised copy goes to."""

    source: Path
    target: Path


def read_image(path: str | Path) -> DecodedImage:
    """Decodes an image file at its own bit depth, 16-bit colour PNG and TIFF included.

    Raises ImageReadError, naming the file, for anything that is not a readable image.
    A 16-bit colour TIFF whose samples tifffile cannot decode comes back at 8 bits, with a
    ``note`` saying so.
    """
    path = Path(path)
    pixels = read_image_raw(path)
    note = None
    try:
        with Image.open(path) as image:
            wide = None
            if image.format == "TIFF" and pixels.dtype != np.uint16:
                try:
                    wide = _read_tiff_16bit(path, image)
                except (OSError, SyntaxError, ValueError, KeyError, ImportError) as error:
                    note = f"decoded at 8 bits per sample, not 16 ({error})"
            icc_profile = image.info.get("icc_profile") or None
            if image.mode in CONVERTED_MODES:
                icc_profile = None  # it describes colours the output no longer has
            if image.format == "PNG":
                orientation = _png_orientation(path)
            else:
                orientation = image.getexif().get(ORIENTATION_TAG, 1)
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"{path}: cannot decode image ({error})") from error
    if wide is not None and wide.shape[:2] == pixels.shape[:2]:
        pixels = wide
    if orientation not in range(1, 9):
        orientation = 1
    return DecodedImage(pixels, icc_profile, int(orientation), note)


def _png_orientation(path: Path) -> int:
    """The EXIF orientation of a PNG, from its eXIf chunk wherever it lies.

    Pillow's PNG ``getexif`` decodes the whole image again when the chunk is not before the
    pixel data (or when there is none); walking the chunk headers reads a few bytes instead.
    """
    with open(path, "rb") as handle:
        if handle.read(8) != PNG_SIGNATURE:
            return 1
        while header := handle.read(8):
            if len(header) < 8:
                return 1
            length, kind = struct.unpack(">I4s", header)
            if kind == b"eXIf":
                exif = Image.Exif()
                exif.load(b"Exif\x00\x00" + handle.read(length))
                return exif.get(ORIENTATION_TAG, 1)
            if kind == b"IEND":
                return 1
            handle.seek(length + 4, 1)
    return 1


def _read_tiff_16bit(path: Path, image: Image.Image) -> np.ndarray | None:
    """The 16-bit samples of a colour or gray + alpha TIFF that Pillow reads at 8 bits.

    tifffile decodes LZW, Deflate and the other compressions with imagecodecs.
    """
    import tifffile

    bits = image.tag_v2.get(258)
    if not (isinstance(bits, tuple) and len(bits) in (2, 3, 4) and max(bits) == 16):
        return None

    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages.first
        if page.dtype != np.uint16 or page.photometric not in (
            tifffile.PHOTOMETRIC.RGB,
            tifffile.PHOTOMETRIC.MINISBLACK,
        ):
            return None
        array = page.asarray()
        if page.axes.startswith("S"):
            array = np.moveaxis(array, 0, -1)
    if array.ndim != 3 or array.shape[-1] not in (2, 3, 4):
        return None
    return np.ascontiguousarray(array)


def plan_jobs(inputs: list[str | Path], output_dir: str | Path) -> tuple[list[Job], list[str]]:
    """Expands files and folders into (input, OUTDIR/<stem>.png) jobs.

    Returns the jobs and one message per input that cannot be done: a missing path, an empty
    folder, an output that would overwrite an input file or one another job writes.
    """
    sources, problems = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = list_images(path)
            if not found:
                problems.append(f"{path}: folder holds no PNG, JPEG, TIFF or BMP images")
            sources.extend(found)
        elif path.is_file():
            sources.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    unique_sources: dict[Path, Path] = {}
    for source in sources:
        unique_sources.setdefault(source.resolve(), source)
    jobs, claimed = [], {}
    for source in unique_sources.values():
        target = Path(output_dir) / f"{source.stem}.png"
        resolved_target = target.resolve()
        if resolved_target in unique_sources:
            problems.append(
                f"{source}: output {target} is an input file; refusing to overwrite it "
                f"(choose another output folder)"
            )
        elif resolved_target in claimed:
            problems.append(
                f"{source}: output {target} would also be written for {claimed[resolved_target]}"
                f"; rename one of them or denoise them into different folders"
            )
        else:
            claimed[resolved_target] = source
            jobs.append(Job(source, target))
    return jobs, problems


def write_png(path: str | Path, image: DecodedImage) -> None:
    """Writes pixels as PNG at their own bit depth and channels, atomically, with the input's
    ICC profile and EXIF orientation so viewers show it as they showed the input."""
    pixels = image.pixels
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.dtype not in (np.uint8, np.uint16):
        raise UserError(f"PNG output needs uint8 or uint16 pixels, got {pixels.dtype}")
    with files.atomic_path(path) as temporary:
        if pixels.dtype == np.uint16 and pixels.ndim == 3:
            exif = _exif_bytes(image.orientation)
            temporary.write_bytes(encode_png16(pixels, image.icc_profile, exif))
        else:
            extra = {}
            if image.icc_profile:
                extra["icc_profile"] = image.icc_profile
            if image.orientation != 1:
                extra["exif"] = _exif(image.orientation)
            Image.fromarray(pixels).save(
                temporary, format="PNG", compress_level=PNG_LEVEL, **extra
            )


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    return exif


def _exif_bytes(orientation: int) -> bytes | None:
    if orientation == 1:
        return None
    # PNG's eXIf chunk holds the TIFF structure without JPEG's "Exif\0\0" prefix.
    return _exif(orientation).tobytes().removeprefix(b"Exif\x00\x00")


def encode_png16(
    pixels: np.ndarray, icc_profile: bytes | None = None, exif: bytes | None = None
) -> bytes:
    """A 16-bit PNG file of HWC uint16 pixels with 1-4 channels (gray, gray+alpha, RGB, RGBA).

    Pillow cannot write 16-bit colour, so this writes the few chunks PNG needs itself; each
    row uses PNG's Sub filter (difference to the pixel on the left), which compresses photos.
    """
    if pixels.ndim != 3 or pixels.shape[-1] not in PNG_COLOUR_TYPES:
        raise UserError(f"expected HWC pixels with 1-4 channels, got shape {pixels.shape}")
    height, width, channels = pixels.shape
    rows = pixels.astype(">u2").reshape(height, width * channels).view(np.uint8)
    bytes_per_pixel = 2 * channels
    filtered = rows.copy()
    filtered[:, bytes_per_pixel:] -= rows[:, :-bytes_per_pixel]
    scanlines = np.concatenate([np.ones((height, 1), np.uint8), filtered], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 16, PNG_COLOUR_TYPES[channels], 0, 0, 0)
    chunks = [(b"IHDR", header)]
    if icc_profile:
        chunks.append((b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc_profile)))
    if exif:
        chunks.append((b"eXIf", exif))
    chunks += [(b"IDAT", zlib.compress(scanlines.tobytes(), PNG_LEVEL)), (b"IEND", b"")]
    return PNG_SIGNATURE + b"".join(_png_chunk(kind, data) for kind, data in chunks)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    checksum = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", checksum)
