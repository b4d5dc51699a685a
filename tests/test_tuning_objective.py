"""What a tuning trial is scored by: its PSNR on the whole validation images at every noise
level, the measure the evaluate stage chooses champions by, not the training patches."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import blur_model

from denoiselab import files, metrics, model_store, noise, scoring, tuning
from denoiselab.errors import UserError


def validation_images(seed: int = 0) -> tuning.ValidationImages:
    rng = np.random.default_rng(seed)
    # Sizes off the pooling grid: the model is padded and cropped back, as in evaluate.
    clean = {
        "wide": rng.random((21, 35, 1)).astype(np.float32),
        "tall": rng.random((30, 17, 1)).astype(np.float32),
    }
    levels = {level: noise.noisy_images(clean, float(level), seed=0) for level in ("0.05", "0.2")}
    return tuning.ValidationImages(clean=clean, noisy=levels)


def test_a_trial_is_scored_as_the_evaluate_stage_scores_a_model():
    model, config = blur_model("unet", depth=2)
    images = validation_images()
    run = scoring.model_denoiser(model_store.Denoiser(model, config.depth, 1, "test"))
    expected = np.mean(
        [
            np.mean([metrics.psnr(images.clean[name], run(noisy[name])) for name in noisy])
            for noisy in images.noisy.values()
        ]
    )
    assert tuning.whole_image_psnr(model, images, config.depth) == pytest.approx(expected, 1e-6)


def test_validation_images_are_read_at_every_level_add_noise_wrote(tmp_path):
    images = validation_images()
    prepared, noisy = tmp_path / "prepared", tmp_path / "noisy"
    files.save_arrays(prepared / "val_images.npz", images.clean)
    for level, arrays in images.noisy.items():
        files.save_arrays(noisy / noise.LEVELS_FOLDER / level / "val_images.npz", arrays)
    loaded = tuning.load_validation_images(prepared, noisy)
    assert sorted(loaded.noisy) == ["0.05", "0.2"]
    np.testing.assert_array_equal(loaded.noisy["0.2"]["tall"], images.noisy["0.2"]["tall"])
    np.testing.assert_array_equal(loaded.clean["wide"], images.clean["wide"])

    empty = tmp_path / "empty"
    (empty / noise.LEVELS_FOLDER).mkdir(parents=True)
    with pytest.raises(UserError, match="no noisy validation images; run `dvc repro`"):
        tuning.load_validation_images(prepared, empty)
