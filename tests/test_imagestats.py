"""imagestats' faster formulations give numpy's results bit for bit: the histogram behind Otsu's
threshold of a large float32 image, the median, robust_stats (tests/test_preprocess_identity.py
has the statistics of 8-bit images from counts)."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.data.imagestats import histogram, otsu_threshold


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _with_edge_values(x: np.ndarray, rng, bins: int) -> np.ndarray:
    """x with some values set exactly on np.histogram's bin edges and a few ulps either side."""
    top = float(x.max())
    edges = np.histogram_bin_edges(x, bins=bins, range=(0.0, top)).astype(np.float32)
    picks = edges[rng.integers(0, len(edges), x.size // 4)]
    for _ in range(int(rng.integers(0, 4))):
        picks = np.nextafter(picks, np.float32(np.inf) if rng.random() < 0.5 else np.float32(0))
    y = x.ravel().copy()
    spots = rng.choice(x.size, len(picks), replace=False)
    y[spots] = np.minimum(picks, np.float32(top))
    return y.reshape(x.shape)


@pytest.mark.parametrize("seed", range(12))
def test_histogram_is_numpys_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(256, 700, 2))
    scale = np.float32(rng.choice([1.0, 0.78431374, 1e-3, 3.7, 1e5]))
    x = rng.random((h, w), dtype=np.float32) ** np.float32(rng.choice([1, 4, 20])) * scale
    x[rng.random((h, w)) < rng.random() * 0.5] = 0
    if seed % 3 == 1:
        x[rng.random((h, w)) < 0.1] = -0.0
    for bins in (256, 100, 7):
        y = _with_edge_values(x, rng, bins) if seed % 2 else x
        top = float(y.max())
        expected = np.histogram(y, bins=bins, range=(0.0, top))
        ours = histogram(y, bins, 0.0, top)
        assert _same(ours[0], expected[0]) and _same(ours[1], expected[1]), (seed, bins)
        window = y[3:-5, 7:-2]  # not contiguous
        top = float(window.max())
        assert _same(histogram(window, bins, 0.0, top)[0],
                     np.histogram(window, bins=bins, range=(0.0, top))[0])


def test_histogram_falls_back_to_numpy_outside_its_case():
    rng = np.random.default_rng(3)
    x = rng.random((300, 300), dtype=np.float32)
    for a, low in ((x - np.float32(0.5), 0.0), (x, 0.25), (x.astype(np.float64), 0.0),
                   (x[:10, :10], 0.0), (x.ravel(), 0.0)):
        top = float(a.max())
        assert _same(histogram(a, 256, low, top)[0],
                     np.histogram(a, bins=256, range=(low, top))[0])


def test_otsu_threshold_takes_top_from_the_caller():
    x = np.random.default_rng(5).random((400, 400), dtype=np.float32)
    assert otsu_threshold(x) == otsu_threshold(x, top=float(x.max()))


@pytest.mark.parametrize("seed", range(10))
def test_robust_stats_is_numpys_medians_bit_for_bit(seed):
    from digitnet.data.imagestats import robust_stats

    rng = np.random.default_rng(200 + seed)
    shape = [(1, 1), (2, 3), (37, 41), (1200, 1000), (1500, 2000)][seed % 5]
    x = rng.random(shape, dtype=np.float32) ** np.float32(rng.choice([1, 6]))
    x[rng.random(shape) < 0.3] = np.float32(0.25)  # ties
    if seed % 3 == 2:
        x.flat[int(rng.integers(x.size))] = np.nan
    for a in (x, x.ravel(), x.astype(np.float64), (np.nan_to_num(x) * 255).astype(np.uint8)):
        step = max(1, int(np.ceil(np.sqrt(a.size / 1_000_000))))
        sample = a[::step, ::step] if a.ndim == 2 else a[::step * step]
        median = float(np.median(sample))
        expected = median, 1.4826 * float(np.median(np.abs(sample - median)))
        before = a.copy()
        assert np.array_equal(robust_stats(a), expected, equal_nan=True), (shape, a.dtype)
        assert _same(a, before)  # the caller's array untouched


@pytest.mark.parametrize("seed", range(12))
def test_median_is_numpys_bit_for_bit(seed):
    from digitnet.data.imagestats import median

    rng = np.random.default_rng(300 + seed)
    for n in (1, 2, 3, 4, 7, 8, 100, 101, 4096, 30001):
        x = rng.random(n, dtype=np.float32) ** np.float32(rng.choice([1, 8]))
        x[rng.random(n) < rng.random()] = np.float32(rng.choice([0.0, 0.5]))  # ties, zeros
        if seed % 3 == 1:
            x[rng.random(n) < 0.5] = -0.0
        if seed % 4 == 3 and n > 2:
            x[int(rng.integers(n))] = np.nan
        for a in (x, x.astype(np.float64), x.reshape(-1, 1)[::2], (np.nan_to_num(x) * 9).astype(
                np.int16)):
            before = a.copy()
            assert _same(median(a), np.median(a)), (seed, n, a.dtype)
            assert _same(a, before)
