"""The champion is chosen on validation, per kind (channels and data), against a real MLflow
sqlite store: a worse challenger never takes the alias, a better one does."""

from __future__ import annotations

import dataclasses

import pytest

from denoiselab import denoise, model_store, models, registry, selection, serving, tracking
from denoiselab.config import ModelConfig


@pytest.fixture
def store(repo_root):
    """A DVC repository root in tmp_path with the default sqlite store, and a tiny saved model
    folder to log."""
    config = ModelConfig(model="unet", base_filters=2, depth=1)
    models.save_model_dir(models.build_model(config), config, repo_root / "folder", {})
    tracking.setup()
    return repo_root


def candidate(
    root,
    name: str,
    val_psnr: float,
    test_psnr: float,
    data_hash="data-a",
    channels=1,
    val_levels="0.05,0.1,0.15,0.2",
    alias="",
    settings="",
) -> registry.Candidate:
    """Logs the tiny model folder as a new run's model; returns it as a candidate."""
    with tracking.model_run(name, "test", {}) as run:
        info = serving.log_denoiser_model(root / "folder", channels)
    return registry.Candidate(
        name=name,
        run_id=run.info.run_id,
        model_uri=info.model_uri,
        val_psnr=val_psnr,
        test_scores={"psnr": test_psnr, "ssim": 0.8},
        data_hash=data_hash,
        channels=channels,
        val_levels=val_levels,
        alias=alias,
        denoise=settings,
    )


def champion_tags(alias: str = registry.CHAMPION) -> dict[str, str]:
    return registry.version_tags(alias)


def test_champion_is_the_best_on_validation_and_a_worse_challenger_never_takes_it(store):
    first = [
        candidate(store, "cae", val_psnr=27.0, test_psnr=31.0),
        candidate(store, "unet", val_psnr=29.0, test_psnr=28.0),
    ]
    [crowning] = registry.register_and_crown(first)
    assert crowning.alias == registry.CHAMPION and crowning.changed
    tags = champion_tags()
    # The best on validation, although the CAE's test PSNR is higher.
    assert tags["model_name"] == "unet" and tags["run_id"] == first[1].run_id
    assert tags["champion.val_psnr"] == "29.0000" and tags["psnr"] == "28.0000"
    assert tags["champion.data_hash"] == "data-a" and tags["channels"] == "1"

    # An experiment with worse params: better on the test split, worse on validation.
    worse = candidate(store, "unet", val_psnr=28.5, test_psnr=40.0)
    [crowning] = registry.register_and_crown([worse])
    assert not crowning.changed
    assert champion_tags()["run_id"] == first[1].run_id
    assert registry.version_tags("unet")["run_id"] == worse.run_id  # its name alias moves

    better = candidate(store, "unet_tuned", val_psnr=29.5, test_psnr=20.0)
    [crowning] = registry.register_and_crown([better])
    assert crowning.changed and crowning.model_name == "unet_tuned"
    assert champion_tags()["run_id"] == better.run_id
    assert registry.registered_aliases()[registry.CHAMPION] == better.run_id


def test_the_champions_weights_trained_again_take_its_alias_and_another_tie_does_not(store):
    digest = model_store.weights_digest(store / "folder")
    assert digest == model_store.weights_digest(store / "folder") and len(digest) == 64

    def run(weights: str) -> registry.Candidate:
        return dataclasses.replace(
            candidate(store, "unet_tuned", val_psnr=29.0, test_psnr=28.0), weights_sha256=weights
        )

    first = run(digest)
    registry.register_and_crown([first])
    # Another network that scores the same: a tie keeps the champion.
    [crowning] = registry.register_and_crown([run("0" * 64)])
    assert not crowning.changed and champion_tags()["run_id"] == first.run_id
    # The same weights from a new run (a rerun after an edit that changed no weight): the alias
    # follows the newest copy, the one `dvc repro` left in the workspace.
    again = run(digest)
    [crowning] = registry.register_and_crown([again])
    assert crowning.changed and crowning.reason.endswith("trained again")
    assert registry.registered_aliases()[registry.CHAMPION] == again.run_id
    assert champion_tags()["weights_sha256"] == digest
    # A version registered without the digest never counts as the same weights.
    untagged = run("")
    [crowning] = registry.register_and_crown([untagged])
    assert not crowning.changed and champion_tags()["run_id"] == again.run_id


def test_a_champion_registered_without_its_weights_digest_is_tagged_from_its_logged_model(store):
    old = candidate(store, "unet_tuned", val_psnr=29.0, test_psnr=28.0)
    registry.register_and_crown([old])
    assert "weights_sha256" not in champion_tags()
    registry.tag_champions_weights(serving.logged_weights_digest)
    digest = model_store.weights_digest(store / "folder")
    assert champion_tags()["weights_sha256"] == digest
    again = dataclasses.replace(
        candidate(store, "unet_tuned", val_psnr=29.0, test_psnr=28.0), weights_sha256=digest
    )
    [crowning] = registry.register_and_crown([again])
    assert crowning.changed and registry.registered_aliases()[registry.CHAMPION] == again.run_id
    # A logged model that cannot be read has no digest: the evaluate stage goes on.
    assert serving.logged_weights_digest("runs:/0123456789abcdef/missing") is None


def test_a_model_logged_again_with_other_settings_is_a_new_version_that_serves_them(store):
    first = candidate(store, "unet_tuned", val_psnr=29.0, test_psnr=28.0)
    registry.register_and_crown([first])
    [again] = registry.register_and_crown([first])  # evaluated again, nothing new
    assert not again.changed and len(registry_versions()) == 1
    # The same run's model logged again with a self-ensemble, which scores better: the champion
    # must now point at that logged model, not at the one logged with the old settings.
    settings = denoise.Settings(self_ensemble=2)
    info = serving.log_denoiser_model(store / "folder", 1, run_id=first.run_id, settings=settings)
    relogged = dataclasses.replace(first, model_uri=info.model_uri, val_psnr=29.1)
    [crowning] = registry.register_and_crown([relogged])
    assert crowning.changed and len(registry_versions()) == 2
    import mlflow

    champion = mlflow.MlflowClient().get_model_version_by_alias(
        registry.REGISTERED_MODEL, registry.CHAMPION
    )
    assert champion.source == info.model_uri and champion.run_id == first.run_id


def test_kinds_are_kept_apart(store):
    gray = candidate(store, "unet", val_psnr=30.0, test_psnr=30.0)
    colour = candidate(store, "unet", val_psnr=25.0, test_psnr=25.0, channels=3)
    crownings = registry.register_and_crown([gray, colour])
    assert {crowning.alias for crowning in crownings} == {"champion", "champion_rgb"}
    assert champion_tags()["run_id"] == gray.run_id
    assert champion_tags(registry.CHAMPION_RGB)["run_id"] == colour.run_id
    assert champion_tags(registry.CHAMPION_RGB)["channels"] == "3"

    # New data: validation scores on other images cannot be compared, so the best version
    # on the current data takes the alias even with a lower figure...
    new_data = candidate(store, "unet", val_psnr=22.0, test_psnr=22.0, data_hash="data-b")
    [crowning] = registry.register_and_crown([new_data])
    assert crowning.changed and "other validation data" in crowning.reason
    assert champion_tags()["run_id"] == new_data.run_id
    # ...and only versions on that data compete for it afterwards.
    back = candidate(store, "cae", val_psnr=21.0, test_psnr=35.0, data_hash="data-b")
    registry.register_and_crown([back])
    assert champion_tags()["run_id"] == new_data.run_id
    # The colour champion was never touched by grayscale versions.
    assert champion_tags(registry.CHAMPION_RGB)["run_id"] == colour.run_id


def test_a_gray_model_takes_the_colour_champion_when_it_is_better_on_colour_validation(store):
    """Each model competes for both aliases on that alias's validation images; one version
    per run carries both scores."""
    colour = candidate(store, "unet_rgb", val_psnr=28.0, test_psnr=28.0, channels=3)
    registry.register_and_crown([colour])
    assert champion_tags(registry.CHAMPION_RGB)["run_id"] == colour.run_id
    gray_run = candidate(store, "unet_tuned", val_psnr=31.0, test_psnr=31.0)
    on_colour = registry.Candidate(
        **{**gray_run.__dict__, "val_psnr": 29.0, "alias": registry.CHAMPION_RGB}
    )
    crownings = registry.register_and_crown([gray_run, on_colour])
    assert {crowning.alias: crowning.changed for crowning in crownings} == {
        "champion": True,
        "champion_rgb": True,
    }
    rgb = champion_tags(registry.CHAMPION_RGB)
    assert rgb["run_id"] == gray_run.run_id and rgb["channels"] == "1"
    assert rgb["champion_rgb.val_psnr"] == "29.0000" and rgb["champion.val_psnr"] == "31.0000"
    assert champion_tags()["run_id"] == gray_run.run_id
    versions = {version.version for version in registry_versions()}
    assert len(versions) == 2
    # A colour model worse on colour validation than the gray one never takes it back.
    worse = candidate(store, "unet_rgb", val_psnr=28.5, test_psnr=40.0, channels=3)
    registry.register_and_crown([worse])
    assert champion_tags(registry.CHAMPION_RGB)["run_id"] == gray_run.run_id


def registry_versions():
    return registry._client().search_model_versions(f"name = '{registry.REGISTERED_MODEL}'")


def test_a_score_over_other_noise_levels_never_competes(store):
    """A validation PSNR at sigma 0.1 alone is higher than a mean that includes sigma 0.2, so a
    model chosen at one level must not keep the alias from models chosen across the sweep."""
    one_level = candidate(store, "unet", val_psnr=31.0, test_psnr=31.0, val_levels="0.1")
    registry.register_and_crown([one_level])
    blind = candidate(store, "unet_tuned", val_psnr=29.5, test_psnr=29.0)
    [crowning] = registry.register_and_crown([blind])
    assert crowning.changed and "other noise levels" in crowning.reason
    assert champion_tags()["run_id"] == blind.run_id
    assert champion_tags()["champion.val_levels"] == "0.05,0.1,0.15,0.2"
    # Back at the sweep's levels, a worse blind model does not take it.
    worse = candidate(store, "unet", val_psnr=29.0, test_psnr=33.0)
    registry.register_and_crown([worse])
    assert champion_tags()["run_id"] == blind.run_id


def test_a_score_with_other_denoise_settings_never_competes(store):
    """A champion scored with a slower self-ensemble scores higher, but params.yaml now says
    otherwise: the alias goes to the best version scored (and served) with today's settings."""
    four_views = registry.settings_tag(denoise.Settings(self_ensemble=4).in_effect())
    two_views = registry.settings_tag(denoise.Settings(self_ensemble=2).in_effect())
    assert two_views == "colour_transform=opponent,self_ensemble=2"
    # The blend's weight is part of the settings only with the blend.
    same = denoise.Settings(self_ensemble=2, opponent_weight=0.9).in_effect()
    assert registry.settings_tag(same) == two_views
    blend = denoise.Settings("blend", self_ensemble=2, opponent_weight=0.9).in_effect()
    assert registry.settings_tag(blend) == (
        "colour_transform=blend,opponent_weight=0.9,self_ensemble=2"
    )
    # The level exponent is part of the settings where it bends the level (not 1).
    assert (
        registry.settings_tag(denoise.Settings(self_ensemble=2, level_exponent=1.0).in_effect())
        == two_views
    )
    bent = denoise.Settings(self_ensemble=2, level_exponent=1.05).in_effect()
    assert registry.settings_tag(bent) == (
        "colour_transform=opponent,level_exponent=1.05,self_ensemble=2"
    )
    slow = candidate(store, "unet_tuned", val_psnr=31.0, test_psnr=31.0, settings=four_views)
    registry.register_and_crown([slow])
    fast = candidate(store, "unet_tuned", val_psnr=30.9, test_psnr=30.9, settings=two_views)
    [crowning] = registry.register_and_crown([fast])
    assert crowning.changed and "other denoise settings" in crowning.reason
    assert champion_tags()["run_id"] == fast.run_id
    assert champion_tags()["champion.denoise"] == two_views
    # With the same settings, a worse version does not take it.
    worse = candidate(store, "unet", val_psnr=30.5, test_psnr=33.0, settings=two_views)
    registry.register_and_crown([worse])
    assert champion_tags()["run_id"] == fast.run_id


def test_alias_cache_follows_the_registry(store):
    first = candidate(store, "unet", val_psnr=30.0, test_psnr=30.0)
    registry.register_and_crown([first])
    cache = store / ("mlflow.db" + registry.ALIAS_CACHE_SUFFIX)
    assert cache.is_file()
    assert registry.registered_aliases()["champion"] == first.run_id

    # Moved behind the cache's back, by MLflow's own client: the store file changed, so the
    # cache is not trusted and MLflow is asked again.
    second = candidate(store, "cae", val_psnr=20.0, test_psnr=20.0)
    registry.register_and_crown([second])
    import mlflow

    version = mlflow.MlflowClient().get_model_version_by_alias("denoiselab", "cae").version
    mlflow.MlflowClient().set_registered_model_alias("denoiselab", "champion", version)
    assert registry.registered_aliases()["champion"] == second.run_id

    source = selection.locate_model("champion", store, registry.registered_aliases())
    assert source == selection.ModelSource("models:/denoiselab@champion", is_mlflow=True)
