"""Pinned results of float image operations, compared with a tolerance for the CPU.

Rounded to uint8, an augmentation's result is fixed by its inputs, its generator seed and the
torch build, with one exception: a value that lands within rounding error of a half grey level
(or of a binarisation threshold) may go either way on another CPU's vector instructions. The
severity-5 preset's bytes differed in exactly this way between two CI machines with the same
torch. So a pinned result is stored whole, in tests/data/pinned-augment.npz, and compared pixel
by pixel: at most MAX_NEAR of the pixels may differ by one grey level and MAX_FAR by more. The
mutations these pins were written against (a sign, a bound, a skipped step) change far more.

Re-pin only for a new torch pin or a deliberate change of an operation, and say so:
    DIGITNET_REPIN=1 PYTHONPATH=src python -m pytest -q tests -k "pinned or skipped_steps"
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

PINNED_FILE = Path(__file__).parent / "data" / "pinned-augment.npz"
MAX_NEAR = 0.005  # share of pixels allowed one grey level off
MAX_FAR = 0.0005  # share of pixels allowed further off (a threshold crossed)


def _load() -> dict[str, np.ndarray]:
    if not PINNED_FILE.exists():
        return {}
    with np.load(PINNED_FILE) as data:
        return {name: data[name] for name in data.files}


def assert_matches_pinned(name: str, images: torch.Tensor) -> None:
    """Fail unless uint8 `images` equal the pinned result `name`, up to the CPU's rounding."""
    actual = images.contiguous().numpy()
    assert actual.dtype == np.uint8, actual.dtype
    pins = _load()
    if os.environ.get("DIGITNET_REPIN") == "1":
        pins[name] = actual
        np.savez_compressed(PINNED_FILE, **pins)
        return
    assert name in pins, f"no pinned result {name!r} in {PINNED_FILE} (see {__file__})"
    expected = pins[name]
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    off = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    near, far = np.count_nonzero(off == 1) / off.size, np.count_nonzero(off > 1) / off.size
    assert near <= MAX_NEAR and far <= MAX_FAR, (
        f"{name}: {near:.2%} of pixels one level off (<= {MAX_NEAR:.2%} allowed), {far:.3%} "
        f"further off (<= {MAX_FAR:.3%}), largest difference {off.max()}")
