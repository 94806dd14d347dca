"""In-memory datasets, deterministic stratified splits, and batch iteration without per-sample
Python."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from digitnet.constants import NUM_CLASSES
from digitnet.errors import DigitnetError

DEFAULT_VAL_SIZE = 5_000
SPLIT_SEED = 0  # fixed: the validation split is part of the data definition, not of a run


@dataclass
class TensorDataset:
    """Images as uint8 (N, 28, 28), white digit on black; labels as int64 (N,)."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        if len(self.images) != len(self.labels):
            raise DigitnetError(
                f"dataset {self.name}: {len(self.images)} images but {len(self.labels)} labels"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor, name: str | None = None) -> TensorDataset:
        return TensorDataset(name or self.name, self.images[indices], self.labels[indices])

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=NUM_CLASSES)


def stratified_indices(labels: torch.Tensor, size: int, seed: int = SPLIT_SEED) -> torch.Tensor:
    """Pick `size` indices with each class in proportion to its share of `labels`.

    Deterministic for a given seed. Per-class quotas use the largest-remainder rule, so the total
    is exactly `size`. The result is sorted.

    Raises:
        DigitnetError: `size` is negative or larger than the number of labels.
    """
    n = len(labels)
    if not 0 <= size <= n:
        raise DigitnetError(f"cannot take {size} examples from {n}: expected 0 <= size <= {n}")
    counts = torch.bincount(labels, minlength=NUM_CLASSES).double()
    exact = counts * size / n
    quota = exact.floor().long()
    remainder = size - int(quota.sum())
    if remainder:
        order = torch.argsort(exact - quota, descending=True, stable=True)
        quota[order[:remainder]] += 1
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in range(NUM_CLASSES):
        members = torch.nonzero(labels == c).flatten()
        picked.append(members[torch.randperm(len(members), generator=g)[: int(quota[c])]])
    return torch.sort(torch.cat(picked)).values


def train_val_split(
    images: torch.Tensor,
    labels: torch.Tensor,
    val_size: int = DEFAULT_VAL_SIZE,
    seed: int = SPLIT_SEED,
) -> tuple[TensorDataset, TensorDataset]:
    """Split the MNIST training set into train and a stratified validation set (disjoint)."""
    val_idx = stratified_indices(labels, val_size, seed)
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[val_idx] = False
    return (
        TensorDataset("mnist-train", images[mask], labels[mask]),
        TensorDataset("mnist-val", images[val_idx], labels[val_idx]),
    )


def load_splits(
    data_dir: str | os.PathLike | None = None,
    val_size: int = DEFAULT_VAL_SIZE,
    subset: int | None = None,
) -> dict[str, TensorDataset]:
    """MNIST as `train`, `val` and `test` datasets; `subset` keeps a stratified part of train.

    Returns:
        dict with keys "train", "val", "test" and the loaded `Mnist` under "mnist".
    """
    from digitnet.data.mnist import load_mnist

    mnist = load_mnist(data_dir)
    if not 0 <= val_size < len(mnist.train_labels):
        raise DigitnetError(
            f"validation size {val_size} must be between 0 and the {len(mnist.train_labels)} "
            f"training images in {mnist.data_dir}; change --val-size"
        )
    train, val = train_val_split(mnist.train_images, mnist.train_labels, val_size)
    if subset is not None:
        if subset > len(train):
            raise DigitnetError(f"--subset {subset} exceeds the {len(train)} training images")
        train = train.subset(stratified_indices(train.labels, subset))
    test = TensorDataset("mnist-test", mnist.test_images, mnist.test_labels)
    return {"train": train, "val": val, "test": test, "mnist": mnist}


def iterate_batches(
    dataset: TensorDataset,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (uint8 images (B, 28, 28), int64 labels (B,)) by slicing tensors; no per-sample
    work."""
    n = len(dataset)
    order = torch.randperm(n, generator=generator) if shuffle else None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            batch = slice(start, start + batch_size)
            yield dataset.images[batch], dataset.labels[batch]
        else:
            idx = order[start : start + batch_size]
            yield dataset.images[idx], dataset.labels[idx]


def to_model_input(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 (B, 28, 28) or (B, 1, 28, 28) -> normalised float32 (B, 1, 28, 28)."""
    if images.dim() == 3:
        images = images.unsqueeze(1)
    return (images.float() / 255.0 - mean) / std
