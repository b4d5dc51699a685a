import os
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import run_command
from PIL import Image
from skimage import color

from denoiselab import data, files, images, noise
from denoiselab.config import PrepareConfig

ROOT = Path(__file__).resolve().parents[1]


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
    with pytest.raises(images.ImageReadError, match="cut.png|notes.jpg|zero.png"):
        data.prepare(folder_config(folder, on_bad_image="fail"), channels=1, seed=0)


def test_mixed_modes_and_bit_depths_become_float_in_range(tmp_path):
    folder = write_images(tmp_path / "images", 4)
    Image.fromarray((np.arange(40 * 48).reshape(40, 48) * 30).astype(np.uint16)).save(
        folder / "deep.png"
    )
    # An orange image that is fully transparent on its left half: its colours must survive,
    # not turn black where it is transparent, nor let the alpha channel count as a colour.
    rgba = np.zeros((40, 48, 4), np.uint8)
    rgba[..., :3] = (240, 120, 30)
    rgba[:, 24:, 3] = 255
    Image.fromarray(rgba).save(folder / "alpha.png")
    result = data.prepare(
        folder_config(folder, test_images=("deep",), val_images=("alpha",)), 1, 0
    )
    deep = result["test"]["deep"]
    assert deep.dtype == np.float32 and deep.shape == (40, 48, 1)
    assert deep.max() == pytest.approx((40 * 48 - 1) * 30 / 65535, rel=1e-5)
    alpha = result["val_images"]["alpha"]
    assert alpha.dtype == np.float32 and alpha.shape == (40, 48, 1)
    expected_gray = color.rgb2gray(np.array([[[240, 120, 30]]]) / 255.0)[0, 0]
    np.testing.assert_allclose(alpha, expected_gray, rtol=1e-6)
    np.testing.assert_allclose(result["val"], expected_gray, rtol=1e-6)
    in_colour = data.prepare(
        folder_config(folder, test_images=("deep",), val_images=("alpha",)), 3, 0
    )
    np.testing.assert_allclose(
        in_colour["val_images"]["alpha"],
        np.broadcast_to([240 / 255, 120 / 255, 30 / 255], (40, 48, 3)),
    )


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


def test_val_images_are_the_whole_val_split(tmp_path):
    folder = write_images(tmp_path / "images", 8)
    for config in (
        folder_config(folder),
        folder_config(folder, test_images=("img01",), val_images=("img02", "img05")),
    ):
        result = data.prepare(config, channels=1, seed=0)
        val = {e["name"] for e in result["manifest"]["images"] if e["split"] == "val"}
        assert set(result["val_images"]) == val
        for name, image in result["val_images"].items():
            raw = images.read_image_raw(folder / f"{name}.png")
            np.testing.assert_array_equal(image, images.to_channels(images.to_float(raw), 1))


def banded_images(folder, count, size=(40, 48)):
    """Gray images whose pixel values identify them: image i only holds values 10i..10i+9."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = (10 * index + rng.integers(0, 10, size)).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{index:02d}.png")
    return folder


def owners(patches):
    """The indices of the images that the pixels of ``patches`` come from."""
    return set(np.unique(np.round(patches * 255).astype(int) // 10).tolist())


SPLIT_CONFIGS = {
    "names": dict(test_images=("img01", "img04"), val_images=("img02", "img07")),
    "test names, val fraction": dict(test_images=("img01", "img04"), val_fraction=0.2),
    "test fraction, val names": dict(val_images=("img02", "img07"), test_fraction=0.2),
    "fractions": dict(test_fraction=0.2, val_fraction=0.2),
    "a name in both lists": dict(test_images=("img01", "img04"), val_images=("img04", "img07")),
}


@pytest.mark.parametrize("overrides", SPLIT_CONFIGS.values(), ids=SPLIT_CONFIGS)
def test_no_test_or_val_image_reaches_training(tmp_path, overrides):
    # The invariant every evaluation rests on: the model never trains on what scores it.
    names = [f"img{index:02d}" for index in range(10)]
    for seed in range(5):
        splits = data.split_names(names, folder_config(tmp_path, **overrides), seed)
        train, val, test = (set(splits[key]) for key in ("train", "val", "test"))
        assert not train & test and not train & val and not val & test
        assert train | val | test == set(names)
        assert set(overrides.get("test_images", ())) <= test
    folder = banded_images(tmp_path / "images", 10)
    config = folder_config(folder, max_train_patches=100_000, **overrides)
    result = data.prepare(config, channels=1, seed=0)
    by_split = {}
    for entry in result["manifest"]["images"]:
        by_split.setdefault(entry["split"], set()).add(int(entry["name"][3:]))
    assert owners(result["train"]) == by_split["train"]
    assert owners(result["val"]) <= by_split["val"]
    assert not owners(result["train"]) & (by_split["val"] | by_split["test"])


def test_prepare_and_add_noise_stages_write_whole_val_images(tmp_path):
    # The evaluate stage reads prepared/val_images.npz and noisy/val_images.npz of a dataset.
    folder = write_images(tmp_path / "images", 6, size=(56, 64))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["prepare"].update(
        source="folder",
        folder=str(folder),
        test_images=["img01"],
        val_images=["img03", "img04"],
        patch_size=48,
        stride=8,
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for stage, args in (
        ("prepare", ["--dataset", "gray", "--out", "prepared"]),
        ("add_noise", ["--dataset", "gray", "--prepared", "prepared", "--out", "noisy"]),
    ):
        command = [sys.executable, str(ROOT / f"stages/{stage}.py"), "--params", "params.yaml"]
        run_command(command + args, tmp_path, dict(os.environ), timeout=300)
    clean = files.load_arrays(tmp_path / "prepared/val_images.npz")
    assert sorted(clean) == ["img03", "img04"]
    for name, image in clean.items():
        raw = images.read_image_raw(folder / f"{name}.png")
        np.testing.assert_array_equal(image, images.to_channels(images.to_float(raw), 1))
    noisy = files.load_arrays(tmp_path / "noisy/val_images.npz")
    expected = noise.noisy_images(
        clean, params["base"]["noise_sigma"], params["add_noise"]["seed"]
    )
    assert sorted(noisy) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(noisy[name], expected[name])


def test_noise_is_stored_per_sweep_level_with_the_protocols_pixels(tmp_path):
    """add_noise writes the whole test and validation images at every sweep level, each image
    and level with its own generator, so every method later sees the same noisy pixels."""
    folder = write_images(tmp_path / "images", 5, size=(56, 64))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["prepare"].update(
        source="folder", folder=str(folder), test_images=["img01"], val_images=["img02"]
    )
    params["prepare"].update(colour_test_images=["img03"], colour_val_images=["img04"])
    params["prepare"].update(patch_size=48, stride=8)
    params["add_noise"]["sweep"] = {"gray": [0.2, 0.05], "colour": [0.15]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for dataset in ("gray", "colour"):
        for stage, args in (
            ("prepare", ["--out", f"{dataset}/prepared"]),
            ("add_noise", ["--prepared", f"{dataset}/prepared", "--out", f"{dataset}/noisy"]),
        ):
            command = [sys.executable, str(ROOT / f"stages/{stage}.py"), "--dataset", dataset]
            run_command(command + args, tmp_path, dict(os.environ), timeout=300)
    expected_levels = {"gray": ["0.05", "0.1", "0.2"], "colour": ["0.1", "0.15"]}
    for dataset, levels in expected_levels.items():
        root = tmp_path / dataset
        # The reference level (base.noise_sigma) is always there, for the first table.
        assert sorted(path.name for path in (root / "noisy/levels").iterdir()) == levels
        clean = files.load_arrays(root / "prepared/test.npz")
        assert next(iter(clean.values())).shape[-1] == (1 if dataset == "gray" else 3)
        for level in levels:
            noisy = files.load_arrays(root / f"noisy/levels/{level}/test.npz")
            expected = noise.noisy_images(clean, float(level), 0)
            for name in expected:
                np.testing.assert_array_equal(noisy[name], expected[name])
    base = files.load_arrays(tmp_path / "gray/noisy/test.npz")
    at_base = files.load_arrays(tmp_path / "gray/noisy/levels/0.1/test.npz")
    np.testing.assert_array_equal(base["img01"], at_base["img01"])


def test_the_colour_dataset_holds_only_colour_images_and_its_own_split(tmp_path):
    folder = write_images(tmp_path / "images", 6)
    rng = np.random.default_rng(1)
    for index in range(2):
        gray = (rng.random((40, 48)) * 255).astype(np.uint8)
        Image.fromarray(gray).save(folder / f"gray{index}.png")
        # A gray photograph saved as RGB is still gray.
        Image.fromarray(np.stack([gray] * 3, axis=-1)).save(folder / f"rgb_gray{index}.png")
    config = folder_config(
        folder,
        test_images=("gray0",),
        val_images=("img00",),
        colour_test_images=("img01",),
        colour_val_images=("img02",),
    )
    gray = data.prepare(config, 1, seed=0)
    assert gray["manifest"]["counts"]["images"] == 10
    assert sorted(gray["test"]) == ["gray0"] and sorted(gray["val_images"]) == ["img00"]
    colour = data.prepare(config, 3, seed=0, colour_only=True)
    names = {entry["name"] for entry in colour["manifest"]["images"]}
    assert names == {f"img{index:02d}" for index in range(6)}
    assert sorted(colour["test"]) == ["img01"] and sorted(colour["val_images"]) == ["img02"]
    assert colour["train"].shape[-1] == 3
    assert colour["manifest"]["data_hash"] != gray["manifest"]["data_hash"]
    with pytest.raises(ValueError, match="prepare.colour_test_images names 'gray0'"):
        data.prepare(
            folder_config(folder, colour_test_images=("gray0",)), 3, seed=0, colour_only=True
        )


def half_flat_images(folder, count, size=(48, 48)):
    """Images whose left half is one flat gray and right half random texture."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = np.full(size, 90, np.uint8)
        pixels[:, size[1] // 2 :] = (rng.random((size[0], size[1] - size[1] // 2)) * 255).astype(
            np.uint8
        )
        Image.fromarray(pixels).save(folder / f"img{index:02d}.png")
    return folder


def test_min_patch_std_drops_flat_training_patches_only(tmp_path):
    folder = half_flat_images(tmp_path / "images", 6)
    config = folder_config(folder, max_train_patches=100_000)
    every = data.prepare(config, channels=1, seed=0)
    flat = every["train"].std(axis=(1, 2, 3)) < 0.02
    assert flat.any() and not flat.all()
    assert every["manifest"]["counts"]["flat_train_patches_dropped"] == 0

    config = folder_config(folder, max_train_patches=100_000, min_patch_std=0.02)
    kept = data.prepare(config, channels=1, seed=0)
    assert (kept["train"].std(axis=(1, 2, 3)) >= 0.02).all()
    np.testing.assert_array_equal(kept["train"], every["train"][~flat])
    assert kept["manifest"]["counts"]["flat_train_patches_dropped"] == int(flat.sum())
    assert kept["manifest"]["counts"]["train_patches"] == int((~flat).sum())
    # Validation patches and the whole images are the same as without the filter.
    np.testing.assert_array_equal(kept["val"], every["val"])
    assert kept["test"].keys() == every["test"].keys()
    assert kept["manifest"]["data_hash"] != every["manifest"]["data_hash"]


def test_a_min_patch_std_that_drops_every_patch_names_the_key(tmp_path):
    folder = half_flat_images(tmp_path / "images", 6)
    with pytest.raises(ValueError) as error:
        data.prepare(folder_config(folder, min_patch_std=0.5), channels=1, seed=0)
    message = str(error.value)
    assert "prepare.min_patch_std 0.5 drops every train patch" in message
    assert "\n" not in message


def test_max_patches_per_image_caps_each_large_images_share_of_training(tmp_path):
    # One large image would otherwise give most of the training patches.
    folder = banded_images(tmp_path / "images", 6)
    rng = np.random.default_rng(1)
    large = (50 + rng.integers(0, 10, (96, 96))).astype(np.uint8)  # image 5's values, larger
    Image.fromarray(large).save(folder / "img05.png")
    overrides = dict(test_images=("img00",), val_images=("img01",), max_train_patches=100_000)

    def per_image(result):
        first = np.round(result["train"][:, 0, 0, 0] * 255).astype(int) // 10
        return np.bincount(first, minlength=6)

    every = data.prepare(folder_config(folder, **overrides), channels=1, seed=0)
    assert per_image(every)[5] == 121 and per_image(every)[2] == 20
    assert every["manifest"]["counts"]["train_patches_over_image_cap"] == 0

    capped = data.prepare(
        folder_config(folder, max_patches_per_image=30, **overrides), channels=1, seed=0
    )
    assert per_image(capped).tolist() == [0, 0, 20, 20, 20, 30]
    assert capped["manifest"]["counts"]["train_patches_over_image_cap"] == 91
    # The large image's patches are a sample of its own, not copies; validation is untouched.
    assert len(np.unique(capped["train"].reshape(len(capped["train"]), -1), axis=0)) == 90
    np.testing.assert_array_equal(capped["val"], every["val"])
    assert capped["manifest"]["data_hash"] != every["manifest"]["data_hash"]


def test_exclude_images_leaves_an_image_out_of_every_split_and_lists_it(tmp_path):
    folder = write_images(tmp_path / "images", 6)
    overrides = dict(test_images=("img00",), val_images=("img01",), max_train_patches=100_000)
    every = data.prepare(folder_config(folder, **overrides), channels=1, seed=0)
    (folder / "img04.png").write_bytes(b"not an image")  # never read once excluded
    config = folder_config(folder, exclude_images=("img04",), on_bad_image="fail", **overrides)
    result = data.prepare(config, channels=1, seed=0)
    names = {entry["name"] for entry in result["manifest"]["images"]}
    assert names == {"img00", "img01", "img02", "img03", "img05"}
    assert result["manifest"]["excluded"] == ["img04"]
    assert result["manifest"]["counts"]["excluded"] == 1
    assert result["manifest"]["counts"]["train_images"] == 3
    # One image's patches fewer in training; validation and test untouched.
    assert len(result["train"]) == len(every["train"]) * 3 // 4
    np.testing.assert_array_equal(result["val"], every["val"])
    assert set(result["test"]) == {"img00"}


def test_exclude_images_naming_no_source_image_names_the_key(tmp_path):
    folder = write_images(tmp_path / "images", 5)
    with pytest.raises(ValueError) as error:
        data.prepare(folder_config(folder, exclude_images=("img09",)), channels=1, seed=0)
    message = str(error.value)
    assert "prepare.exclude_images names 'img09'" in message and "img04" in message
    assert "\n" not in message
