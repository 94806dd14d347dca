"""Statistics of a labelled image set (data/stats.py): pure helpers on tiny arrays, and the
duplicate finder against an independent count."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest

from digitnet.data.stats import (
    class_distribution,
    find_duplicates,
    ink_by_class,
    mean_images,
    pixel_stats,
    sample_indices,
    stats_from_histogram,
)
from digitnet.errors import DigitnetError


@pytest.mark.parametrize(
    ("labels", "counts", "ratio", "min_class", "max_class"),
    [
        ([0, 0, 1, 2], [2, 1, 1], 2.0, 1, 0),
        ([2, 2, 2, 1, 1, 0], [1, 2, 3], 3.0, 0, 2),
        ([0, 1, 2], [1, 1, 1], 1.0, 0, 0),
        ([0, 0, 2], [2, 0, 1], None, 1, 0),  # an empty class: the ratio is undefined
        ([], [0, 0, 0], None, 0, 0),
    ],
)
def test_class_distribution(labels, counts, ratio, min_class, max_class):
    dist = class_distribution(np.array(labels, dtype=np.int64), num_classes=3)
    assert dist["counts"] == counts
    assert dist["total"] == len(labels)
    assert dist["imbalance_ratio"] == ratio
    assert (dist["min_class"], dist["max_class"]) == (min_class, max_class)
    if labels:
        assert dist["shares"] == pytest.approx([c / len(labels) for c in counts])
        assert sum(dist["shares"]) == pytest.approx(1.0)


@pytest.mark.parametrize("labels", [[0, 3], [-1, 0]])
def test_class_distribution_rejects_labels_out_of_range(labels):
    with pytest.raises(DigitnetError, match="labels must lie in 0..2"):
        class_distribution(np.array(labels), num_classes=3)


@pytest.mark.parametrize("seed", range(4))
def test_pixel_stats_equal_numpy_float64(seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(rng.integers(1, 20), 28, 28), dtype=np.uint8)
    images[:, :10] = 0  # a background, as in MNIST
    stats = pixel_stats(images)
    scaled = images.astype(np.float64) / 255
    assert stats["pixels"] == images.size
    assert stats["mean"] == pytest.approx(scaled.mean(), rel=1e-12)
    assert stats["std"] == pytest.approx(scaled.std(), rel=1e-12)
    assert stats["zero_fraction"] == pytest.approx((images == 0).mean())
    assert stats["full_fraction"] == pytest.approx((images == 255).mean())


@pytest.mark.parametrize(
    ("value", "mean", "std"), [(0, 0.0, 0.0), (255, 1.0, 0.0), (51, 0.2, 0.0)]
)
def test_pixel_stats_of_constant_images(value, mean, std):
    stats = pixel_stats(np.full((3, 4, 4), value, dtype=np.uint8))
    assert stats["mean"] == pytest.approx(mean) and stats["std"] == pytest.approx(std, abs=1e-12)


def test_pixel_stats_of_nothing_are_none_not_nan():
    assert stats_from_histogram(np.zeros(256, dtype=np.int64))["mean"] is None
    with pytest.raises(DigitnetError, match="uint8"):
        pixel_stats(np.zeros((2, 4, 4), dtype=np.float32))


def test_ink_by_class_by_hand():
    images = np.array(
        [
            [[0, 255], [0, 0]],  # class 0: 1 of 4 pixels inked, mean value 0.25
            [[51, 51], [51, 51]],  # class 1: all inked, mean 0.2
            [[255, 255], [0, 0]],  # class 1: half inked, mean 0.5
        ],
        dtype=np.uint8,
    )
    ink = ink_by_class(images, np.array([0, 1, 1]), num_classes=3)
    assert ink["coverage"] == pytest.approx([0.25, 0.75, None])
    assert ink["intensity"] == pytest.approx([0.25, 0.35, None])
    assert ink["coverage_all"] == pytest.approx((0.25 + 1 + 0.5) / 3)
    assert ink["intensity_all"] == pytest.approx((0.25 + 0.2 + 0.5) / 3)


def test_mean_images_by_hand():
    images = np.array([[[0, 255]], [[255, 255]], [[51, 0]]], dtype=np.uint8)  # (3, 1, 2)
    means = mean_images(images, np.array([0, 0, 1]), num_classes=3)
    assert means.shape == (3, 1, 2)
    np.testing.assert_allclose(means[0], [[0.5, 1.0]])
    np.testing.assert_allclose(means[1], [[0.2, 0.0]])
    assert np.isnan(means[2]).all()  # no example of class 2


def test_sample_indices_are_deterministic_and_in_class():
    labels = np.array([0] * 30 + [1] * 3 + [2] * 12)
    picked = sample_indices(labels, per_class=5, seed=0, num_classes=4)
    assert np.array_equal(picked, sample_indices(labels, per_class=5, seed=0, num_classes=4))
    assert not np.array_equal(picked, sample_indices(labels, per_class=5, seed=1, num_classes=4))
    for c, row in enumerate(picked):
        real = row[row >= 0]
        assert len(real) == min(5, int((labels == c).sum()))
        assert (labels[real] == c).all() and len(set(real)) == len(real)
        assert np.array_equal(real, np.sort(real))
    assert picked[1].tolist() == [30, 31, 32, -1, -1]
    assert picked[3].tolist() == [-1] * 5


def _planted() -> tuple[dict, dict]:
    """Tiny splits with known duplicates; see test_find_duplicates_planted."""
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(6, 4, 4), dtype=np.uint8)
    train_labels = np.array([0, 1, 2, 1, 4, 9])
    train[3] = train[1]  # same label
    train[5] = train[0]  # label 9 against 0: a conflict
    val = np.stack([train[1], train[1]])
    val_labels = np.array([1, 1])
    test = rng.integers(0, 256, size=(3, 4, 4), dtype=np.uint8)
    test_labels = np.array([1, 5, 7])
    test[0] = train[1]
    test[2] = train[4]  # label 7 against 4: a conflict across splits
    return (
        {"train": train, "val": val, "test": test},
        {"train": train_labels, "val": val_labels, "test": test_labels},
    )


def test_find_duplicates_planted():
    images, labels = _planted()
    dups = find_duplicates(images, labels)
    assert (dups["total_images"], dups["unique_images"]) == (11, 5)
    within = {s: [d[k] for k in ("groups", "images", "redundant", "conflicting_label_groups")]
              for s, d in dups["within"].items()}
    assert within == {"train": [2, 4, 2, 1], "val": [1, 2, 1, 0], "test": [0, 0, 0, 0]}
    across = dups["across"]
    assert across["train-val"] == {**across["train-val"], "groups": 1, "images_train": 2,
                                   "images_val": 2, "conflicting_label_groups": 0}
    assert across["train-test"] == {**across["train-test"], "groups": 2, "images_train": 3,
                                    "images_test": 2, "conflicting_label_groups": 1}
    assert across["val-test"] == {**across["val-test"], "groups": 1, "images_val": 2,
                                  "images_test": 1, "conflicting_label_groups": 0}
    examples = {frozenset((m["split"], m["index"], m["label"]) for m in g)
                for g in dups["within"]["train"]["examples"]}
    assert examples == {
        frozenset({("train", 1, 1), ("train", 3, 1)}),
        frozenset({("train", 0, 0), ("train", 5, 9)}),
    }
    [test_example] = [g for g in across["train-test"]["examples"] if len(g) == 2]
    assert {(m["split"], m["index"], m["label"]) for m in test_example} == {
        ("train", 4, 4), ("test", 2, 7)
    }


def _independent_duplicates(images: dict, labels: dict) -> dict:
    """The same counts by a different method: a Python dict from image bytes to members."""
    members = defaultdict(list)
    for s in images:
        for image, label in zip(images[s], labels[s]):
            members[image.tobytes()].append((s, int(label)))
    within = {}
    for s in images:
        sizes = Counter(key for key, ms in members.items() for m in ms if m[0] == s)
        groups = [k for k, n in sizes.items() if n > 1]
        conflicts = sum(len({lab for sp, lab in members[k] if sp == s}) > 1 for k in groups)
        within[s] = [len(groups), sum(sizes[k] for k in groups), conflicts]
    across = {}
    names = list(images)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = [k for k, ms in members.items() if {a, b} <= {m[0] for m in ms}]
            conflicts = sum(len({lb for sp, lb in members[k] if sp in (a, b)}) > 1 for k in shared)
            across[f"{a}-{b}"] = [len(shared), conflicts]
    return dict(unique=len(members), within=within, across=across)


@pytest.mark.parametrize("seed", range(5))
def test_find_duplicates_equals_independent_count(seed):
    rng = np.random.default_rng(seed)
    # 2x2 binary images: only 16 distinct, so duplicates and conflicts are everywhere
    images = {s: rng.integers(0, 2, size=(n, 2, 2), dtype=np.uint8)
              for s, n in (("train", 40), ("val", 7), ("test", 15))}
    labels = {s: rng.integers(0, 3, size=len(x)) for s, x in images.items()}
    dups = find_duplicates(images, labels)
    expected = _independent_duplicates(images, labels)
    assert dups["unique_images"] == expected["unique"]
    for s, (groups, in_groups, conflicts) in expected["within"].items():
        d = dups["within"][s]
        got = [d["groups"], d["images"], d["conflicting_label_groups"]]
        assert got == [groups, in_groups, conflicts]
        assert d["redundant"] == len(images[s]) - len({x.tobytes() for x in images[s]})
    for pair, (groups, conflicts) in expected["across"].items():
        d = dups["across"][pair]
        assert [d["groups"], d["conflicting_label_groups"]] == [groups, conflicts]
