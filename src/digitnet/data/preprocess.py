"""Turn a new image of any size and format into an MNIST-format digit: 28x28 uint8, white on black.

The pipeline decides what each image is (MNIST format already, a clean scan or drawing, or a
photo; see `preprocess`), finds the ink accordingly, and then follows MNIST's own recipe: crop
it, fit it into a 20x20 box keeping the aspect ratio with anti-aliasing, and centre it by its
centre of mass in a 28x28 field.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from digitnet.constants import IMAGE_SIZE
from digitnet.data.candidates import picture as candidates_picture
from digitnet.data.clean import clean_ink, is_clean, split_clean, touches_frame
from digitnet.data.imageops import bounding_box, max_filter, resize, shrink
from digitnet.data.images import (  # noqa: F401  (re-exported: the pipeline's public names)
    MAX_PIXELS,
    MAX_SIDE,
    WORK_MAX_SIDE,
    ImageError,
    ImageTooLargeError,
    check_image_size,
    describe,
    load_image,
    read_gray,
    to_array,
    to_grayscale,
)
from digitnet.data.ink import (
    DARK_ON_LIGHT,
    LIGHT_ON_DARK,
    MIN_INK_PIXELS,
    detect_polarity,
    find_ink,
    keep_main_components,
    remove_background,
)
from digitnet.data.small import keep_small, small_codes, split_many, split_small
from digitnet.fileio import atomic_write_bytes

PREPROCESS_VERSION = 4  # bump whenever a change alters outputs; recorded in data manifests

BOX_SIZE = 20  # MNIST fits each digit into a 20x20 box (test set: 9,997 of 10,000 span 20 px)
MIN_STROKE_WIDTH = 1.5  # px at 28x28; MNIST test by the same estimator: 5% 1.3, median 2.0

# What an image is taken for decides how it is treated (`preprocess`):
MNIST = "mnist"  # already MNIST format (28x28, centred, black frame): passed through unchanged
SCAN = "scan"  # even paper, solid ink, the digit filling the frame: plain ink extraction
DRAWING = "drawing"  # even paper, solid ink, paper around the digit: the same, as a drawing
PHOTO = "photo"  # anything else: lighting and paper texture removed first (`remove_background`)
PATHS = (MNIST, SCAN, DRAWING, PHOTO)
MNIST_PAPER = 0.1  # MNIST format: the median pixel is black (at most this), the ink's box...
MNIST_BOX_SLACK = 3  # ... BOX_SIZE px long, give or take this (MNIST: 18-20 px over 0.1)...
MNIST_MAX_OFFSET = 1.5  # ... and its centre of mass this close to the middle (MNIST: <= 0.71 px)


@dataclass
class PreprocessResult:
    """One image in MNIST format, with what happened on the way.

    `image` is all zeros when `digit_found` is False; `reason` then says why.
    """

    image: np.ndarray  # (28, 28) uint8, white digit on black
    digit_found: bool
    reason: str = ""  # why no digit was found; "" when one was
    source: str = ""  # file name, or a description of the array
    polarity: str = ""  # DARK_ON_LIGHT or LIGHT_ON_DARK, as detected
    stages: dict[str, np.ndarray] = field(default_factory=dict)  # uint8 pictures, when debugging
    path: str = ""  # MNIST, SCAN, DRAWING or PHOTO: how the image was treated (see PATHS)


# ------------------------------------------------------------------------------- geometry
def _stroke_width(mask: np.ndarray) -> float:
    """Typical stroke width in px: area / half the boundary length (a w x L stroke gives w)."""
    padded = np.pad(mask, 1)
    edges = np.count_nonzero(padded[1:] != padded[:-1]) + np.count_nonzero(
        padded[:, 1:] != padded[:, :-1]
    )
    return 2.0 * np.count_nonzero(mask) / max(edges, 1)


def center_of_mass(image: np.ndarray) -> tuple[float, float]:
    """Intensity-weighted (row, column) centre in index coordinates; the middle if blank."""
    weights = np.asarray(image, dtype=np.float64)
    total = weights.sum()
    if total <= 0:
        return (weights.shape[0] - 1) / 2, (weights.shape[1] - 1) / 2
    rows = np.arange(weights.shape[0]) @ weights.sum(1) / total
    cols = np.arange(weights.shape[1]) @ weights.sum(0) / total
    return float(rows), float(cols)


def _to_uint8(a: np.ndarray) -> np.ndarray:
    return np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)


def crop_to_ink(ink: np.ndarray, mask: np.ndarray, pad: int = 1) -> np.ndarray:
    """Crop `ink` to the bounding box of `mask` at full resolution, plus `pad` px of fringe.

    Raises:
        ValueError: `mask` is empty.
    """
    box = bounding_box(mask)
    if box is None:
        raise ValueError("crop_to_ink needs a non-empty ink mask")
    top, bottom, left, right = box
    h, w = mask.shape
    return ink[max(top - pad, 0):min(bottom + pad, h), max(left - pad, 0):min(right + pad, w)]


def fit_to_box(crop: np.ndarray, box: int = BOX_SIZE) -> np.ndarray:
    """Scale a crop (light ink in [0, 1]) so its longer side is `box` px, keeping grey levels.

    When shrinking would leave strokes thinner than MIN_STROKE_WIDTH output px, the ink is
    first dilated in proportion to the shrink factor, so a 1 px stroke on a 1000 px image
    stays visible. Lanczos resampling anti-aliases; the result is stretched so its maximum is 1.

    Returns:
        float32 (h, w) with max(h, w) == box.
    """
    h, w = crop.shape
    scale = box / max(h, w)
    if scale < 1:
        width = _stroke_width(crop >= 0.5)
        needed = MIN_STROKE_WIDTH / scale  # source px
        if width < needed:
            radius = math.ceil((needed - width) / 2)
            crop = max_filter(np.pad(crop, radius), 2 * radius + 1)
            h, w = crop.shape
            scale = box / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    fitted = np.clip(resize(crop, *size, Image.Resampling.LANCZOS), 0.0, 1.0)
    top = float(fitted.max())
    return fitted / top if top > 0 else fitted


def _paste(fitted: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """Place `fitted` with its corner at (top, left) in a black size x size field, clipping."""
    out = np.zeros((size, size), dtype=np.float32)
    h, w = fitted.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, size), min(left + w, size)
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] = fitted[y0 - top : y1 - top, x0 - left : x1 - left]
    return out


def center_by_mass(fitted: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Place the fitted digit so its centre of mass is at (size / 2, size / 2), as MNIST does.

    The integer shift leaves the centre within half a pixel; should parts fall outside the
    field (a top-heavy 7), the shift is corrected until the centre is back within half a pixel.

    Returns:
        uint8 (size, size).
    """
    center = size / 2  # index coordinates; MNIST test images average (13.99, 14.01)
    cy, cx = center_of_mass(fitted)
    top, left = round(center - cy), round(center - cx)
    out = _paste(fitted, top, left, size)
    for _ in range(4):
        cy, cx = center_of_mass(out)
        dy, dx = round(center - cy), round(center - cx)
        if dy == 0 and dx == 0:
            break
        top, left = top + dy, left + dx
        out = _paste(fitted, top, left, size)
    return _to_uint8(out)


def fit_and_center(crop: np.ndarray) -> np.ndarray:
    """A cropped digit (light ink in [0, 1]) as a 28x28 uint8 MNIST image."""
    return center_by_mass(fit_to_box(crop))


# ------------------------------------------------------------------------------- pipeline
def as_mnist_format(gray: np.ndarray) -> tuple[np.ndarray, str] | None:
    """(the image as MNIST's uint8, its polarity) if it already is an MNIST-format digit, else
    None.

    MNIST format: 28x28, mostly black (or, inverted, white), the ink's bounding box 20 px on its
    longer side (give or take MNIST_BOX_SLACK) and its centre of mass within MNIST_MAX_OFFSET px
    of the middle: all 70,000 MNIST digits pass. Such an image passes through unchanged
    (light-on-dark), or inverted (dark-on-light): an MNIST digit saved as a PNG gives exactly
    the in-memory image back.
    """
    if gray.shape != (IMAGE_SIZE, IMAGE_SIZE):
        return None
    median = float(np.median(gray))
    if median <= MNIST_PAPER:
        ink, polarity = gray, LIGHT_ON_DARK
    elif median >= 1.0 - MNIST_PAPER:
        ink, polarity = 1.0 - gray, DARK_ON_LIGHT
    else:
        return None
    if ink.max() < 0.5:
        return None
    mask = ink > MNIST_PAPER
    top, bottom, left, right = bounding_box(mask)  # not empty: the peak is over MNIST_PAPER
    longer = max(bottom - top, right - left)
    if abs(longer - BOX_SIZE) > MNIST_BOX_SLACK:
        return None
    cy, cx = center_of_mass(ink)
    if math.hypot(cy - IMAGE_SIZE / 2, cx - IMAGE_SIZE / 2) > MNIST_MAX_OFFSET:
        return None
    return _to_uint8(ink), polarity


def preprocess(image, debug: bool = False, max_pixels: int | None = None) -> PreprocessResult:
    """Turn one image into MNIST format: 28x28 uint8, white digit on black, centred by mass.

    Each image takes one path (recorded in `result.path`): an image already in MNIST format
    passes through unchanged (MNIST); one with even paper and solid ink has its ink measured
    against the paper directly, so a digit that fills its frame is never taken for background
    (SCAN when the ink spans the frame, else DRAWING); anything else is a PHOTO, whose lighting,
    paper texture, ruled or squared lines and stray marks are removed first. Every path ends as
    MNIST does: crop to the ink, fit a 20x20 box keeping the aspect ratio, centre by mass.

    Args:
        image: a file path (PNG, JPEG, BMP, GIF, TIFF, WebP) or such a file's contents as bytes
            (an upload), a numpy array (H, W), (H, W, 3) or (H, W, 4) of uint8, uint16 or float
            in [0, 1], a torch tensor ((H, W) or (C, H, W)), or a PIL image.
        debug: keep every stage as a uint8 picture in `result.stages`.
        max_pixels: refuse larger images (default: MAX_PIXELS).

    Returns:
        The result; `digit_found` is False (and the image black) for blank or noise-only input.

    Raises:
        ImageError: unreadable, not an image, truncated, or not an image-shaped array.
        ImageTooLargeError: over the size limits.
    """
    return _preprocess_gray(*_read(image, max_pixels, debug), debug)


def _read(image, max_pixels: int | None, debug: bool) -> tuple[str, np.ndarray, dict]:
    """(source, the grayscale image to work on, the debug stages so far)."""
    source = describe(image)
    original, gray = read_gray(image, max_pixels, source)
    gray = shrink(gray, WORK_MAX_SIDE)
    stages = {"original": _to_uint8(original), "grayscale": _to_uint8(gray)} if debug else {}
    return source, gray, stages


_NOT_SPLIT = object()


def _preprocess_gray(source: str, gray: np.ndarray, stages: dict, debug: bool,
                     split=_NOT_SPLIT, codes=None) -> PreprocessResult:
    """`preprocess` from the grayscale image on; `split` (with its `codes`): the image's
    split_clean, when `preprocess_many` has computed it already."""
    passthrough = as_mnist_format(gray)
    if passthrough is not None:
        passthrough, polarity = passthrough
        if debug:
            stages["final"] = passthrough
        return PreprocessResult(passthrough, True, "", source, polarity, stages, MNIST)
    if split is _NOT_SPLIT:  # a small 8-bit image: the same split in a fraction of the calls
        codes = small_codes(gray)
        split = split_clean(gray) if codes is None else split_small(gray, codes)
    if is_clean(split):
        polarity = split.polarity
        ink, mask = clean_ink(gray, split)
        keep = keep_main_components(mask, ink) if codes is None else keep_small(mask, ink)
        ink, mask = ink * keep, mask & keep
        count = np.count_nonzero(mask)
        reason = "" if count >= MIN_INK_PIXELS else (
            f"only {count} ink pixels (expected >= {MIN_INK_PIXELS})")
        path = SCAN if reason or touches_frame(mask) else DRAWING
        if debug:
            stages.update(background_removed=_to_uint8(ink),
                          ink_mask=_to_uint8(mask.astype(np.float32)))
    else:
        path = PHOTO
        pooled: list = []
        polarity = detect_polarity(gray, pooled)
        residual, background = remove_background(gray, polarity, pooled)
        ink, mask, reason, detection = find_ink(residual)
        if debug:
            paper = 1.0 - background if polarity == DARK_ON_LIGHT else background
            stages.update(background=_to_uint8(paper), background_removed=_to_uint8(ink))
            if detection is not None:
                stages["candidates"] = candidates_picture(detection)
            stages["ink_mask"] = _to_uint8(mask.astype(np.float32))
    if reason:
        blank = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
        return PreprocessResult(blank, False, reason, source, polarity, stages, path)
    crop = crop_to_ink(ink, mask)
    fitted = fit_to_box(crop)
    final = center_by_mass(fitted)
    if debug:
        stages.update(crop=_to_uint8(crop), fitted=_to_uint8(fitted), final=final)
    return PreprocessResult(final, True, "", source, polarity, stages, path)


BATCH = 256  # small images split at once by preprocess_many (an (N, 256) array per statistic)


def preprocess_many(images: Sequence, max_pixels: int | None = None
                    ) -> list[PreprocessResult | ImageError]:
    """`preprocess` of each image (without debug stages), the same results, with small 8-bit
    images of one size split into paper and ink BATCH at a time (`small.split_many`); an
    unreadable image yields its error, not a raise.

    Returns:
        One entry per input, in order: a PreprocessResult, or the ImageError that stopped it.
    """
    results: list = [None] * len(images)
    pending: dict[tuple[int, int], list] = {}

    def flush(group: list) -> None:
        grays, codes = np.stack([g[2] for g in group]), np.stack([g[3] for g in group])
        for (i, source, gray, code), split in zip(group, split_many(grays, codes), strict=True):
            results[i] = _preprocess_gray(source, gray, {}, False, split, code)
        group.clear()

    for i, image in enumerate(images):
        try:
            source, gray, _ = _read(image, max_pixels, False)
        except ImageError as e:
            results[i] = e
            continue
        codes = small_codes(gray)
        if codes is None:
            results[i] = _preprocess_gray(source, gray, {}, False)
            continue
        group = pending.setdefault(gray.shape, [])
        group.append((i, source, gray, codes))
        if len(group) == BATCH:
            flush(group)
    for group in pending.values():
        if group:
            flush(group)
    return results


def preprocess_batch(images: Iterable, debug: bool = False) -> list[PreprocessResult | ImageError]:
    """Preprocess each image independently; an unreadable one yields its error, not a raise.

    Returns:
        One entry per input, in order: a PreprocessResult, or the ImageError that stopped it.
    """
    if not debug:
        return preprocess_many(list(images))
    results: list[PreprocessResult | ImageError] = []
    for image in images:
        try:
            results.append(preprocess(image, debug=debug))
        except ImageError as e:
            results.append(e)
    return results


# ------------------------------------------------------------------------------- saving
def encode_png(image: np.ndarray) -> bytes:
    """uint8 (H, W), (H, W, 2), (H, W, 3) or (H, W, 4) as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def output_stems(paths: Sequence[str | os.PathLike]) -> list[str]:
    """File stems to write each input under, made unique: a.png, a.jpg -> "a", "a-2"."""
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        stem = Path(path).stem or "image"
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems


def save_result(result: PreprocessResult, out_dir: str | os.PathLike, stem: str) -> list[Path]:
    """Write `<stem>.png` (only when a digit was found) and each stage as debug/<stem>/NN_*.png.

    Returns:
        The files written, the 28x28 image first.
    """
    out_dir = Path(out_dir)
    written = []
    if result.digit_found:
        written.append(out_dir / f"{stem}.png")
        atomic_write_bytes(written[-1], encode_png(result.image))
    for i, (name, picture) in enumerate(result.stages.items(), start=1):
        written.append(out_dir / "debug" / stem / f"{i:02d}_{name}.png")
        atomic_write_bytes(written[-1], encode_png(picture))
    return written
