"""Finding the ink of a new image: what is paper and what is digit, light on black in [0, 1].

Two ways, chosen by `digitnet.data.preprocess`: a clean image (even paper, solid ink: a scan or a
drawing) is split into paper and ink by Otsu's threshold and measured against the paper level
(`split_clean`, `clean_ink`); a photo has its lighting and paper removed by a morphological
opening (`remove_background`), its ink told from noise (`find_ink`), and lines across the page
and marks away from the digit left out.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.transform import hough_line, hough_line_peaks

from digitnet.data.imageops import (
    Counted,
    block_reduce,
    bounding_box,
    box_mean3,
    byte_codes,
    label_components,
    max_filter,
    min_filter,
    odd,
    otsu_threshold,
    repeat_blocks,
    resize,
    robust_stats,
    shrink,
)

COARSE_SIDE = 128  # px; background and connected components are worked out on a grid this size
POLARITY_SIDE = 128  # px; polarity is decided on an area-averaged copy this size...
POLARITY_BLUR = 1 / 16  # ... less its Gaussian blur of this std (of its shorter side): strokes
BACKGROUND_ELEMENT = 0.2  # opening element, as a fraction of the shorter side; wider than strokes
MIN_PAPER_BRIGHTNESS = 0.25  # dark ink is measured relative to paper at least this bright
MIN_CONTRAST = 0.10  # ink must differ from paper by this fraction of the full range
MIN_SNR = 6.0  # ... and by this many noise standard deviations (pure noise reaches about 4.3)
MIN_INK_PIXELS = 4  # fewer ink pixels than this is a speck, not a digit
MIN_COMPONENT_SHARE = 0.02  # ink blobs holding less of the total ink mass are dropped as dirt
MIN_KEPT_SHARE = 0.15  # when the digit's blobs hold less of the ink, it is specks, not a digit
LINE_SIDE = 512  # px; straight lines across the page are looked for on a copy this size
LINE_MIN_SPAN = 0.7  # a line runs across at least this share of the image (a digit does not)
LINE_MAX_TILT = 10  # degrees from horizontal or vertical
_LINE_ANGLES = np.deg2rad(np.arange(-LINE_MAX_TILT, LINE_MAX_TILT + 0.25, 0.5))
NEAR_DIGIT = 0.25  # blobs this close to the digit's blobs (of the group's size) join the digit
INK_WHITE_PERCENTILE = 90  # the ink residual at this percentile becomes white (255)
CLEAN_MIN_CONTRAST = 0.3  # a clean image's ink and paper differ by this much at least...
CLEAN_MAX_NOISE = 0.02  # ... its paper noise (std) is at most this ...
CLEAN_MAX_SPREAD = 0.12  # ... and its paper brightness spans at most this (no shading)
CLEAN_MAX_FRAME_INK = 0.2  # ... and, above SCAN_MAX_SIDE px, ink along at most this of its edge
SMALL_SIDE = 64  # px; images this small with two clear classes are scans (no lighting to undo)
SCAN_MAX_SIDE = 128  # px; larger images with dark edges are shadows or tables, not scans
AMBIGUOUS_DARK_SHARE = 0.8  # a frame-filling image is light ink on dark paper only this dark
TIGHT_CROP_SHARE = 0.85  # ink spanning this share of the image across or down: a tight crop

DARK_ON_LIGHT = "dark-on-light"
LIGHT_ON_DARK = "light-on-dark"


def _coarse_factor(shape: tuple[int, int]) -> int:
    return max(1, math.ceil(max(shape) / COARSE_SIDE))


def detect_polarity(gray: np.ndarray) -> str:
    """Decide whether the ink is darker or lighter than the paper.

    Ink is thin strokes; lighting, shadows and paper are broad. On an area-averaged copy, the
    image less its Gaussian blur (at a scale wider than strokes) keeps the strokes as a long
    one-sided tail of values: negative for dark ink, positive for light ink. An edge of a
    shadow or a lighting step leaves equal tails on both of its sides, so the sign of the third
    moment of that high-pass copy decides. (The previous rule, ink mass standing out of a local
    median, took a sharp shadow that darkens most of a photo for light paper with dark ink
    around it.)

    Returns:
        DARK_ON_LIGHT or LIGHT_ON_DARK (DARK_ON_LIGHT for a blank image).
    """
    small = shrink(gray, POLARITY_SIDE).astype(np.float64)
    sigma = POLARITY_BLUR * min(small.shape)
    detail = small - ndimage.gaussian_filter(small, sigma, mode="reflect")
    return DARK_ON_LIGHT if float(np.sum(detail ** 3)) <= 0.0 else LIGHT_ON_DARK


def remove_background(gray: np.ndarray, polarity: str) -> tuple[np.ndarray, np.ndarray]:
    """Subtract the paper, estimated by a large morphological opening, leaving light ink.

    The opening (at a coarse scale, after block-minimum pooling that already erases thin
    strokes) removes every light structure narrower than a third of the image: the strokes.
    What remains follows gradients, coloured or grey paper and broad shadows. Dark ink is
    measured relative to the local paper brightness (light falling on paper multiplies), so a
    stroke in shadow is as strong as one in full light.

    Returns:
        (residual, background): float32 (H, W); residual >= 0 is the ink, light on black, and
        background is the estimate in the same light-ink space.
    """
    x = 1.0 - gray if polarity == DARK_ON_LIGHT else gray
    factor = _coarse_factor(x.shape)
    low = block_reduce(x, factor, np.min)
    size = odd(min(low.shape) * BACKGROUND_ELEMENT)
    # Odd reflection continues slopes past the edges, where an opening would otherwise cut
    # the corners off a lighting gradient; the two filters reach size - 1 cells in all.
    pad = size - 1
    extended = np.pad(low, pad, mode="reflect", reflect_type="odd")
    opened = max_filter(min_filter(extended, size), size)[pad:-pad, pad:-pad]
    h, w = x.shape
    if factor > 1:
        up = resize(opened, opened.shape[1] * factor, opened.shape[0] * factor,
                     Image.Resampling.BILINEAR)
        background = up[:h, :w]
    else:
        background = opened
    residual = x - background
    if polarity == DARK_ON_LIGHT:
        residual /= np.maximum(1.0 - background, MIN_PAPER_BRIGHTNESS)
    return np.clip(residual, 0.0, 1.0), background


def _line_pixels(mask: np.ndarray) -> np.ndarray:
    """The pixels of `mask` on straight lines that run across most of the image, within
    LINE_MAX_TILT of horizontal or vertical: ruled and squared paper, a form's frame, a table
    edge. Found by a Hough transform (scikit-image) on a copy at most LINE_SIDE px a side.

    Returns:
        bool (H, W).
    """
    factor = max(1, math.ceil(max(mask.shape) / LINE_SIDE))
    small = block_reduce(mask, factor, np.max, pad_mode="constant")
    lines = np.zeros(small.shape, dtype=bool)
    # vertical lines, then horizontal ones as vertical lines of the transpose
    for turned in (False, True):
        m = small.T if turned else small
        h = m.shape[0]
        if h < 16 or not m.any():
            continue
        hspace, angles, dists = hough_line(m, theta=_LINE_ANGLES)
        _, found_angles, found_dists = hough_line_peaks(
            hspace, angles, dists, min_distance=3, min_angle=len(_LINE_ANGLES),
            threshold=LINE_MIN_SPAN * h)
        if not len(found_angles):
            continue
        rows, cols = np.indices(m.shape, dtype=np.float32)
        out = lines.T if turned else lines
        for angle, dist in zip(found_angles, found_dists, strict=True):
            distance = np.abs(cols * math.cos(angle) + rows * math.sin(angle) - dist)
            width = np.count_nonzero(m & (distance <= 4)) / h  # the line's thickness, px
            out |= m & (distance <= width / 2 + 1.5)
    return repeat_blocks(lines, factor, mask.shape) & mask


def keep_main_components(mask: np.ndarray, ink: np.ndarray) -> np.ndarray:
    """Full-size boolean map of the digit's ink blobs: the blob with the most ink, and the blobs
    holding at least MIN_COMPONENT_SHARE of the ink that lie near it (within NEAR_DIGIT of the
    group's size, grown blob by blob: the pieces of a broken stroke). Lines, specks and marks
    elsewhere on the page are dropped.

    Works on the coarse grid, so gaps smaller than a grid cell do not split a stroke.
    """
    factor = _coarse_factor(mask.shape)
    coarse = block_reduce(mask, factor, np.max, pad_mode="constant")
    mass = block_reduce(ink, factor, np.sum, pad_mode="constant")
    labels, count = label_components(coarse)
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    blob_mass = np.bincount(labels.ravel(), weights=mass.ravel(), minlength=count + 1)[1:]
    boxes = np.array([(s[0].start, s[0].stop, s[1].start, s[1].stop)
                      for s in ndimage.find_objects(labels)])
    candidates = blob_mass >= MIN_COMPONENT_SHARE * blob_mass.sum()
    group = np.zeros(count, dtype=bool)
    group[int(np.argmax(blob_mass))] = True
    while True:
        top, left = boxes[group, 0].min(), boxes[group, 2].min()
        bottom, right = boxes[group, 1].max(), boxes[group, 3].max()
        reach = NEAR_DIGIT * max(bottom - top, right - left)
        gap = np.maximum.reduce([top - boxes[:, 1], boxes[:, 0] - bottom,
                                 left - boxes[:, 3], boxes[:, 2] - right])
        grown = group | (candidates & (gap <= reach))
        if np.array_equal(grown, group):
            break
        group = grown
    keep = np.zeros(count + 1, dtype=bool)
    keep[1:] = group
    keep = max_filter(keep[labels], 3)  # a cell of margin for faint stroke edges
    return repeat_blocks(keep, factor, mask.shape)


class _Detection(NamedTuple):
    """Where the ink is in one residual, or why there is none."""

    residual: np.ndarray  # the residual the mask was found in
    mask: np.ndarray  # bool (H, W), empty when reason is set
    level: float  # paper level of the residual
    noise: float  # paper noise standard deviation
    snr: float  # ink contrast over paper noise
    reason: str  # why there is no ink; "" when there is


def _detect_ink(residual: np.ndarray) -> _Detection:
    """Otsu's threshold, raised above the noise, and the checks that tell ink from noise."""
    level, noise = robust_stats(residual)
    noise = max(noise, 1.0 / 255.0)  # 8-bit quantisation
    no_mask = np.zeros(residual.shape, dtype=bool)
    spread = float(residual.max()) - level
    if spread < MIN_CONTRAST:
        return _Detection(residual, no_mask, level, noise, 0.0,
                          f"blank image (contrast {spread:.3f}, expected >= {MIN_CONTRAST})")
    mask = residual > max(otsu_threshold(residual), level + 4 * noise)
    count = np.count_nonzero(mask)
    if count < MIN_INK_PIXELS:
        return _Detection(residual, no_mask, level, noise, 0.0,
                          f"only {count} ink pixels (expected >= {MIN_INK_PIXELS})")
    contrast = float(np.median(residual[mask])) - level
    snr = contrast / noise
    reason = ""
    if contrast < MIN_CONTRAST:
        reason = f"ink too faint (contrast {contrast:.3f}, expected >= {MIN_CONTRAST})"
    elif snr < MIN_SNR:
        reason = f"only noise (ink {snr:.1f} noise std above paper, expected >= {MIN_SNR:g})"
    return _Detection(residual, no_mask if reason else mask, level, noise, snr, reason)


def find_ink(residual: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Separate ink from paper noise, keeping grey levels, or say why there is no digit.

    Ink is looked for pixel by pixel and after 3x3 averaging, and the scale where it stands
    out more from the noise wins: averaging rescues broad strokes in a noisy photo, while
    1 px strokes on clean paper are found at full resolution. The residual is then stretched
    so the paper noise floor becomes 0 and solid ink 1, and blobs too small to matter are
    dropped.

    Returns:
        (ink, mask, reason): ink float32 in [0, 1], mask bool, both (H, W); reason is "" when
        a digit was found, else why not (and ink and mask are then empty).
    """
    found = max((_detect_ink(r) for r in (residual, box_mean3(residual))),
                key=lambda d: (not d.reason, d.snr))
    if found.reason:
        return np.zeros_like(residual), found.mask, found.reason
    values = found.residual[found.mask]
    low = found.level + 3 * found.noise
    high = max(float(np.percentile(values, INK_WHITE_PERCENTILE)), low + 1e-3)
    ink = np.clip((found.residual - low) / (high - low), 0.0, 1.0).astype(np.float32)
    lines = _line_pixels(found.mask)
    off_lines = ink * ~lines
    keep = keep_main_components(found.mask & ~lines, off_lines) & ~lines
    kept = float((ink * keep).sum()) / max(float(off_lines.sum()), 1e-6)
    if kept < MIN_KEPT_SHARE:
        reason = f"only scattered specks (the largest group of blobs holds {kept:.0%} of the ink)"
        return np.zeros_like(residual), np.zeros_like(found.mask), reason
    return ink * keep, found.mask & keep, ""


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


def ink_is_light(corners, ring: float, image: float):
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
        ink = float(np.median(ink_px))
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
