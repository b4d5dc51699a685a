"""MLflow Model Registry: model versions, their tags and the champion aliases.

Every call into MLflow's registry goes through this module. The champions are chosen on the
validation images, never on the test split: ``champion`` is the model for grayscale images,
``champion_rgb`` the one for colour images. Each points at the version with the best
validation PSNR on its own kind of images (``<alias>.val_psnr``, the mean PSNR over the
validation noise levels ``<alias>.val_levels`` on the prepared data ``<alias>.data_hash``,
denoising with the settings ``<alias>.denoise``), among the versions scored the same way. Any
model may compete for either alias: a grayscale model denoises a colour image plane by plane
(see ``denoiselab.denoise``), a colour model a grayscale image repeated over three channels,
exactly as ``denoiselab denoise`` runs them. Test scores are tags to read, never used to
choose.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from denoiselab import files, tracking
from denoiselab.errors import UserError

REGISTERED_MODEL = "denoiselab"
CHAMPION = "champion"
CHAMPION_RGB = "champion_rgb"
CHAMPIONS = {1: CHAMPION, 3: CHAMPION_RGB}
# The version tag with the digest of a version's weights file.
WEIGHTS_TAG = "weights_sha256"
# The version tag naming the training run of a version logged into a run standing in for it
# (the store lacked the training run): the run the model folder names.
TRAINED_IN_TAG = "trained_in_run"
# Beside mlflow.db: the aliases as MLflow last reported them, so `denoiselab denoise` resolves
# the champion without importing MLflow (seconds) while the store file is unchanged.
ALIAS_CACHE_SUFFIX = ".aliases.json"


def champion_alias(channels: int) -> str:
    """The champion alias for models of ``channels`` channels (1 or 3)."""
    if channels not in CHAMPIONS:
        raise UserError(f"channels must be 1 or 3 for a champion alias, got {channels}")
    return CHAMPIONS[channels]


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One trained model competing for one champion alias: its run, its logged model and its
    scores.

    ``val_psnr`` is the mean PSNR on the whole validation images of the alias's kind (data
    ``data_hash``) over the noise levels ``val_levels`` (e.g. ``0.05,0.1,0.15,0.2``), the one
    number the champion is chosen by; ``test_scores`` (mean psnr and ssim on the test images
    of the model's own kind) are only reported. ``channels`` are the model's; ``alias``, the
    champion it competes for, defaults to the one of its channels. ``denoise`` names the
    denoise settings it was scored and logged with (:func:`settings_tag`). ``weights_sha256``
    is its weights file's digest (:func:`denoiselab.model_store.weights_digest`): the same
    network trained again to the same weights has the same one. ``trained_in`` is the training
    run the model folder names when ``run_id`` only stands in for it (the store lacked it).
    """

    name: str
    run_id: str
    model_uri: str
    val_psnr: float
    test_scores: dict
    data_hash: str
    channels: int
    val_levels: str
    alias: str = ""
    denoise: str = ""
    weights_sha256: str = ""
    trained_in: str = ""

    def __post_init__(self):
        if not self.alias:
            object.__setattr__(self, "alias", champion_alias(self.channels))


@dataclasses.dataclass(frozen=True)
class Crowning:
    """What became of one champion alias after a registration."""

    alias: str
    version: str
    model_name: str
    val_psnr: float
    changed: bool
    reason: str


def _client():
    import mlflow

    tracking.setup_uri()
    return mlflow.MlflowClient()


def _not_found() -> type[Exception]:
    import mlflow

    return mlflow.exceptions.MlflowException


def register_and_crown(candidates: list[Candidate]) -> list[Crowning]:
    """Registers each candidate's model as a version of one registered model (one version
    per logged model, however many aliases it competes for: a run's model logged again with
    other ``denoise`` settings is a new version, so an alias always serves what was scored),
    tags it with its channels, test scores
    and, per alias, the validation score, data hash, levels and denoise settings it competes
    with, points the alias of its name (``cae``, ...) at it, and then settles each champion
    alias among the candidates.

    A version takes a champion alias only when its validation PSNR beats the current
    champion's (champion/challenger; a tie keeps the champion), so a worse experiment never
    does. The one exception is the champion's own weights trained again (a rerun after an
    edit that changed no weight): the alias moves to that newest copy, which is the one in the
    workspace, so ``denoiselab denoise`` keeps loading it from there, without MLflow. When the
    current champion was scored on other validation data (the prepared data changed), at
    other noise levels or with other denoise settings, the two scores cannot be compared; the
    current data, levels and settings define the task, so the alias goes to the best version
    scored that way (and the served champion computes what ``denoiselab denoise`` does with
    params.yaml's settings).
    """
    import mlflow

    client = _client()
    try:
        client.get_registered_model(REGISTERED_MODEL)
    except _not_found():
        client.create_registered_model(
            REGISTERED_MODEL,
            description="denoiselab denoisers; alias champion (grayscale) and champion_rgb "
            "(colour) = best validation PSNR among the versions on the same data",
        )
    existing = {
        (version.run_id, version.source): version
        for version in client.search_model_versions(f"name = '{REGISTERED_MODEL}'")
    }
    for candidate in candidates:
        version = existing.get((candidate.run_id, candidate.model_uri))
        if version is None:
            version = mlflow.register_model(candidate.model_uri, REGISTERED_MODEL)
            existing[candidate.run_id, candidate.model_uri] = version
        tags = {
            "model_name": candidate.name,
            "run_id": candidate.run_id,
            "psnr": f"{candidate.test_scores['psnr']:.4f}",
            "ssim": f"{candidate.test_scores['ssim']:.4f}",
            "channels": str(candidate.channels),
            f"{candidate.alias}.val_psnr": f"{candidate.val_psnr:.4f}",
            f"{candidate.alias}.data_hash": candidate.data_hash,
            f"{candidate.alias}.val_levels": candidate.val_levels,
            f"{candidate.alias}.denoise": candidate.denoise,
        }
        if candidate.weights_sha256:
            tags[WEIGHTS_TAG] = candidate.weights_sha256
        if candidate.trained_in:
            tags[TRAINED_IN_TAG] = candidate.trained_in
        for key, value in tags.items():
            client.set_model_version_tag(REGISTERED_MODEL, version.version, key, value)
        client.set_registered_model_alias(REGISTERED_MODEL, candidate.name, version.version)
    kinds = dict.fromkeys(
        (candidate.alias, candidate.data_hash, candidate.val_levels, candidate.denoise)
        for candidate in candidates
    )
    crownings = [_crown(client, *kind) for kind in kinds]
    write_alias_cache()
    return crownings


def tag_champions_weights(digest_of: Callable[[str], str | None]) -> None:
    """Tags each champion version registered before versions carried ``weights_sha256`` with
    the digest ``digest_of`` reads from its model URI, so that its weights trained again can
    take the alias (see :func:`register_and_crown`)."""
    client = _client()
    for alias in CHAMPIONS.values():
        try:
            version = client.get_model_version_by_alias(REGISTERED_MODEL, alias)
        except _not_found():
            continue
        if WEIGHTS_TAG in version.tags:
            continue
        digest = digest_of(version.source)
        if digest:
            client.set_model_version_tag(REGISTERED_MODEL, version.version, WEIGHTS_TAG, digest)


def val_psnr_tag(alias: str) -> str:
    """The version tag holding the validation PSNR a version competes for ``alias`` with."""
    return f"{alias}.val_psnr"


def _score(version, alias: str) -> float:
    return float(version.tags[val_psnr_tag(alias)])


def settings_tag(settings: dict) -> str:
    """The ``<alias>.denoise`` tag of a ``denoise`` settings mapping (those in effect,
    :meth:`denoiselab.denoise.Settings.in_effect`), e.g.
    ``colour_transform=opponent,self_ensemble=2``."""
    return ",".join(f"{key}={settings[key]}" for key in sorted(settings))


def _crown(client, alias: str, data_hash: str, val_levels: str, denoise: str) -> Crowning:
    """Settles ``alias`` among the versions scored for it on ``data_hash`` over
    ``val_levels`` with the denoise settings ``denoise``."""
    versions = client.search_model_versions(f"name = '{REGISTERED_MODEL}'")
    kind = [
        version
        for version in versions
        if version.tags.get(f"{alias}.data_hash") == data_hash
        and version.tags.get(f"{alias}.val_levels") == val_levels
        and version.tags.get(f"{alias}.denoise", "") == denoise
        and val_psnr_tag(alias) in version.tags
    ]
    best = max(kind, key=lambda version: (_score(version, alias), int(version.version)))
    try:
        current = client.get_model_version_by_alias(REGISTERED_MODEL, alias)
    except _not_found():
        current = None
    if current is not None and any(version.version == current.version for version in kind):
        if _score(current, alias) < _score(best, alias):
            reason = f"beats version {current.version} on validation"
        elif _same_weights(current, best) and int(best.version) > int(current.version):
            reason = f"the weights of version {current.version}, trained again"
        else:
            return _crowning(alias, current, False, "no version beats it on validation")
    elif current is not None:
        reason = (
            f"version {current.version} was scored on other validation data, at other "
            f"noise levels or with other denoise settings"
        )
    else:
        reason = "first champion of its kind"
    client.set_registered_model_alias(REGISTERED_MODEL, alias, best.version)
    return _crowning(alias, best, True, reason)


def _same_weights(version, other) -> bool:
    """Whether two versions hold the same weights (both tagged with their digest)."""
    digest = version.tags.get(WEIGHTS_TAG)
    return bool(digest) and digest == other.tags.get(WEIGHTS_TAG)


def _crowning(alias: str, version, changed: bool, reason: str) -> Crowning:
    return Crowning(
        alias=alias,
        version=str(version.version),
        model_name=version.tags.get("model_name", ""),
        val_psnr=_score(version, alias),
        changed=changed,
        reason=reason,
    )


def version_tags(alias: str) -> dict[str, str]:
    """The tags of the version ``alias`` points at; empty when there is no such alias."""
    try:
        return dict(_client().get_model_version_by_alias(REGISTERED_MODEL, alias).tags)
    except _not_found():
        return {}


def _alias_cache(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    store = Path(uri.removeprefix("sqlite:///"))
    return store.with_name(store.name + ALIAS_CACHE_SUFFIX)


def _store_stamp(uri: str) -> list[int] | None:
    try:
        stat = os.stat(uri.removeprefix("sqlite:///"))
    except OSError:
        return None
    return [stat.st_mtime_ns, stat.st_size]


def _aliases_from_mlflow(uri: str) -> dict[str, str]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    try:
        found = client.get_registered_model(REGISTERED_MODEL).aliases
    except mlflow.exceptions.MlflowException:
        return {}
    aliases = {}
    for alias, number in found.items():
        version = client.get_model_version(REGISTERED_MODEL, number)
        aliases[alias] = version.tags.get(TRAINED_IN_TAG) or version.run_id or ""
    return aliases


def write_alias_cache() -> dict[str, str]:
    """Asks MLflow for the aliases and, for a sqlite store, writes them beside it, stamped
    with the store file's modification time and size taken before the question, so any later
    write to the store (an alias moved by anyone) makes the cache stale. Returns them."""
    uri = tracking.tracking_uri()
    cache = _alias_cache(uri)
    stamp = _store_stamp(uri) if cache else None
    aliases = _aliases_from_mlflow(uri)
    if cache is not None and stamp is not None:
        try:
            files.write_json(cache, {"store": stamp, "aliases": aliases})
        except OSError:
            pass  # A read-only folder only costs the next call MLflow's start-up time.
    return aliases


def registered_aliases() -> dict[str, str]:
    """Aliases of the registered model (alias -> the run that trained the version it points
    at: the version's run, or the training run a stand-in run was logged for, which the model
    folder names, so the folder in the workspace is found by it); empty when there is no store
    or no registered model yet. Never creates a store.

    MLflow is the truth. For the default sqlite store, the answer MLflow gave last is kept
    beside the store file and used only while that file's modification time and size are
    unchanged; otherwise MLflow is asked again and the cache rewritten.
    """
    uri = tracking.tracking_uri()
    cache = _alias_cache(uri)
    if cache is not None:
        stamp = _store_stamp(uri)
        if stamp is None:
            return {}
        try:
            cached = files.read_json(cache)
        except (ValueError, OSError):
            cached = None
        if isinstance(cached, dict) and cached.get("store") == stamp:
            return dict(cached.get("aliases") or {})
        return write_alias_cache()
    try:
        tracking.check_store(uri)
    except ConnectionError as error:
        raise UserError(str(error)) from None
    return _aliases_from_mlflow(uri)
