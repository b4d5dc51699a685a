from pathlib import Path

import pytest
import yaml

from denoiselab import catalogue, config, profiles

ROOT = Path(__file__).resolve().parents[1]

# Every setting of every training config, as the default run trains each model: moving
# settings between sections must leave the resolved values alone.
UNET = {
    "model": "unet",
    "base_filters": 16,
    "depth": 3,
    "residual": True,
    "batch_norm": False,
    "bias": False,
    "pixel_unshuffle": False,
    "noise_map": True,
    "loss": "mse",
    "learning_rate": 0.002,
    "lr_schedule": "cosine",
    "batch_size": 32,
    "epochs": 10,
    "steps_per_epoch": 50,
    "crop_size": 48,
    "fresh_noise": True,
    "noise_sigma_range": [0.0, 0.2],
    "noise_sigma_power": 1.5,
    "loss_level_power": 0.0,
    "augment": True,
    "jit_compile": False,
    "precision": "auto",
    "distribution": "none",
    "steps_per_execution": 10,
}
RESOLVED = {
    "train_cae": {
        **UNET,
        "model": "cae",
        "base_filters": 32,
        "depth": 2,
        "residual": False,
        "bias": True,
        "loss": "bce",
        "learning_rate": 0.001,
        "lr_schedule": "constant",
        "epochs": 8,
        "steps_per_epoch": 40,
        "crop_size": None,
        "fresh_noise": False,
        "noise_sigma_range": None,
        "noise_map": False,
        "augment": False,
        "steps_per_execution": 8,
    },
    "train_unet": UNET,
    "train_unet_rgb": {
        **UNET,
        "depth": 2,
        "learning_rate": 0.0036,
        "batch_size": 16,
        "steps_per_epoch": 200,
    },
}
# tune_unet's trials before the drawn keys, epochs and steps are set (tests/test_parallel_tuning.py
# checks the trials' and the final run's whole configs).
TUNE_TRAIN = {**UNET, "steps_per_execution": 8, "loss_level_power": 0.75}
TUNE = {
    "n_trials": 1,
    "trial_epochs": 3,
    "trial_budget_s": 55.0,
    "search": {
        "learning_rate": [0.0015, 0.0015],
        "base_filters": [16],
        "depth": [2],
        "batch_size": [8],
        "loss": ["l1"],
        "batch_norm": [False],
    },
    "final_epochs": 20,
    "final_budget_s": 860.0,
    "reference_gflops": {"8": 41.0, "16": 83.0, "24": 94.0, "32": 104.0},
    "warm_start": True,
    "storage": None,
    "study_name": "unet_tune",
    "train": TUNE_TRAIN,
}


def raw_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def dvc_stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_project_params_and_smoke_profile_are_valid():
    params = config.load_params(ROOT / "params.yaml")
    assert params.base.noise_sigma == pytest.approx(0.1)
    smoke = profiles.apply_profile(
        raw_params(), profiles.load_profile(ROOT / "profiles/smoke.yaml")
    )
    smoke_params = config.parse_params(smoke)
    assert smoke_params.tune_unet.n_trials == 2
    # Every model of the smoke run is tiny, whether it takes the shared value or its own.
    for section in (*smoke_params.model_sections.values(), smoke_params.tune_unet.train):
        assert section.base_filters == 8 and section.depth == 2
    for section in smoke_params.model_sections.values():
        assert (section.epochs, section.steps_per_epoch) == (2, 3)
    assert params.add_noise.sweep.gray == (0.05, 0.1, 0.15, 0.2)
    assert params.add_noise.sweep.colour == (0.05, 0.1, 0.2)


def test_every_model_resolves_to_the_settings_it_trained_with():
    params = config.load_params(ROOT / "params.yaml")
    sections = {name: config.to_dict(train) for name, train in params.model_sections.items()}
    assert sections == RESOLVED
    assert config.to_dict(params.tune_unet) == TUNE


def test_the_shared_train_section_shows_every_training_setting():
    # Nothing that shapes training hides in a default of the code.
    assert set(raw_params()["train"]) == set(config.TrainConfig.model_fields)


def test_a_shared_value_reaches_every_model_that_does_not_set_its_own():
    raw = raw_params()
    raw["train"]["learning_rate"] = 0.01
    raw["train"]["jit_compile"] = True
    params = config.parse_params(raw)
    rates = {name: train.learning_rate for name, train in params.model_sections.items()}
    assert rates == {"train_cae": 0.001, "train_unet": 0.01, "train_unet_rgb": 0.0036}
    assert params.tune_unet.train.learning_rate == 0.01
    trained = [*params.model_sections.values(), params.tune_unet.train]
    assert all(train.jit_compile for train in trained)


def test_the_catalogue_params_and_dvc_yaml_name_the_same_models():
    params = config.load_params(ROOT / "params.yaml")
    stages = dvc_stages()
    items = stages["train"]["foreach"]
    by_train_stage = {
        name: entry
        for name, entry in catalogue.MODELS.items()
        if entry.section.startswith(config.MODEL_SECTION_PREFIX)
    }
    assert {name: (item["section"], item["data"]) for name, item in items.items()} == {
        name: (entry.section, entry.dataset) for name, entry in by_train_stage.items()
    }
    assert set(params.model_sections) == {entry.section for entry in by_train_stage.values()}
    # Every other model is trained by the stage its section is named after.
    for name, entry in catalogue.MODELS.items():
        if name not in by_train_stage:
            assert f"--model-dir models/{name} " in stages[entry.section]["cmd"]
            assert entry.section in raw_params()


def test_each_training_stage_depends_on_the_sections_it_reads():
    # Whole sections: an edit to a model's own section reruns that model alone, an edit to
    # the shared train every model.
    stages = dvc_stages()
    assert {"train", "${item.section}"} <= set(stages["train"]["do"]["params"])
    assert {"train", "tune_unet"} <= set(stages["tune_unet"]["params"])


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
        ("train", "noise_sigma_range", [0.1], "train.noise_sigma_range"),
        ("train", "learning_rate", 0, "train.learning_rate must be in"),
        ("train", "batchsize", 8, "unknown key train.batchsize"),
        ("train", "model", "resnet", "train.model must be 'cae' or 'unet'"),
        ("train_cae", "augment", "no", "train_cae.augment must be true or false"),
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
        ("train_unet", "pixel_unshuffle", "yes", "train_unet.pixel_unshuffle must be true or"),
        ("train_cae", "pixel_unshuffle", True, "train_cae.pixel_unshuffle must be false for"),
        ("train_cae", "noise_map", True, "train_cae.noise_map must be false for"),
        ("train_unet", "noise_map", 1.5, "train_unet.noise_map must be true or false"),
        ("train_unet", "steps_per_execution", 0, "train_unet.steps_per_execution"),
        ("train_unet", "precision", "bfloat16", "train_unet.precision must be one of"),
        ("tune_unet.train", "precision", "mixed_float16", "tune_unet.train.precision must be"),
        ("tune_unet.train", "steps_per_execution", 0, "tune_unet.train.steps_per_execution"),
        ("tune_unet.train", "epochs", 4, "tune_unet.train.epochs is set by each trial"),
        ("tune_unet.train", "depth", 2, "tune_unet.train.depth is set by each trial"),
        ("tune_unet.train", "residual", "no", "tune_unet.train.residual must be true or"),
        (
            "prepare",
            "patch_size",
            60,
            "prepare.patch_size must be divisible by 8 (2**train_unet.depth",
        ),
        ("prepare", "source", "web", "prepare.source must be 'builtin' or 'folder'"),
        ("prepare", "on_bad_image", "ignore", "prepare.on_bad_image"),
        ("prepare", "min_patch_std", 0.7, "prepare.min_patch_std must be in [0, 0.5]"),
        ("prepare", "max_patches_per_image", 0, "prepare.max_patches_per_image"),
        (
            "prepare",
            "exclude_images",
            ["moon"],
            "prepare.exclude_images must not name images of test_images (moon)",
        ),
        ("tune_unet.search", "loss", ["mse", "ssim"], "tune_unet.search.loss[1] must be one of"),
        ("tune_unet.search", "loss", ["mse", "bce"], "tune_unet.search.loss may not hold 'bce'"),
        ("tune_unet.search", "learning_rate", [0.1, 0.01], "tune_unet.search.learning_rate"),
        ("tune_unet.search", "depth", [2, 5], "tune_unet.train.crop_size must be divisible"),
        ("tune_unet.search", "batch_sizes", [8], "unknown key tune_unet.search.batch_sizes"),
        ("classical", "methods", ["bm4d"], "classical.methods"),
        ("classical", "tv_weight_scale", [], "classical.tv_weight_scale must list"),
        ("denoise", "self_ensemble", 3, "denoise.self_ensemble must be one of [1, 2, 4, 8]"),
        ("denoise", "self_ensemble", True, "denoise.self_ensemble must be an integer"),
        ("denoise", "colour_transform", "yuv", "denoise.colour_transform must be one of"),
        ("denoise", "opponent_weight", 1.5, "denoise.opponent_weight must be in [0, 1]"),
        ("denoise", "level_exponent", 0.2, "denoise.level_exponent must be in [0.5, 2]"),
        ("denoise", "coarse_pass", [0.1, 1.5], "denoise.coarse_pass[1] must be in [0, 1]"),
        ("denoise", "coarse_pass", [0.1] * 5, "denoise.coarse_pass"),
    ],
)
def test_bad_params_name_the_key(section, key, value, message):
    raw = raw_params()
    mapping = raw
    for part in section.split("."):
        mapping = mapping.setdefault(part, {})
    mapping[key] = value
    with pytest.raises(ValueError, match=None) as error:
        config.parse_params(raw)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_noise_map_needs_blind_training():
    raw = raw_params()
    raw["train_unet"].update(noise_map=True, noise_sigma_range=None)
    with pytest.raises(ValueError) as error:
        config.parse_params(raw)
    assert "train_unet.noise_map needs noise_sigma_range" in str(error.value)
    assert "\n" not in str(error.value)


def test_loss_level_power_needs_a_noise_range():
    raw = raw_params()
    raw["train_unet"].update(noise_map=False, noise_sigma_range=None, loss_level_power=0.75)
    with pytest.raises(ValueError) as error:
        config.parse_params(raw)
    assert "train_unet.loss_level_power needs noise_sigma_range" in str(error.value)
    assert "\n" not in str(error.value)


def test_folder_source_needs_a_folder():
    raw = raw_params()
    raw["prepare"]["source"] = "folder"
    with pytest.raises(ValueError, match="prepare.folder"):
        config.parse_params(raw)


def test_unknown_section_is_rejected():
    raw = raw_params()
    raw["trian_unet"] = {}
    with pytest.raises(ValueError, match="unknown section 'trian_unet'") as error:
        config.parse_params(raw)
    assert "train_<model>" in str(error.value)


def test_a_stage_asking_for_a_missing_model_section_is_told_which_exist():
    params = config.load_params(ROOT / "params.yaml")
    with pytest.raises(ValueError, match="no model section 'train_unte'.*train_unet"):
        params.model_section("train_unte")


def test_missing_and_broken_params_files(tmp_path):
    with pytest.raises(ValueError, match="params file not found"):
        config.load_params(tmp_path / "params.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("base: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        config.load_params(broken)


def test_profile_args_quote_lists():
    args = profiles.dvc_set_args({"tune_unet.search.depth": [2], "train_unet.epochs": 2})
    assert args == ["-S", "++tune_unet.search.depth=[2]", "-S", "++train_unet.epochs=2"]


def test_a_profile_sets_keys_a_section_does_not_hold_yet():
    raw = {"train": {"epochs": 10}, "train_unet": {}, "tune_unet": {"search": {"depth": [2]}}}
    profile = {"train_unet.epochs": 2, "tune_unet.search.depth": [3], "tune_unet.train.x": 1}
    assert profiles.apply_profile(raw, profile) == {
        "train": {"epochs": 10},
        "train_unet": {"epochs": 2},
        "tune_unet": {"search": {"depth": [3]}, "train": {"x": 1}},
    }
    with pytest.raises(ValueError, match="does not name section.key"):
        profiles.apply_profile(raw, {"trian.epochs": 2})


def test_check_params_command_names_the_bad_key(tmp_path):
    from denoiselab import cli

    raw = raw_params()
    raw["train_unet"]["learning_rate"] = -1
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert cli.main(["check-params", str(ROOT / "params.yaml")]) == 0
    assert cli.main(["check-params", str(path)]) == 2


@pytest.mark.parametrize("name", sorted(path.name for path in (ROOT / "profiles").glob("*.yaml")))
def test_every_profile_applies_to_the_project_params(name):
    profile = profiles.load_profile(ROOT / "profiles" / name)
    params = config.parse_params(profiles.apply_profile(raw_params(), profile))
    assert params.model_sections, name
