"""Params profiles: a flat YAML of dotted keys applied over params.yaml (e.g. the smoke run)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from denoiselab.errors import UserError


def load_profile(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a profile is a mapping of dotted params keys to values")
    return raw


def apply_profile(params: dict, profile: dict[str, Any]) -> dict:
    """A copy of a raw params dict with each dotted key of ``profile`` set (``section.key`` or
    deeper, ``tune_unet.search.depth``). A key the section does not hold yet is added, as a
    model's section holds only what differs from ``train``."""
    result = copy.deepcopy(params)
    for dotted, value in profile.items():
        section, *path = dotted.split(".")
        if section not in result or not path:
            raise UserError(f"profile key {dotted!r} does not name section.key in params.yaml")
        mapping = result[section]
        for part in path[:-1]:
            mapping = mapping.setdefault(part, {})
        mapping[path[-1]] = value
    return result


def dvc_set_args(profile: dict[str, Any]) -> list[str]:
    """``-S ++key=value`` arguments for ``dvc exp run`` (values in YAML flow style); ``++``
    sets a key whether or not its section holds it yet."""
    args = []
    for dotted, value in profile.items():
        text = yaml.safe_dump(value, default_flow_style=True).strip()
        if text.endswith("\n..."):
            text = text[: -len("\n...")]
        text = text.removesuffix("...").strip()
        args += ["-S", f"++{dotted}={text}"]
    return args
