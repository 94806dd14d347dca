"""The ink of a small 8-bit image (a scan cell, a digit set's bitmap, a thumbnail: up to
`ink.SMALL_SIDE` px a side, every value k / 255) in a fraction of the calls: `split_small` and
`keep_small` return exactly what `ink.split_clean` and `ink.keep_main_components` return for such
an image, bit for bit, by the same arithmetic on the same values.

Those general functions are written for images of any size: subsampling, a coarse grid, 256-level
statistics through `imageops.Counted` objects. On a 16x16 scan their Python-level calls into numpy
cost several times the pixels' arithmetic, so a small scan took ~0.35 ms; here the 256-level counts
are taken once per class and the order statistics read from them directly, and the one-blob case
of the component filter (the usual one) skips the blob bookkeeping. tests/test_small.py compares
both routes on varied images.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from digitnet.data.imageops import BYTE_LEVELS, _level_bins, byte_codes, max_filter
from digitnet.data.ink import (
    DARK_ON_LIGHT,
    LIGHT_ON_DARK,
    MIN_CONTRAST,
    SCAN_MAX_SIDE,
    SMALL_SIDE,
    CleanSplit,
    keep_main_components,
)

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
_QUANTILES = (0.01, 0.99)  # np.true_divide([1, 99], 100): the paper's 1st and 99th percentiles


def small_codes(gray: np.ndarray) -> np.ndarray | None:
    """The 8-bit codes of `gray` (float32 (H, W)) when it takes this module's route: at most
    SMALL_SIDE px a side (so no subsampling, no coarse grid, and `is_clean` asks for contrast
    alone) and 8-bit (`imageops.byte_codes`); else None."""
    if gray.ndim != 2 or max(gray.shape) > SMALL_SIDE:
        return None
    return byte_codes(gray)


def _order_statistics(counts: np.ndarray, positions: list[int]) -> list[np.float32]:
    """The values at these positions (0-based, -1 the last) of the sorted multiset of byte levels
    with these counts: `Counted._at`."""
    cumulative = np.cumsum(counts)
    size = int(cumulative[-1])
    index = np.searchsorted(cumulative, [p % size for p in positions], side="right")
    return list(BYTE_LEVELS[index])


def _median_of(values: list[np.float32]) -> np.float32:
    """`Counted.median` of the middle one or two values: their float32 sum over the count in
    float64, as float32 (np.mean's arithmetic)."""
    total = values[0] + values[1] if len(values) == 2 else values[0]
    return np.float32(float(total) / len(values))


def _middle(size: int) -> list[int]:
    return [size // 2 - 1, size // 2] if size % 2 == 0 else [(size - 1) // 2]


def _paper_stats(counts: np.ndarray) -> tuple[float, float, float, float]:
    """(1st percentile, 99th percentile, median, 1.4826 x median absolute deviation) of the paper
    pixels counted by level: `Counted.percentile([1, 99])` and `robust_stats(Counted)`."""
    size = int(counts.sum())
    positions = []
    for quantile in _QUANTILES:
        virtual = (size - 1) * quantile
        if virtual >= size - 1:
            positions += [-1, -1]
        else:
            previous = math.floor(virtual)
            positions += [previous, previous + 1]
    middle = _middle(size)
    values = _order_statistics(counts, positions + middle)
    percentiles = []
    for k, quantile in enumerate(_QUANTILES):
        a, b = values[2 * k], values[2 * k + 1]
        virtual = (size - 1) * quantile
        gamma = virtual - (math.floor(virtual) if virtual < size - 1 else -1)
        diff_b_a = float(b - a)  # float32, as numpy subtracts the two
        percentiles.append(float(b) - diff_b_a * (1 - gamma) if gamma >= 0.5
                           else float(a) + diff_b_a * gamma)
    median = float(_median_of(values[4:]))
    deviations = np.abs(BYTE_LEVELS - median)  # float32, as Counted.deviations computes them
    order = np.argsort(deviations, kind="stable")
    cumulative = np.cumsum(counts[order])
    index = np.searchsorted(cumulative, middle, side="right")
    mad = _median_of(list(deviations[order[index]]))
    return percentiles[0], percentiles[1], median, 1.4826 * float(mad)


def split_small(gray: np.ndarray, codes: np.ndarray) -> CleanSplit | None:
    """`ink.split_clean(gray)` for an image that `small_codes` gave `codes` for."""
    lo, hi = float(BYTE_LEVELS[codes.min()]), float(BYTE_LEVELS[codes.max()])
    if hi - lo < MIN_CONTRAST:
        return None
    counts = np.bincount(codes.ravel(), minlength=256)
    index, edges = _level_bins(256, lo, hi)  # otsu_threshold's histogram, from the counts
    hist = np.bincount(index, weights=counts, minlength=257)[1:].astype(np.intp)
    threshold = float(threshold_otsu(hist=(hist, (edges[:-1] + edges[1:]) / 2)))
    dark = gray < threshold
    h, w = dark.shape
    ring = max(1, min(h, w) // 32)
    parts = (dark[:ring], dark[-ring:], dark[ring:-ring, :ring], dark[ring:-ring, -ring:])
    ring_dark = sum(map(np.count_nonzero, parts)) / sum(p.size for p in parts)
    c = max(1, min(h, w) // 6)
    parts = (dark[:c, :c], dark[:c, -c:], dark[-c:, :c], dark[-c:, -c:])
    corners = sum(map(np.count_nonzero, parts)) / sum(p.size for p in parts)
    if abs(corners - 0.5) >= 0.25:
        dark_share = corners
    elif abs(ring_dark - 0.5) >= 0.1:
        dark_share = ring_dark
    else:
        dark_share = float(dark.mean())
    polarity = DARK_ON_LIGHT if dark_share < 0.5 else LIGHT_ON_DARK
    ink_mask = dark if polarity == DARK_ON_LIGHT else ~dark
    near = max_filter(ink_mask, 5 if min(h, w) > 32 else 3)
    paper_px, ink_px = codes[~near], codes[ink_mask]
    if paper_px.size == 0:
        paper_px = codes[~ink_mask]
    if paper_px.size == 0 or ink_px.size == 0:
        return None
    low, high, paper, noise = _paper_stats(np.bincount(paper_px, minlength=256))
    ink_counts = np.bincount(ink_px, minlength=256)
    ink = float(_median_of(_order_statistics(ink_counts, _middle(ink_px.size))))
    frame_ink = 1.0 - ring_dark if polarity == LIGHT_ON_DARK else ring_dark
    return CleanSplit(polarity, paper, ink, noise, float(high - low),
                      frame_ink if max(h, w) > SCAN_MAX_SIDE else 0.0, max(h, w))


def keep_small(mask: np.ndarray, ink: np.ndarray) -> np.ndarray:
    """`ink.keep_main_components(mask, ink)` for an image of at most SMALL_SIDE px a side.

    Such an image is its own coarse grid (one cell a pixel). With a single blob, the group is
    that blob whatever its mass, so the map is the mask grown by a cell; with several, the
    general function sorts them out.
    """
    labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if count != 1:
        return keep_main_components(mask, ink)
    return max_filter(mask, 3)
