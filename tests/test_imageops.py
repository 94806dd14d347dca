"""imageops' faster formulations give numpy's, scipy's and Pillow's results bit for bit: median
filter, block pooling of large images, repeated blocks, the 3x3 box mean
(tests/test_preprocess_identity.py has more pooling and dilation, tests/test_imagestats.py the
statistics)."""

from __future__ import annotations

import numpy as np
import pytest


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("seed", range(8))
def test_median_filter_is_pillows_bit_for_bit(seed):
    from PIL import Image, ImageFilter

    from digitnet.data.imageops import median_filter

    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(3, 70, 2))
    x = rng.random((h, w), dtype=np.float32)
    x[rng.random((h, w)) < 0.3] = x.flat[0]  # ties
    if seed % 4 == 3:
        x[rng.random((h, w)) < 0.3] = -0.0
    for size in (3, 5, 25):
        expected = np.asarray(Image.fromarray(x).filter(ImageFilter.MedianFilter(size)))
        assert _same(median_filter(x, size), expected), (seed, size)


@pytest.mark.parametrize("shape, factor", [((1500, 2000), 16), ((1500, 1532), 16), ((375, 500), 4),
                                           ((377, 502), 4), ((190, 97), 7), ((5, 300), 8)])
def test_block_reduce_pads_only_the_partial_blocks_bit_for_bit(shape, factor):
    from digitnet.data.imageops import block_reduce

    rng = np.random.default_rng(factor)
    mask = rng.random(shape) < 0.1
    x = rng.random(shape, dtype=np.float32) ** 8
    x[rng.random(shape) < 0.3] = 0
    for reduce, a, mode in ((np.max, mask, "constant"), (np.min, mask, "edge"),
                            (np.sum, x, "constant"), (np.sum, x, "edge"),
                            (np.min, x, "edge"), (np.max, x, "constant"), (np.min, -x, "edge")):
        padded = np.pad(a, [(0, -shape[0] % factor), (0, -shape[1] % factor)], mode=mode)
        blocks = padded.reshape(padded.shape[0] // factor, factor, -1, factor)
        assert _same(block_reduce(a, factor, reduce, pad_mode=mode),
                     reduce(blocks, axis=(1, 3))), (reduce.__name__, a.dtype, mode)


@pytest.mark.parametrize("seed", range(6))
def test_block_sum_of_large_blocks_is_numpys_bit_for_bit(seed):
    from digitnet.data.imageops import FOLD_MIN_SIZE, block_reduce

    rng = np.random.default_rng(100 + seed)
    factor = int(rng.integers(9, 33))
    h = int(rng.integers(FOLD_MIN_SIZE // 1200, 900))
    w = int(rng.integers(FOLD_MIN_SIZE // h + 1, 1300))
    x = rng.random((h, w), dtype=np.float32) ** np.float32(rng.choice([1, 8])) * np.float32(
        rng.choice([1, 1e4]))
    x[rng.random((h, w)) < 0.5] = 0
    for mode in ("constant", "edge"):
        padded = np.pad(x, [(0, -h % factor), (0, -w % factor)], mode=mode)
        blocks = padded.reshape(padded.shape[0] // factor, factor, -1, factor)
        assert _same(block_reduce(x, factor, np.sum, pad_mode=mode), blocks.sum(axis=(1, 3))), (
            h, w, factor, mode)


def test_repeat_blocks_of_an_empty_grid_is_np_repeats():
    from digitnet.data.imageops import repeat_blocks

    for grid, factor, shape in (((4, 5), 3, (10, 15)), ((4, 5), 3, (12, 15)), ((1, 1), 4, (9, 9)),
                                ((3, 2), 1, (2, 2))):
        a = np.zeros(grid, dtype=bool)
        expected = np.repeat(np.repeat(a, factor, axis=0), factor, axis=1)[:shape[0], :shape[1]]
        assert _same(repeat_blocks(a, factor, shape), expected)


@pytest.mark.parametrize("seed", range(8))
def test_box_mean3_is_scipys_uniform_filter_bit_for_bit(seed):
    from scipy import ndimage

    from digitnet.data.imageops import BOX_ROWS_MIN_WIDTH, box_mean3

    rng = np.random.default_rng(400 + seed)
    h = int(rng.choice([4, 5, 17, 301]))
    w = int(rng.choice([BOX_ROWS_MIN_WIDTH, 300, 1031]))
    x = rng.random((h, w), dtype=np.float32) ** np.float32(rng.choice([1, 8])) * np.float32(
        rng.choice([1, 1e6, 1e-6]))
    x[rng.random((h, w)) < 0.3] = 0
    if seed % 3 == 0:
        x[rng.random((h, w)) < 0.2] = -0.0
    if seed % 4 == 1:
        x.flat[int(rng.integers(x.size))] = np.inf
    for a in (x, x[:, 1:-2], x.T.copy()[:, :h]):
        assert _same(box_mean3(a), ndimage.uniform_filter(a, 3, mode="nearest")), (seed, a.shape)
