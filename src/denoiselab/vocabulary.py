"""The fixed vocabularies that params.yaml and saved models share, as plain constants: the two
kinds of data and their channels, the classical methods, and how many times a network halves
the image. ``config`` builds its checks from them; modules that only need the names import
them from here, without pydantic, whose import with ``config``'s models takes about a quarter
of a second: a seventh of ``denoiselab denoise`` on a 1 MP photo."""

from __future__ import annotations

# The two kinds of data and models: grayscale (1 channel) and colour (3 channels, RGB).
DATASET_CHANNELS = {"gray": 1, "colour": 3}
# The classical denoisers the classical stage and `denoiselab evaluate --classical` score.
CLASSICAL_METHODS = ("tv", "wavelet", "nl_means", "bm3d")


def downsamplings(depth: int, pixel_unshuffle: bool) -> int:
    """How many times a network of ``depth`` pooling levels halves the image, one more with a
    pixel-unshuffle input: its input's sides must divide by ``2**downsamplings`` (inference
    pads to that and crops back)."""
    return depth + int(pixel_unshuffle)
