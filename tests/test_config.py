from pathlib import Path

import pytest
import yaml

from denoiselab import config, profiles

ROOT = Path(__file__).resolve().parents[1]


def raw_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_project_params_and_smoke_profile_are_valid():
    params = config.load_params(ROOT / "params.yaml")
    assert params.base.noise_sigma == pytest.approx(0.1)
    assert params.train_cae.loss == "bce"
    # Portable by default: bfloat16 only where the hardware computes it natively.
    sections = (params.train_cae, params.train_unet, params.train_unet_rgb, params.tune_unet)
    assert {section.precision for section in sections} == {"auto"}
    assert config.TrainConfig().precision == config.TuneConfig().precision == "auto"
    smoke = profiles.apply_profile(
        raw_params(), profiles.load_profile(ROOT / "profiles/smoke.yaml")
    )
    assert config.parse_params(smoke).tune_unet.n_trials == 2
    # Blind by default: the U-Nets and the colour model train across the sweep's levels, the
    # seed's CAE at base.noise_sigma alone.
    assert params.train_cae.noise_sigma_range is None
    for section in (params.train_unet, params.train_unet_rgb, params.tune_unet):
        assert section.noise_sigma_range == (0.0, 0.2)
    assert params.add_noise.sweep.gray == (0.05, 0.1, 0.15, 0.2)
    assert params.add_noise.sweep.colour == (0.05, 0.1, 0.2)


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("base", "noise_sigma", -0.1, "base.noise_sigma"),
        ("base", "noise_sigma", 0, "base.noise_sigma"),
        ("base", "noise_sigma", "high", "base.noise_sigma must be a number"),
        ("base", "channels", 1, "unknown key base.channels"),
        ("train_unet", "noise_sigma_range", [0.2, 0.1], "train_unet.noise_sigma_range"),
        ("train_unet", "noise_sigma_range", [0.0, 0.0], "train_unet.noise_sigma_range"),
        ("train_unet", "noise_sigma_range", [0.0, 1.5], "train_unet.noise_sigma_range"),
        ("train_unet_rgb", "fresh_noise", False, "train_unet_rgb.noise_sigma_range needs"),
        ("tune_unet", "noise_sigma_range", [0.1], "tune_unet.noise_sigma_range"),
        ("add_noise", "sweep", {"gray": [0.1, 1.2]}, "add_noise.sweep.gray[1] must be in"),
        ("add_noise", "sweep", {"gray": []}, "add_noise.sweep.gray must list at least one"),
        ("add_noise", "sweep", {"grey": [0.1]}, "unknown key add_noise.sweep.grey"),
        ("train_unet", "learning_rate", "fast", "train_unet.learning_rate must be a number"),
        ("train_unet", "epochs", 2.5, "train_unet.epochs must be an integer"),
        ("train_unet", "model", "resnet", "train_unet.model must be 'cae' or 'unet'"),
        ("train_unet", "loss", "huber", "train_unet.loss must be one of"),
        ("train_unet", "loss", "bce", "train_unet.loss 'bce' needs outputs in [0, 1]"),
        ("train_unet", "depth", 7, "train_unet.depth"),
        ("train_unet", "batchsize", 8, "unknown key train_unet.batchsize"),
        ("train_unet", "steps_per_execution", 0, "train_unet.steps_per_execution"),
        ("train_unet", "precision", "bfloat16", "train_unet.precision must be one of"),
        ("tune_unet", "precision", "mixed_float16", "tune_unet.precision must be one of"),
        ("tune_unet", "steps_per_execution", 0, "tune_unet.steps_per_execution"),
        (
            "prepare",
            "patch_size",
            60,
            "prepare.patch_size must be divisible by 2**train_unet.depth",
        ),
        ("prepare", "source", "web", "prepare.source must be 'builtin' or 'folder'"),
        ("prepare", "on_bad_image", "ignore", "prepare.on_bad_image"),
        ("tune_unet", "loss", ["mse", "ssim"], "tune_unet.loss"),
        ("tune_unet", "learning_rate", [0.1, 0.01], "tune_unet.learning_rate"),
        ("classical", "methods", ["bm4d"], "classical.methods"),
        ("classical", "tv_weight_scale", [], "classical.tv_weight_scale must list"),
    ],
)
def test_bad_params_name_the_key(section, key, value, message):
    raw = raw_params()
    raw[section][key] = value
    with pytest.raises(ValueError, match=None) as error:
        config.parse_params(raw)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_folder_source_needs_a_folder():
    raw = raw_params()
    raw["prepare"]["source"] = "folder"
    with pytest.raises(ValueError, match="prepare.folder"):
        config.parse_params(raw)


def test_unknown_section_is_rejected():
    raw = raw_params()
    raw["trian_unet"] = {}
    with pytest.raises(ValueError, match="unknown section 'trian_unet'"):
        config.parse_params(raw)


def test_missing_and_broken_params_files(tmp_path):
    with pytest.raises(ValueError, match="params file not found"):
        config.load_params(tmp_path / "params.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("base: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        config.load_params(broken)


def test_profile_args_quote_lists():
    args = profiles.dvc_set_args({"tune_unet.depth": [2], "train_unet.epochs": 2})
    assert args == ["-S", "tune_unet.depth=[2]", "-S", "train_unet.epochs=2"]


def test_check_params_command_names_the_bad_key(tmp_path):
    from denoiselab import cli

    raw = raw_params()
    raw["train_unet"]["learning_rate"] = -1
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert cli.main(["check-params", str(ROOT / "params.yaml")]) == 0
    assert cli.main(["check-params", str(path)]) == 2
