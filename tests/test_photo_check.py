"""``python -m denoiselab.photo_check``: a model of one's choosing against BM3D on photos."""

from __future__ import annotations

import numpy as np
from conftest import save_shift_model
from PIL import Image

from denoiselab import metrics, noise, photo_check


def test_the_model_named_denoises_every_photo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    photos = tmp_path / "photos"
    photos.mkdir()
    y, x = np.mgrid[0:32, 0:32]
    clean = ((0.3 + 0.4 * (x + y) / 62) * 255).astype(np.uint8)
    Image.fromarray(clean).save(photos / "ramp.png")
    loaded = photo_check.load_photos(photos)
    # A shift model returns clip(input - shift): with 0 it hands the noisy 8-bit pixels back,
    # with 0.5 it darkens them by half the range, so its score tells which model ran.
    kept = str(save_shift_model(tmp_path / "keep", (0.0,)))
    darken = str(save_shift_model(tmp_path / "darken", (0.5,)))
    report = photo_check.check(loaded, (0.1,), seed=0, model=kept)
    noisy = photo_check.quantised(noise.noisy_images(loaded, 0.1, 0)["ramp"]) / 255.0
    row = report["levels"]["0.1"]["ramp"]
    assert row["champion"]["psnr"] == round(metrics.psnr(loaded["ramp"], noisy), 3)
    assert row["bm3d"]["psnr"] > row["champion"]["psnr"]
    darker = photo_check.check(loaded, (0.1,), seed=0, model=darken)
    assert darker["levels"]["0.1"]["ramp"]["champion"]["psnr"] < row["champion"]["psnr"] - 10
    assert darker["mean_margin_db"]["gray"]["0.1"] < report["mean_margin_db"]["gray"]["0.1"]
