"""The checks behind params.yaml's validation: each failure is one line naming the dotted key,
the rule and the value it got."""

from __future__ import annotations

import types
import typing
from typing import Any

from denoiselab.errors import UserError


def require(condition: bool, section: str, key: str, rule: str, value: Any) -> None:
    if not condition:
        raise UserError(f"params.yaml: {section}.{key} {rule}, got {value!r}")


def require_choice(value: Any, choices: tuple, section: str, key: str) -> None:
    if len(choices) == 2:
        rule = f"must be {choices[0]!r} or {choices[1]!r}"
    else:
        rule = f"must be one of {list(choices)}"
    require(value in choices, section, key, rule, value)


def require_positive(config: Any, section: str, *keys: str) -> None:
    for key in keys:
        value = getattr(config, key)
        require(value > 0, section, key, "must be positive", value)


def require_in_range(
    config: Any,
    section: str,
    key: str,
    low: float,
    high: float,
    note: str = "",
    open_low: bool = False,
    open_high: bool = False,
) -> None:
    """``low <= value <= high``, either end open on request; the rule names the interval."""
    value = getattr(config, key)
    above = value > low if open_low else value >= low
    below = value < high if open_high else value <= high
    interval = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
    require(above and below, section, key, f"must be in {interval} {note}".rstrip(), value)


def require_divisible_by_depths(
    size: int, depths: tuple[int, ...], section: str, key: str
) -> None:
    """A crop must halve cleanly at every pooling level of every depth it will be used with."""
    for depth in depths:
        require(
            size % 2**depth == 0, section, key, f"must be divisible by 2**depth = {2**depth}", size
        )


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """Checks ``value`` against a dataclass field annotation, converting lists to tuples."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [arg for arg in args if arg is not type(None)]
        return coerce(value, inner[0], key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"params.yaml: {key} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(item, args[0], key) for item in value)
        if len(value) != len(args):
            raise UserError(
                f"params.yaml: {key} must be a list of {len(args)} values, got {value!r}"
            )
        return tuple(coerce(item, arg, key) for item, arg in zip(value, args, strict=True))
    if annotation is bool:
        if not isinstance(value, bool):
            raise UserError(f"params.yaml: {key} must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"params.yaml: {key} must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"params.yaml: {key} must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise UserError(f"params.yaml: {key} must be a string, got {value!r}")
        return value
    return value
