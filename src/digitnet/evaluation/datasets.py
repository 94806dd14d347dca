"""Test datasets by name: MNIST test and validation, the fixed augmented test set, image folders,
IDX pairs and ingested datasets.

    mnist-test                  the 10,000 MNIST test images (default)
    mnist-val                   the held-out validation split (5,000 of the training images)
    mnist-test-augmented        MNIST test under a fixed-seed augmentation, severity 3
    mnist-test-augmented:N      the same at severity N (1 mild .. 5 harsh)
    DIR                         a folder of labelled images, DIR/<digit>/*.png (any image format)
    IMAGES.idx,LABELS.idx       a pair of IDX files (raw or .gz)
    NAME                        a dataset made by `digitnet data ingest`
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from digitnet.constants import NUM_CLASSES
from digitnet.data.augment import (
    AUGMENTED,
    AUGMENTED_SEED,
    AUGMENTED_SEVERITY,
    MAX_SEVERITY,
    make_augmented_dataset,
)
from digitnet.data.dataset_store import list_datasets, load_dataset
from digitnet.data.datasets import DEFAULT_VAL_SIZE, TensorDataset, train_val_split
from digitnet.errors import DigitnetError
from digitnet.fileio import check_regular_file

DEFAULT_DATASET = "mnist-test"


@lru_cache(maxsize=2)
def _mnist(data_dir: str | None):
    from digitnet.data.mnist import load_mnist

    return load_mnist(data_dir)


def load_idx_pair(
    images_path: str | os.PathLike, labels_path: str | os.PathLike, name: str
) -> TensorDataset:
    """A labelled dataset from two IDX files, checked for type, shape, range and matching counts.

    Raises:
        DigitnetError: naming the file: unreadable or not IDX (see `read_idx`), images that are
            not uint8 (N, 28, 28), labels that are not integers 0-9, or counts that disagree.
    """
    from digitnet.data.idx import read_idx
    from digitnet.data.mnist import check_images, check_labels

    images = read_idx(images_path)
    check_images(images, images_path)
    labels = read_idx(labels_path)
    check_labels(labels, labels_path)
    if len(images) != len(labels):
        raise DigitnetError(f"{images_path} has {len(images)} images but {labels_path} has "
                            f"{len(labels)} labels")
    return TensorDataset(name, torch.from_numpy(images.copy()),
                         torch.from_numpy(labels.astype(np.int64)))


def load_image_folder(folder: Path) -> TensorDataset:
    """DIR/<digit>/* images through the new-image preprocessing; unreadable files are errors.

    Every entry but a hidden one or a subfolder counts: a FIFO or device is an unreadable file
    (refused before it is opened, so it never hangs the read), not one silently left out.
    """
    from digitnet.data.preprocess import preprocess

    images, labels, problems = [], [], []
    for digit in range(NUM_CLASSES):
        sub = folder / str(digit)
        if not sub.is_dir():
            continue
        entries = (p for p in sub.iterdir() if not p.is_dir() and not p.name.startswith("."))
        for path in sorted(entries):
            try:
                result = preprocess(check_regular_file(path, "image file"))
            except DigitnetError as e:
                problems.append(str(e))
                continue
            images.append(torch.from_numpy(result.image))
            labels.append(digit)
    if problems:
        raise DigitnetError(f"{folder}: {len(problems)} unreadable image(s):\n  "
                            + "\n  ".join(problems[:10]))
    if not images:
        raise DigitnetError(f"{folder}: no images found in {folder}/<digit>/ (expected e.g. "
                            f"{folder}/7/a.png)")
    return TensorDataset(folder.name, torch.stack(images), torch.tensor(labels, dtype=torch.int64))


def load_eval_dataset(
    name: str, data_dir: str | os.PathLike | None = None, val_size: int = DEFAULT_VAL_SIZE
) -> TensorDataset:
    """Resolve a dataset name (see the module docstring) to labelled uint8 images.

    `val_size` defines `mnist-val`: pass the model's own, so that it never sees its training images.

    Raises:
        DigitnetError: unknown name or unreadable files, saying which names are accepted.
    """
    key = str(data_dir) if data_dir else None
    if name == "mnist-test":
        m = _mnist(key)
        return TensorDataset(name, m.test_images, m.test_labels)
    if name == "mnist-val":
        m = _mnist(key)
        return train_val_split(m.train_images, m.train_labels, val_size)[1]
    if name == AUGMENTED or name.startswith(AUGMENTED + ":"):
        severity = AUGMENTED_SEVERITY
        if ":" in name:
            level = name.split(":", 1)[1]
            if not level.isdigit() or not 1 <= int(level) <= MAX_SEVERITY:
                raise DigitnetError(f"dataset {name!r}: severity must be 1 to {MAX_SEVERITY}")
            severity = int(level)
        m = _mnist(key)
        images, labels = make_augmented_dataset(m.test_images, m.test_labels, severity,
                                                AUGMENTED_SEED)
        return TensorDataset(name, images, labels)
    if "," in name:
        images_path, labels_path = name.split(",", 1)
        return load_idx_pair(images_path, labels_path, Path(images_path).name.split(".")[0])
    if "/" not in name and name in list_datasets():  # an ingested name wins over a folder ./NAME
        return load_dataset(name)
    if Path(name).is_dir():
        return load_image_folder(Path(name))
    raise DigitnetError(
        f"unknown dataset {name!r}: expected mnist-test, mnist-val, mnist-test-augmented[:1-5], "
        f"a folder DIR/<digit>/*.png, IMAGES,LABELS (two IDX files), or an ingested dataset "
        f"({', '.join(list_datasets()) or 'none yet: digitnet data ingest'})"
    )
