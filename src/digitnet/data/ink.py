"""Finding the ink of a new image: what is paper and what is digit, light on black in [0, 1].

Two ways, chosen by `digitnet.data.preprocess`: a clean image (even paper, solid ink: a scan or a
drawing) is split into paper and ink by Otsu's threshold and measured against the paper level
(`digitnet.data.clean`); a photo has its lighting and paper removed by a morphological
opening (`remove_background`), its ink told from noise (`find_ink`), lines across the page left
out, the digit picked among the page's other marks (`digitnet.data.candidates`) and its ink found
again in a window around it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from PIL import Image
from scipy import ndimage

from digitnet.data import candidates as marks
from digitnet.data.candidates import PICKED, REJECTED, Detection, find_digit, line_pixels
from digitnet.data.imageops import (
    block_reduce,
    box_mean3,
    label_components,
    max_filter,
    min_filter,
    odd,
    repeat_blocks,
    resize,
)
from digitnet.data.imagestats import median, otsu_threshold, robust_stats
from digitnet.data.polarity import (  # noqa: F401  (re-exported: preprocess imports them here)
    DARK_ON_LIGHT,
    LIGHT_ON_DARK,
    detect_polarity,
    ink_is_light,
)

COARSE_SIDE = 128  # px; background and connected components are worked out on a grid this size
BACKGROUND_ELEMENT = 0.2  # opening element, as a fraction of the shorter side; wider than strokes
MIN_PAPER_BRIGHTNESS = 0.25  # dark ink is measured relative to paper at least this bright
MIN_CONTRAST = 0.10  # ink must differ from paper by this fraction of the full range
MIN_SNR = 6.0  # ... and by this many noise standard deviations (pure noise reaches about 4.3)
MIN_INK_PIXELS = 4  # fewer ink pixels than this is a speck, not a digit
MIN_COMPONENT_SHARE = 0.02  # ink blobs holding less of the total ink mass are dropped as dirt
FAINT_SNR = 8.0  # marks this many noise std above the paper are looked at below the threshold
MIN_KEPT_SHARE = 0.15  # when the digit's blobs hold less of the ink, it is specks, not a digit
NEAR_DIGIT = 0.25  # blobs this close to the digit's blobs (of the group's size) join the digit
SPECK_SIZE = 0.5  # blobs this small beside the digit are dust, not a rival for its ink
REFINE_MARGIN = 1.0  # the digit's box is worked again with this much of its size around it
REFINE_MIN_MARGIN = 8  # px, at least
REFINE_MAX_SIZE = 0.25  # digits at least this share of the shorter side keep the page's threshold
REFINE_TRIES = 4  # groups refined at most, heaviest first, until one has a digit's strokes
MIN_STROKE_SHARE = 0.012  # strokes thinner than this share of the ink's size are not a digit's
INK_WHITE_PERCENTILE = 90  # the ink residual at this percentile becomes white (255)


def _coarse_factor(shape: tuple[int, int]) -> int:
    return max(1, math.ceil(max(shape) / COARSE_SIDE))


def remove_background(gray: np.ndarray, polarity: str,
                      pooled: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Subtract the paper, estimated by a large morphological opening, leaving light ink.

    The opening (at a coarse scale, after block-minimum pooling that already erases thin
    strokes) removes every light structure narrower than a third of the image: the strokes.
    What remains follows gradients, coloured or grey paper and broad shadows. Dark ink is
    measured relative to the local paper brightness (light falling on paper multiplies), so a
    stroke in shadow is as strong as one in full light. `pooled`: `detect_polarity`'s grids.

    Returns:
        (residual, background): float32 (H, W); residual >= 0 is the ink, light on black, and
        background is the estimate in the same light-ink space.
    """
    x = 1.0 - gray if polarity == DARK_ON_LIGHT else gray
    factor = _coarse_factor(x.shape)
    if pooled and pooled[2] == factor:  # detect_polarity's block minima and maxima, reused
        low = 1.0 - pooled[1] if polarity == DARK_ON_LIGHT else pooled[0]
    else:
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
    fresh = x is not gray and np.result_type(x, background) == x.dtype
    residual = np.subtract(x, background, out=x if fresh else None)
    if polarity == DARK_ON_LIGHT:
        paper = np.subtract(1.0, background)
        residual /= np.maximum(paper, MIN_PAPER_BRIGHTNESS, out=paper)
    return np.clip(residual, 0.0, 1.0, out=residual), background


def keep_main_components(mask: np.ndarray, ink: np.ndarray, factor: int = 0) -> np.ndarray:
    """Full-size boolean map of the digit's ink blobs: the blob with the most ink, and the blobs
    holding at least MIN_COMPONENT_SHARE of the ink that lie near it (within NEAR_DIGIT of the
    group's size, grown blob by blob: the pieces of a broken stroke). Lines, specks and marks
    elsewhere on the page are dropped.

    Works on the coarse grid (of `mask`, or `factor` px a cell: a window's, at the page's),
    so gaps smaller than a grid cell do not split a stroke.
    """
    factor = factor or _coarse_factor(mask.shape)
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


def _detect_ink(residual: np.ndarray, again: bool = False) -> _Detection:
    """Otsu's threshold, raised above the noise, and the checks that tell ink from noise; with
    `again`, a mask too faint or too noisy as a whole is thresholded again within itself."""
    level, noise = robust_stats(residual)
    noise = max(noise, 1.0 / 255.0)  # 8-bit quantisation
    no_mask = np.zeros(residual.shape, dtype=bool)
    top = float(residual.max())
    spread = top - level
    if spread < MIN_CONTRAST:
        return _Detection(residual, no_mask, level, noise, 0.0,
                          f"blank image (contrast {spread:.3f}, expected >= {MIN_CONTRAST})")
    threshold = max(otsu_threshold(residual, top=top), level + 4 * noise)
    mask = residual > threshold
    contrast = float(median(residual[mask])) - level if mask.any() else 0.0
    if again and np.count_nonzero(mask) >= MIN_INK_PIXELS and (
            contrast < MIN_CONTRAST or contrast < MIN_SNR * noise):
        # too faint, or too close to the noise, as a whole: a broad, faint region (the edge of a
        # shadow that the paper's estimate did not follow) may hold the ink; Otsu's threshold
        # again within it
        higher = residual > max(otsu_threshold(residual, low=threshold, top=top), threshold)
        if np.count_nonzero(higher) >= MIN_INK_PIXELS:
            mask = higher
            contrast = float(median(residual[mask])) - level
    count = np.count_nonzero(mask)
    if count < MIN_INK_PIXELS:
        return _Detection(residual, no_mask, level, noise, 0.0,
                          f"only {count} ink pixels (expected >= {MIN_INK_PIXELS})")
    snr = contrast / noise
    reason = ""
    if contrast < MIN_CONTRAST:
        reason = f"ink too faint (contrast {contrast:.3f}, expected >= {MIN_CONTRAST})"
    elif snr < MIN_SNR:
        reason = f"only noise (ink {snr:.1f} noise std above paper, expected >= {MIN_SNR:g})"
    return _Detection(residual, no_mask if reason else mask, level, noise, snr, reason)


class InkFound(NamedTuple):
    """The photo path's ink, or why there is none, and how the digit was picked."""
    ink: np.ndarray  # float32 (H, W) in [0, 1]; empty when reason is set
    mask: np.ndarray  # bool (H, W)
    reason: str  # "" when a digit was found
    detection: Detection | None = None  # the page's marks and their verdicts (candidates.py)


def _best_detection(residual: np.ndarray) -> _Detection:
    """Ink looked for pixel by pixel and after 3x3 averaging: the scale where it stands out more
    from the noise wins (averaging rescues broad strokes in a noisy photo, 1 px ones not). Found
    at neither, it is looked for again within a faint region (`_detect_ink`'s `again`)."""
    scales = (residual, box_mean3(residual))
    found = max((_detect_ink(r) for r in scales), key=lambda d: (not d.reason, d.snr))
    if found.reason:  # at neither scale: thresholded again within the faint region, if any
        found = max((_detect_ink(r, again=True) for r in scales),
                    key=lambda d: (not d.reason, d.snr))
    return found


def _stretch(found: _Detection) -> np.ndarray:
    """The residual stretched so the paper noise floor becomes 0 and solid ink 1."""
    values = found.residual[found.mask]
    low = found.level + 3 * found.noise
    high = max(float(np.percentile(values, INK_WHITE_PERCENTILE)), low + 1e-3)
    stretched = np.subtract(found.residual, low)
    stretched /= high - low
    return np.clip(stretched, 0.0, 1.0, out=stretched).astype(np.float32, copy=False)


def _refine(residual: np.ndarray, box: tuple[int, int, int, int], lines: np.ndarray,
            fallback: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Ink and mask found again in a window around the digit's box, at full resolution and by
    the window's own statistics: a small, faint or thin digit among darker marks is measured
    against its own paper, not the page's. The page-wide result (`fallback`) stands for a digit
    of REFINE_MAX_SIZE of the photo or more (the page is mostly its paper) and where the window
    alone finds no ink."""
    top, bottom, left, right = box
    size = max(bottom - top, right - left)
    margin = max(REFINE_MARGIN * size, REFINE_MIN_MARGIN)
    h, w = residual.shape
    window = np.s_[max(0, int(top - margin)):min(h, int(bottom + margin)),
                   max(0, int(left - margin)):min(w, int(right + margin))]
    off = ~lines[window]
    clear = off.all()  # no line in the window: ink * off is the ink itself, without the pass
    keep, page_factor = None, _coarse_factor(residual.shape)  # pieces join as on the page
    if size < REFINE_MAX_SIZE * min(h, w):  # a small digit: measured in its own window
        found = _best_detection(residual[window])
        if not found.reason:
            ink, mask = _stretch(found), found.mask
            keep = keep_main_components(mask & off, ink if clear else ink * off, page_factor) & off
    if keep is None or np.count_nonzero(mask & keep) < MIN_INK_PIXELS:
        ink, mask = fallback[0][window], fallback[1][window]
        keep = keep_main_components(mask & off, ink if clear else ink * off, page_factor) & off
    full_ink, full_mask = np.zeros_like(residual), np.zeros(residual.shape, dtype=bool)
    np.multiply(ink, keep, out=full_ink[window])  # ink * keep, written in place
    np.logical_and(mask, keep, out=full_mask[window])
    return full_ink, full_mask


def _refine_best(residual, detection: Detection, lines, fallback):
    """`_refine` the picked group; should its strokes come out hairlines for its size (print,
    or marks crossing each other), the next groups by weight are tried (verdict "fine")."""
    tries = [g for g in detection.groups if g.verdict in ("", PICKED)][:REFINE_TRIES]
    tries.sort(key=lambda g: g.verdict != PICKED)
    groups, first = list(detection.groups), None
    for group in tries:
        ink, mask = _refine(residual, group.box, lines, fallback)
        first = first or (ink, mask, group)
        if marks.stroke_share(mask) >= MIN_STROKE_SHARE:
            break
        groups[groups.index(group)] = group._replace(verdict="fine")
    else:
        ink, mask, group = first
        if np.count_nonzero(mask) < MIN_INK_PIXELS:  # nothing there: the page's heaviest ink
            page = (0, residual.shape[0], 0, residual.shape[1])
            ink, mask = _refine(residual, page, lines, fallback)
    picked = group._replace(verdict=PICKED)
    groups = [picked if g.box == group.box and g.mass == group.mass else
              g._replace(verdict="") if g.verdict == PICKED else g for g in groups]
    return ink, mask, detection._replace(picked=picked, groups=groups)


def _pick(residual, mask, ink, lines, faint: bool, mass=None) -> tuple[Detection, float]:
    """The page's marks (`find_digit`) and the digit's share of the weight of the marks that
    might be it (not other marks, nor specks far smaller): noise gives many alike."""
    detection = find_digit(residual, mask, ink, lines, faint, mass)
    picked = detection.picked
    if picked is None:
        return detection, 0.0
    rivals = sum(g.weight for g in detection.groups if g.verdict not in REJECTED
                 and g.size >= SPECK_SIZE * picked.size)
    return detection, picked.weight / max(rivals, 1e-6)


def _apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """Whether two (top, bottom, left, right) boxes do not overlap."""
    return a[1] <= b[0] or b[1] <= a[0] or a[3] <= b[2] or b[3] <= a[2]


def _near_rejected(detection: Detection, shape: tuple[int, int]) -> np.ndarray:
    """bool `shape`: the cells of the lines and edges found by `detection`, and their neighbours."""
    members = [g.members for g in detection.groups if g.verdict in ("line", "edge")]
    if not members:
        return np.zeros(shape, dtype=bool)
    cells = max_filter(np.isin(detection.labels, np.concatenate(members)), 3)
    return repeat_blocks(cells, detection.factor, shape)


def find_ink(residual: np.ndarray) -> InkFound:
    """Separate ink from paper noise, keeping grey levels, or say why there is no digit.

    Detect, then refine. The residual is thresholded page-wide (`_best_detection`) and
    stretched so the paper noise floor becomes 0 and solid ink 1; lines across the page are left
    out, and of the other marks the digit's group is picked (candidates.py: not the table's edge,
    a line, print or specks), among the marks above the threshold and, for a faint digit beside
    darker marks, among those down to FAINT_SNR noise levels. Its box is then worked again at
    full resolution (`_refine`), and blobs too small to matter are dropped.

    Returns:
        InkFound: ink float32 in [0, 1], mask bool, both (H, W); reason is "" when a digit was
        found, else why not (and ink and mask are then empty).
    """
    found = _best_detection(residual)
    if found.reason:
        return InkFound(np.zeros_like(residual), found.mask, found.reason)
    ink = _stretch(found)
    lines = line_pixels(found.mask)
    mass = marks.ink_mass(ink, lines)  # the same weights for every look at the marks
    detection, share = _pick(residual, found.mask, ink, lines, faint=False, mass=mass)
    # Dark marks raise the page's threshold above a faint pencil digit's strokes: the marks are
    # looked at again down to FAINT_SNR noise levels, and a digit found there apart from the
    # first pick, and outweighing it, is taken (show-through merges with a dark digit there).
    # Lines and edges stay as the first look saw them: their faint halo would make them broad.
    faint = found.residual > found.level + FAINT_SNR * found.noise
    seen = found.mask | (faint & ~_near_rejected(detection, found.mask.shape))
    again, share_again = _pick(residual, seen, ink, lines, faint=False, mass=mass)
    if again.picked is not None and not again.forced and share_again >= MIN_KEPT_SHARE and (
            detection.picked is None or (_apart(again.picked.box, detection.picked.box)
                                         and again.picked.weight > detection.picked.weight)):
        detection, share = again, share_again
    if detection.forced or share < MIN_KEPT_SHARE:  # look again, for fainter marks too
        again, share_again = _pick(residual, found.mask, ink, lines, faint=True, mass=mass)
        if not again.forced and share_again >= MIN_KEPT_SHARE:
            detection, share = again, share_again
    reason = f"only scattered specks (the largest group of blobs holds {share:.0%} of the ink)"
    if detection.picked is not None and share >= MIN_KEPT_SHARE:
        ink, mask, detection = _refine_best(residual, detection, lines, (ink, found.mask))
        count = np.count_nonzero(mask)
        reason = "" if count >= MIN_INK_PIXELS else (
            f"only {count} ink pixels (expected >= {MIN_INK_PIXELS})")
    if reason:
        return InkFound(np.zeros_like(residual), np.zeros_like(found.mask), reason, detection)
    return InkFound(ink, mask, "", detection)
