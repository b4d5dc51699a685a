"""`denoiselab denoise` without ``--model``: each image goes to the champion of its kind,
``champion`` for grayscale and ``champion_rgb`` for colour, each loaded once and only when an
image of its kind comes, with one stderr line per kind naming the model.

The models are the "shift" models of conftest.py: the grayscale one subtracts
``GRAY_SHIFT`` from each channel, the colour one ``RGB_SHIFTS`` from R, G and B, so every
output pixel tells which model made it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import enter_repo, register_champion, save_shift_model, shift_model
from PIL import Image
from test_denoise_cli import (
    RGB2GRAY,
    RGB_SHIFTS,
    read_output,
    run_denoise,
    shift_model_output,
    shifted,
)

from denoiselab import selection
from denoiselab.errors import UserError

GRAY_SHIFT = 0.2
# Not a shift the champions make: a folder model wrongly chosen over an alias shows.
DECOY_SHIFT = 0.4


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> tuple[Path, Path]:
    """A repository whose MLflow registry holds a grayscale ``champion`` and a colour
    ``champion_rgb``, beside model folders that must not be used while the aliases exist.
    Returns the repository root and the store folder."""
    import mlflow

    base = tmp_path_factory.mktemp("registered")
    root, store = base / "repo", base / "store"
    with pytest.MonkeyPatch.context() as monkeypatch:
        enter_repo(monkeypatch, root, store)
        save_shift_model(root / "models" / "unet_tuned", (DECOY_SHIFT,))
        save_shift_model(root / "models" / "unet_rgb", (DECOY_SHIFT,) * 3)
        gray, gray_config = shift_model((GRAY_SHIFT,))
        register_champion(gray, gray_config, store / "gray", name="unet_tuned")
        colour, colour_config = shift_model(RGB_SHIFTS)
        register_champion(colour, colour_config, store / "colour", name="unet_rgb")
        mlflow.set_tracking_uri(None)
    return root, store


@pytest.fixture
def registered_repo(registered, monkeypatch) -> Path:
    root, store = registered
    return enter_repo(monkeypatch, root, store)


@pytest.fixture
def bare_repo(tmp_path, monkeypatch) -> Path:
    """A repository with no MLflow store (the default, root/mlflow.db, is not there); each
    test adds the model folders it needs."""
    return enter_repo(monkeypatch, tmp_path / "repo")


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """The location of every model the command loads, in order."""
    seen = []
    load = selection.load_denoiser

    def recording_load(source):
        seen.append(source.location)
        return load(source)

    monkeypatch.setattr(selection, "load_denoiser", recording_load)
    return seen


def write_image(path: Path, mode: str, seed: int = 0, bits: int = 8) -> np.ndarray:
    """Writes a random 12x10 image in ``mode`` (L, LA, RGB, RGBA or P); returns the pixels
    denoiselab reads from it (RGB for a palette image)."""
    rng = np.random.default_rng(seed)
    dtype = np.uint8 if bits == 8 else np.uint16
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "P": 3}[mode]
    pixels = rng.integers(0, np.iinfo(dtype).max, (12, 10, channels), endpoint=True)
    pixels = pixels.astype(dtype)
    if mode == "P":
        Image.fromarray(pixels).convert("P").save(path)
        return np.asarray(Image.open(path).convert("RGB"))
    image = pixels[..., 0] if channels == 1 else pixels
    Image.fromarray(image).save(path)
    return image


expected_output = shift_model_output


def model_lines(stderr: str) -> list[str]:
    """The command's own lines on stderr, without the progress bar's."""
    return [line for line in stderr.splitlines() if line.startswith("denoiselab:")]


def test_each_image_goes_to_the_champion_of_its_kind(registered_repo, loads, capsys):
    gray_inputs = {
        "gray.png": write_image(registered_repo / "gray.png", "L", seed=1),
        "gray_alpha.png": write_image(registered_repo / "gray_alpha.png", "LA", seed=2),
        "gray16.png": write_image(registered_repo / "gray16.png", "L", seed=3, bits=16),
    }
    colour_inputs = {
        "colour.png": write_image(registered_repo / "colour.png", "RGB", seed=4),
        "colour_alpha.png": write_image(registered_repo / "colour_alpha.png", "RGBA", seed=5),
        "palette.png": write_image(registered_repo / "palette.png", "P", seed=6),
    }
    # Colour and grayscale interleaved: each model is still loaded once.
    names = ["colour.png", "gray.png", "colour_alpha.png", "gray_alpha.png"]
    names += ["palette.png", "gray16.png"]

    status = run_denoise(*(registered_repo / name for name in names), out=registered_repo / "out")

    assert status == 0
    for inputs, shifts in ((gray_inputs, GRAY_SHIFT), (colour_inputs, RGB_SHIFTS)):
        for name, pixels in inputs.items():
            mode, denoised = read_output(registered_repo / "out" / name)
            input_mode = Image.open(registered_repo / name).mode
            assert mode == ("RGB" if input_mode == "P" else input_mode), name
            assert denoised.dtype == pixels.dtype and denoised.shape == pixels.shape, name
            np.testing.assert_allclose(
                denoised, expected_output(pixels, shifts), atol=1, err_msg=name
            )
    alpha = read_output(registered_repo / "out" / "colour_alpha.png")[1][..., 3]
    assert np.array_equal(alpha, colour_inputs["colour_alpha.png"][..., 3])
    assert sorted(loads) == ["models:/denoiselab@champion", "models:/denoiselab@champion_rgb"]
    assert sorted(model_lines(capsys.readouterr().err)) == [
        "denoiselab: colour images: champion_rgb (models:/denoiselab@champion_rgb)",
        "denoiselab: grayscale images: champion (models:/denoiselab@champion)",
    ]


def test_model_option_overrides_the_champion_of_each_kind(registered_repo, loads, capsys):
    colour = write_image(registered_repo / "colour.png", "RGB", seed=7)
    gray = write_image(registered_repo / "gray.png", "L", seed=8)
    inputs = [registered_repo / "colour.png", registered_repo / "gray.png"]

    assert run_denoise(*inputs, out=registered_repo / "gray_model", model="champion") == 0
    np.testing.assert_allclose(
        read_output(registered_repo / "gray_model" / "colour.png")[1],
        expected_output(colour, GRAY_SHIFT),
        atol=1,
    )

    assert run_denoise(*inputs, out=registered_repo / "rgb_model", model="champion_rgb") == 0
    mode, denoised = read_output(registered_repo / "rgb_model" / "gray.png")
    assert mode == "L"
    np.testing.assert_allclose(denoised, shifted(gray[..., None], RGB_SHIFTS) @ RGB2GRAY, atol=1)
    np.testing.assert_allclose(
        read_output(registered_repo / "rgb_model" / "colour.png")[1],
        expected_output(colour, RGB_SHIFTS),
        atol=1,
    )
    assert loads == ["models:/denoiselab@champion", "models:/denoiselab@champion_rgb"]
    # The user named the model: no line per kind.
    assert model_lines(capsys.readouterr().err) == []


def test_without_colour_model_colour_images_use_the_gray_champion_with_one_note(
    bare_repo, loads, capsys
):
    save_shift_model(bare_repo / "models" / "unet_tuned", (GRAY_SHIFT,))
    inputs = {
        "first.png": write_image(bare_repo / "first.png", "RGB", seed=1),
        "second.png": write_image(bare_repo / "second.png", "RGBA", seed=2),
        "third.png": write_image(bare_repo / "third.png", "RGB", seed=3),
        "gray.png": write_image(bare_repo / "gray.png", "L", seed=4),
    }

    assert run_denoise(*(bare_repo / name for name in inputs), out=bare_repo / "out") == 0

    for name, pixels in inputs.items():
        denoised = read_output(bare_repo / "out" / name)[1]
        np.testing.assert_allclose(denoised, expected_output(pixels, GRAY_SHIFT), atol=1)
    folder = bare_repo / "models" / "unet_tuned"
    assert loads == [str(folder)]
    colour_line, gray_line = model_lines(capsys.readouterr().err)
    assert colour_line == (
        f"denoiselab: colour images: no champion_rgb in the MLflow model registry and no "
        f"{bare_repo / 'models' / 'unet_rgb'}; using the grayscale model on the planes of "
        f"each colour image ({folder})"
    )
    assert gray_line == (
        f"denoiselab: grayscale images: no champion in the MLflow model registry yet; "
        f"using the tuned U-Net from `dvc repro` ({folder})"
    )
    assert not (bare_repo / "mlflow.db").exists()


def test_colour_champion_falls_back_to_the_colour_folder(bare_repo, loads, capsys):
    save_shift_model(bare_repo / "models" / "unet_tuned", (GRAY_SHIFT,))
    save_shift_model(bare_repo / "models" / "unet_rgb", RGB_SHIFTS)
    pixels = write_image(bare_repo / "colour.png", "RGB")

    assert run_denoise(bare_repo / "colour.png", out=bare_repo / "out") == 0

    denoised = read_output(bare_repo / "out" / "colour.png")[1]
    np.testing.assert_allclose(denoised, expected_output(pixels, RGB_SHIFTS), atol=1)
    folder = bare_repo / "models" / "unet_rgb"
    assert loads == [str(folder)]
    assert model_lines(capsys.readouterr().err) == [
        f"denoiselab: colour images: no champion_rgb in the MLflow model registry yet; "
        f"using the colour U-Net from `dvc repro` ({folder})"
    ]


def test_gray_images_never_load_the_colour_model(bare_repo, loads, capsys):
    save_shift_model(bare_repo / "models" / "unet_tuned", (GRAY_SHIFT,))
    broken = bare_repo / "models" / "unet_rgb"
    broken.mkdir()
    (broken / "config.json").write_text("not a model\n")
    folder = bare_repo / "scans"
    folder.mkdir()
    inputs = {
        "page1.png": write_image(folder / "page1.png", "L", seed=1),
        "page2.png": write_image(folder / "page2.png", "LA", seed=2),
    }

    assert run_denoise(folder, out=bare_repo / "out") == 0

    for name, pixels in inputs.items():
        denoised = read_output(bare_repo / "out" / name)[1]
        np.testing.assert_allclose(denoised, expected_output(pixels, GRAY_SHIFT), atol=1)
    assert loads == [str(bare_repo / "models" / "unet_tuned")]
    assert "colour" not in capsys.readouterr().err

    # The colour model is really broken: a colour image stops the run with a model error.
    write_image(bare_repo / "colour.png", "RGB")
    assert run_denoise(bare_repo / "colour.png", out=bare_repo / "colour_out") == 2
    assert "unet_rgb/config.json" in capsys.readouterr().err


def test_missing_colour_champion_names_what_to_do(tmp_path):
    with pytest.raises(UserError) as raised:
        selection.locate_model("champion_rgb", tmp_path, {})
    message = str(raised.value)
    assert str(tmp_path / "models" / "unet_rgb") in message and "dvc repro" in message
    assert "base.channels" not in message


@pytest.mark.parametrize(
    ("aliases", "folders", "expected"),
    [
        ({"champion": "a", "champion_rgb": "b", "unet": "c"}, [], ["champion", "champion_rgb"]),
        ({"champion": "a"}, ["unet_rgb"], ["champion"]),
        ({}, ["unet_tuned", "unet_rgb"], ["unet_tuned", "unet_rgb"]),
        ({"unet_rgb": "b"}, ["cae"], ["cae", "unet_rgb"]),
    ],
)
def test_default_evaluation_models(tmp_path, aliases, folders, expected):
    for name in folders:
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "config.json").write_text("{}")
    assert selection.default_evaluation_models(tmp_path, aliases) == expected
