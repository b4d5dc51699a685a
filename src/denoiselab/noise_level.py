"""The level of white Gaussian noise in an image, read from the image alone: what a model that
takes a noise level map is given when denoising (it is never told the level)."""

from __future__ import annotations

import functools

import numpy as np

from denoiselab import noise
from denoiselab.errors import UserError

# The MAD of a standard normal's absolute value: median(|N(0, 1)|).
_NORMAL_MAD = 0.6744897501960817
# Blocks of BLOCK x BLOCK finest diagonal Haar coefficients (2 * BLOCK pixels square); the level
# is read from the QUIET_SHARE quietest of them, over what that quantile is for pure noise: the
# root mean square of BLOCK**2 standard normals is the root of a chi-squared over its degrees.
BLOCK = 8
QUIET_SHARE = 0.1
# sqrt(scipy.stats.chi2.ppf(QUIET_SHARE, BLOCK**2) / BLOCK**2), written out: importing
# scipy.stats takes most of a second, a third of `denoiselab denoise` on a 1 MP photo
# (tests/test_noise_metrics.py checks the two agree).
_QUIET_RMS = 0.8838506856845014
# Fewer usable blocks than this and the whole-image estimate stands.
_MIN_BLOCKS = 16


def _haar(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The finest diagonal Haar coefficients of an HW plane (even sides) and its 2x2 means."""
    top_left, top_right = plane[0::2, 0::2], plane[0::2, 1::2]
    bottom_left, bottom_right = plane[1::2, 0::2], plane[1::2, 1::2]
    diagonal = (top_left - top_right - bottom_left + bottom_right) / 2
    means = (top_left + top_right + bottom_left + bottom_right) / 4
    return diagonal, means


def _blocks(values: np.ndarray) -> np.ndarray:
    """An HW array cut into BLOCK x BLOCK blocks, one per row (the remainder dropped)."""
    rows, cols = values.shape[0] // BLOCK, values.shape[1] // BLOCK
    cut = values[: rows * BLOCK, : cols * BLOCK].reshape(rows, BLOCK, cols, BLOCK)
    return cut.transpose(0, 2, 1, 3).reshape(rows * cols, BLOCK * BLOCK)


def _unclipped_blocks(values: np.ndarray) -> np.ndarray:
    """Which blocks of an HWC image in [0, 1] (even sides) stay, in every channel, farther
    than twice the channel's whole-image level from black and white, where clipping lowers the
    noise."""
    keep = None
    for channel in range(values.shape[-1]):
        diagonal, means = _haar(values[..., channel])
        block_means = _blocks(means)
        margin = 2 * _whole_image_sigma(diagonal)
        inside = (block_means.min(axis=1) > margin) & (block_means.max(axis=1) < 1 - margin)
        keep = inside if keep is None else keep & inside
    return keep


class ClippedIn:
    """The image the noise was clipped in, for reading the level of each of its planes (a
    colour image's opponent planes): its blocks near black or white are found once, for all of
    them."""

    def __init__(self, image: np.ndarray) -> None:
        if image.ndim != 3:
            raise UserError(f"expected an HWC image, got shape {image.shape}")
        self.image = image

    @functools.cached_property
    def unclipped(self) -> np.ndarray:
        height, width = (side - side % 2 for side in self.image.shape[:2])
        return _unclipped_blocks(np.asarray(self.image[:height, :width], np.float64))


def _whole_image_sigma(diagonal: np.ndarray) -> float:
    magnitudes = np.abs(diagonal[diagonal != 0])
    return float(np.median(magnitudes)) / _NORMAL_MAD if magnitudes.size else 0.0


def _plane_sigma(plane: np.ndarray, unclipped: np.ndarray) -> float:
    diagonal, _ = _haar(plane)
    whole = _whole_image_sigma(diagonal)
    if whole == 0:
        return 0.0
    coefficients = _blocks(diagonal)
    # Noise-free flat blocks (exact zeros) have no noise to read.
    usable = unclipped & ((coefficients == 0).mean(axis=1) < 0.5)
    if usable.sum() < _MIN_BLOCKS:
        return whole
    rms = np.sqrt(np.mean(coefficients[usable] ** 2, axis=1))
    return min(whole, float(np.quantile(rms, QUIET_SHARE)) / _QUIET_RMS)


def estimate_sigma(image: np.ndarray, clipped_in: np.ndarray | ClippedIn | None = None) -> float:
    """The std of white Gaussian noise in an HWC image in [0, 1], per channel, averaged over the
    channels.

    Donoho and Johnstone's wavelet estimator (the median absolute finest diagonal Haar
    coefficient over 0.6745) reads a photograph's fine texture as noise too: 4-5% high at sigma
    0.05 on the validation photos, 40% on grass. So the coefficients are also cut into blocks
    (16 pixels square) and the level read from the quietest tenth of them, whose texture is
    least, scaled by what that share reads on pure noise; the lower of the two estimates is
    taken. Blocks that come within twice the level of black or white in ``clipped_in`` (the
    image the noise was clipped in, when ``image`` is a transform of it such as a colour
    image's opponent planes, or its :class:`ClippedIn`; by default ``image`` itself) are left
    out, as clipping lowers their noise; with fewer than 16 blocks left, the whole-image
    estimate stands, as it does at high levels, where clipping makes it read low as it does the
    noise itself. Exactly zero coefficients (flat or saturated areas) are left out.
    """
    if image.ndim != 3:
        raise UserError(f"expected an HWC image, got shape {image.shape}")
    if not isinstance(clipped_in, ClippedIn):
        clipped_in = ClippedIn(image if clipped_in is None else clipped_in)
    source = clipped_in.image
    if source.shape[:2] != image.shape[:2]:
        raise UserError(
            f"clipped_in is {source.shape[1]} x {source.shape[0]} pixels, "
            f"the image {image.shape[1]} x {image.shape[0]}"
        )
    height, width = (side - side % 2 for side in image.shape[:2])
    if height < 2 or width < 2:
        return 0.0
    values = np.asarray(image[:height, :width], np.float64)
    unclipped = clipped_in.unclipped
    return float(
        np.mean([_plane_sigma(values[..., c], unclipped) for c in range(values.shape[-1])])
    )


def with_estimated_map(
    image: np.ndarray, clipped_in: np.ndarray | ClippedIn | None = None
) -> np.ndarray:
    """An HWC image with its noise level map (:func:`noise.with_noise_map`) holding the level
    :func:`estimate_sigma` reads from it (``clipped_in`` as there)."""
    return noise.with_noise_map(image, estimate_sigma(image, clipped_in))
