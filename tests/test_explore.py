"""Exploration: the plots, report and stats.json on synthetic data; real MNIST numbers against an
independent count. The statistics themselves on tiny arrays: tests/test_stats.py."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from digitnet.cli import main
from digitnet.constants import MNIST_MEAN, MNIST_STD, NUM_CLASSES
from digitnet.data.datasets import load_splits
from digitnet.data.explore import PLOT_FILES, create_figures, explore

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _strict_json(path: Path) -> dict:
    """Load JSON that must be standard: NaN or Infinity are errors."""

    def refuse(constant):
        raise ValueError(f"{path} holds {constant}, which is not valid JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


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
