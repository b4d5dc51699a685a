"""The opponent colour planes: one luminance and two chrominance planes of an RGB image, the
space a grayscale model denoises a colour image in (:mod:`denoiselab.denoise`)."""

from __future__ import annotations

import numpy as np

# RGB -> one luminance and two chrominance planes, each in [0, 1]. The rows are orthogonal, so
# white noise of std sigma on R, G and B stays white on each plane, with std sigma / sqrt(3),
# sigma / sqrt(2) and sigma * sqrt(6) / 4: the luminance, which holds most of the detail, is
# the least noisy, and the chrominance planes are smooth (CBM3D denoises in such a space).
OPPONENT = np.array([[1 / 3, 1 / 3, 1 / 3], [1 / 2, 0, -1 / 2], [1 / 4, -1 / 2, 1 / 4]])
OPPONENT_OFFSET = np.array([0.0, 0.5, 0.5])
OPPONENT_INVERSE = np.linalg.inv(OPPONENT)


def to_opponent(image: np.ndarray) -> np.ndarray:
    """An HWC RGB image in [0, 1] as its three opponent planes, each in [0, 1]."""
    return (image @ OPPONENT.T + OPPONENT_OFFSET).astype(np.float32)


def from_opponent(planes: np.ndarray) -> np.ndarray:
    """The RGB image of three opponent planes (the inverse of :func:`to_opponent`)."""
    return ((planes - OPPONENT_OFFSET) @ OPPONENT_INVERSE.T).astype(np.float32)


def stretch_chroma(planes: np.ndarray, gain: float) -> np.ndarray:
    """Opponent planes with the two chrominance planes stretched by ``gain`` about their
    mid-range 0.5 (``1 / gain`` undoes it); the luminance plane as it is."""
    if gain == 1:
        return planes
    stretched = planes.copy()
    stretched[..., 1:] = OPPONENT_OFFSET[1:] + gain * (planes[..., 1:] - OPPONENT_OFFSET[1:])
    return stretched
