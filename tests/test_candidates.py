"""candidates' faster formulations give the same numbers bit for bit (the selection itself is
tested through the renderings: tests/test_preprocess_identity.py, tests/test_renderings.py)."""

from __future__ import annotations

import numpy as np

from digitnet.data.candidates import _moments
from digitnet.data.imageops import label_components


def _moments_of_every_cell(labels, weights, count):
    rows, cols = np.indices(labels.shape, dtype=np.float64)
    flat, w = labels.ravel(), weights.ravel().astype(np.float64)
    return np.stack([np.bincount(flat, weights=w * f.ravel(), minlength=count + 1)[1:]
                     for f in (np.ones_like(rows), rows, cols, rows * rows, cols * cols,
                               rows * cols)], axis=1)


def test_moments_over_the_labelled_cells_are_those_over_the_grid():
    rng = np.random.default_rng(1)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 80, 2))
        labels, count = label_components(rng.random((h, w)) < rng.random())
        weights = (rng.random((h, w), dtype=np.float32) - np.float32(0.3)) * (
            rng.random((h, w)) < 0.8)  # with -0.0
        ours, expected = _moments(labels, weights, count), _moments_of_every_cell(
            labels, weights, count)
        assert ours.shape == expected.shape and ours.tobytes() == expected.tobytes()
