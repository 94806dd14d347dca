"""Whether an image's ink is darker or lighter than its paper: `detect_polarity` for the photo
path of `digitnet.data.ink`, `ink_is_light` for images with two clear classes (scans, drawings)."""

from __future__ import annotations

import math

import numpy as np

from digitnet.data.imageops import block_reduce, max_filter, median_filter, min_filter, odd, shrink
from digitnet.data.imagestats import robust_stats

FINE_SIDE = 128  # px; the fine evidence is taken on a grid of at most this many cells a side
POLARITY_SIDE = 64  # px; the coarse evidence on an area-averaged copy this size
POLARITY_ELEMENT = 12  # fine evidence: structures narrower than 1/12 of the shorter side
COARSE_WEIGHT = 0.5  # the coarse evidence counts half as much as the fine

AMBIGUOUS_DARK_SHARE = 0.8  # a frame-filling image is light ink on dark paper only this dark

DARK_ON_LIGHT = "dark-on-light"
LIGHT_ON_DARK = "light-on-dark"


def _evidence(dark: float, light: float) -> float:
    """How much more dark ink than light there is, as a log ratio (0: as much of each)."""
    return math.log((dark + 1e-3) / (light + 1e-3))


def detect_polarity(gray: np.ndarray, pooled: list | None = None) -> str:
    """Decide whether the ink is darker or lighter than the paper.

    Two scales of evidence, added as log ratios of dark to light ink mass. Fine: on a grid of at
    most COARSE_SIDE cells, the darkest and the lightest pixel of each cell (so 1 px strokes
    survive), and what a closing (opening) with an element of 1/POLARITY_ELEMENT of the shorter
    side removes from them: the dark (light) structures narrower than strokes. Broad regions
    (a shadow, a lit corner, a table at the edge) and the edges between them are not that.
    Coarse: what sticks out of a local median background on an area-averaged copy
    POLARITY_SIDE px a side, which sees bold strokes wider than the fine element. Uneven
    lighting sticks out equally on both sides of its edges, so it does not decide.

    Returns:
        DARK_ON_LIGHT or LIGHT_ON_DARK (DARK_ON_LIGHT for a blank image). `pooled`, if given, is
        extended by the fine grids: each cell's darkest and lightest pixel, and their factor.
    """
    factor = max(1, math.ceil(max(gray.shape) / FINE_SIDE))
    low, high = block_reduce(gray, factor, np.min), block_reduce(gray, factor, np.max)
    if pooled is not None:
        pooled.extend((low, high, factor))
    size = odd(min(low.shape) / POLARITY_ELEMENT)
    dark = min_filter(max_filter(low, size), size) - low
    light = high - max_filter(min_filter(high, size), size)
    (dark_level, dark_noise), (light_level, light_noise) = robust_stats(dark), robust_stats(light)
    floor = max(dark_level, light_level) + 3 * max(dark_noise, light_noise)
    fine = _evidence(float(np.clip(dark - floor, 0, None).sum()),
                     float(np.clip(light - floor, 0, None).sum()))
    small = shrink(gray, POLARITY_SIDE)
    size = odd(min(small.shape) / 2)
    diff = small - median_filter(small, size)
    _, noise = robust_stats(diff)
    coarse = _evidence(float(np.clip(-diff - 3 * noise, 0, None).sum()),
                       float(np.clip(diff - 3 * noise, 0, None).sum()))
    return DARK_ON_LIGHT if fine + COARSE_WEIGHT * coarse >= 0 else LIGHT_ON_DARK


def ink_is_light(corners: float | np.ndarray, ring: float | np.ndarray,
                 image: float | np.ndarray) -> np.ndarray:
    """Whether a two-class image's ink is its light class, from the dark class's share of the
    image's corners, of its outer ring and of the whole image (floats, or arrays of them for a
    stack of images: data/small.py).

    The paper is the class that holds three quarters of the corners (paper in nearly every digit,
    even one stretched to fill its frame), else 60% of the outer ring. When the ink fills both,
    it is dark ink on light paper, as pages come, unless nearly all of the image is dark: thick
    strokes stretched over a frame cover more than half of it.
    """
    return np.where(np.abs(corners - 0.5) >= 0.25, corners >= 0.5,
                    np.where(np.abs(ring - 0.5) >= 0.1, ring >= 0.5, image >= AMBIGUOUS_DARK_SHARE))
