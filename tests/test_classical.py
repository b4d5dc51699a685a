"""The classical denoisers, their settings per noise level, and the classical stage on tiny
gray and colour datasets."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from denoiselab import classical, files, metrics, noise
from denoiselab.config import ClassicalConfig
from denoiselab.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
ROW_KEYS = {"psnr", "ssim", "seconds_per_megapixel", "per_image", "params", "val_psnr"}


def smooth_image(size=64):
    y, x = np.mgrid[0:size, 0:size] / size
    return (0.5 + 0.3 * np.sin(5 * x) * np.cos(3 * y))[..., None].astype(np.float32)


def colour_image(size=32, phase=0.0):
    y, x = np.mgrid[0:size, 0:size] / size
    channels = [
        0.5 + 0.3 * np.sin(5 * x + phase),
        0.5 + 0.3 * np.cos(3 * y + phase),
        0.4 + 0.2 * np.sin(4 * x + 2 * y),
    ]
    return np.stack(channels, axis=-1).astype(np.float32)


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


def test_selection_scores_whole_images_by_name():
    clean = {"wide": smooth_image(40)[:, :32], "flipped": smooth_image(32)[::-1]}
    noisy = noise.noisy_images(clean, 0.1, seed=0)
    grid = [{"weight": 0.001}, {"weight": 0.1}]
    chosen, score = classical.select_params("tv", grid, clean, noisy, 0.1)
    expected = np.mean(
        [metrics.psnr(clean[name], classical.tv(noisy[name], 0.1, 0.1)) for name in clean]
    )
    assert chosen == {"weight": 0.1}
    assert score == pytest.approx(expected)
    with pytest.raises(UserError, match="same names"):
        classical.select_params("tv", grid, clean, {"wide": noisy["wide"]}, 0.1)


def test_param_grid_is_the_classical_scales_times_the_noise_level():
    config = ClassicalConfig(
        tv_weight_scale=(0.6, 1.2), nl_means_h_scale=(0.8,), bm3d_sigma_scale=(0.9, 1.0)
    )
    assert classical.param_grid("tv", config, 0.1) == [{"weight": 0.06}, {"weight": 0.12}]
    assert classical.param_grid("tv", config, 0.05) == [{"weight": 0.03}, {"weight": 0.06}]
    assert classical.param_grid("nl_means", config, 0.2) == [{"h": 0.16}]
    # The BM3D denoiser multiplies its scale by sigma itself.
    assert classical.param_grid("bm3d", config, 0.2) == [
        {"sigma_scale": 0.9},
        {"sigma_scale": 1.0},
    ]
    assert classical.param_grid("wavelet", config, 0.1) == [{}]


def test_settings_without_validation_scale_with_sigma():
    assert classical.settings_for("tv", 0.05) == {"weight": 0.05}
    assert classical.settings_for("nl_means", 0.05)["h"] == pytest.approx(0.04)
    assert classical.settings_for("bm3d", 0.2) == {"sigma_scale": 1.0}


def test_a_one_point_grid_is_scored_on_the_validation_images_all_the_same():
    clean = np.stack([smooth_image(32)])
    noisy = noise.add_gaussian_noise(clean, 0.1, np.random.default_rng(0))
    chosen, score = classical.select_params("wavelet", [{}], clean, noisy, 0.1)
    assert chosen == {}
    assert score == pytest.approx(metrics.psnr(clean[0], classical.wavelet(noisy[0], 0.1)))
    assert score > metrics.psnr(clean[0], noisy[0])


def test_the_images_digest_tells_any_changed_pixel_name_or_set_apart():
    images = {"a": smooth_image(8), "b": smooth_image(8)[::-1].copy()}
    digest = classical.images_digest(images, images)
    assert digest == classical.images_digest(dict(reversed(images.items())), images)
    changed = {**images, "b": images["b"] + np.float32(1e-7)}
    renamed = {"a": images["a"], "c": images["b"]}
    others = [
        classical.images_digest(changed, images),
        classical.images_digest(renamed, images),
        classical.images_digest({"a": images["a"]}, {"b": images["b"], **images}),
        classical.images_digest(images),
    ]
    assert len({digest, *others}) == 5


def write_dataset(root: Path, dataset: str, test: dict, val: dict, levels: list[float]) -> None:
    """The prepared whole images of one dataset and their noisy copies at each level, laid out
    as the prepare and add_noise stages write them: the files the classical stage depends on,
    without the training patches and manifest beside them, which it does not read."""
    prepared, noisy = root / "data" / dataset / "prepared", root / "data" / dataset / "noisy"
    files.save_arrays(prepared / "test.npz", test)
    files.save_arrays(prepared / "val_images.npz", val)
    for level in levels:
        folder = noisy / noise.LEVELS_FOLDER / noise.level_key(level)
        files.save_arrays(folder / "test.npz", noise.noisy_images(test, level, seed=0))
        files.save_arrays(folder / "val_images.npz", noise.noisy_images(val, level, seed=0))


def run_stage(root: Path, dataset: str, sweep: list[float], classical_section: dict) -> dict:
    """Runs stages/classical.py on ``root``'s dataset with the repository's params.yaml, noise
    sigma 0.1, ``sweep`` as the dataset's levels and ``classical_section``; returns its report."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["base"]["noise_sigma"] = 0.1
    params["add_noise"]["sweep"][dataset] = sweep
    params["classical"] = classical_section
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    out = root / "reports" / "classical" / f"{dataset}.json"
    command = [
        *[sys.executable, str(ROOT / "stages" / "classical.py"), "--dataset", dataset],
        *["--prepared", f"data/{dataset}/prepared", "--noisy", f"data/{dataset}/noisy"],
        *["--out", str(out.relative_to(root))],
    ]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    report = files.read_json(out)
    report["stdout"] = result.stdout
    return report


def mean_psnr(clean: dict, noisy: dict, method: str, sigma: float, settings: dict) -> float:
    return float(
        np.mean(
            [
                metrics.psnr(
                    clean[name], classical.DENOISERS[method](noisy[name], sigma, **settings)
                )
                for name in sorted(clean)
            ]
        )
    )


def test_stage_chooses_each_setting_per_level_on_validation_and_scores_the_test_images(tmp_path):
    edge = np.zeros((24, 24, 1), np.float32)
    edge[:, 12:] = 0.6
    test = {"smooth": smooth_image(24), "edge": 0.2 + edge}
    val = {"mixed": 0.5 * smooth_image(24) + 0.5 * edge[::-1]}
    write_dataset(tmp_path, "gray", test, val, [0.05, 0.1])
    # No product of two scales with two levels coincides: 0.03, 0.05, 0.06, 0.1.
    scales = [0.6, 1.0]
    section = {
        "methods": ["tv", "nl_means"],
        "tv_weight_scale": scales,
        "nl_means_h_scale": scales,
    }
    # The sweep lists 0.05 only; 0.1 is base.noise_sigma, scored as well.
    report = run_stage(tmp_path, "gray", [0.05], section)

    stdout = report.pop("stdout")
    assert set(report) == {"dataset", "channels", "images_sha256", "levels"}
    assert (report["dataset"], report["channels"]) == ("gray", 1)
    assert list(report["levels"]) == ["0.05", "0.1"]
    names = {"tv": "weight", "nl_means": "h"}
    for key, rows in report["levels"].items():
        level = float(key)
        level_folder = tmp_path / "data/gray/noisy" / noise.LEVELS_FOLDER / key
        noisy_val = files.load_arrays(level_folder / "val_images.npz")
        noisy_test = files.load_arrays(level_folder / "test.npz")
        # What the evaluate stage checks the report against: the images scored at this level.
        assert report["images_sha256"][key] == classical.images_digest(
            val, noisy_val, test, noisy_test
        )
        assert set(rows) == {"tv", "nl_means"}
        for method, row in rows.items():
            assert set(row) == ROW_KEYS
            assert set(row["per_image"]) == set(test)
            assert all(set(scores) == {"psnr", "ssim"} for scores in row["per_image"].values())
            assert row["seconds_per_megapixel"] > 0
            # The chosen setting is the grid point with the best validation PSNR at this level.
            candidates = {
                scale: mean_psnr(val, noisy_val, method, level, {names[method]: scale * level})
                for scale in scales
            }
            best = max(candidates, key=candidates.get)
            assert row["params"] == {names[method]: pytest.approx(best * level)}
            assert row["val_psnr"] == pytest.approx(candidates[best], abs=1e-3)
            # Then it is scored on this level's test images.
            expected = mean_psnr(test, noisy_test, method, level, row["params"])
            assert row["psnr"] == pytest.approx(expected, abs=1e-3)
            assert f"{method} at sigma {key} " in stdout
    weights = [rows["tv"]["params"]["weight"] for rows in report["levels"].values()]
    assert weights[0] != weights[1]
    # Less noise, better scores.
    assert report["levels"]["0.05"]["tv"]["psnr"] > report["levels"]["0.1"]["tv"]["psnr"]


def test_stage_runs_colour_bm3d_on_colour_images(tmp_path):
    bm3d_package = pytest.importorskip("bm3d")
    test, val = {"rgb": colour_image()}, {"rgb_val": colour_image(phase=1.0)}
    write_dataset(tmp_path, "colour", test, val, [0.1])
    section = {"methods": ["bm3d"], "bm3d_sigma_scale": [1.0]}
    report = run_stage(tmp_path, "colour", [0.1], section)

    assert (report["dataset"], report["channels"]) == ("colour", 3)
    assert list(report["levels"]) == ["0.1"]
    row = report["levels"]["0.1"]["bm3d"]
    assert set(row) == ROW_KEYS
    assert row["params"] == {"sigma_scale": 1.0}
    # BM3D's one setting is scored on the validation images too: what the models must beat there.
    noisy_val = files.load_arrays(tmp_path / "data/colour/noisy/levels/0.1/val_images.npz")
    cbm3d_val = bm3d_package.bm3d_rgb(noisy_val["rgb_val"], sigma_psd=0.1)
    assert row["val_psnr"] == pytest.approx(
        metrics.psnr(val["rgb_val"], np.clip(cbm3d_val, 0, 1)), abs=1e-3
    )
    noisy = files.load_arrays(tmp_path / "data/colour/noisy/levels/0.1/test.npz")["rgb"]
    clean = test["rgb"]
    # CBM3D, which filters in a decorrelated colour space, not BM3D on the channels as a stack.
    cbm3d = metrics.psnr(clean, np.clip(bm3d_package.bm3d_rgb(noisy, sigma_psd=0.1), 0, 1))
    stacked = metrics.psnr(clean, np.clip(bm3d_package.bm3d(noisy, sigma_psd=0.1), 0, 1))
    assert abs(cbm3d - stacked) > 0.01
    assert row["psnr"] == pytest.approx(cbm3d, abs=1e-3)
    assert row["psnr"] > metrics.psnr(clean, noisy) + 3
