"""Splits and batches: the stratified validation split on real MNIST, subsets, batch coverage;
and the test datasets read from files (IDX pairs, image folders)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bounded import run_bounded
from digitnet.constants import NUM_CLASSES
from digitnet.data.datasets import (
    DEFAULT_VAL_SIZE,
    TensorDataset,
    iterate_batches,
    load_splits,
    stratified_indices,
    to_model_input,
    train_val_split,
)
from digitnet.data.idx import write_idx
from digitnet.data.mnist import load_mnist
from digitnet.errors import DigitnetError
from digitnet.evaluation.datasets import load_eval_dataset


@pytest.fixture(scope="module")
def train_labels(mnist_dir) -> torch.Tensor:
    return load_mnist(mnist_dir).train_labels


def _labels(counts: list[int]) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))


def _assert_proportional(picked_labels: torch.Tensor, labels: torch.Tensor, size: int) -> None:
    got = torch.bincount(picked_labels, minlength=NUM_CLASSES).double()
    share = torch.bincount(labels, minlength=NUM_CLASSES).double() * size / len(labels)
    assert int(got.sum()) == size
    assert torch.all((got - share).abs() < 1), (got, share)


# ---------------------------------------------------------------------- stratified indices
@pytest.mark.parametrize(
    ("counts", "size", "expected"),
    [
        ([10] * 10, 20, [2] * 10),
        ([3, 3, 3, 1], 5, [2, 2, 1, 0]),  # equal remainders: the lower classes win, stably
        ([5, 1], 3, [3, 0]),  # exact 2.5 and 0.5: one left over, the tie goes to class 0
        ([7, 3], 0, [0, 0]),
        ([7, 3], 10, [7, 3]),
        ([6, 0, 4], 5, [3, 0, 2]),  # an absent class gets nothing
    ],
)
def test_quota_per_class(counts, size, expected):
    labels = _labels(counts)
    picked = stratified_indices(labels, size)
    got = torch.bincount(labels[picked], minlength=len(expected)).tolist()
    assert got[: len(expected)] == expected
    assert torch.equal(picked, torch.sort(picked).values)
    assert len(torch.unique(picked)) == size


@pytest.mark.parametrize("size", [-1, 11])
def test_size_out_of_range(size):
    with pytest.raises(DigitnetError, match="cannot take"):
        stratified_indices(_labels([5, 5]), size)


def test_split_on_real_mnist_is_deterministic_and_stratified(train_labels):
    first = stratified_indices(train_labels, DEFAULT_VAL_SIZE)
    second = stratified_indices(train_labels, DEFAULT_VAL_SIZE)
    assert torch.equal(first, second)
    assert not torch.equal(first, stratified_indices(train_labels, DEFAULT_VAL_SIZE, seed=1))
    assert len(first) == DEFAULT_VAL_SIZE == len(torch.unique(first))
    _assert_proportional(train_labels[first], train_labels, DEFAULT_VAL_SIZE)
    # the split is fixed across processes and machines too (torch 2.13, CPU): its indices' digest
    digest = hashlib.sha256(first.numpy().astype("<i8").tobytes()).hexdigest()
    assert digest == "6640c9063b70194dede1c58fc9f164514271f52e38bd2f0ef1ab457816a24466"


def test_train_val_split_on_real_mnist(train_labels):
    # pass the example index as the "image", so the split reveals which examples went where
    index = torch.arange(len(train_labels))
    train, val = train_val_split(index, train_labels)
    assert (len(train), len(val)) == (55_000, 5_000)
    assert not set(train.images.tolist()) & set(val.images.tolist())  # disjoint
    assert torch.equal(torch.sort(torch.cat([train.images, val.images])).values, index)  # complete
    assert torch.equal(val.images, stratified_indices(train_labels, DEFAULT_VAL_SIZE))
    assert torch.equal(train.labels, train_labels[train.images])  # labels stay with their images
    assert torch.equal(val.labels, train_labels[val.images])
    _assert_proportional(val.labels, train_labels, DEFAULT_VAL_SIZE)
    again_train, again_val = train_val_split(index, train_labels)
    assert torch.equal(again_train.images, train.images)
    assert torch.equal(again_val.images, val.images)


def test_subset_is_stratified(train_labels):
    index = torch.arange(len(train_labels))
    train, _ = train_val_split(index, train_labels)
    part = train.subset(stratified_indices(train.labels, 1_000))
    assert len(part) == 1_000
    _assert_proportional(part.labels, train.labels, 1_000)
    assert set(part.images.tolist()) <= set(train.images.tolist())


def test_load_splits_with_subset(mnist_dir):
    splits = load_splits(mnist_dir, subset=1_000)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [1_000, 5_000, 10_000]
    assert splits["train"].images.dtype == torch.uint8
    assert tuple(splits["test"].images.shape[1:]) == (28, 28)
    _assert_proportional(splits["train"].labels, splits["mnist"].train_labels, 1_000)


# ------------------------------------------------------------------------------- batches
def _index_dataset(n: int) -> TensorDataset:
    return TensorDataset("index", torch.arange(n), torch.arange(n) % NUM_CLASSES)


@pytest.mark.parametrize(("n", "batch_size"), [(103, 10), (100, 10), (5, 8), (1, 1)])
def test_shuffled_batches_cover_every_index_once(n, batch_size):
    batches = list(iterate_batches(_index_dataset(n), batch_size, shuffle=True,
                                   generator=torch.Generator().manual_seed(0)))
    seen = torch.cat([images for images, _ in batches])
    assert torch.equal(torch.sort(seen).values, torch.arange(n))
    if n > 1:
        assert not torch.equal(seen, torch.arange(n))  # shuffled, not in order
    assert [len(b[0]) for b in batches[:-1]] == [batch_size] * (len(batches) - 1)
    for images, labels in batches:
        assert torch.equal(labels, images % NUM_CLASSES)  # pairs stay together


def test_batches_in_order_and_drop_last():
    ds = _index_dataset(23)
    assert torch.equal(torch.cat([x for x, _ in iterate_batches(ds, 5)]), torch.arange(23))
    kept = [x for x, _ in iterate_batches(ds, 5, shuffle=True, drop_last=True)]
    assert [len(x) for x in kept] == [5] * 4
    assert len(torch.unique(torch.cat(kept))) == 20


def test_shuffle_is_reproducible_with_a_generator():
    ds = _index_dataset(50)

    def order(seed):
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([x for x, _ in iterate_batches(ds, 7, shuffle=True, generator=gen)])

    assert torch.equal(order(3), order(3))
    assert not torch.equal(order(3), order(4))


def test_dataset_length_mismatch_raises():
    with pytest.raises(DigitnetError, match="3 images but 2 labels"):
        TensorDataset("bad", torch.zeros(3, 28, 28), torch.zeros(2))


@pytest.mark.parametrize("shape", [(4, 28, 28), (4, 1, 28, 28)])
def test_to_model_input(shape):
    images = torch.full(shape, 255, dtype=torch.uint8)
    x = to_model_input(images, mean=0.5, std=0.25)
    assert x.shape == (4, 1, 28, 28) and x.dtype == torch.float32
    assert torch.allclose(x, torch.full_like(x, 2.0))


# ------------------------------------------- evaluation datasets: IDX pairs and image folders
def _pair(tmp_path, images, labels) -> str:
    write_idx(tmp_path / "i.idx", images)
    write_idx(tmp_path / "l.idx.gz", labels)
    return f"{tmp_path / 'i.idx'},{tmp_path / 'l.idx.gz'}"


IMAGES4 = np.zeros((4, 28, 28), np.uint8)


@pytest.mark.parametrize(
    ("images", "labels", "bad", "fragment"),
    [
        (IMAGES4, np.array([1, np.nan, 3, 4], np.float32), "l", "expected integer labels 0-9"),
        (IMAGES4, np.array([1, np.inf, 3, 4], np.float64), "l", "got float64"),
        (IMAGES4, np.array([1.0, 2.0, 3.0, 4.0], np.float32), "l", "got float32"),
        (IMAGES4, np.array([1, -1, 3, 4], np.int8), "l", "label -1 out of range 0-9 (at index 1"),
        (IMAGES4, np.array([1, 2, 3, 300], np.int16), "l", "label 300 out of range"),
        (IMAGES4, np.zeros((4, 1), np.uint8), "l", "of shape (N,)"),
        (IMAGES4.astype(np.float32), np.arange(4, dtype=np.uint8), "i", "expected uint8 images"),
        (IMAGES4[:, :, :27], np.arange(4, dtype=np.uint8), "i", "expected uint8 images"),
    ],
    ids=["nan", "inf", "float-integral", "negative", "int16-300", "2d", "float-images", "27-wide"],
)
def test_idx_pair_oddities_name_the_file(tmp_path, images, labels, bad, fragment):
    with pytest.raises(DigitnetError) as info:
        load_eval_dataset(_pair(tmp_path, images, labels))
    path = tmp_path / ("i.idx" if bad == "i" else "l.idx.gz")
    assert str(info.value).startswith(f"{path}: ") and fragment in str(info.value)


def test_idx_pair_takes_any_integer_label_type(tmp_path):
    ds = load_eval_dataset(_pair(tmp_path, IMAGES4, np.array([0, 9, 3, 4], np.int32)))
    assert ds.labels.tolist() == [0, 9, 3, 4] and ds.labels.dtype == torch.int64


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_idx_pair_paths_that_never_end_are_refused(tmp_path, kind):
    write_idx(tmp_path / "i.idx", IMAGES4)
    labels = tmp_path / "fifo" if kind == "fifo" else Path("/dev/zero")
    if kind == "fifo":
        os.mkfifo(labels)
    error = run_bounded(lambda: load_eval_dataset(f"{tmp_path / 'i.idx'},{labels}"), fifo=labels)
    assert isinstance(error, DigitnetError) and str(labels) in str(error)
    assert "expected a regular IDX file" in str(error)


def test_image_folder_lists_a_fifo_as_unreadable(tmp_path):
    folder = tmp_path / "mine"
    (folder / "3").mkdir(parents=True)
    canvas = Image.new("L", (120, 160), 255)
    canvas.paste(0, (50, 30, 62, 130))
    canvas.save(folder / "3" / "a.png")
    os.mkfifo(folder / "3" / "b.png")
    (folder / "3" / "c.png").symlink_to("/dev/zero")
    error = run_bounded(lambda: load_eval_dataset(str(folder)), fifo=folder / "3" / "b.png")
    assert isinstance(error, DigitnetError)
    message = str(error)
    assert "2 unreadable image(s)" in message
    assert f"{folder / '3' / 'b.png'}: expected a regular image file, found a FIFO" in message
    assert f"{folder / '3' / 'c.png'}: expected a regular image file, found a device" in message
