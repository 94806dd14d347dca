"""Statistics of the new-image pipeline's images: robust level and noise (median and median
absolute deviation), Otsu's threshold and its histogram, and the same statistics of 8-bit images
from the counts of their 256 levels (`Counted`); each as numpy, scipy or scikit-image computes
it, bit for bit, in fewer or cheaper passes over a large image."""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image
from skimage.filters import threshold_otsu


def robust_stats(a: np.ndarray | Counted) -> tuple[float, float]:
    """Median and noise standard deviation (1.4826 x median absolute deviation) of `a` (an image,
    a 1-D array of pixel values, or such values counted: up to the subsample's size)."""
    if isinstance(a, Counted):
        if a.size > 1_000_000:
            raise ValueError("robust_stats subsamples more than 1,000,000 values: pass the array")
        median = float(a.median())
        return median, 1.4826 * float(a.deviations(median).median())
    step = max(1, math.ceil(math.sqrt(a.size / 1_000_000)))  # a subsample suffices for big images
    sample = a[::step, ::step] if a.ndim == 2 else a[:: step * step]
    values = sample.flatten()  # ours to partition, as np.median partitions its own copy
    level = float(_median_in_place(values, sample))
    # the same deviations as |sample - level|, in another order (integers: a float64 array)
    deviations = np.subtract(values, level, out=values if values.dtype.kind == "f" else None)
    return level, 1.4826 * float(_median_in_place(np.abs(deviations, out=deviations)))


def median(a: np.ndarray) -> np.floating:
    """np.median(a), bit for bit, by one partition (see `_median_in_place`)."""
    return _median_in_place(np.array(a, copy=True).ravel(), a)


def _median_in_place(values: np.ndarray, original: np.ndarray | None = None) -> np.floating:
    """np.median(original) from `values`, a 1-D copy of it that this partitions.

    np.median partitions its copy at the middle positions and the last (for NaN), one by one; a
    single partition at the middle (numpy's vectorised selection, 4x faster on 750,000 float32
    values) leaves the same order statistics: the middle value, and below it the one before as
    the largest of the lower part. np.mean of them, as np.median takes it; NaN if there is one.
    Only which of -0.0 and 0.0 a zero middle value is depends on the algorithm: then
    np.median(original) decides (`original` defaults to `values`: any order, without -0.0).
    """
    n = values.size
    if n == 0 or values.dtype.kind != "f":
        return np.median(values if original is None else original)
    k = n // 2
    values.partition(k)
    last = values[k:].max()
    if np.isnan(last):  # np.median's answer with a NaN in the array
        return last
    middle = np.array([values[:k].max(), values[k]]) if n % 2 == 0 else values[k:k + 1]
    if not middle.all() and np.signbit(values).any():
        return np.median(values if original is None else original)
    return np.mean(middle, axis=0)


def otsu_threshold(a: np.ndarray, bins: int = 256, low: float = 0.0,
                   counted: Counted | None = None, top: float | None = None) -> float:
    """Otsu's threshold between two classes of values (scikit-image), on a histogram over
    [low, max]; `low` for an image with no value above it. `counted`: a's values, counted (the
    same histogram, from the counts); `top`: float(a.max()), when the caller has it."""
    top = float(a.max()) if top is None else top
    if top <= low:
        return low
    if counted is not None:
        hist, edges = counted.histogram(bins, (low, top))
    else:
        hist, edges = histogram(a, bins, low, top)
    return float(threshold_otsu(hist=(hist, (edges[:-1] + edges[1:]) / 2)))


FAST_HISTOGRAM_MIN_SIZE = 65_536  # values; below this np.histogram's overhead is small
_NEAR_EDGE = np.float32(2e-4)  # bins; a value's estimated bin is exact this far from an edge


@functools.lru_cache(maxsize=64)
def _bin_edges(bins: int, low: float, top: float) -> np.ndarray:
    """np.histogram's bin edges over (low, top) for a float32 array."""
    edges = np.histogram_bin_edges(np.zeros(1, dtype=np.float32), bins=bins, range=(low, top))
    edges.flags.writeable = False
    return edges


def histogram(a: np.ndarray, bins: int, low: float, top: float) -> tuple[np.ndarray, np.ndarray]:
    """np.histogram(a, bins, (low, top)), bit for bit, with top == a.max(); a large float32
    image of values >= 0 (a photo's residual) in a few whole-array passes instead of numpy's
    dozen per block.

    numpy puts each value in [low, top] in the bin whose edges hold it, edges[i] <= v <
    edges[i + 1] (top in the last bin). Here a value's bin is first estimated as
    trunc(float32(v * scale)), scale float32(bins / top) or up to two float32 steps below it
    (so that top's estimate stays under bins), and counted by Pillow's 8-bit histogram; the
    estimate is off only for a value within a few float32 roundings of an edge (under 1e-4 of a
    bin for 256 bins: the edge, the scale and the product are each rounded to float32 once, the
    scale stepped twice at most), so the values whose estimate lies within _NEAR_EDGE of a whole
    number are binned again by the edges themselves (np.searchsorted), and the counts corrected.
    """
    if not (a.dtype == np.float32 and a.ndim == 2 and a.size >= FAST_HISTOGRAM_MIN_SIZE
            and bins <= 256 and low == 0.0 and 1e-20 <= top <= 1e20 and a.min() >= 0.0):
        return np.histogram(a, bins=bins, range=(low, top))
    edges = _bin_edges(bins, low, top)
    scale = np.float32(bins / top)
    while np.float32(top) * scale >= bins:  # at most twice: the top value in the last bin
        scale = np.nextafter(scale, np.float32(0))
    estimate = np.multiply(a, scale)
    index = estimate.astype(np.uint8)  # truncation: the values are >= 0
    counts = Image.frombuffer("L", (a.shape[1], a.shape[0]), index, "raw", "L", 0, 1).histogram()
    hist = np.array(counts[:bins], dtype=np.intp)
    estimate -= index.astype(np.float32)  # the fraction of a bin past the estimated bin's start
    near = estimate > 1 - _NEAR_EDGE
    near |= (estimate < _NEAR_EDGE) & (index != 0)  # no edge is inside bin 0's start
    if near.any():
        hist -= np.bincount(index[near], minlength=bins)
        hist += np.bincount(np.searchsorted(edges[1:-1], a[near], side="right"), minlength=bins)
    return hist, edges


# --------------------------------------------------------------------- 8-bit images, counted
BYTE_LEVELS = np.arange(256, dtype=np.float32) / np.float32(255)  # an 8-bit image read as float


def byte_codes(a: np.ndarray) -> np.ndarray | None:
    """The 8-bit codes k of a float32 image whose every value is exactly k / 255 (bit for bit: a
    PNG or JPEG read as float), else None. With the codes, histograms and order statistics are
    computed from 256 counts (`Counted`) instead of every pixel, with the same results."""
    if a.dtype != np.float32 or a.size == 0:
        return None
    head = a.flat[:64]  # fails fast on a large image that is not 8-bit (a photo's residual)
    if a.size > 1024 and not np.array_equal(
            BYTE_LEVELS[np.rint(head * 255).astype(np.uint8)].view(np.uint32),
            head.view(np.uint32)):
        return None
    codes = np.rint(a * 255).astype(np.uint8)
    if not np.array_equal(BYTE_LEVELS[codes].view(np.uint32), a.view(np.uint32)):
        return None
    return codes


@functools.lru_cache(maxsize=512)  # 512 ranges, 1.5 MB
def _level_bins(bins: int, low: float, top: float) -> tuple[np.ndarray, np.ndarray]:
    """(1 + the bin np.histogram(a, bins, (low, top)) puts each of the 256 levels in, 0 where it
    leaves it out; the bin edges). numpy keeps the values in [low, top] and corrects its
    estimate until edges[i] <= value < edges[i + 1] (the top value in the last bin), so a value's
    bin is the count of inner edges at or below it."""
    edges = np.histogram_bin_edges(BYTE_LEVELS, bins=bins, range=(low, top))
    inside = (BYTE_LEVELS >= low) & (BYTE_LEVELS <= top)
    index = np.searchsorted(edges[1:-1], BYTE_LEVELS, side="right") + 1
    index[~inside] = 0
    index.flags.writeable = False
    edges.flags.writeable = False
    return index, edges


class Counted:
    """A multiset of float32 values as its distinct values and their counts: the median,
    percentiles and Otsu histogram that numpy and scikit-image compute on the whole array, bit
    for bit (the same arithmetic on the same order statistics), from the counts alone."""

    def __init__(self, values: np.ndarray, counts: np.ndarray):
        if values is BYTE_LEVELS:  # sorted already
            self.values, self.counts = values, counts
        else:
            order = np.argsort(values, kind="stable")
            self.values, self.counts = values[order], counts[order]
        self.cumulative = np.cumsum(self.counts)
        self.size = int(self.cumulative[-1]) if len(self.cumulative) else 0

    @classmethod
    def of_codes(cls, codes: np.ndarray) -> Counted:
        return cls(BYTE_LEVELS, np.bincount(codes.ravel(), minlength=256))

    def _at(self, positions) -> np.ndarray:
        """The values at these positions (0-based, negative from the end) of the sorted array."""
        positions = np.asarray(positions, dtype=np.intp) % self.size
        return self.values[np.searchsorted(self.cumulative, positions, side="right")]

    def median(self) -> np.floating:
        """np.median of the array: the mean (in its dtype) of the middle one or two values."""
        n = self.size
        middle = self._at([n // 2 - 1, n // 2] if n % 2 == 0 else [(n - 1) // 2])
        # np.mean of those: their float32 sum over the count as an intp (float64), as float32
        # (the sum starts from -0.0, which changes no value)
        total = middle[0] + middle[1] if len(middle) == 2 else middle[0]
        return total.dtype.type(total / np.intp(len(middle)))

    def deviations(self, center: float) -> Counted:
        """|values - center| (elementwise, as numpy computes it on the array), counted."""
        return Counted(np.abs(self.values - center), self.counts)

    def percentile(self, q: list[float]) -> np.ndarray:
        """np.percentile(array, q) with the default "linear" method: the same float64 arithmetic
        on the same two neighbouring order statistics (numpy's _quantile and _lerp)."""
        out = []
        for quantile in np.true_divide(q, 100).tolist():
            virtual = (self.size - 1) * quantile
            if virtual >= self.size - 1:
                previous = following = -1
            elif virtual < 0:
                previous = following = 0
            else:
                previous = math.floor(virtual)
                following = previous + 1
            gamma = virtual - previous
            a, b = self._at([previous, following])
            diff_b_a = float(b - a)  # float32, as numpy subtracts the two
            if gamma >= 0.5:
                out.append(float(b) - diff_b_a * (1 - gamma))
            else:
                out.append(float(a) + diff_b_a * gamma)
        return np.array(out, dtype=np.float64)

    def histogram(self, bins: int, value_range: tuple[float, float]) -> tuple[np.ndarray,
                                                                              np.ndarray]:
        """np.histogram(array, bins, range): its edges (for the values' dtype), and each value's
        count added in the bin numpy puts that value in."""
        if self.values is BYTE_LEVELS:  # the bin of each level, looked up once per range
            index, edges = _level_bins(bins, *value_range)
            hist = np.bincount(index, weights=self.counts, minlength=bins + 1)[1:]
        else:
            hist, edges = np.histogram(self.values, bins=bins, range=value_range,
                                       weights=self.counts)
        return hist.astype(np.intp), edges
