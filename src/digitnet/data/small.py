"""The ink of a small 8-bit image (a scan cell, a digit set's bitmap, a thumbnail: up to
`clean.SMALL_SIDE` px a side, every value k / 255) in a fraction of the calls: `split_small` and
`keep_small` return exactly what `clean.split_clean` and `ink.keep_main_components` return for such
an image, bit for bit, by the same arithmetic on the same values.

Those general functions are written for images of any size: subsampling, a coarse grid, 256-level
statistics through `imagestats.Counted` objects. On a 16x16 scan their Python-level calls into numpy
cost several times the pixels' arithmetic, so a small scan took ~0.35 ms; here the 256-level counts
are taken once per class and the order statistics read from them directly, and the one-blob case
of the component filter (the usual one) skips the blob bookkeeping. tests/test_small.py compares
both routes on varied images.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from digitnet.data.clean import SCAN_MAX_SIDE, SMALL_SIDE, CleanSplit
from digitnet.data.imageops import max_filter
from digitnet.data.imagestats import BYTE_LEVELS, _level_bins, byte_codes
from digitnet.data.ink import (
    DARK_ON_LIGHT,
    LIGHT_ON_DARK,
    MIN_CONTRAST,
    ink_is_light,
    keep_main_components,
)

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
_QUANTILES = (0.01, 0.99)  # np.true_divide([1, 99], 100): the paper's 1st and 99th percentiles


def small_codes(gray: np.ndarray) -> np.ndarray | None:
    """The 8-bit codes of `gray` (float32 (H, W)) when it takes this module's route: at most
    SMALL_SIDE px a side (so no subsampling, no coarse grid, and `is_clean` asks for contrast
    alone) and 8-bit (`imagestats.byte_codes`); else None."""
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
    """`clean.split_clean(gray)` for an image that `small_codes` gave `codes` for."""
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
    light = ink_is_light(corners, ring_dark, np.count_nonzero(dark) / dark.size)
    polarity = LIGHT_ON_DARK if light else DARK_ON_LIGHT
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


# ----------------------------------------------------------------- many images of one size at once
@functools.lru_cache(maxsize=4096)
def _otsu_bins(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """(the bin of each byte level, the bin centres) of `otsu_threshold`'s 256-bin histogram over
    [level lo, level hi], as `imagestats._level_bins` and `otsu_threshold` compute them."""
    index, edges = _level_bins(256, float(BYTE_LEVELS[lo]), float(BYTE_LEVELS[hi]))
    return index, (edges[:-1] + edges[1:]) / 2


def _spread_stack(mask: np.ndarray, size: int) -> np.ndarray:
    """`imageops.max_filter` of each (H, W) bool image of an (N, H, W) stack: the same shifted
    ORs as `imageops._spread_true`, along axes 1 and 2."""
    reach = size // 2
    out = mask
    for axis in (1, 2):
        src, out = out, out.copy()
        for k in range(1, min(reach, src.shape[axis] - 1) + 1):
            if axis == 1:
                out[:, k:] |= src[:, :-k]
                out[:, :-k] |= src[:, k:]
            else:
                out[:, :, k:] |= src[:, :, :-k]
                out[:, :, :-k] |= src[:, :, k:]
    return out


def _rows_at(cumulative: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Per row, the byte level at `positions` (N,) of the sorted multiset whose cumulative counts
    are `cumulative` (N, 256): searchsorted(side="right") as a count."""
    found = np.count_nonzero(cumulative <= positions[:, None], axis=1)
    return np.minimum(found, 255)  # 256 only in a row with nothing counted (its split is None)


def _rows_median(cumulative: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`Counted.median` per row (float32): `values` (N, 256) sorted as counted by `cumulative`."""
    size = cumulative[:, -1]
    even = size % 2 == 0
    first = np.where(even, size // 2 - 1, (size - 1) // 2)
    rows = np.arange(len(size))
    a = values[rows, _rows_at(cumulative, first)]
    b = values[rows, _rows_at(cumulative, np.where(even, size // 2, first))]
    total = np.where(even, a + b, a).astype(np.float64)  # the float32 sum, as numpy adds the two
    return (total / np.where(even, 2, 1)).astype(np.float32)


def split_many(gray: np.ndarray, codes: np.ndarray) -> list[CleanSplit | None]:
    """`clean.split_clean` of each image of an (N, H, W) stack that `small_codes` gave the codes
    of: `split_small`'s arithmetic, element by element, for all N at once (the rows of images
    that split_clean refuses, flat or one-class, compute garbage quietly and give None)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return _split_many(gray, codes)


def _split_many(gray: np.ndarray, codes: np.ndarray) -> list[CleanSplit | None]:
    n, h, w = codes.shape
    flat = codes.reshape(n, -1)
    offsets = (np.arange(n) * 256)[:, None]
    lo_code, hi_code = flat.min(axis=1), flat.max(axis=1)
    lo, hi = BYTE_LEVELS[lo_code].astype(np.float64), BYTE_LEVELS[hi_code].astype(np.float64)
    counts = np.bincount((flat + offsets).ravel(), minlength=256 * n).reshape(n, 256)
    bins = [_otsu_bins(a, b) for a, b in zip(lo_code.tolist(), hi_code.tolist(), strict=True)]
    index = np.stack([b[0] for b in bins]) + (np.arange(n) * 257)[:, None]
    centers = np.stack([b[1] for b in bins])
    c = np.bincount(index.ravel(), weights=counts.ravel(), minlength=257 * n).reshape(
        n, 257)[:, 1:].astype(np.intp).astype(np.float32)  # skimage's threshold_otsu from here
    weight1 = np.cumsum(c, axis=1)
    weight2 = np.cumsum(c[:, ::-1], axis=1)[:, ::-1]
    mean1 = np.cumsum(c * centers, axis=1) / weight1
    mean2 = (np.cumsum((c * centers)[:, ::-1], axis=1) / weight2[:, ::-1])[:, ::-1]
    variance12 = weight1[:, :-1] * weight2[:, 1:] * (mean1[:, :-1] - mean2[:, 1:]) ** 2
    threshold = centers[np.arange(n), np.argmax(variance12, axis=1)]
    dark = gray < threshold.astype(np.float32)[:, None, None]  # a Python float meets float32
    ring = max(1, min(h, w) // 32)
    inner = dark[:, ring:-ring]
    parts = (dark[:, :ring], dark[:, -ring:], inner[:, :, :ring], inner[:, :, -ring:])
    ring_dark = sum(np.count_nonzero(p, axis=(1, 2)) for p in parts) / sum(p[0].size for p in parts)
    k = max(1, min(h, w) // 6)
    parts = (dark[:, :k, :k], dark[:, :k, -k:], dark[:, -k:, :k], dark[:, -k:, -k:])
    corners = sum(np.count_nonzero(p, axis=(1, 2)) for p in parts) / sum(p[0].size for p in parts)
    dark_on_light = ~ink_is_light(corners, ring_dark, np.count_nonzero(dark, axis=(1, 2)) / (h * w))
    ink_mask = dark == dark_on_light[:, None, None]
    near = _spread_stack(ink_mask, 5 if min(h, w) > 32 else 3)
    keys = (flat + offsets).ravel()

    def counted(where: np.ndarray) -> np.ndarray:
        return np.bincount(keys[where.ravel()], minlength=256 * n).reshape(n, 256)

    paper_counts, ink_counts = counted(~near), counted(ink_mask)
    empty = paper_counts.sum(axis=1) == 0
    if empty.any():
        paper_counts[empty] = counted(~ink_mask)[empty]
    valid = (paper_counts.sum(axis=1) > 0) & (ink_counts.sum(axis=1) > 0)
    paper_cum = np.cumsum(paper_counts, axis=1)
    size = paper_cum[:, -1]
    levels = np.broadcast_to(BYTE_LEVELS, (n, 256))
    percentiles = []
    for quantile in _QUANTILES:
        virtual = (size - 1) * quantile
        top = virtual >= size - 1
        previous = np.where(top, -1, np.floor(virtual).astype(np.intp))
        following = np.where(top, -1, previous + 1)
        a = BYTE_LEVELS[_rows_at(paper_cum, np.where(top, size - 1, previous))]
        b = BYTE_LEVELS[_rows_at(paper_cum, np.where(top, size - 1, following))]
        gamma = virtual - previous
        diff_b_a = (b - a).astype(np.float64)  # float32, as numpy subtracts the two
        percentiles.append(np.where(gamma >= 0.5, b.astype(np.float64) - diff_b_a * (1 - gamma),
                                    a.astype(np.float64) + diff_b_a * gamma))
    paper = _rows_median(paper_cum, levels)
    deviations = np.abs(BYTE_LEVELS[None, :] - paper[:, None])
    order = np.argsort(deviations, axis=1, kind="stable")
    mad = _rows_median(np.cumsum(np.take_along_axis(paper_counts, order, axis=1), axis=1),
                       np.take_along_axis(deviations, order, axis=1))
    ink = _rows_median(np.cumsum(ink_counts, axis=1), levels)
    noise = 1.4826 * mad.astype(np.float64)
    spread = percentiles[1] - percentiles[0]
    frame_ink = np.where(dark_on_light, ring_dark, 1.0 - ring_dark)
    side = max(h, w)
    out: list[CleanSplit | None] = []
    for i, fields in enumerate(zip(paper.tolist(), ink.tolist(), noise.tolist(), spread.tolist(),
                                   frame_ink.tolist(), strict=True)):
        if not valid[i] or hi[i] - lo[i] < MIN_CONTRAST:
            out.append(None)
            continue
        p, q, z, s, f = fields
        polarity = DARK_ON_LIGHT if dark_on_light[i] else LIGHT_ON_DARK
        out.append(CleanSplit(polarity, p, q, z, s, f if side > SCAN_MAX_SIDE else 0.0, side))
    return out
