"""``python -m denoiselab.photo_check``: a model of one's choosing against BM3D on photos."""

from __future__ import annotations

import json

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
    report = photo_check.check(loaded, (0.1,), seed=0, models=[kept, darken])
    noisy = photo_check.quantised(noise.noisy_images(loaded, 0.1, 0)["ramp"]) / 255.0
    row = report["levels"]["0.1"]["ramp"]
    assert row[kept]["psnr"] == round(metrics.psnr(loaded["ramp"], noisy), 3)
    assert row["bm3d"]["psnr"] > row[kept]["psnr"]
    assert row[darken]["psnr"] < row[kept]["psnr"] - 10
    margins = report["mean_margin_db"]
    assert margins[darken]["gray"]["0.1"] < margins[kept]["gray"]["0.1"] < 0
    # Each model's margin is to the one BM3D run.
    assert margins[kept]["gray"]["0.1"] == round(row[kept]["psnr"] - row["bm3d"]["psnr"], 3)


def test_the_command_checks_every_model_named(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.full((24, 24), 128, np.uint8)).save(photos / "flat.png")
    kept = str(save_shift_model(tmp_path / "keep", (0.0,)))
    darken = str(save_shift_model(tmp_path / "darken", (0.5,)))
    out = tmp_path / "report.json"
    argv = ["photo_check", "--images", str(photos), "--sigmas", "0.1", "--out", str(out)]
    monkeypatch.setattr("sys.argv", [*argv, "--model", kept, "--model", darken])
    photo_check.main()
    printed = capsys.readouterr().out
    assert f"{kept}: mean PSNR margin" in printed and f"{darken}: mean PSNR margin" in printed
    report = json.loads(out.read_text())
    assert set(report["levels"]["0.1"]["flat"]) == {kept, darken, "bm3d"}
