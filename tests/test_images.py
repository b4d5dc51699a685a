import hashlib

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms
from skimage import color

from denoiselab import images


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def random_pixels(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 65536, shape, dtype=np.uint16)


def test_16bit_colour_png_round_trip_keeps_samples_icc_profile_and_exif(tmp_path):
    pixels = random_pixels((17, 23, 3))
    profile = srgb_profile()
    source = tmp_path / "in.png"
    source.write_bytes(images.encode_png16(pixels, profile, images._exif_bytes(6)))
    decoded = images.read_image(source)
    np.testing.assert_array_equal(decoded.pixels, pixels)
    assert decoded.icc_profile == profile and decoded.orientation == 6 and decoded.note is None

    images.write_png(tmp_path / "out.png", decoded)
    again = images.read_image(tmp_path / "out.png")
    np.testing.assert_array_equal(again.pixels, pixels)
    assert again.icc_profile == profile and again.orientation == 6
    with Image.open(tmp_path / "out.png") as written:
        assert written.info["icc_profile"] == profile
        assert written.getexif()[images.ORIENTATION_TAG] == 6


def test_png_exif_after_the_pixel_data_is_found(tmp_path):
    pixels = random_pixels((5, 7, 4))
    data = images.encode_png16(pixels)
    exif = images._png_chunk(b"eXIf", images._exif_bytes(3))
    iend = data.rindex(b"IEND") - 4
    (tmp_path / "late.png").write_bytes(data[:iend] + exif + data[iend:])
    decoded = images.read_image(tmp_path / "late.png")
    assert decoded.orientation == 3
    np.testing.assert_array_equal(decoded.pixels, pixels)


def test_16bit_gray_alpha_png_and_prepare_reader_keep_full_depth(tmp_path):
    for channels in (2, 3):
        pixels = random_pixels((9, 8, channels), seed=channels)
        path = tmp_path / f"deep{channels}.png"
        path.write_bytes(images.encode_png16(pixels))
        raw = images.read_image_raw(path)
        assert raw.dtype == np.uint16
        np.testing.assert_array_equal(raw, pixels)


def test_lzw_compressed_16bit_tiff_is_read_at_full_depth(tmp_path):
    for photometric, shape in (("rgb", (12, 10, 3)), ("rgb", (12, 10, 4))):
        pixels = random_pixels(shape)
        path = tmp_path / f"scan{shape[-1]}.tif"
        extra = {"extrasamples": ["unassalpha"]} if shape[-1] == 4 else {}
        tifffile.imwrite(path, pixels, photometric=photometric, compression="lzw", **extra)
        decoded = images.read_image(path)
        assert decoded.note is None
        assert decoded.pixels.dtype == np.uint16
        np.testing.assert_array_equal(decoded.pixels, pixels)


def test_gray_pixels_of_either_depth_round_trip_through_the_one_png_writer(tmp_path):
    rng = np.random.default_rng(1)
    for dtype in (np.uint8, np.uint16):
        pixels = rng.integers(0, np.iinfo(dtype).max, (9, 7), dtype=dtype, endpoint=True)
        path = tmp_path / f"{np.dtype(dtype).name}.png"
        images.write_png(path, images.DecodedImage(pixels))
        again = images.read_image(path).pixels
        assert again.dtype == dtype
        np.testing.assert_array_equal(again, pixels)


def test_gray_conversion_gives_the_same_bits_on_every_cpu():
    # The digest is rgb2gray's result on a CPU without AVX-512 (OpenBLAS's AVX2 kernels); with
    # rgb2gray itself, an AVX-512 CPU differs in about a tenth of these pixels by one unit in
    # the last place, so the prepared gray dataset, and every stage reading it, changed with
    # the CPU.
    rgb = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    gray = images.to_channels(images.to_float(rgb), 1)
    assert gray.shape == (96, 128, 1) and gray.dtype == np.float32
    assert hashlib.sha256(gray.tobytes()).hexdigest() == (
        "3bd2793b8f75b51aa45bc98787c1c243bc910959522064a716246e1c152bd464"
    )
    expected = color.rgb2gray(images.to_float(rgb))
    np.testing.assert_allclose(gray[..., 0], expected, rtol=0, atol=2e-7)


def test_gray_conversion_refuses_integer_pixels_instead_of_returning_black():
    # The weights cast to an integer type are all 0: the image would come out black.
    rgb = np.full((4, 4, 3), 200, np.uint8)
    with pytest.raises(TypeError, match="uint8"):
        images.rgb_to_gray(rgb)
    assert images.rgb_to_gray(images.to_float(rgb)).min() > 0.7
