"""Array operations of the new-image pipeline on float32 images: filters, pooling, resizing, robust
statistics, Otsu's threshold and connected components (scipy.ndimage, scikit-image, Pillow)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.filters import threshold_otsu


def odd(value: float) -> int:
    """The nearest odd integer >= 3."""
    return max(3, round(value) // 2 * 2 + 1)


def max_filter(a: np.ndarray, size: int) -> np.ndarray:
    """Grey dilation with a size x size square (size odd), edges replicated."""
    if size <= 1:
        return a
    return ndimage.maximum_filter(a, size, mode="nearest")


def min_filter(a: np.ndarray, size: int) -> np.ndarray:
    """Grey erosion with a size x size square (size odd), edges replicated."""
    if size <= 1:
        return a
    return ndimage.minimum_filter(a, size, mode="nearest")


def block_reduce(a: np.ndarray, factor: int, reduce, pad_mode: str = "edge") -> np.ndarray:
    """Apply `reduce` (np.min, np.max, np.sum) over factor x factor blocks."""
    if factor == 1:
        return a
    h, w = a.shape
    ph, pw = -h % factor, -w % factor
    a = np.pad(a, [(0, ph), (0, pw)], mode=pad_mode)
    blocks = a.reshape((h + ph) // factor, factor, (w + pw) // factor, factor)
    return reduce(blocks, axis=(1, 3))


def resize(a: np.ndarray, width: int, height: int, resample: Image.Resampling) -> np.ndarray:
    """Resize a float32 array with Pillow (mode "F" keeps full precision)."""
    img = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))
    return np.asarray(img.resize((width, height), resample), dtype=np.float32)


def shrink(a: np.ndarray, max_side: int) -> np.ndarray:
    """Area-average so the longer side is at most `max_side` px (no-op for smaller images)."""
    h, w = a.shape
    if max(h, w) <= max_side:
        return a
    scale = max_side / max(h, w)
    return resize(a, max(1, round(w * scale)), max(1, round(h * scale)), Image.Resampling.BOX)


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of the True pixels of a 2-D mask, bottom and right exclusive;
    None when there is none."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def robust_stats(a: np.ndarray) -> tuple[float, float]:
    """Median and noise standard deviation (1.4826 x median absolute deviation) of `a` (an image,
    or a 1-D array of pixel values)."""
    step = max(1, math.ceil(math.sqrt(a.size / 1_000_000)))  # a subsample suffices for big images
    sample = a[::step, ::step] if a.ndim == 2 else a[:: step * step]
    median = float(np.median(sample))
    return median, 1.4826 * float(np.median(np.abs(sample - median)))


def otsu_threshold(a: np.ndarray, bins: int = 256, low: float = 0.0) -> float:
    """Otsu's threshold between two classes of values (scikit-image), on a histogram over
    [low, max]; `low` for an image with no value above it."""
    top = float(a.max())
    if top <= low:
        return low
    hist, edges = np.histogram(a, bins=bins, range=(low, top))
    return float(threshold_otsu(hist=(hist, (edges[:-1] + edges[1:]) / 2)))


_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a boolean grid: labels 1..n, 0 for background."""
    return ndimage.label(mask, structure=_EIGHT_CONNECTED)


def box_mean3(a: np.ndarray) -> np.ndarray:
    """Mean over each pixel's 3x3 neighbourhood, edges replicated."""
    return ndimage.uniform_filter(a, 3, mode="nearest")
