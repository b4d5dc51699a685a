"""`denoiselab denoise` and `denoiselab evaluate` as a user runs them, with tiny models.

Most tests use a "shift" model: a residual U-Net whose weights are all zero except the bias
of its noise layer, so it returns ``clip(input - shift)``. Every output pixel is then known
exactly, which shows whether each channel, bit depth and alpha made the round trip.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import blur_model, enter_repo, register_champion, save_shift_model, shift_model
from PIL import Image

from denoiselab import (
    classical,
    cli,
    denoise,
    files,
    images,
    inference,
    metrics,
    model_store,
    models,
)

SHIFT = 0.2  # 51 of 255 and 13107 of 65535: the shifted pixels stay integers.
RGB_SHIFTS = (0.1, 0.2, 0.3)
RGB2GRAY = np.array([0.2125, 0.7154, 0.0721])


def paeth(left: np.ndarray, up: np.ndarray, up_left: np.ndarray) -> np.ndarray:
    estimate = left + up - up_left
    distances = [np.abs(estimate - left), np.abs(estimate - up), np.abs(estimate - up_left)]
    return np.where(
        (distances[0] <= distances[1]) & (distances[0] <= distances[2]),
        left,
        np.where(distances[1] <= distances[2], up, up_left),
    )


def filtered_scanlines(pixels: np.ndarray) -> bytes:
    """PNG scanlines of HWC uint16 pixels, cycling through all five PNG filter types."""
    height, width, channels = pixels.shape
    rows = pixels.astype(">u2").reshape(height, -1).view(np.uint8).astype(np.int64)
    step = 2 * channels
    previous = np.zeros(rows.shape[1], np.int64)
    out = b""
    for index, row in enumerate(rows):
        left = np.concatenate([np.zeros(step, np.int64), row[:-step]])
        up_left = np.concatenate([np.zeros(step, np.int64), previous[:-step]])
        kind = index % 5
        average = (left + previous) // 2
        predictions = [0 * row, left, previous, average, paeth(left, previous, up_left)]
        out += bytes([kind]) + ((row - predictions[kind]) % 256).astype(np.uint8).tobytes()
        previous = row
    return out


# Adam7 interlacing passes as (first column, first row, column step, row step).
ADAM7 = [
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
]


def png16_bytes(pixels: np.ndarray, interlaced: bool = False) -> bytes:
    """A 16-bit PNG written independently of denoiselab (every filter type, optional Adam7)."""
    height, width, channels = pixels.shape
    if interlaced:
        passes = [pixels[top::dy, left::dx] for left, top, dx, dy in ADAM7]
        data = b"".join(filtered_scanlines(part) for part in passes if part.size)
    else:
        data = filtered_scanlines(pixels)
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, int(interlaced))

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(data))
        + chunk(b"IEND", b"")
    )


def decode_png16(path: Path) -> np.ndarray:
    """Reads a non-interlaced 16-bit PNG with plain zlib, undoing any of the five filters."""
    data = path.read_bytes()
    position, idat, header = 8, b"", None
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind, body = data[position + 4 : position + 8], data[position + 8 : position + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        position += 12 + length
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", header[:10])
    assert bit_depth == 16
    channels = {0: 1, 4: 2, 2: 3, 6: 4}[colour_type]
    step, stride = 2 * channels, 2 * channels * width
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, stride + 1)
    rows = np.zeros((height, stride), np.int64)
    previous = np.zeros(stride, np.int64)
    for index in range(height):
        kind, row = raw[index, 0], raw[index, 1:].astype(np.int64)
        for column in range(stride):
            left = rows[index, column - step] if column >= step else 0
            up_left = previous[column - step] if column >= step else 0
            up = previous[column]
            nearest = int(paeth(np.array(left), np.array(up), np.array(up_left)))
            prediction = [0, left, up, (left + up) // 2, nearest][kind]
            rows[index, column] = (row[column] + prediction) % 256
        previous = rows[index]
    return rows.astype(np.uint8).view(">u2").reshape(height, width, channels).astype(np.uint16)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A DVC repository root in tmp_path/repo with an empty MLflow store; no registry."""
    return enter_repo(monkeypatch, tmp_path / "repo", tmp_path / "store")


@pytest.fixture(scope="module")
def gray_shift_dir(tmp_path_factory) -> Path:
    return save_shift_model(tmp_path_factory.mktemp("models") / "gray_shift", (SHIFT,))


@pytest.fixture(scope="module")
def rgb_shift_dir(tmp_path_factory) -> Path:
    return save_shift_model(tmp_path_factory.mktemp("models") / "rgb_shift", RGB_SHIFTS)


def run_cli(*args: str | Path) -> int:
    return cli.main([str(arg) for arg in args])


def run_denoise(*inputs: Path, out: Path, model: str | Path | None = None) -> int:
    return run_cli("denoise", *inputs, "-o", out, *(["--model", model] if model else []))


def opponent_shifted(pixels: np.ndarray, shift: float) -> np.ndarray:
    """What a grayscale shift model makes of colour pixels in the opponent colour space: the
    planes (R + G + B) / 3, (R - B) / 2 + 1/2 and (R - 2G + B) / 4 + 1/2, each shifted and
    clipped, then turned back into R, G and B."""
    scale = np.iinfo(pixels.dtype).max
    red, green, blue = np.moveaxis(pixels[..., :3].astype(np.float64) / scale, -1, 0)
    luma = np.clip((red + green + blue) / 3 - shift, 0, 1)
    red_blue = np.clip((red - blue) / 2 + 0.5 - shift, 0, 1) - 0.5
    green_magenta = np.clip((red - 2 * green + blue) / 4 + 0.5 - shift, 0, 1) - 0.5
    rgb = [
        luma + red_blue + 2 * green_magenta / 3,
        luma - 4 * green_magenta / 3,
        luma - red_blue + 2 * green_magenta / 3,
    ]
    return np.clip(np.stack(rgb, axis=-1), 0, 1) * scale


def shift_model_output(pixels: np.ndarray, shifts) -> np.ndarray:
    """What a shift model writes for HW or HWC pixels: a grayscale model (one shift) shifts
    a grayscale image, and a colour one in the opponent colour space (the default
    denoise.colour_transform); a colour model shifts R, G and B by its three. Alpha is kept."""
    planes = pixels if pixels.ndim == 3 else pixels[..., None]
    colour = planes.shape[-1] - (planes.shape[-1] in (2, 4))
    expected = planes.astype(np.float64)
    if colour == 3 and np.ndim(shifts) == 0:
        expected[..., :colour] = opponent_shifted(planes, shifts)
    else:
        expected[..., :colour] = shifted(planes[..., :colour], shifts)
    return expected.reshape(pixels.shape)


def assert_shifted(output: Path, pixels: np.ndarray, shifts) -> None:
    """The output PNG holds what the shift model makes of ``pixels``, within one level."""
    np.testing.assert_allclose(read_output(output)[1], shift_model_output(pixels, shifts), atol=1)


def shifted(pixels: np.ndarray, shifts) -> np.ndarray:
    scale = np.iinfo(pixels.dtype).max
    return np.clip(pixels.astype(np.float64) - np.asarray(shifts) * scale, 0, scale)


def write_input(path: Path, mode: str, bits: int, shape: tuple[int, int], seed: int = 0):
    """Writes a random image file; returns the pixels a reader should get back."""
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    dtype = np.uint8 if bits == 8 else np.uint16
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, np.iinfo(dtype).max, (*shape, channels), endpoint=True).astype(dtype)
    if channels == 1:
        pixels = pixels[..., 0]
    suffix = path.suffix
    if bits == 16 and channels > 1 and suffix == ".png":
        path.write_bytes(png16_bytes(pixels, interlaced=path.stem.endswith("interlaced")))
    elif bits == 16 and suffix == ".tif":
        tifffile.imwrite(path, pixels, photometric="minisblack" if channels == 1 else "rgb")
    else:
        Image.fromarray(pixels).save(path)
    if suffix == ".jpg":
        return np.asarray(Image.open(path))
    return pixels


def read_output(path: Path) -> tuple[str, np.ndarray]:
    with Image.open(path) as image:
        mode = image.mode
        pixels = np.asarray(image)
    if mode in ("RGB", "RGBA", "LA") and path.read_bytes()[24] == 16:
        pixels = decode_png16(path)
    return mode, pixels


CASES = [
    ("png", "L", 8),
    ("png", "LA", 8),
    ("png", "RGB", 8),
    ("png", "RGBA", 8),
    ("png", "L", 16),
    ("png", "LA", 16),
    ("png", "RGB", 16),
    ("png", "RGBA", 16),
    ("jpg", "L", 8),
    ("jpg", "RGB", 8),
    ("tif", "L", 8),
    ("tif", "RGB", 8),
    ("tif", "RGBA", 8),
    ("tif", "L", 16),
    ("tif", "RGB", 16),
    ("tif", "RGBA", 16),
    ("bmp", "L", 8),
    ("bmp", "RGB", 8),
]


@pytest.mark.parametrize(("suffix", "mode", "bits"), CASES)
def test_output_keeps_mode_and_bit_depth(repo, gray_shift_dir, suffix, mode, bits):
    source = repo / f"photo.{suffix}"
    pixels = write_input(source, mode, bits, (13, 21))
    assert run_denoise(source, out=repo / "out", model=gray_shift_dir) == 0
    out_mode, denoised = read_output(repo / "out" / "photo.png")
    assert out_mode == Image.open(source).mode
    assert (repo / "out" / "photo.png").read_bytes()[24] == bits  # IHDR bit depth
    assert denoised.shape == pixels.shape
    assert denoised.dtype == pixels.dtype
    np.testing.assert_allclose(denoised, shift_model_output(pixels, SHIFT), atol=1)


def test_16bit_tiff_tifffile_cannot_decode_falls_back_to_8_bits(
    repo, gray_shift_dir, monkeypatch, capsys
):
    source = repo / "scan.tif"
    pixels = write_input(source, "RGB", 16, (6, 5))

    def missing_codec(page, *args, **kwargs):
        raise KeyError("<COMPRESSION.LZW: 5> requires the 'imagecodecs' package")

    monkeypatch.setattr(tifffile.TiffPage, "asarray", missing_codec)
    assert run_denoise(source, out=repo / "out", model=gray_shift_dir) == 0
    assert (repo / "out" / "scan.png").read_bytes()[24] == 8
    assert_shifted(repo / "out" / "scan.png", (pixels >> 8).astype(np.uint8), SHIFT)
    assert "scan.tif" in capsys.readouterr().err


def test_png16_reader_handles_interlacing(repo, gray_shift_dir):
    source = repo / "photo_interlaced.png"
    pixels = write_input(source, "RGB", 16, (19, 11))
    assert np.array_equal(images.read_image(source).pixels, pixels)
    assert run_denoise(source, out=repo / "out", model=gray_shift_dir) == 0
    assert_shifted(repo / "out" / "photo_interlaced.png", pixels, SHIFT)


def test_colour_model_gets_gray_repeated_and_converted_back(repo, rgb_shift_dir):
    source = repo / "gray.png"
    pixels = write_input(source, "L", 8, (9, 10))
    assert run_denoise(source, out=repo / "out", model=rgb_shift_dir) == 0
    mode, denoised = read_output(repo / "out" / "gray.png")
    assert mode == "L"
    expected = shifted(pixels[..., None], RGB_SHIFTS) @ RGB2GRAY
    np.testing.assert_allclose(denoised, expected, atol=1)


def test_colour_model_keeps_channel_order(repo, rgb_shift_dir):
    source = repo / "colour.png"
    pixels = write_input(source, "RGB", 8, (9, 10))
    assert run_denoise(source, out=repo / "out", model=rgb_shift_dir) == 0
    assert_shifted(repo / "out" / "colour.png", pixels, RGB_SHIFTS)


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (3, 2), (1, 40), (17, 31)])
def test_odd_and_tiny_sizes(repo, gray_shift_dir, shape):
    source = repo / "small.png"
    pixels = write_input(source, "RGB", 8, shape)
    assert run_denoise(source, out=repo / "out", model=gray_shift_dir) == 0
    assert_shifted(repo / "out" / "small.png", pixels, SHIFT)


@pytest.mark.parametrize("depth", [3, 4])
def test_large_image_tiles_without_seams(repo, depth):
    model, config = blur_model("unet", depth, base_filters=4)
    models.save_model_dir(model, config, repo / "blur_unet", {})
    pixels = np.random.default_rng(0).integers(0, 65536, (900, 1300), dtype=np.uint16)
    Image.fromarray(pixels).save(repo / "large.png")

    assert run_denoise(repo / "large.png", out=repo / "out", model=repo / "blur_unet") == 0

    values = images.to_float(pixels)[..., None]
    whole = inference.denoise_image(model, values, depth, tile_size=4096)  # one piece
    expected = np.round(whole[..., 0] * 65535)
    tiled = np.asarray(Image.open(repo / "out" / "large.png")).astype(np.float64)
    assert tiled.shape == (900, 1300)
    assert np.abs(tiled - expected).max() <= 2  # of 65535: no seam at the tile borders
    assert np.abs(tiled - pixels).mean() > 1000  # and the model did change the image


def test_twelve_megapixel_photo_is_processed_in_bounded_tiles():
    seen_shapes = []

    def identity_model(batch, training=False):
        seen_shapes.append(batch.shape)
        return batch

    denoiser = model_store.Denoiser(identity_model, depth=3, channels=1, location="identity")
    pixels = np.random.default_rng(0).integers(0, 256, (3000, 4000), dtype=np.uint8)
    result = denoise.denoise_pixels(denoiser, pixels)
    assert np.array_equal(result, pixels)
    largest = inference.DEFAULT_TILE + 2 * inference.tile_margin(3)
    assert len(seen_shapes) > 1
    assert max(max(shape[1:3]) for shape in seen_shapes) <= largest


def test_unreadable_files_are_named_and_others_still_written(repo, gray_shift_dir, capsys):
    folder = repo / "in"
    folder.mkdir()
    write_input(folder / "good.png", "L", 8, (8, 8))
    write_input(folder / "other.jpg", "RGB", 8, (8, 8))
    (folder / "truncated.png").write_bytes((folder / "good.png").read_bytes()[:50])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.tif").write_text("not an image at all\n")
    # A tiny file that claims 30000 x 30000 pixels: Pillow refuses it before decoding.
    bomb = bytearray(png16_bytes(np.zeros((1, 1, 1), np.uint16)))
    bomb[16:24] = struct.pack(">II", 30000, 30000)
    bomb[29:33] = struct.pack(">I", zlib.crc32(bytes(bomb[12:29])) & 0xFFFFFFFF)
    (folder / "bomb.png").write_bytes(bytes(bomb))
    text_file = repo / "readme.txt"
    text_file.write_text("hello\n")

    status = run_denoise(folder, text_file, out=repo / "out", model=gray_shift_dir)

    assert status == 1
    assert sorted(path.name for path in (repo / "out").iterdir()) == ["good.png", "other.png"]
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 5
    for name, reason in [
        ("truncated.png", "truncated"),
        ("empty.png", "empty"),
        ("notes.tif", "not an image"),
        ("bomb.png", "decompression bomb"),
        ("readme.txt", "not an image"),
    ]:
        assert any(name in line and reason in line for line in errors), (name, errors)


def test_missing_input_is_reported(repo, gray_shift_dir, capsys):
    write_input(repo / "real.png", "L", 8, (8, 8))
    status = run_denoise(
        repo / "real.png", repo / "nope.png", out=repo / "out", model=gray_shift_dir
    )
    assert status == 1
    assert (repo / "out" / "real.png").is_file()
    assert "nope.png: no such file" in capsys.readouterr().err


def test_inputs_are_never_overwritten(repo, gray_shift_dir, capsys):
    folder = repo / "photos"
    folder.mkdir()
    write_input(folder / "a.png", "L", 8, (8, 8))
    write_input(folder / "b.jpg", "L", 8, (8, 8))
    original = (folder / "a.png").read_bytes()

    status = run_denoise(folder, out=folder, model=gray_shift_dir)

    assert status == 1
    assert (folder / "a.png").read_bytes() == original
    assert (folder / "b.png").is_file()
    assert "refusing to overwrite" in capsys.readouterr().err


def test_two_inputs_with_one_output_name_are_not_both_written(repo, gray_shift_dir, capsys):
    write_input(repo / "x.png", "L", 8, (8, 8), seed=1)
    write_input(repo / "x.tif", "L", 8, (8, 8), seed=2)
    status = run_denoise(repo / "x.png", repo / "x.tif", out=repo / "out", model=gray_shift_dir)
    assert status == 1
    expected = shifted(np.asarray(Image.open(repo / "x.png")), SHIFT)
    np.testing.assert_allclose(np.asarray(Image.open(repo / "out" / "x.png")), expected, atol=1)
    assert "x.tif" in capsys.readouterr().err


def test_progress_bar_only_for_several_files(repo, gray_shift_dir, capsys):
    for name in ("one", "two", "three"):
        write_input(repo / f"{name}.png", "L", 8, (8, 8))
    assert run_denoise(repo / "one.png", out=repo / "out", model=gray_shift_dir) == 0
    assert "1/1" not in capsys.readouterr().err
    inputs = [repo / f"{name}.png" for name in ("one", "two", "three")]
    assert run_denoise(*inputs, out=repo / "out", model=gray_shift_dir) == 0
    assert "3/3" in capsys.readouterr().err


def test_orientation_and_colour_profile_are_carried(repo, gray_shift_dir):
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[images.ORIENTATION_TAG] = 6
    pixels = np.random.default_rng(0).integers(0, 256, (10, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(repo / "phone.jpg", exif=exif, icc_profile=profile)
    assert run_denoise(repo / "phone.jpg", out=repo / "out", model=gray_shift_dir) == 0
    with Image.open(repo / "out" / "phone.png") as output:
        assert output.size == (16, 10)
        assert output.getexif().get(images.ORIENTATION_TAG) == 6
        assert output.info.get("icc_profile") == profile


def test_cmyk_jpeg_becomes_rgb_without_its_cmyk_profile(repo, gray_shift_dir):
    rgb = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("CMYK").save(repo / "print.jpg", icc_profile=b"cmyk profile")
    assert run_denoise(repo / "print.jpg", out=repo / "out", model=gray_shift_dir) == 0
    with Image.open(repo / "out" / "print.png") as output:
        assert output.mode == "RGB"
        assert "icc_profile" not in output.info


def test_champion_alias_in_registry_is_the_default(repo, gray_shift_dir, capsys):
    save_shift_model(repo / "models" / "unet_tuned", (0.4,))
    save_shift_model(repo / "models" / "unet", (0.6,))
    champion, config = shift_model((SHIFT,))
    register_champion(champion, config, repo.parent / "store" / "trained")
    pixels = write_input(repo / "in.png", "L", 8, (8, 8))

    assert run_denoise(repo / "in.png", out=repo / "default") == 0
    assert_shifted(repo / "default" / "in.png", pixels, SHIFT)
    assert "no champion" not in capsys.readouterr().err

    uri = "models:/denoiselab@champion"
    assert run_denoise(repo / "in.png", out=repo / "uri", model=uri) == 0
    assert_shifted(repo / "uri" / "in.png", pixels, SHIFT)

    # The registry has no `unet` alias, so `--model unet` is the folder dvc repro wrote.
    assert run_denoise(repo / "in.png", out=repo / "unet", model="unet") == 0
    assert_shifted(repo / "unet" / "in.png", pixels, 0.6)


def test_without_registry_falls_back_to_tuned_unet_and_says_so(repo, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # the default store: repo/mlflow.db, not there
    save_shift_model(repo / "models" / "unet_tuned", (SHIFT,))
    pixels = write_input(repo / "in.png", "L", 8, (8, 8))

    assert run_denoise(repo / "in.png", out=repo / "out") == 0

    assert_shifted(repo / "out" / "in.png", pixels, SHIFT)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "no champion" in lines[0] and "unet_tuned" in lines[0]
    assert not (repo / "mlflow.db").exists()


def test_no_model_anywhere_is_an_actionable_error(repo, capsys):
    write_input(repo / "in.png", "L", 8, (8, 8))
    assert run_denoise(repo / "in.png", out=repo / "out") == 2
    assert "dvc repro" in capsys.readouterr().err
    assert not (repo / "out").exists()


def test_unknown_model_spec_is_an_actionable_error(repo, capsys):
    write_input(repo / "in.png", "L", 8, (8, 8))
    assert run_denoise(repo / "in.png", out=repo / "out", model="bogus") == 2
    assert "models:/NAME@ALIAS" in capsys.readouterr().err


def test_help_explains_colour_handling(capsys):
    with pytest.raises(SystemExit):
        run_cli("denoise", "--help")
    help_text = " ".join(capsys.readouterr().out.split())
    assert "grayscale model denoises a colour image plane by plane" in help_text
    assert "opponent colour space" in help_text and "--colour-transform" in help_text
    assert "alpha" in help_text and "16-bit" in help_text
    # Blind models, and which one each kind of image gets.
    assert "need no noise level" in help_text and "sigma about 0.2" in help_text
    assert "to champion_rgb (else models/unet_rgb" in help_text


def test_tune_worker_reads_the_data_the_tune_unet_stage_reads():
    import yaml

    root = Path(__file__).resolve().parents[1]
    command = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["tune_unet"]["cmd"]
    args = cli.build_parser().parse_args(["tune-worker"])
    assert f"--prepared {args.prepared.as_posix()} " in command
    assert f"--noisy {args.noisy.as_posix()} " in command


def test_profile_args_still_works(capsys):
    profile = Path(__file__).resolve().parents[1] / "profiles" / "smoke.yaml"
    assert run_cli("profile-args", profile) == 0
    assert "-S" in capsys.readouterr().out


def identity_model_and_wave(repo: Path, height: int, width: int) -> tuple[Path, np.ndarray]:
    """An identity ``unet_tuned`` in the repo, and a folder holding one smooth gray wave.png."""
    identity, config = shift_model((0.0,))
    models.save_model_dir(identity, config, repo / "models" / "unet_tuned", {})
    clean_folder = repo / "clean"
    clean_folder.mkdir()
    rows, columns = np.mgrid[0:height, 0:width]
    wave = 0.5 + 0.3 * np.sin(rows / 4) * np.cos(columns / 5)
    gray = np.round(255 * wave).astype(np.uint8)
    Image.fromarray(gray).save(clean_folder / "wave.png")
    return clean_folder, gray


def protocol_rng(name: str, sigma: float = 0.1, seed: int = 0) -> np.random.Generator:
    """One image's noise generator, as docs/protocol.md step 2 writes it."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), round(sigma * 1000)])


def test_evaluate_follows_protocol(repo, capsys):
    clean_folder, gray = identity_model_and_wave(repo, 24, 32)
    colour = np.stack([gray, gray[::-1], 255 - gray], axis=-1)
    Image.fromarray(colour).save(clean_folder / "colour.png")

    evaluate = ["evaluate", "--images", clean_folder, "--models", "unet_tuned"]
    status = run_cli(*evaluate, "--json", repo / "scores.json")

    assert status == 0
    report = files.read_json(repo / "scores.json")
    scores = report["scores"]
    clean = images.to_channels(images.to_float(colour), 1)
    noisy = np.clip(clean + protocol_rng("colour.png").normal(0, 0.1, clean.shape), 0, 1)
    expected_psnr = 10 * np.log10(1 / np.mean((noisy.astype(np.float32) - clean) ** 2))
    noisy_scores, model_scores = scores["noisy"]["per_image"], scores["unet_tuned"]["per_image"]
    assert noisy_scores["colour.png"]["psnr"] == pytest.approx(expected_psnr, abs=1e-3)
    # An identity model's denoised image is the noisy one: its scores are the noisy floor.
    for name in ("wave.png", "colour.png"):
        assert model_scores[name] == pytest.approx(noisy_scores[name], abs=1e-3)
    table = capsys.readouterr().out
    assert "wave.png" in table and "mean" in table and "unet_tuned" in table

    assert run_cli(*evaluate, "--seed", "1", "--json", repo / "seed1.json") == 0
    other = files.read_json(repo / "seed1.json")["scores"]
    assert other["noisy"]["psnr"] != pytest.approx(scores["noisy"]["psnr"], abs=1e-6)


def test_evaluate_scores_classical_methods_on_the_same_noisy_pixels(repo, capsys):
    clean_folder, gray = identity_model_and_wave(repo, 48, 64)

    status = run_cli(
        "evaluate",
        "--images",
        clean_folder,
        "--models",
        "unet_tuned",
        "--classical",
        "tv",
        "nl_means",
        "--json",
        repo / "scores.json",
    )

    assert status == 0
    scores = files.read_json(repo / "scores.json")["scores"]
    assert list(scores) == ["noisy", "unet_tuned", "tv", "nl_means"]
    clean = images.to_float(gray)[..., None]
    noisy = np.clip(clean + protocol_rng("wave.png").normal(0, 0.1, clean.shape), 0, 1)
    expected = metrics.psnr(clean, classical.tv(noisy.astype(np.float32), 0.1, weight=0.1))
    assert scores["tv"]["psnr"] == pytest.approx(expected, abs=1e-3)
    # A smooth image: both classical methods clearly beat the noisy input.
    for method in ("tv", "nl_means"):
        assert scores[method]["psnr"] > scores["noisy"]["psnr"] + 3
    assert "nl_means" in capsys.readouterr().out


def test_evaluate_rejects_an_unknown_classical_method(repo, capsys):
    with pytest.raises(SystemExit):
        run_cli("evaluate", "--images", repo, "--classical", "bm4d")
    assert "bm4d" in capsys.readouterr().err


def test_the_denoise_path_leaves_scipy_stats_unimported():
    # Importing scipy.stats takes most of a second: it made denoising a 1 MP photo a third
    # slower, below 20 times BM3D's speed.
    modules = "cli, denoise, images, inference, model_store, noise_level, onnx_export"
    code = f"import sys; from denoiselab import {modules}; print('scipy.stats' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
