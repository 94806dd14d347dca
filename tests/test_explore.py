"""Exploration: pure helpers on tiny arrays; real MNIST numbers against an independent count."""

from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from digitnet.cli import main
from digitnet.constants import MNIST_MEAN, MNIST_STD, NUM_CLASSES
from digitnet.data.datasets import load_splits
from digitnet.data.explore import PLOT_FILES, create_figures, explore
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

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _strict_json(path: Path) -> dict:
    """Load JSON that must be standard: NaN or Infinity are errors."""

    def refuse(constant):
        raise ValueError(f"{path} holds {constant}, which is not valid JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


# ------------------------------------------------------------------------------ pure helpers
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
        for i, (image, label) in enumerate(zip(images[s], labels[s])):
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


# ---------------------------------------------------------------------- plots and synthetic run
def _figure_texts(fig: Figure) -> str:
    parts = [fig.get_suptitle()]
    for ax in fig.axes:
        parts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
    return " | ".join(parts)


@pytest.mark.parametrize("val_size", [50, 0], ids=["val-50", "no-val"])
def test_explore_on_synthetic_data(synthetic_mnist, tmp_path, val_size):
    out = tmp_path / "out"
    stats = explore(synthetic_mnist, out, val_size=val_size, samples_per_class=3)
    on_disk = _strict_json(out / "stats.json")  # also proves there is no NaN for an empty split
    assert on_disk["splits"]["train"]["class_distribution"]["total"] == 200 - val_size
    assert stats["splits"]["test"]["size"] == on_disk["splits"]["test"]["size"] == 50
    assert np.array(on_disk["samples"]["indices"]).shape == (NUM_CLASSES, 3)
    for name in PLOT_FILES.values():
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
        assert f"]({name})" in (out / "report.md").read_text()
    if val_size == 0:
        assert on_disk["splits"]["val"]["pixels"]["mean"] is None


def test_figures_have_titles_and_axis_labels(synthetic_mnist, tmp_path):
    stats = explore(synthetic_mnist, tmp_path / "out", val_size=20)
    splits = load_splits(synthetic_mnist, val_size=20)
    images = {s: splits[s].images.numpy() for s in ("train", "val", "test")}
    labels = {s: splits[s].labels.numpy() for s in ("train", "val", "test")}
    figures = create_figures(stats, images, labels)
    assert set(figures) == set(PLOT_FILES)
    expected = {
        "class_distribution": ["Class distribution", "digit class", "images"],
        "pixel_histogram": ["Pixel values", "pixel value", "pixels"],
        "ink_coverage": ["Ink coverage", "digit class", "fraction of pixels > 0"],
        "mean_images": ["Mean image per class", "train", "test"],
        "sample_grid": ["Training samples per class"],
    }
    for key, fig in figures.items():
        assert isinstance(fig, Figure)
        text = _figure_texts(fig) + " " + " ".join(
            t.get_text() for ax in fig.axes for t in ax.get_yticklabels()
        )
        for fragment in expected[key]:
            assert fragment in text, (key, fragment, text)


def test_figures_draw_the_data(synthetic_mnist, tmp_path):
    """Each exploration plot draws the numbers counted here independently with numpy."""
    stats = explore(synthetic_mnist, tmp_path / "out", val_size=20, samples_per_class=3)
    splits = load_splits(synthetic_mnist, val_size=20)
    names = ("train", "val", "test")
    images = {s: splits[s].images.numpy() for s in names}
    labels = {s: splits[s].labels.numpy() for s in names}
    figures = create_figures(stats, images, labels)
    for ax, s in zip(figures["class_distribution"].axes, names):
        assert [b.get_height() for b in ax.patches] == np.bincount(labels[s], minlength=10).tolist()
    [hist_ax] = figures["pixel_histogram"].axes
    originals = splits["mnist"].train_images.numpy()  # all 200 training images, before the split
    np.testing.assert_array_equal(hist_ax.patches[0].get_data().values,
                                  np.bincount(originals.ravel(), minlength=256))
    [ink_ax] = figures["ink_coverage"].axes
    coverage = [(images[s][labels[s] == c] > 0).mean() for s in names for c in range(10)]
    assert [b.get_height() for b in ink_ax.patches] == pytest.approx(coverage, rel=1e-12)
    montage = figures["mean_images"].axes[0].images[0].get_array()  # 28 px tiles, 2 px apart
    for r, s in enumerate(names):
        for c in range(10):
            tile = montage[30 * r:30 * r + 28, 30 * c:30 * c + 28]
            np.testing.assert_allclose(tile, images[s][labels[s] == c].mean(0) / 255, rtol=1e-12)
    grid = figures["sample_grid"].axes[0].images[0].get_array()
    indices = np.asarray(stats["samples"]["indices"])
    assert indices.shape == (10, 3) and (labels["train"][indices] == np.arange(10)[:, None]).all()
    for c in range(10):
        for j in range(3):
            np.testing.assert_array_equal(grid[30 * c:30 * c + 28, 30 * j:30 * j + 28],
                                          images["train"][indices[c, j]])


# ----------------------------------------------------------------------------- real MNIST
def _read_gz(path: Path, header_bytes: int) -> np.ndarray:
    return np.frombuffer(gzip.decompress(path.read_bytes()), dtype=np.uint8, offset=header_bytes)


@pytest.fixture(scope="module")
def real(mnist_dir) -> dict:
    """MNIST read straight from the gz files with gzip + numpy, without digitnet."""
    return dict(
        train_images=_read_gz(mnist_dir / "train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28),
        train_labels=_read_gz(mnist_dir / "train-labels-idx1-ubyte.gz", 8),
        test_images=_read_gz(mnist_dir / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28),
        test_labels=_read_gz(mnist_dir / "t10k-labels-idx1-ubyte.gz", 8),
    )


@pytest.fixture(scope="module")
def cli_run(mnist_dir, tmp_path_factory) -> dict:
    """`digitnet data explore` on the real MNIST, once for this module."""
    out = tmp_path_factory.mktemp("explore")
    code = main(["data", "explore", "--data-dir", str(mnist_dir), "--out", str(out)])
    return dict(code=code, out=out, stats=_strict_json(out / "stats.json"))


@pytest.mark.slow
def test_cli_writes_plots_report_and_stats(cli_run, capsys):
    assert cli_run["code"] == 0
    out = cli_run["out"]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([*PLOT_FILES.values(), "report.md", "stats.json"])
    for name in PLOT_FILES.values():
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    report = (out / "report.md").read_text()
    for name in PLOT_FILES.values():
        assert f"]({name})" in report
    assert "| 5 | 4,969 |" in report  # the rarest class of train, in the class table
    assert "0.130660" in report and "0.308108" in report


@pytest.mark.slow
def test_class_counts_equal_independent_bincount(cli_run, real):
    splits = cli_run["stats"]["splits"]
    train = np.array(splits["train"]["class_distribution"]["counts"])
    val = np.array(splits["val"]["class_distribution"]["counts"])
    test = np.array(splits["test"]["class_distribution"]["counts"])
    original = np.bincount(real["train_labels"], minlength=NUM_CLASSES)
    assert (train + val).tolist() == original.tolist()
    assert test.tolist() == np.bincount(real["test_labels"], minlength=NUM_CLASSES).tolist()
    assert (val.sum(), train.sum()) == (5_000, 55_000)
    assert np.all(np.abs(val - original * 5_000 / 60_000) < 1)  # stratified
    for name, counts in (("train", train), ("val", val), ("test", test)):
        dist = splits[name]["class_distribution"]
        assert dist["imbalance_ratio"] == pytest.approx(counts.max() / counts.min())
        assert dist["shares"] == pytest.approx((counts / counts.sum()).tolist())


@pytest.mark.slow
def test_pixel_stats_equal_independent_float64(cli_run, real):
    stats = cli_run["stats"]
    norm = stats["normalisation"]
    x = real["train_images"].astype(np.float64) / 255  # (60000, 28, 28), ~380 MB
    assert norm["images"] == 60_000
    assert norm["mean"] == pytest.approx(x.mean(), rel=1e-9)
    assert norm["std"] == pytest.approx(x.std(), rel=1e-9)
    del x
    assert norm["constants_agree"]
    assert abs(norm["mean"] - MNIST_MEAN) < 5e-5 and abs(norm["std"] - MNIST_STD) < 5e-5
    assert sum(norm["histogram"]) == 60_000 * 28 * 28
    t = real["test_images"].astype(np.float64) / 255
    test_pixels = stats["splits"]["test"]["pixels"]
    assert test_pixels["mean"] == pytest.approx(t.mean(), rel=1e-9)
    assert test_pixels["std"] == pytest.approx(t.std(), rel=1e-9)
    # train and val partition the original training set, so their pixel means recombine exactly
    splits = stats["splits"]
    train_mean, val_mean = splits["train"]["pixels"]["mean"], splits["val"]["pixels"]["mean"]
    recombined = 55_000 * train_mean + 5_000 * val_mean
    assert recombined / 60_000 == pytest.approx(norm["mean"], rel=1e-12)


@pytest.mark.slow
def test_ink_coverage_equals_independent_count(cli_run, real):
    ink = cli_run["stats"]["splits"]["test"]["ink"]
    images, labels = real["test_images"], real["test_labels"]
    for c in range(NUM_CLASSES):
        members = images[labels == c]
        assert ink["coverage"][c] == pytest.approx((members > 0).mean(), rel=1e-9)
        assert ink["intensity"][c] == pytest.approx(members.mean() / 255, rel=1e-9)


@pytest.mark.slow
def test_duplicates_equal_independent_set_of_bytes(cli_run, real):
    dups = cli_run["stats"]["duplicates"]
    train = {image.tobytes() for image in real["train_images"]}
    test = {image.tobytes() for image in real["test_images"]}
    assert dups["total_images"] == 70_000
    assert dups["unique_images"] == len(train | test)
    assert dups["within"]["test"]["redundant"] == 10_000 - len(test)
    # MNIST holds no exact duplicate, within or across its files: every count must be zero
    assert (60_000 - len(train), 10_000 - len(test), len(train & test)) == (0, 0, 0)
    for d in [*dups["within"].values(), *dups["across"].values()]:
        assert d["groups"] == 0 and d["conflicting_label_groups"] == 0 and d["examples"] == []


@pytest.mark.slow
def test_summary_is_printed(mnist_dir, tmp_path, capsys):
    assert main(["data", "explore", "--data-dir", str(mnist_dir), "--out", str(tmp_path),
                 "--val-size", "10000"]) == 0
    out = capsys.readouterr().out
    assert "train   50,000" in out and "val     10,000" in out and "test    10,000" in out
    assert "mean 0.130660, std 0.308108" in out
    assert _strict_json(tmp_path / "stats.json")["val_size"] == 10_000
