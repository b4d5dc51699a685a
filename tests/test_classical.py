import numpy as np
import pytest

from denoiselab import classical, metrics, noise
from denoiselab.config import EvaluateConfig


def smooth_image(size=64):
    y, x = np.mgrid[0:size, 0:size] / size
    return (0.5 + 0.3 * np.sin(5 * x) * np.cos(3 * y))[..., None].astype(np.float32)


@pytest.mark.parametrize(
    ("method", "settings"),
    [
        ("tv", {"weight": 0.1}),
        ("wavelet", {}),
        ("nl_means", {"h": 0.08}),
        ("bm3d", {"sigma_scale": 1.0}),
    ],
)
def test_each_classical_method_removes_noise(method, settings):
    clean = smooth_image()
    noisy = noise.add_gaussian_noise(clean, 0.1, np.random.default_rng(0))
    denoised = classical.DENOISERS[method](noisy, 0.1, **settings)
    assert denoised.shape == clean.shape
    assert metrics.psnr(clean, denoised) > metrics.psnr(clean, noisy) + 3


def test_selection_picks_the_best_setting_on_validation():
    clean = np.stack([smooth_image(32), smooth_image(32)[::-1]])
    noisy = noise.add_gaussian_noise(clean, 0.1, np.random.default_rng(0))
    grid = [{"weight": 0.001}, {"weight": 0.1}]
    chosen, score = classical.select_params("tv", grid, clean, noisy, 0.1)
    assert chosen == {"weight": 0.1}
    assert score > 25


def test_param_grid_comes_from_the_evaluate_section():
    config = EvaluateConfig(tv_weights=(0.05, 0.1), nl_means_h=(0.07,))
    assert classical.param_grid("tv", config) == [{"weight": 0.05}, {"weight": 0.1}]
    assert classical.param_grid("wavelet", config) == [{}]


def test_a_one_point_grid_is_not_scored_and_reports_no_psnr():
    clean = np.stack([smooth_image(32)])
    noisy = noise.add_gaussian_noise(clean, 0.1, np.random.default_rng(0))
    chosen, score = classical.select_params("wavelet", [{}], clean, noisy, 0.1)
    assert chosen == {} and score is None
