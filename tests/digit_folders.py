"""Labelled image folders for the tests of ingestion and of training on ingested datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from digitnet.data.dataset_store import IMAGES_FILE, LABELS_FILE
from digitnet.data.idx import read_idx


def mnist_test_digits(mnist_dir: Path) -> dict[int, np.ndarray]:
    """Up to 20 real MNIST test digits per class."""
    images = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")[:1000]
    labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")[:1000]
    return {c: images[labels == c][:20] for c in range(10)}


def write_digits(folder: Path, mnist_digits, counts: dict[int, int], start: int = 0) -> list[Path]:
    """folder/<label>/<i>.png: MNIST digits as dark ink on light paper, 60-100 px."""
    written = []
    for label, n in counts.items():
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        for i in range(start, start + n):
            size = 60 + 10 * (i % 5)
            digit = Image.fromarray(mnist_digits[label][i])
            big = digit.resize((size, size), Image.Resampling.BICUBIC)
            path = folder / str(label) / f"{i}.png"
            Image.fromarray(255 - np.asarray(big)).save(path)
            written.append(path)
    return written


def idx_bytes(folder: Path) -> tuple[bytes, bytes]:
    """The bytes of a dataset's two IDX files."""
    return (folder / IMAGES_FILE).read_bytes(), (folder / LABELS_FILE).read_bytes()
