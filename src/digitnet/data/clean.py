"""The ink of a clean image (even paper, solid ink: a scan, a crop of one, a drawing): split into
paper and ink by Otsu's threshold and measured against the paper level, nothing removed as
background however much of the frame the digit fills. `digitnet.data.preprocess` takes this way
when `is_clean`; photos go through `digitnet.data.ink`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from digitnet.data.imageops import bounding_box, max_filter
from digitnet.data.imagestats import Counted, byte_codes, median, otsu_threshold, robust_stats
from digitnet.data.ink import MIN_CONTRAST
from digitnet.data.polarity import DARK_ON_LIGHT, LIGHT_ON_DARK, ink_is_light

CLEAN_MIN_CONTRAST = 0.3  # a clean image's ink and paper differ by this much at least...
CLEAN_MAX_NOISE = 0.02  # ... its paper noise (std) is at most this ...
CLEAN_MAX_SPREAD = 0.12  # ... and its paper brightness spans at most this (no shading)
CLEAN_MAX_FRAME_INK = 0.2  # ... and, above SCAN_MAX_SIDE px, ink along at most this of its edge
SMALL_SIDE = 64  # px; images this small with two clear classes are scans (no lighting to undo)
SCAN_MAX_SIDE = 128  # px; larger images with dark edges are shadows or tables, not scans
TIGHT_CROP_SHARE = 0.85  # ink spanning this share of the image across or down: a tight crop


class CleanSplit(NamedTuple):
    """An image split by Otsu's threshold into paper and ink, with the paper's statistics."""

    polarity: str
    paper: float  # median brightness of the paper class
    ink: float  # median brightness of the ink class
    noise: float  # paper noise standard deviation (1.4826 x MAD)
    spread: float  # paper brightness range: 99th - 1st percentile
    frame_ink: float  # share of the outer ring that is ink (0 for images up to SCAN_MAX_SIDE)
    side: int  # px, the image's longer side


def _share(flags: np.ndarray) -> float:
    """float(flags.mean()) of a bool array, exactly (numpy sums the 0s and 1s in float64 and
    divides by the count), without np.mean's overhead on a tiny array."""
    return np.count_nonzero(flags) / flags.size


def split_clean(gray: np.ndarray) -> CleanSplit | None:
    """Paper and ink of an image with two clear brightness classes, or None (one class only);
    which class is the paper: `ink_is_light`."""
    step = max(1, math.ceil(math.sqrt(gray.size / 250_000)))  # a subsample for big images
    sample = gray[::step, ::step]
    lo, hi = float(sample.min()), float(sample.max())
    if hi - lo < MIN_CONTRAST:
        return None
    codes = byte_codes(sample)  # an 8-bit image: its statistics from counts of its 256 levels
    counted = Counted.of_codes(codes) if codes is not None else None
    dark = sample < otsu_threshold(sample, low=lo, counted=counted)
    ring = max(1, min(sample.shape) // 32)
    border = np.concatenate([dark[:ring].ravel(), dark[-ring:].ravel(),
                             dark[ring:-ring, :ring].ravel(), dark[ring:-ring, -ring:].ravel()])
    ring_dark = _share(border)
    c = max(1, min(sample.shape) // 6)  # the corners: paper in nearly every digit, even stretched
    corners = _share(np.concatenate([dark[:c, :c].ravel(), dark[:c, -c:].ravel(),
                                     dark[-c:, :c].ravel(), dark[-c:, -c:].ravel()]))
    polarity = LIGHT_ON_DARK if ink_is_light(corners, ring_dark, _share(dark)) else DARK_ON_LIGHT
    ink_mask = dark if polarity == DARK_ON_LIGHT else ~dark
    # the paper's statistics away from the strokes' anti-aliased edges (2 px, 1 in small images)
    near = max_filter(ink_mask, 5 if min(sample.shape) > 32 else 3)
    values = codes if codes is not None else sample
    paper_px, ink_px = values[~near], values[ink_mask]
    if paper_px.size == 0:
        paper_px = values[~ink_mask]
    if paper_px.size == 0 or ink_px.size == 0:
        return None
    if codes is not None:
        paper_px, ink_px = Counted.of_codes(paper_px), Counted.of_codes(ink_px)
        low, high = paper_px.percentile([1, 99])
        ink = float(ink_px.median())
    else:
        low, high = np.percentile(paper_px, [1, 99])
        ink = float(median(ink_px))
    paper, noise = robust_stats(paper_px)
    frame_ink = 1.0 - ring_dark if polarity == LIGHT_ON_DARK else ring_dark
    return CleanSplit(polarity, paper, ink, noise, float(high - low),
                       frame_ink if max(gray.shape) > SCAN_MAX_SIDE else 0.0, max(gray.shape))


def is_clean(split: CleanSplit | None) -> bool:
    """Even paper and solid ink: a scan, a crop of one, or a drawing (no lighting to undo)."""
    if split is None or abs(split.paper - split.ink) < CLEAN_MIN_CONTRAST:
        return False
    return split.side <= SMALL_SIDE or (split.noise <= CLEAN_MAX_NOISE
                                        and split.spread <= CLEAN_MAX_SPREAD
                                        and split.frame_ink <= CLEAN_MAX_FRAME_INK)


def clean_ink(gray: np.ndarray, split: CleanSplit) -> tuple[np.ndarray, np.ndarray]:
    """Ink of a clean image, light on black in [0, 1], and its mask: each pixel's distance from
    the paper level toward the ink level, the paper noise floor at 0. Nothing is removed as
    background, however much of the frame the digit fills.

    Returns:
        (ink, mask): float32 and bool (H, W).
    """
    x = (split.paper - gray) / (split.paper - split.ink)
    floor = min(0.5, 3.0 * split.noise / abs(split.paper - split.ink))
    ink = np.clip((x - floor) / (1.0 - floor), 0.0, 1.0).astype(np.float32)
    return ink, ink >= 0.5


def touches_frame(mask: np.ndarray) -> bool:
    """Whether the ink spans nearly the whole image across or down: a tight crop (a scan cell
    or a digit set's bitmap) rather than a digit with paper around it."""
    top, bottom, left, right = bounding_box(mask)
    h, w = mask.shape
    return bottom - top >= TIGHT_CROP_SHARE * h or right - left >= TIGHT_CROP_SHARE * w
