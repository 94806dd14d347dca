"""Every plot returns a Figure that draws exactly its data (bar heights, line points, image
arrays, cell counts read back from the axes) and saves as a PNG, including on odd inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from digitnet.evaluation import plots
from digitnet.evaluation.metrics import ECE_BINS, compute_metrics, misclassified
from digitnet.figures import save_figure

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
    path = save_figure(fig, tmp_path / "nested" / "plots" / name)
    content = path.read_bytes()
    assert content.startswith(PNG_MAGIC) and len(content) > 1000


def _cell_texts(ax) -> dict[tuple[int, int], str]:
    """{(row, column): text} of the numbers written in a heatmap's cells."""
    return {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
            for t in ax.texts}


@pytest.mark.parametrize("scale", ["log", "row"])
def test_confusion_matrix(predictions, tmp_path, scale):
    labels, probs, _ = predictions
    cm = np.array(compute_metrics(labels, probs)["confusion_matrix"])
    fig = plots.plot_confusion_matrix(cm, scale=scale)
    ax = fig.axes[0]
    drawn = ax.images[0].get_array()
    if scale == "log":  # counts, zero cells masked (white)
        np.testing.assert_array_equal(np.ma.filled(drawn, 0), cm)
        assert (np.ma.getmaskarray(drawn) == (cm == 0)).all()
    else:  # the fraction of each true class
        np.testing.assert_allclose(drawn, cm / cm.sum(axis=1, keepdims=True), rtol=1e-12)
    assert _cell_texts(ax) == {(i, j): str(cm[i, j]) for i, j in zip(*np.nonzero(cm))}
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(c) for c in range(10)]
    accuracy = np.trace(cm) / cm.sum()
    assert ax.get_title() == f"Confusion matrix (n=200, accuracy {accuracy:.4f})"
    _check_saved(fig, tmp_path)


def test_confusion_matrix_all_zero_and_bad_scale(tmp_path):
    fig = plots.plot_confusion_matrix(np.zeros((10, 10), dtype=np.int64))
    assert np.ma.getmaskarray(fig.axes[0].images[0].get_array()).all() and not fig.axes[0].texts
    _check_saved(fig, tmp_path)
    with pytest.raises(ValueError, match="scale"):
        plots.plot_confusion_matrix(np.eye(10), scale="linear")


def test_per_class(predictions, tmp_path):
    labels, probs, _ = predictions
    metrics = compute_metrics(labels, probs)
    fig = plots.plot_per_class(metrics)
    ax = fig.axes[0]
    heights = [bar.get_height() for bar in ax.patches]
    assert heights == [r["precision"] for r in metrics["per_class"]] + [
        r["recall"] for r in metrics["per_class"]]  # precision bars, then recall bars
    centres = [bar.get_x() + bar.get_width() / 2 for bar in ax.patches]
    assert centres == pytest.approx([c - 0.2 for c in range(10)] + [c + 0.2 for c in range(10)])
    lowest = min(heights)
    assert ax.get_ylim()[0] <= lowest and ax.get_ylim()[1] > 1.0  # every bar in view
    _check_saved(fig, tmp_path)


@pytest.mark.parametrize("as_float", [False, True])
def test_misclassified_gallery(predictions, tmp_path, as_float):
    labels, probs, images = predictions
    if as_float:
        images = images.float().unsqueeze(1) / 255  # (N, 1, 28, 28) floats also work
    mistakes = misclassified(labels, probs)
    assert len(mistakes) > 20  # more than are shown
    fig = plots.plot_misclassified(images, mistakes, max_images=20, ncols=8)
    (ax,) = fig.axes  # one montage, not one axes per digit
    (drawn,) = ax.images
    assert drawn.get_clim() == ((0, 1.0) if as_float else (0, 255))
    grid = drawn.get_array()
    captions = list(ax.texts)
    assert len(captions) == 20
    for k, (m, caption) in enumerate(zip(mistakes, captions)):  # most confident first, in order
        top, left = plots.montage_cell(k, 8, (28, 28))
        expected = images[m["index"]].reshape(28, 28).numpy()
        np.testing.assert_array_equal(grid[top : top + 28, left : left + 28], expected)
        assert not np.ma.getmaskarray(grid[top : top + 28, left : left + 28]).any()
        assert caption.get_text() == f"{m['label']}→{m['pred']} {m['prob']:.2f}"
        x, y = caption.get_position()  # centred over its digit, just above it
        assert left <= x <= left + 28 and top - plots.MONTAGE_CAPTION <= y < top
    shown = sum(~np.ma.getmaskarray(grid).ravel())
    assert shown == 20 * 28 * 28  # nothing else is drawn: gaps and caption rows are background
    assert fig._suptitle.get_text().endswith(f"20 of {len(mistakes)}")
    _check_saved(fig, tmp_path)


def test_misclassified_gallery_empty(tmp_path):
    fig = plots.plot_misclassified(np.zeros((3, 28, 28), dtype=np.uint8), [])
    assert not any(ax.images for ax in fig.axes)
    assert fig.axes[0].texts[0].get_text() == "no misclassified examples"
    _check_saved(fig, tmp_path)


EPOCHS = range(1, 6)


@pytest.mark.parametrize(
    "history, expected",
    [
        (
            [dict(epoch=e, train_loss=1 / e, train_acc=1 - 0.5 / e, val_loss=1.2 / e,
                  val_acc=1 - 0.6 / e, lr=0.1 / e) for e in EPOCHS],
            {("loss", "linear"): {"train": (list(EPOCHS), [1 / e for e in EPOCHS]),
                                  "val": (list(EPOCHS), [1.2 / e for e in EPOCHS])},
             ("accuracy", "linear"): {"train": (list(EPOCHS), [1 - 0.5 / e for e in EPOCHS]),
                                      "val": (list(EPOCHS), [1 - 0.6 / e for e in EPOCHS])},
             ("learning rate", "log"): {"lr": (list(EPOCHS), [0.1 / e for e in EPOCHS])}},
        ),
        # partial: no epoch key (position instead), None and NaN values skipped
        ([dict(train_loss=0.5), dict(train_loss=0.3, val_loss=None), dict(train_loss=math.nan)],
         {("loss", "linear"): {"train": ([1, 2], [0.5, 0.3])}}),
        ([dict(epoch=1, lr=0.0), dict(epoch=2, lr=0.01)],  # lr that reaches 0: linear axis
         {("learning rate", "linear"): {"lr": ([1, 2], [0.0, 0.01])}}),
        ([], {}),
    ],
    ids=["full", "missing_keys", "lr_only", "empty"],
)
def test_training_curves(history, expected, tmp_path):
    fig = plots.plot_training_curves(history)
    drawn = {(ax.get_ylabel(), ax.get_yscale()): {
        line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines}
        for ax in fig.axes if ax.lines}
    assert drawn == expected
    if not expected:
        assert fig.axes[0].texts[0].get_text() == "no training metrics recorded"
    _check_saved(fig, tmp_path)


def test_reliability_diagram(predictions, tmp_path):
    labels, probs, _ = predictions
    fig = plots.plot_reliability_diagram(labels, probs)
    top, bottom = fig.axes
    # independently: 15 equal-width bins, right-closed, of the top probability
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    index = np.ceil(confidence * ECE_BINS).astype(int) - 1
    filled = sorted(set(index.tolist()))
    accuracy_bars = top.patches[:len(filled)]
    assert len(top.patches) == 2 * len(filled)  # accuracy bars, then gap outlines
    assert [b.get_x() + b.get_width() / 2 for b in accuracy_bars] == pytest.approx(
        [(b + 0.5) / ECE_BINS for b in filled])
    assert [b.get_height() for b in accuracy_bars] == pytest.approx(
        [correct[index == b].mean() for b in filled])
    gaps = [abs(correct[index == b].mean() - confidence[index == b].mean()) for b in filled]
    assert [b.get_height() for b in top.patches[len(filled):]] == pytest.approx(gaps)
    assert [b.get_height() for b in bottom.patches] == [np.sum(index == b) for b in filled]
    ece = compute_metrics(labels, probs)["ece"]
    assert top.get_title() == f"Reliability diagram (ECE {ece:.4f}, 15 bins)"
    _check_saved(fig, tmp_path)


@pytest.mark.parametrize(
    "rows, std_key, expected",
    [
        (
            [
                dict(model=m, dataset=d, accuracy=acc, accuracy_std=0.002)
                for m, base in (("simple_cnn_v1.s0", 0.99), ("mlp_v1.s0", 0.975))
                for d, acc in (("mnist-test", base), ("mnist-test-augmented", base - 0.08))
            ],
            "accuracy_std",
            # one bar per (dataset, model): datasets in turn, models left to right
            [(-0.2, 0.99, "0.99±0.002"), (0.8, 0.975, "0.975±0.002"),
             (0.2, 0.91, "0.91±0.002"), (1.2, 0.895, "0.895±0.002")],
        ),
        # gaps: a model without the metric, a row without a dataset
        ([dict(model="a", dataset="x", accuracy=0.9), dict(model="b", accuracy=None)], None,
         [(0.0, 0.9, "0.9")]),
        ([dict(model="a", dataset="x", loss=0.1)], None, []),  # metric absent everywhere
    ],
    ids=["grid", "gaps", "no_metric"],
)
def test_comparison(rows, std_key, expected, tmp_path):
    fig = plots.plot_comparison(rows, "accuracy", std_key=std_key)
    ax = fig.axes[0]
    assert [b.get_x() + b.get_width() / 2 for b in ax.patches] == pytest.approx(
        [x for x, _, _ in expected])
    assert [b.get_height() for b in ax.patches] == pytest.approx([h for _, h, _ in expected])
    labels = [t.get_text() for t in ax.texts]
    if expected:
        assert labels == [text for _, _, text in expected]
        models = list(dict.fromkeys(r["model"] for r in rows if r.get("accuracy") is not None))
        assert [t.get_text() for t in ax.get_xticklabels()] == models
    else:
        assert labels == ["no results with 'accuracy'"]
    _check_saved(fig, tmp_path)


@pytest.mark.parametrize(
    "rows, expected",
    [
        (
            [
                dict(model=f"simple_cnn-v1/run1@epoch-{e}", dataset=d, epoch=e,
                     accuracy=0.9 + e / 100 - (d != "mnist-test") / 10)
                for e in (3, 1, 2)
                for d in ("mnist-test", "mnist-test-augmented")
            ],
            {"mnist-test": ([1, 2, 3], [0.91, 0.92, 0.93]),  # sorted by epoch
             "mnist-test-augmented": ([1, 2, 3], [0.81, 0.82, 0.83])},
        ),
        ([dict(model="a@epoch-1", dataset="x", epoch=1, accuracy=0.9),
          dict(model="b@epoch-2", dataset="x", epoch=2, accuracy=0.8),
          dict(model="b@best", dataset="x", epoch=None, accuracy=0.8)],
         {"a on x": ([1], [0.9]), "b on x": ([2], [0.8])}),
        ([], {}),
    ],
    ids=["one_run", "two_runs", "empty"],
)
def test_metric_by_epoch(rows, expected, tmp_path):
    fig = plots.plot_metric_by_epoch(rows, "accuracy")
    lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
             for line in fig.axes[0].lines}
    assert lines.keys() == expected.keys()
    for label, (xs, ys) in expected.items():
        assert lines[label][0] == xs and lines[label][1] == pytest.approx(ys)
    _check_saved(fig, tmp_path)


def test_save_figure_closes_pyplot_figures(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    fig = plt.figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    number = fig.number
    save_figure(fig, tmp_path / "pyplot.png")
    assert not plt.fignum_exists(number)
    assert (tmp_path / "pyplot.png").stat().st_size > 0
