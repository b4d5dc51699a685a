import numpy as np
import pytest
from PIL import Image

from denoiselab import data, files
from denoiselab.config import PrepareConfig


def write_images(folder, count, size=(40, 48)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = (rng.random((*size, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{index:02d}.png")
    return folder


def folder_config(folder, **overrides):
    values = dict(
        source="folder",
        folder=str(folder),
        patch_size=16,
        stride=8,
        test_fraction=0.2,
        val_fraction=0.2,
    )
    values.update(overrides)
    return PrepareConfig(**values)


def test_split_is_deterministic_and_keeps_images_whole(tmp_path):
    folder = write_images(tmp_path / "images", 10)
    result = data.prepare(folder_config(folder), channels=1, seed=0)
    again = data.prepare(folder_config(folder), channels=1, seed=0)
    splits = {entry["name"]: entry["split"] for entry in result["manifest"]["images"]}
    assert splits == {entry["name"]: entry["split"] for entry in again["manifest"]["images"]}
    assert sorted(splits.values()).count("test") == 2
    assert sorted(splits.values()).count("val") == 2
    assert set(result["test"]) == {name for name, split in splits.items() if split == "test"}
    assert result["test"][
        "img00" if splits["img00"] == "test" else next(iter(result["test"]))
    ].shape[:2] == (40, 48)
    np.testing.assert_array_equal(result["train"], again["train"])
    assert result["train"].shape[1:] == (16, 16, 1)
    assert 0.0 <= result["train"].min() and result["train"].max() <= 1.0


def test_explicit_split_names_and_unknown_name(tmp_path):
    folder = write_images(tmp_path / "images", 5)
    config = folder_config(folder, test_images=("img01",), val_images=("img02",))
    result = data.prepare(config, channels=3, seed=0)
    assert list(result["test"]) == ["img01"]
    assert result["test"]["img01"].shape == (40, 48, 3)
    with pytest.raises(ValueError, match="prepare.test_images names 'nope'"):
        data.prepare(folder_config(folder, test_images=("nope",)), channels=1, seed=0)


def test_too_few_images_for_the_splits(tmp_path):
    folder = write_images(tmp_path / "images", 2)
    with pytest.raises(ValueError, match="too few images for the splits"):
        data.prepare(folder_config(folder), channels=1, seed=0)


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="prepare.folder .* is not a folder"):
        data.prepare(folder_config(tmp_path / "missing"), channels=1, seed=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no PNG/JPEG/TIFF/BMP images"):
        data.prepare(folder_config(tmp_path / "empty"), channels=1, seed=0)


def test_bad_images_are_skipped_and_listed_or_fail(tmp_path):
    folder = write_images(tmp_path / "images", 6)
    (folder / "zero.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("not an image")
    truncated = (folder / "img00.png").read_bytes()[:200]
    (folder / "cut.png").write_bytes(truncated)
    result = data.prepare(folder_config(folder), channels=1, seed=0)
    skipped = {entry["file"].split("/")[-1] for entry in result["manifest"]["skipped"]}
    assert skipped == {"zero.png", "notes.jpg", "cut.png"}
    assert result["manifest"]["counts"]["skipped"] == 3
    assert result["manifest"]["counts"]["images"] == 6
    with pytest.raises(files.ImageReadError, match="cut.png|notes.jpg|zero.png"):
        data.prepare(folder_config(folder, on_bad_image="fail"), channels=1, seed=0)


def test_mixed_modes_and_bit_depths_become_float_in_range(tmp_path):
    folder = write_images(tmp_path / "images", 4)
    Image.fromarray((np.arange(40 * 48).reshape(40, 48) * 30).astype(np.uint16)).save(
        folder / "deep.png"
    )
    Image.fromarray(np.zeros((40, 48, 4), np.uint8)).save(folder / "alpha.png")
    result = data.prepare(
        folder_config(folder, test_images=("deep",), val_images=("alpha",)), 1, 0
    )
    deep = result["test"]["deep"]
    assert deep.dtype == np.float32 and deep.shape == (40, 48, 1)
    assert deep.max() == pytest.approx((40 * 48 - 1) * 30 / 65535, rel=1e-5)


def test_builtin_source_lists_only_natural_photographs():
    paths = data.builtin_paths()
    assert {"camera", "astronaut", "coins", "moon"} <= set(paths)
    assert not {"chessboard", "phantom", "logo"} & set(paths)
    assert all(path.is_file() for path in paths.values())


def test_patches_cover_the_grid():
    image = np.arange(20 * 20, dtype=np.float32).reshape(20, 20, 1)
    patches = data.extract_patches(image, 8, 4)
    assert patches.shape == (16, 8, 8, 1)
    np.testing.assert_array_equal(patches[1], image[0:8, 4:12])
