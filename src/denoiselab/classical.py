"""Classical denoisers scored beside the learned models: TV, wavelet, non-local means, BM3D.

BM3D's licence is non-commercial, so it is an evaluation-only dependency: it is scored here
and in the benchmark, never used to denoise for users.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
from skimage import restoration

from denoiselab import metrics
from denoiselab.errors import UserError


def _channel_axis(image: np.ndarray):
    return -1 if image.shape[-1] > 1 else None


def _squeeze(image: np.ndarray) -> np.ndarray:
    return image[..., 0] if image.shape[-1] == 1 else image


def _restore(image: np.ndarray, result: np.ndarray) -> np.ndarray:
    result = np.asarray(result, np.float32).reshape(image.shape)
    return np.clip(result, 0.0, 1.0)


def tv(image: np.ndarray, sigma: float, weight: float) -> np.ndarray:
    """Total variation (Chambolle) on an HWC image in [0, 1]."""
    result = restoration.denoise_tv_chambolle(
        _squeeze(image), weight=weight, channel_axis=_channel_axis(image)
    )
    return _restore(image, result)


def wavelet(image: np.ndarray, sigma: float) -> np.ndarray:
    """Wavelet BayesShrink with the noise level estimated from the image."""
    result = restoration.denoise_wavelet(
        _squeeze(image),
        method="BayesShrink",
        mode="soft",
        rescale_sigma=True,
        channel_axis=_channel_axis(image),
    )
    return _restore(image, result)


def nl_means(image: np.ndarray, sigma: float, h: float) -> np.ndarray:
    """Fast non-local means, patch 5, distance 6."""
    result = restoration.denoise_nl_means(
        _squeeze(image),
        h=h,
        patch_size=5,
        patch_distance=6,
        fast_mode=True,
        channel_axis=_channel_axis(image),
    )
    return _restore(image, result)


def bm3d(image: np.ndarray, sigma: float, sigma_scale: float) -> np.ndarray:
    """BM3D (evaluation only) with ``sigma_psd = sigma * sigma_scale``."""
    try:
        import bm3d as bm3d_package
    except ImportError as error:
        raise UserError(
            "BM3D needs the bm3d package (evaluation only): pip install 'denoiselab[eval]'"
        ) from error

    if image.shape[-1] == 3:
        result = bm3d_package.bm3d_rgb(image, sigma_psd=sigma * sigma_scale)
    else:
        result = bm3d_package.bm3d(_squeeze(image), sigma_psd=sigma * sigma_scale)
    return _restore(image, result)


DENOISERS: dict[str, Callable[..., np.ndarray]] = {
    "tv": tv,
    "wavelet": wavelet,
    "nl_means": nl_means,
    "bm3d": bm3d,
}


def settings_for(method: str, sigma: float) -> dict:
    """Settings for noise ``sigma`` where no validation split is at hand (``denoiselab
    evaluate``): those the default run chose on its validation images at sigma 0.1 (TV weight
    0.1, non-local means h 0.08, BM3D at the true sigma), scaled with sigma."""
    return {
        "tv": {"weight": sigma},
        "wavelet": {},
        "nl_means": {"h": 0.8 * sigma},
        "bm3d": {"sigma_scale": 1.0},
    }[method]


def param_grid(method: str, evaluate_config) -> list[dict]:
    """The candidate settings of one method, from the evaluate params section."""
    grids = {
        "tv": {"weight": evaluate_config.tv_weights},
        "wavelet": {},
        "nl_means": {"h": evaluate_config.nl_means_h},
        "bm3d": {"sigma_scale": evaluate_config.bm3d_sigma_scale},
    }[method]
    keys = list(grids)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grids.values())]


def select_params(
    method: str, grid: list[dict], clean: np.ndarray, noisy: np.ndarray, sigma: float
) -> tuple[dict, float | None]:
    """The grid point with the best mean PSNR on validation images (NHWC patches, or a list
    of HWC images), and that PSNR.

    A one-point grid has nothing to choose, so it is not scored and its PSNR is ``None``
    (``null`` in the reports). Selection never sees the test split.
    """
    if len(grid) == 1:
        return grid[0], None
    best, best_score = grid[0], -np.inf
    for candidate in grid:
        scores = [
            metrics.psnr(clean_patch, DENOISERS[method](noisy_patch, sigma, **candidate))
            for clean_patch, noisy_patch in zip(clean, noisy, strict=True)
        ]
        score = float(np.mean(scores))
        if score > best_score:
            best, best_score = candidate, score
    return best, best_score
