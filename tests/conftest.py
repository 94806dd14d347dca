"""Shared fixtures: the real shared MNIST folder, and tiny synthetic MNIST-format data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from digitnet.data.idx import write_idx

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "datasets" / "mnist"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST folder ($DIGITNET_DATA_DIR, else ../shared/datasets/mnist)."""
    folder = Path(os.environ.get("DIGITNET_DATA_DIR") or SHARED_MNIST)
    if not (folder / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"real MNIST not found in {folder}; set DIGITNET_DATA_DIR")
    return folder


def make_synthetic_mnist(folder: Path, n_train: int = 200, n_test: int = 50, seed: int = 0) -> Path:
    """Write four small IDX files in MNIST layout: each digit class is a distinct bright blob."""
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        images = rng.integers(0, 30, size=(n, 28, 28), dtype=np.uint8)
        for i, label in enumerate(labels):
            r, c = divmod(int(label), 5)
            images[i, 4 + 10 * r : 12 + 10 * r, 2 + 5 * c : 6 + 5 * c] = 255
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


@pytest.fixture
def synthetic_mnist(tmp_path) -> Path:
    """A folder with tiny synthetic MNIST-format IDX files (200 train, 50 test)."""
    return make_synthetic_mnist(tmp_path / "mnist")
