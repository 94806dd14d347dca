"""Every plot returns a Figure that saves as a non-empty PNG, including on odd inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from digitnet.evaluation import plots
from digitnet.evaluation.metrics import compute_metrics, misclassified

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def predictions():
    """labels (200,), probs (200, 10) that are right about 80% of the time, images (200, 28, 28)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=200)
    logits = rng.normal(size=(200, 10))
    logits[np.arange(200), labels] += 2.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    images = torch.from_numpy(rng.integers(0, 256, size=(200, 28, 28), dtype=np.uint8))
    return labels, probs, images


def _check_saved(fig, tmp_path, name="figure.png"):
    assert isinstance(fig, Figure)
    path = plots.save_figure(fig, tmp_path / "nested" / "plots" / name)
    content = path.read_bytes()
    assert content.startswith(PNG_MAGIC) and len(content) > 1000


@pytest.mark.parametrize("scale", ["log", "row"])
def test_confusion_matrix(predictions, tmp_path, scale):
    labels, probs, _ = predictions
    cm = compute_metrics(labels, probs)["confusion_matrix"]
    _check_saved(plots.plot_confusion_matrix(cm, scale=scale), tmp_path)


def test_confusion_matrix_all_zero_and_bad_scale(tmp_path):
    _check_saved(plots.plot_confusion_matrix(np.zeros((10, 10), dtype=np.int64)), tmp_path)
    with pytest.raises(ValueError, match="scale"):
        plots.plot_confusion_matrix(np.eye(10), scale="linear")


def test_per_class(predictions, tmp_path):
    labels, probs, _ = predictions
    _check_saved(plots.plot_per_class(compute_metrics(labels, probs)), tmp_path)


@pytest.mark.parametrize("as_float", [False, True])
def test_misclassified_gallery(predictions, tmp_path, as_float):
    labels, probs, images = predictions
    if as_float:
        images = images.float().unsqueeze(1) / 255  # (N, 1, 28, 28) floats also work
    mistakes = misclassified(labels, probs)
    assert mistakes
    _check_saved(plots.plot_misclassified(images, mistakes, max_images=20), tmp_path)


def test_misclassified_gallery_empty(tmp_path):
    _check_saved(plots.plot_misclassified(np.zeros((3, 28, 28), dtype=np.uint8), []), tmp_path)


@pytest.mark.parametrize(
    "history",
    [
        [
            dict(epoch=e, train_loss=1 / e, train_acc=1 - 0.5 / e, val_loss=1.2 / e,
                 val_acc=1 - 0.6 / e, lr=0.1 / e)
            for e in range(1, 6)
        ],
        # partial: no epoch key, None and NaN values
        [dict(train_loss=0.5), dict(train_loss=0.3, val_loss=None), dict(train_loss=math.nan)],
        [dict(epoch=1, lr=0.0), dict(epoch=2, lr=0.01)],  # lr that reaches 0: linear axis
        [],
    ],
    ids=["full", "missing_keys", "lr_only", "empty"],
)
def test_training_curves(history, tmp_path):
    _check_saved(plots.plot_training_curves(history), tmp_path)


def test_reliability_diagram(predictions, tmp_path):
    labels, probs, _ = predictions
    _check_saved(plots.plot_reliability_diagram(labels, probs), tmp_path)


@pytest.mark.parametrize(
    "rows, std_key",
    [
        (
            [
                dict(model=m, dataset=d, accuracy=acc, accuracy_std=0.002)
                for m, base in (("simple_cnn_v1.s0", 0.99), ("mlp_v1.s0", 0.975))
                for d, acc in (("mnist-test", base), ("mnist-test-augmented", base - 0.08))
            ],
            "accuracy_std",
        ),
        # gaps: a model without the metric, a row without a dataset
        ([dict(model="a", dataset="x", accuracy=0.9), dict(model="b", accuracy=None)], None),
        ([dict(model="a", dataset="x", loss=0.1)], None),  # metric absent everywhere
    ],
    ids=["grid", "gaps", "no_metric"],
)
def test_comparison(rows, std_key, tmp_path):
    _check_saved(plots.plot_comparison(rows, "accuracy", std_key=std_key), tmp_path)


@pytest.mark.parametrize(
    "rows",
    [
        [
            dict(model=f"simple_cnn-v1/run1@epoch-{e}", dataset=d, epoch=e, accuracy=0.9 + e / 100)
            for e in (3, 1, 2)
            for d in ("mnist-test", "mnist-test-augmented")
        ],
        [dict(model="a@epoch-1", dataset="x", epoch=1, accuracy=0.9),
         dict(model="b@epoch-2", dataset="x", epoch=2, accuracy=0.8),
         dict(model="b@best", dataset="x", epoch=None, accuracy=0.8)],
        [],
    ],
    ids=["one_run", "two_runs", "empty"],
)
def test_metric_by_epoch(rows, tmp_path):
    _check_saved(plots.plot_metric_by_epoch(rows, "accuracy"), tmp_path)


def test_save_figure_closes_pyplot_figures(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    fig = plt.figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    number = fig.number
    plots.save_figure(fig, tmp_path / "pyplot.png")
    assert not plt.fignum_exists(number)
    assert (tmp_path / "pyplot.png").stat().st_size > 0
