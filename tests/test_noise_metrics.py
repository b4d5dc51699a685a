import math
import zlib

import numpy as np
import pytest

from denoiselab import colour, metrics, noise, noise_level


def test_noise_has_the_requested_statistics():
    clean = np.full((200, 200, 1), 0.5, np.float32)
    noisy = noise.add_gaussian_noise(clean, 0.1, np.random.default_rng(0))
    difference = noisy - clean
    assert abs(difference.mean()) < 0.002
    assert difference.std() == pytest.approx(0.1, rel=0.02)
    assert noisy.dtype == np.float32


def test_noise_is_clipped_and_reproducible():
    clean = np.zeros((64, 64, 1), np.float32)
    first = noise.add_gaussian_noise(clean, 0.3, np.random.default_rng(7))
    second = noise.add_gaussian_noise(clean, 0.3, np.random.default_rng(7))
    other = noise.add_gaussian_noise(clean, 0.3, np.random.default_rng(8))
    assert first.min() == 0.0 and first.max() <= 1.0
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_image_noise_does_not_depend_on_the_other_images():
    image = np.random.default_rng(1).random((16, 16, 1)).astype(np.float32)
    alone = noise.noisy_images({"a": image}, 0.1, seed=0)
    together = noise.noisy_images({"b": image[:8], "a": image}, 0.1, seed=0)
    np.testing.assert_array_equal(alone["a"], together["a"])


def test_images_of_the_same_size_get_independent_noise_fields():
    # Mid-gray keeps clipping out of the way, so noisy - clean is the noise itself.
    clean = np.full((128, 128, 1), 0.5, np.float32)
    noisy = noise.noisy_images({"astronaut": clean, "camera": clean, "moon": clean}, 0.1, 0)
    fields = [(image - clean).ravel() for image in noisy.values()]
    for first, second in ((0, 1), (0, 2), (1, 2)):
        assert abs(np.corrcoef(fields[first], fields[second])[0, 1]) < 0.03
    # The level is part of the seed too: sigma 0.2 is not sigma 0.1's field doubled.
    louder = noise.noisy_images({"camera": clean}, 0.2, 0)["camera"] - clean
    assert abs(np.corrcoef(fields[1], louder.ravel())[0, 1]) < 0.03


def test_a_known_name_seed_and_sigma_reproduce_the_protocol_draw_exactly():
    clean = np.random.default_rng(3).random((16, 16, 1)).astype(np.float32)
    rng = np.random.default_rng([0, zlib.crc32(b"camera"), 100])
    expected = np.clip(clean + rng.normal(0.0, 0.1, clean.shape), 0, 1).astype(np.float32)
    noisy = noise.noisy_images({"camera": clean}, 0.1, seed=0)["camera"]
    np.testing.assert_array_equal(noisy, expected)
    np.testing.assert_array_equal(noise.noisy_images({"camera": clean}, 0.1, 0)["camera"], noisy)
    assert noisy.dtype == np.float32 and noisy.shape == clean.shape
    assert not np.array_equal(noise.noisy_images({"camera": clean}, 0.1, 1)["camera"], noisy)


def test_colour_images_draw_independent_noise_per_channel():
    clean = np.full((128, 128, 3), 0.5, np.float32)
    field = noise.noisy_images({"astronaut": clean}, 0.1, seed=0)["astronaut"] - clean
    channels = [field[..., index].ravel() for index in range(3)]
    for first, second in ((0, 1), (0, 2), (1, 2)):
        assert abs(np.corrcoef(channels[first], channels[second])[0, 1]) < 0.03
    assert field.std() == pytest.approx(0.1, rel=0.03)


@pytest.mark.parametrize("sigma", [0.02, 0.05, 0.1, 0.2])
def test_the_noise_level_is_read_from_the_image_alone(sigma):
    # A smooth image with detail of its own: the estimate must see the noise, not the image.
    y, x = np.mgrid[0:256, 0:256] / 256
    clean = (0.5 + 0.25 * np.sin(9 * x) * np.cos(7 * y))[..., None]
    noisy = noise.add_gaussian_noise(clean, sigma, np.random.default_rng(3))
    assert noise_level.estimate_sigma(noisy) == pytest.approx(sigma, rel=0.06)
    colour = noise.add_gaussian_noise(np.repeat(clean, 3, -1), sigma, np.random.default_rng(4))
    assert noise_level.estimate_sigma(colour) == pytest.approx(sigma, rel=0.06)


def test_fine_texture_in_part_of_the_image_is_not_read_as_noise():
    # Pixel-scale texture over half the image: the whole-image wavelet median reads it as noise
    # (a denoiser told too high a level smooths the detail away); the quiet blocks do not.
    rng = np.random.default_rng(5)
    clean = np.full((256, 256, 1), 0.5)
    clean[:, 128:] += 0.06 * rng.standard_normal((256, 128, 1))
    noisy = noise.add_gaussian_noise(clean, 0.05, np.random.default_rng(6))
    diagonal = noisy[0::2, 0::2] - noisy[0::2, 1::2] - noisy[1::2, 0::2] + noisy[1::2, 1::2]
    whole_image = np.median(np.abs(diagonal / 2)) / 0.6745
    assert whole_image > 1.2 * 0.05
    assert noise_level.estimate_sigma(noisy) == pytest.approx(0.05, rel=0.06)


def test_clipped_and_noise_free_areas_are_not_taken_for_quiet_ones():
    # Black (its noise clipped to half a Gaussian) and noise-free flat areas are the quietest
    # blocks of this image, but not for want of texture: they are left out.
    rng = np.random.default_rng(5)
    clean = np.full((256, 256, 1), 0.5)
    clean[:, :64] = 0.0
    clean[:, 192:] += 0.06 * rng.standard_normal((256, 64, 1))
    noisy = noise.add_gaussian_noise(clean, 0.05, np.random.default_rng(7))
    noisy[-32:] = 0.5
    assert noise_level.estimate_sigma(noisy) == pytest.approx(0.05, rel=0.06)


def test_a_colour_planes_level_leaves_out_what_was_clipped_in_rgb():
    # White areas clip the noise of R, G and B, so a chrominance plane is quiet there though
    # its own values sit mid-range: the RGB image says where.
    clean = np.full((256, 256, 3), 0.45)
    clean[:, :, 0] += 0.2 * np.sin(np.mgrid[0:256, 0:256][1] / 9)
    clean[:, 112:] = 1.0
    noisy = noise.add_gaussian_noise(clean, 0.1, np.random.default_rng(8))
    chroma = colour.to_opponent(noisy)[..., [1]]
    diagonal = chroma[0::2, 0::2] - chroma[0::2, 1::2] - chroma[1::2, 0::2] + chroma[1::2, 1::2]
    whole_image = np.median(np.abs(diagonal / 2)) / 0.6745
    # The quiet blocks are the clipped ones unless RGB rules them out; then the whole-image
    # estimate (lowered by the clipped half, as the noise is) stands.
    assert noise_level.estimate_sigma(chroma) < 0.9 * whole_image
    assert noise_level.estimate_sigma(chroma, clipped_in=noisy) == pytest.approx(
        whole_image, rel=0.01
    )
    # The RGB image's blocks, found once, read every plane the same way.
    clipped_in = noise_level.ClippedIn(noisy)
    for plane in range(3):
        planes = colour.to_opponent(noisy)[..., [plane]]
        assert noise_level.estimate_sigma(planes, clipped_in) == noise_level.estimate_sigma(
            planes, clipped_in=noisy
        )


def test_the_quiet_blocks_noise_quantile_is_the_chi_squared_one():
    from scipy import stats

    degrees = noise_level.BLOCK**2
    quantile = stats.chi2.ppf(noise_level.QUIET_SHARE, degrees)
    assert noise_level._QUIET_RMS == pytest.approx(np.sqrt(quantile / degrees), rel=1e-12)


def test_a_clipped_in_image_of_another_size_is_refused():
    with pytest.raises(ValueError, match="clipped_in is 8 x 6 pixels, the image 8 x 4"):
        noise_level.estimate_sigma(np.zeros((4, 8, 1)), clipped_in=np.zeros((6, 8, 3)))


def test_a_clean_flat_image_reads_no_noise_and_the_map_holds_the_level():
    flat = np.full((32, 48, 1), 0.5, np.float32)
    assert noise_level.estimate_sigma(flat) == 0.0
    noisy = noise.add_gaussian_noise(flat, 0.1, np.random.default_rng(0))
    mapped = noise_level.with_estimated_map(noisy)
    assert mapped.shape == (32, 48, 2) and mapped.dtype == np.float32
    np.testing.assert_array_equal(mapped[..., 0], noisy[..., 0])
    assert np.ptp(mapped[..., 1]) == 0
    assert mapped[0, 0, 1] == pytest.approx(noise_level.estimate_sigma(noisy))
    assert noise.with_noise_map(noisy, 0.2)[5, 5, 1] == pytest.approx(0.2)


def test_bad_sigma_is_rejected():
    with pytest.raises(ValueError, match="sigma"):
        noise.add_gaussian_noise(np.zeros((4, 4, 1)), 0.0, np.random.default_rng(0))


def test_psnr_of_identical_images_is_infinite():
    image = np.random.default_rng(0).random((16, 16, 1))
    assert math.isinf(metrics.psnr(image, image))
    assert metrics.ssim(image, image) == pytest.approx(1.0)


def test_psnr_of_a_known_mse():
    clean = np.zeros((16, 16, 1))
    denoised = np.full((16, 16, 1), 0.1)  # MSE 0.01 -> 20 dB
    assert metrics.psnr(clean, denoised) == pytest.approx(20.0)


def test_denoised_values_are_clipped_before_scoring():
    clean = np.ones((16, 16, 1))
    assert math.isinf(metrics.psnr(clean, np.full((16, 16, 1), 1.5)))


def test_colour_ssim_and_score_images():
    rng = np.random.default_rng(0)
    clean = {"x": rng.random((32, 32, 3)), "y": rng.random((32, 32, 3))}
    noisy = {name: np.clip(image + 0.1, 0, 1) for name, image in clean.items()}
    scores = metrics.score_images(clean, noisy)
    assert set(scores["per_image"]) == {"x", "y"}
    assert scores["psnr"] == pytest.approx(
        np.mean([v["psnr"] for v in scores["per_image"].values()])
    )
    assert 0 < scores["ssim"] < 1
