"""Classical denoisers scored beside the learned models: TV, wavelet, non-local means, BM3D.

BM3D's licence is non-commercial, so it is an evaluation-only dependency: it is scored here
and in the benchmark, never used to denoise for users.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from skimage import restoration

from denoiselab import files, metrics
from denoiselab.config import ClassicalConfig
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

Images = Mapping[str, np.ndarray] | Sequence[np.ndarray] | np.ndarray


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


def _times_sigma(scale: float, sigma: float) -> float:
    # Rounded so that 0.8 x 0.1 reads 0.08 in the reports, not 0.08000000000000002.
    return round(scale * sigma, 8)


def param_grid(method: str, config: ClassicalConfig, sigma: float) -> list[dict]:
    """The candidate settings of one method at noise ``sigma``, as the denoiser takes them.

    The classical section holds multiples of sigma: the TV weight and the non-local means h
    are those multiples times ``sigma``; BM3D's ``sigma_scale`` is the multiple itself (the
    denoiser multiplies it by sigma); wavelet has no setting, so its grid is one empty point.
    """
    grids = {
        "tv": [{"weight": _times_sigma(scale, sigma)} for scale in config.tv_weight_scale],
        "wavelet": [{}],
        "nl_means": [{"h": _times_sigma(scale, sigma)} for scale in config.nl_means_h_scale],
        "bm3d": [{"sigma_scale": scale} for scale in config.bm3d_sigma_scale],
    }
    return grids[method]


def _pairs(clean: Images, noisy: Images) -> list[tuple[np.ndarray, np.ndarray]]:
    if isinstance(clean, Mapping):
        if set(clean) != set(noisy):
            raise UserError("the clean and noisy validation images must have the same names")
        return [(clean[name], noisy[name]) for name in sorted(clean)]
    return list(zip(clean, noisy, strict=True))


def select_params(
    method: str, grid: list[dict], clean: Images, noisy: Images, sigma: float
) -> tuple[dict, float]:
    """The grid point with the best mean PSNR on validation images, and that PSNR.

    ``clean`` and ``noisy`` are whole images by name (HWC float32 in [0, 1]), lists of HWC
    images or NHWC arrays of patches. A one-point grid has nothing to choose, but its point is
    scored all the same: the validation PSNR of every method, BM3D's too, is what the models
    are compared with on validation (the README's lever table). Selection never sees the test
    split.
    """
    pairs = _pairs(clean, noisy)
    best, best_score = grid[0], -np.inf
    for candidate in grid:
        scores = [
            metrics.psnr(clean_image, DENOISERS[method](noisy_image, sigma, **candidate))
            for clean_image, noisy_image in pairs
        ]
        score = float(np.mean(scores))
        if score > best_score:
            best, best_score = candidate, score
    return best, best_score


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def images_digest(*image_sets: Mapping[str, np.ndarray]) -> str:
    """A digest of named images, set after set: what the classical stage scored at one level
    (clean and noisy validation images, clean and noisy test images), so that the evaluate
    stage can tell its report was scored on the very pixels it scores the models on. The
    training patches are not part of it: the classical stage does not read them, and an edit
    that changes them alone does not rerun it."""
    digest = hashlib.sha256()
    for images in image_sets:
        digest.update(str(len(images)).encode())
        for name in sorted(images):
            digest.update(f"{name}\0{files.sha256_of_array(images[name])}".encode())
    return digest.hexdigest()[:16]


def score_level(
    config: ClassicalConfig,
    sigma: float,
    *,
    clean_val: dict[str, np.ndarray],
    noisy_val: dict[str, np.ndarray],
    clean_test: dict[str, np.ndarray],
    noisy_test: dict[str, np.ndarray],
) -> dict[str, dict]:
    """Each method of the classical section at one noise level, per docs/protocol.md.

    A method's setting is chosen on the whole validation images at ``sigma`` among
    :func:`param_grid` (see :func:`select_params`), then scored on the whole test images at
    ``sigma``; the images are HWC float32 in [0, 1] by name. Returns, per method, the test
    PSNR, SSIM and seconds per megapixel, the PSNR and SSIM per image, the chosen settings as
    the denoiser takes them and their mean PSNR on the validation images (the one point of a
    one-point grid is scored too), rounded to 4 decimals. Prints a line per method, since BM3D
    takes minutes.
    """
    rows = {}
    for method in config.methods:
        grid = param_grid(method, config, sigma)
        chosen, val_psnr = select_params(method, grid, clean_val, noisy_val, sigma)
        denoise_image = functools.partial(DENOISERS[method], sigma=sigma, **chosen)
        scores, _ = metrics.score_denoiser(denoise_image, clean_test, noisy_test)
        rows[method] = {
            "psnr": _rounded(scores["psnr"]),
            "ssim": _rounded(scores["ssim"]),
            "seconds_per_megapixel": _rounded(scores["seconds_per_megapixel"]),
            "per_image": {
                name: {key: _rounded(value) for key, value in image_scores.items()}
                for name, image_scores in scores["per_image"].items()
            },
            "params": chosen,
            "val_psnr": _rounded(val_psnr),
        }
        print(
            f"{method} at sigma {sigma:g} {chosen}: validation PSNR {val_psnr:.2f} dB, "
            f"test PSNR {scores['psnr']:.2f} dB, "
            f"SSIM {scores['ssim']:.4f}, {scores['seconds_per_megapixel']:.2f} s/MP",
            flush=True,
        )
    return rows
