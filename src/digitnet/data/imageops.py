"""Array operations of the new-image pipeline on float32 images: filters, pooling, resizing and
connected components (scipy.ndimage, Pillow); the statistics (robust level and noise, Otsu's
threshold, 8-bit counts) are in `imagestats`."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

SMALL_FILTER = 9  # bool dilations up to this size are shifted ORs, not scipy's filter
SPLIT_MIN_SIZE = 262_144  # px; block_reduce pads larger images' partial blocks apart, not whole
FOLD_MIN_SIZE = 262_144  # px; block sums of 9-32 px blocks fold slices from this size (2x faster
#                          than numpy's at 1500x1532 px, 16 px blocks; slower on small images)


def odd(value: float) -> int:
    """The nearest odd integer >= 3."""
    return max(3, round(value) // 2 * 2 + 1)


def _spread_true(mask: np.ndarray, size: int) -> np.ndarray:
    """Binary dilation of a bool array with a size x size square by shifted ORs, row pass then
    column pass: the same as scipy's maximum_filter with edges replicated (the edge pixel is in
    every window that would reach past it), in a few whole-array operations."""
    reach = size // 2
    out = mask
    for axis in (0, 1):
        src, out = out, out.copy()
        n = src.shape[axis]
        for k in range(1, min(reach, n - 1) + 1):
            if axis == 0:
                out[k:] |= src[:-k]
                out[:-k] |= src[k:]
            else:
                out[:, k:] |= src[:, :-k]
                out[:, :-k] |= src[:, k:]
    return out


def max_filter(a: np.ndarray, size: int) -> np.ndarray:
    """Grey dilation with a size x size square (size odd), edges replicated."""
    if size <= 1:
        return a
    if a.dtype == np.bool_ and size <= SMALL_FILTER and a.ndim == 2:
        return _spread_true(a, size)
    return ndimage.maximum_filter(a, size, mode="nearest")


def min_filter(a: np.ndarray, size: int) -> np.ndarray:
    """Grey erosion with a size x size square (size odd), edges replicated."""
    if size <= 1:
        return a
    return ndimage.minimum_filter(a, size, mode="nearest")


MEDIAN_MAX_VALUES = 1 << 23  # window values median_filter copies at most (32 MB; polarity: 2M)


def median_filter(a: np.ndarray, size: int) -> np.ndarray:
    """Pillow's `ImageFilter.MedianFilter(size)` of an image as float32 ("F"), edges replicated
    (Pillow expands the image by its edge pixels): each window's middle value, picked by
    np.partition from a view of every window instead of Pillow's selection window by window.
    An image with -0.0 (which Pillow may pick in place of an equal 0.0) or NaN takes Pillow, and
    so does one whose windows would take more than MEDIAN_MAX_VALUES values at once."""
    a = np.asarray(a, dtype=np.float32)
    if (a.size * size * size > MEDIAN_MAX_VALUES or np.signbit(a).any()
            or not np.isfinite(a).all()):
        return np.asarray(Image.fromarray(a).filter(ImageFilter.MedianFilter(size)))
    reach = size // 2
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(a, reach, mode="edge"),
                                                       (size, size))
    middle = size * size // 2
    return np.partition(windows.reshape(a.size, size * size), middle, axis=1)[:, middle].reshape(
        a.shape)


def block_reduce(a: np.ndarray, factor: int, reduce, pad_mode: str = "edge") -> np.ndarray:
    """Apply `reduce` (np.min, np.max, np.sum) over factor x factor blocks."""
    if factor == 1:
        return a
    h, w = a.shape
    method = _block_method(a, factor, reduce)
    if method is None or pad_mode not in ("edge", "constant"):
        return reduce(_blocks(_pad_end(a, -h % factor, -w % factor, pad_mode), factor),
                      axis=(1, 3))
    if a.size < SPLIT_MIN_SIZE:  # one padded copy costs less than the parts' calls
        out = method(_blocks(_pad_end(a, -h % factor, -w % factor, pad_mode), factor))
    else:  # cell by cell: the whole blocks where they lie, only the partial ones padded apart
        rows, cols = _whole_and_rest(h, factor), _whole_and_rest(w, factor)
        grid = [[method(_blocks(_pad_end(a[r, c], -(r.stop - r.start) % factor,
                                         -(c.stop - c.start) % factor, pad_mode), factor))
                 for c in cols] for r in rows]
        out = grid[0][0] if len(rows) == len(cols) == 1 else np.block(grid)
    if method is _EXTREMES.get(reduce) and not out.all() and np.signbit(a).any():
        # a zero minimum or maximum where -0.0 and 0.0 may tie: numpy's order decides which
        return reduce(_blocks(_pad_end(a, -h % factor, -w % factor, pad_mode), factor),
                      axis=(1, 3))
    return out


def _whole_and_rest(n: int, factor: int) -> list[slice]:
    """The slices of a side of n px in whole blocks and in the partial last block."""
    whole = n - n % factor
    return [slice(0, whole), slice(whole, n)] if 0 < whole < n else [slice(0, n)]


def _blocks(a: np.ndarray, factor: int) -> np.ndarray:
    """(rows, factor, columns, factor) view of an image whose sides are multiples of factor."""
    h, w = a.shape
    return a.reshape(h // factor, factor, w // factor, factor)


_EXTREMES = {reduce: lambda blocks, reduce=reduce: reduce(reduce(blocks, axis=1), axis=2)
             for reduce in (np.min, np.max)}


def _block_method(a: np.ndarray, factor: int, reduce):
    """The reduction of a (rows, factor, columns, factor) array of blocks that gives numpy's
    `reduce(blocks, axis=(1, 3))` of the padded image cell by cell, whatever the array's shape;
    None where only numpy's own reduction does (its order depends on the array's shape)."""
    if (reduce is np.min or reduce is np.max) and a.dtype == np.bool_:
        fold = np.logical_or if reduce is np.max else np.logical_and  # exact in any order
        return lambda blocks: _fold([_fold([blocks[:, i, :, j] for j in range(factor)], fold)
                                     for i in range(factor)], fold)
    if (reduce is np.min or reduce is np.max) and a.dtype.kind == "f":
        return _EXTREMES[reduce]  # exact in any order but between -0.0 and 0.0: see the caller
    folds = factor <= 8 or (factor <= 32 and a.size >= FOLD_MIN_SIZE)
    if reduce is np.sum and a.dtype.kind == "f" and -(-a.shape[1] // factor) > 1 and folds:
        def pairwise(blocks):
            rows = [_pairwise_sum([blocks[:, i, :, j] for j in range(factor)])
                    for i in range(factor)]
            return _fold([rows[0] + a.dtype.type(0), *rows[1:]], np.add)
        return pairwise
    return None


def _pad_end(a: np.ndarray, ph: int, pw: int, mode: str) -> np.ndarray:
    """np.pad(a, [(0, ph), (0, pw)], mode) for "edge" and "constant" (zeros), by two slice
    copies instead of np.pad's general machinery."""
    if not ph and not pw:
        return a
    if mode not in ("edge", "constant"):
        return np.pad(a, [(0, ph), (0, pw)], mode=mode)
    h, w = a.shape
    out = (np.empty if mode == "edge" else np.zeros)((h + ph, w + pw), dtype=a.dtype)
    out[:h, :w] = a
    if mode == "edge":
        out[h:, :w] = a[h - 1]
        out[:, w:] = out[:, w - 1 : w]
    return out


def _fold(parts: list[np.ndarray], op) -> np.ndarray:
    """op(...op(op(parts[0], parts[1]), parts[2])..., parts[-1]), elementwise, in one buffer."""
    out = parts[0].copy()
    for part in parts[1:]:
        op(out, part, out=out)
    return out


def _pairwise_sum(parts: list[np.ndarray]) -> np.ndarray:
    """The elementwise sum of up to 127 arrays, added in the order numpy's pairwise summation
    adds a run of that many values (one after another below 8; else in 8 interleaved partial
    sums, combined as a tree, then the rest one by one), so the result is bit for bit numpy's.

    `block_reduce` sums a block as numpy's `sum(axis=(1, 3))` does, a block row's run at a time
    and the rows in order (with more than one block across: with one, numpy merges the axes),
    in a few whole-grid operations instead of numpy's slow two-axis reduction.
    """
    n = len(parts)
    if n < 8:
        return _fold(parts, np.add)
    acc = [part.copy() for part in parts[:8]]
    i = 8
    while i < n - n % 8:
        for j in range(8):
            acc[j] += parts[i + j]
        i += 8
    return _fold([((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])),
                  *parts[i:]], np.add)


def repeat_blocks(a: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Each cell of a coarse grid as a factor x factor block, cropped to `shape`: the inverse of
    `block_reduce`."""
    if factor == 1:
        return a[: shape[0], : shape[1]]
    if a.dtype == np.bool_ and not a.any():  # no line on the page, say: nothing to repeat
        return np.zeros((min(shape[0], a.shape[0] * factor), min(shape[1], a.shape[1] * factor)),
                        dtype=bool)
    return np.repeat(np.repeat(a, factor, axis=0), factor, axis=1)[: shape[0], : shape[1]]


LARGE_RESIZE = 65_536  # px; larger results are read by np.asarray (12 MB: 3.8 ms, not 5.4 ms)


def resize(a: np.ndarray, width: int, height: int, resample: Image.Resampling) -> np.ndarray:
    """Resize a float32 array with Pillow (mode "F" keeps full precision). Read-only result.

    (Image.fromarray and np.asarray, without their generic checks: the same image in and the
    same bytes out.)"""
    a = np.ascontiguousarray(a, dtype=np.float32)
    img = Image.new("F", (a.shape[1], a.shape[0]), None)  # not filled: frombytes fills it
    img.frombytes(a, "raw", "F", 0, 1)  # what Image.frombuffer does for "F", less a zero fill
    out = img.resize((width, height), resample)
    if width * height < LARGE_RESIZE:
        return np.frombuffer(out.tobytes(), dtype=np.float32).reshape(height, width)
    return np.asarray(out)  # one copy instead of tobytes' chunks and their join


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


_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a boolean grid: labels 1..n, 0 for background."""
    return ndimage.label(mask, structure=_EIGHT_CONNECTED)


BOX_ROWS_MIN_WIDTH = 256  # px; narrower images take scipy's first pass too (a call per row)


def box_mean3(a: np.ndarray) -> np.ndarray:
    """Mean over each pixel's 3x3 neighbourhood, edges replicated: scipy.ndimage's
    uniform_filter(a, 3, mode="nearest") bit for bit. Its first pass, down the columns, is slow
    in scipy (each column copied out and back); here it runs row by row (`_mean3_down`)."""
    if a.dtype != np.float32 or a.ndim != 2 or a.shape[0] < 4 or a.shape[1] < BOX_ROWS_MIN_WIDTH:
        return ndimage.uniform_filter(a, 3, mode="nearest")
    return ndimage.uniform_filter1d(_mean3_down(a), 3, axis=1, mode="nearest")


def _mean3_down(a: np.ndarray) -> np.ndarray:
    """scipy.ndimage.uniform_filter1d(a, 3, axis=0, mode="nearest") of a float32 image, by
    scipy's arithmetic: a running sum in float64 down each column (the first three values from
    0.0, then each step adding the value entering minus the one leaving), divided by 3 and
    stored as float32; here for a whole row of columns at a time (1500x2000 px: 10 ms, scipy
    16 ms)."""
    h = a.shape[0]
    out = np.empty_like(a)
    with np.errstate(all="ignore"):  # as scipy: inf - inf is NaN without a warning
        total = np.add(0.0, a[0], dtype=np.float64)
        total += a[0]  # the edge replicated
        total += a[1]
        row = np.empty_like(total)
        np.divide(total, 3.0, out=row)
        out[0] = row
        for k in range(1, h):
            np.subtract(a[min(k + 1, h - 1)], a[max(k - 2, 0)], out=row, dtype=np.float64)
            total += row
            np.divide(total, 3.0, out=row)
            out[k] = row
    return out
