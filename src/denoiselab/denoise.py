"""Denoising an image with a loaded model: how an image's colour mode and bit depth map onto
the model's channels, how a grayscale model denoises a colour image, and the geometric
self-ensemble. ``denoiselab denoise``, the evaluate stage and the served model all denoise
through :func:`denoise_values`, with the :class:`Settings` of params.yaml's ``denoise``
section."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import numpy as np

from denoiselab import images, inference, model_store, noise, noise_level
from denoiselab.colour import from_opponent, stretch_chroma, to_opponent
from denoiselab.errors import UserError

COLOUR_TRANSFORMS = ("opponent", "per_channel", "blend")
SELF_ENSEMBLES = (1, 2, 4, 8)
# The level a model's noise level map is given is the level read from the image, bent about
# this pivot by Settings.level_exponent (see Settings.map_level).
LEVEL_PIVOT = 0.1
LEVEL_EXPONENT_RANGE = (0.5, 2.0)
CHROMA_GAIN_RANGE = (0.25, 4.0)
COARSE_PASS_RANGE = (0.0, 1.0)
MAX_COARSE_PASSES = 4
# The flips and rotations of the self-ensemble, in the order its sizes take them:
# (quarter turns, mirrored). 2 adds the mirror image, 4 the two that keep the image's
# orientation too (rotation by 180 degrees, with and without the mirror), 8 all of them.
GEOMETRIES = (
    (0, False),
    (0, True),
    (2, False),
    (2, True),
    (1, False),
    (1, True),
    (3, False),
    (3, True),
)


# The colour transforms whose opponent share is fixed, so that opponent_weight does nothing.
_FIXED_OPPONENT_SHARES = {"opponent": 1.0, "per_channel": 0.0}


@dataclasses.dataclass(frozen=True)
class Settings:
    """How a model denoises: ``colour_transform`` (how a grayscale model denoises a colour
    image, one of COLOUR_TRANSFORMS), ``opponent_weight`` (with ``blend``, the opponent
    result's weight in [0, 1]; the per-channel one gets the rest) and ``self_ensemble`` (how
    many of GEOMETRIES are averaged, one of SELF_ENSEMBLES; ``blend`` shares them between its
    two colour bases, see :func:`colour_by_planes`) and ``level_exponent`` (how the level read
    from an image is bent before a model's noise level map gets it, see :meth:`map_level`)
    and ``chroma_gain`` (how much a grayscale model's opponent chrominance planes are
    stretched about their mid-range before it denoises them, and shrunk back after) and
    ``coarse_pass`` (the levels, as fractions of the level read, at which a model with a noise
    level map denoises its own output again at half, then a quarter, ... of the resolution,
    see :func:`coarse_passes`; empty = no such pass). params.yaml's ``denoise`` section holds
    them."""

    colour_transform: str = "opponent"
    self_ensemble: int = 1
    opponent_weight: float = 0.5
    level_exponent: float = 1.0
    chroma_gain: float = 1.0
    coarse_pass: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.colour_transform not in COLOUR_TRANSFORMS:
            raise UserError(
                f"denoise.colour_transform: must be one of {', '.join(COLOUR_TRANSFORMS)}, "
                f"got {self.colour_transform!r}"
            )
        if self.self_ensemble not in SELF_ENSEMBLES or isinstance(self.self_ensemble, bool):
            raise UserError(
                f"denoise.self_ensemble: must be one of {', '.join(map(str, SELF_ENSEMBLES))}, "
                f"got {self.self_ensemble!r}"
            )
        _check_number("opponent_weight", self.opponent_weight, 0, 1)
        _check_number("level_exponent", self.level_exponent, *LEVEL_EXPONENT_RANGE)
        _check_number("chroma_gain", self.chroma_gain, *CHROMA_GAIN_RANGE)
        passes = self.coarse_pass
        if not isinstance(passes, (list, tuple)) or len(passes) > MAX_COARSE_PASSES:
            raise UserError(
                f"denoise.coarse_pass: must be a list of at most {MAX_COARSE_PASSES} numbers in "
                f"[{COARSE_PASS_RANGE[0]}, {COARSE_PASS_RANGE[1]}], got {passes!r}"
            )
        for fraction in passes:
            _check_number("coarse_pass", fraction, *COARSE_PASS_RANGE)
        object.__setattr__(self, "coarse_pass", tuple(float(fraction) for fraction in passes))

    @classmethod
    def from_mapping(cls, values: dict) -> Settings:
        """The settings of a ``denoise`` mapping (params.yaml's section, or an MLflow model's
        model config); keys it lacks keep their defaults."""
        fields = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in dict(values or {}).items() if key in fields})

    def as_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["coarse_pass"] = list(self.coarse_pass)
        return values

    @property
    def views(self) -> tuple[tuple[int, bool], ...]:
        """The GEOMETRIES the self-ensemble averages over."""
        return GEOMETRIES[: self.self_ensemble]

    @property
    def opponent_share(self) -> float:
        """The opponent result's weight in a colour image: 1 with ``opponent``, 0 with
        ``per_channel``, ``opponent_weight`` with ``blend``."""
        return _FIXED_OPPONENT_SHARES.get(self.colour_transform, self.opponent_weight)

    def map_level(self, read: float) -> float:
        """The level a model's noise level map gets for the level ``read`` from an image:
        ``LEVEL_PIVOT * (read / LEVEL_PIVOT) ** level_exponent``. An exponent above 1 tells
        the model a little less noise than read below the pivot and a little more above it."""
        if self.level_exponent == 1:
            return read
        return LEVEL_PIVOT * (read / LEVEL_PIVOT) ** self.level_exponent

    def in_effect(self) -> dict:
        """The settings that change what a model computes: ``opponent_weight`` only where it
        is the opponent share (``blend``), ``level_exponent`` and ``chroma_gain`` only where
        they change something (not 1, so versions scored before they existed compete with
        those scored at 1; the gain only with opponent planes), ``coarse_pass`` only where it
        is not empty."""
        values = self.as_dict()
        if self.colour_transform in _FIXED_OPPONENT_SHARES:
            del values["opponent_weight"]
        if self.level_exponent == 1:
            del values["level_exponent"]
        if self.chroma_gain == 1 or self.opponent_share == 0:
            del values["chroma_gain"]
        if not self.coarse_pass:
            del values["coarse_pass"]
        return values


def _check_number(key: str, value: object, low: float, high: float) -> None:
    """Refuses ``denoise.<key>`` unless ``value`` is a number (not a bool) in [low, high]."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not low <= value <= high:
        raise UserError(f"denoise.{key}: must be a number in [{low}, {high}], got {value!r}")


DEFAULT_SETTINGS = Settings()


def _geometry(image: np.ndarray, turns: int, mirrored: bool) -> np.ndarray:
    image = np.rot90(image, turns, axes=(0, 1))
    return image[:, ::-1] if mirrored else image


def _undo_geometry(image: np.ndarray, turns: int, mirrored: bool) -> np.ndarray:
    image = image[:, ::-1] if mirrored else image
    return np.rot90(image, -turns, axes=(0, 1))


def self_ensemble(
    run: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    geometries: Sequence[tuple[int, bool]],
) -> np.ndarray:
    """The mean of ``run`` over ``geometries`` (items of GEOMETRIES) of an HWC image, each
    output turned back: as many times the work, for a few hundredths to tenths of a dB."""
    if tuple(geometries) == GEOMETRIES[:1]:
        return run(image)
    total = 0.0
    for turns, mirrored in geometries:
        output = run(np.ascontiguousarray(_geometry(image, turns, mirrored)))
        total = total + _undo_geometry(output, turns, mirrored).astype(np.float64)
    return (total / len(geometries)).astype(np.float32)


def halve(image: np.ndarray) -> np.ndarray:
    """The means of an HWC image's 2 x 2 blocks (an odd last row or column left out)."""
    height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    rows = image[0:height:2, :width] + image[1:height:2, :width]
    return ((rows[:, 0::2] + rows[:, 1::2]) * 0.25).astype(np.float32, copy=False)


def _along(axis: int, ndim: int, part: slice) -> tuple[slice, ...]:
    index = [slice(None)] * ndim
    index[axis] = part
    return tuple(index)


def _double_axis(values: np.ndarray, axis: int) -> np.ndarray:
    """``values`` at twice the samples along ``axis``, linearly interpolated with the pixel
    centres aligned and the edges repeated (as ``skimage.transform.resize`` with ``order=1``,
    ``mode="edge"``): each new sample is 3/4 of its own and 1/4 of its neighbour."""
    padding = [(0, 0)] * values.ndim
    padding[axis] = (1, 1)
    edged = np.pad(values, padding, mode="edge")
    shape = list(values.shape)
    shape[axis] *= 2
    doubled = np.empty(shape, np.float32)
    near = 0.75 * values
    before, after = (
        _along(axis, values.ndim, slice(0, -2)),
        _along(axis, values.ndim, slice(2, None)),
    )
    doubled[_along(axis, values.ndim, slice(0, None, 2))] = near + 0.25 * edged[before]
    doubled[_along(axis, values.ndim, slice(1, None, 2))] = near + 0.25 * edged[after]
    return doubled


def double(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A :func:`halve`-d HWC image back at ``shape`` (an odd last row or column repeated)."""
    doubled = _double_axis(_double_axis(image, 0), 1)
    padding = ((0, shape[0] - doubled.shape[0]), (0, shape[1] - doubled.shape[1]), (0, 0))
    return np.pad(doubled, padding, mode="edge")


def coarse_passes(
    run: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    levels: Sequence[float],
    geometries: Sequence[tuple[int, bool]],
    smallest: int = 1,
) -> np.ndarray:
    """A denoised HWC image with what ``run`` (a model that takes a noise level map) still
    takes off it at half, then a quarter, ... of the resolution, told ``levels`` in turn, added
    back at full resolution; a scale whose sides would fall below ``smallest`` pixels is
    skipped, and those after it.

    A network sees a window of a few dozen pixels; what is left of the noise after it is
    smooth and wide (blotches, strongest in a colour image's chrominance planes and in flat
    areas), and at a coarser scale it falls inside that window. Each pass costs a quarter of
    the one before it per view in ``geometries``."""
    for scale, level in enumerate(levels, start=1):
        shapes, small = [], image
        for _ in range(scale):
            shapes.append(small.shape)
            small = halve(small)
        if min(small.shape[:2]) < smallest:
            break
        change = self_ensemble(run, noise.with_noise_map(small, level), geometries) - small
        for shape in reversed(shapes):
            change = double(change, shape)
        image = image + change
    return image


def denoise_values(
    denoiser: model_store.Denoiser,
    image: np.ndarray,
    tile_size: int = inference.DEFAULT_TILE,
    settings: Settings = DEFAULT_SETTINGS,
) -> np.ndarray:
    """Denoises an HWC float32 image in [0, 1] with 1 or 3 channels; returns the same shape,
    clipped to [0, 1].

    A grayscale model denoises a colour image plane by plane: its opponent planes (then
    converted back to RGB), R, G and B themselves, or both, averaged with
    ``settings.opponent_weight`` (``blend``), as ``settings.colour_transform`` says. A
    colour model gets a grayscale image repeated to 3 channels and its output converted back
    with rgb2gray. Each run of the model is averaged over ``settings.self_ensemble`` flips and
    rotations (``blend`` shares them between its two colour bases). A model that takes a noise
    level map gets, with each plane or image it denoises, the level estimated from that plane
    or image (:func:`noise_level.estimate_sigma`), and with ``settings.coarse_pass`` then
    denoises its output again at half, a quarter, ... of the resolution, told those fractions
    of the level (:func:`coarse_passes`, one view each).
    """
    multiple = 2**denoiser.depth
    tiled = functools.partial(
        inference.denoise_image,
        denoiser.model,
        depth=denoiser.depth,
        tile_size=math.ceil(tile_size / multiple) * multiple,
        margin=inference.tile_margin(denoiser.depth),
    )

    def run(
        values: np.ndarray,
        geometries: Sequence[tuple[int, bool]],
        clipped_in: noise_level.ClippedIn | None = None,
    ) -> np.ndarray:
        if not denoiser.noise_map:
            return self_ensemble(tiled, values, geometries)
        read = noise_level.estimate_sigma(values, clipped_in)
        output = self_ensemble(
            tiled, noise.with_noise_map(values, settings.map_level(read)), geometries
        )
        levels = [settings.map_level(read * fraction) for fraction in settings.coarse_pass]
        return coarse_passes(tiled, output, levels, geometries[:1], smallest=multiple)

    views = settings.views
    if denoiser.channels == 1:
        if image.shape[-1] == 1:
            return run(image, views)
        return colour_by_planes(run, image, settings)
    if image.shape[-1] == 1:
        rgb = run(np.repeat(image, 3, axis=-1), views)
        return images.rgb_to_gray(rgb)[..., None]
    return run(image, views)


def _by_planes(run: Callable[[np.ndarray], np.ndarray], values: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [run(values[..., [channel]]) for channel in range(values.shape[-1])], axis=-1
    )


def colour_by_planes(
    run: Callable[..., np.ndarray],
    image: np.ndarray,
    settings: Settings,
) -> np.ndarray:
    """An HWC RGB image denoised plane by plane by ``run`` (a grayscale denoiser of HW1
    images, averaged over the ``geometries`` it is given; ``clipped_in``, the RGB image's
    :class:`noise_level.ClippedIn`, is where the noise was clipped, for reading each plane's
    level), in the colour space
    ``settings.colour_transform`` names; clipped to [0, 1].

    ``blend`` runs both and averages them, the opponent result weighted by
    ``settings.opponent_weight``: the two make different errors (the opponent planes see the
    luminance at a third of the noise, the channels see each colour's own detail), so their
    mean beats either. The ``settings.self_ensemble`` views are shared between the two: the
    opponent planes take the first, third, ... of them, R, G and B the second, fourth, ... (with
    one view, both take it). So with 2 views ``blend`` costs what ``opponent`` costs.
    """
    opponent_share = settings.opponent_share
    views = settings.views
    opponent_views, channel_views = views, views
    if 0 < opponent_share < 1:
        opponent_views, channel_views = views[0::2], views[1::2] or views
    result = 0.0
    clipped_in = noise_level.ClippedIn(image)
    if opponent_share > 0:
        opponent_run = functools.partial(run, geometries=opponent_views, clipped_in=clipped_in)
        planes = stretch_chroma(to_opponent(image), settings.chroma_gain)
        planes = stretch_chroma(_by_planes(opponent_run, planes), 1 / settings.chroma_gain)
        opponent = np.clip(from_opponent(planes), 0.0, 1.0)
        result = result + opponent_share * opponent.astype(np.float64)
    if opponent_share < 1:
        channels = np.clip(
            _by_planes(
                functools.partial(run, geometries=channel_views, clipped_in=clipped_in), image
            ),
            0.0,
            1.0,
        )
        result = result + (1.0 - opponent_share) * channels.astype(np.float64)
    return np.clip(result, 0.0, 1.0).astype(np.float32)


def denoise_pixels(
    denoiser: model_store.Denoiser,
    pixels: np.ndarray,
    tile_size: int = inference.DEFAULT_TILE,
    settings: Settings = DEFAULT_SETTINGS,
) -> np.ndarray:
    """Denoises an image file's pixels; returns the same shape and dtype.

    ``pixels`` is HW or HWC with 1-4 channels (gray, gray+alpha, RGB, RGBA), uint8 or uint16.
    The alpha channel is copied unchanged.
    """
    if pixels.dtype not in (np.uint8, np.uint16):
        raise UserError(f"expected uint8 or uint16 pixels, got {pixels.dtype}")
    planes = pixels if pixels.ndim == 3 else pixels[..., None]
    if planes.ndim != 3 or planes.shape[-1] not in (1, 2, 3, 4):
        raise UserError(f"expected HW or HWC pixels with 1-4 channels, got {pixels.shape}")
    has_alpha = planes.shape[-1] in (2, 4)
    colour = planes[..., :-1] if has_alpha else planes
    denoised = denoise_values(denoiser, images.to_float(colour), tile_size, settings)
    scale = np.iinfo(pixels.dtype).max
    result = np.round(np.clip(denoised, 0.0, 1.0) * scale).astype(pixels.dtype)
    if has_alpha:
        result = np.concatenate([result, planes[..., -1:]], axis=-1)
    return result.reshape(pixels.shape)
