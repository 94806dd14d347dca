"""Figures for evaluation reports: each function returns a matplotlib Figure; the caller saves it
with `save_figure` (digitnet/figures.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps as plt_colormaps
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from digitnet.constants import LABEL_NAMES
from digitnet.evaluation.metrics import ECE_BINS, reliability_bins

__all__ = [
    "montage", "montage_cell", "plot_comparison", "plot_confusion_matrix", "plot_metric_by_epoch",
    "plot_misclassified", "plot_per_class", "plot_reliability_diagram", "plot_training_curves",
]

def _text_color(rgba) -> str:
    """Black or white, whichever reads better on a cell of colour `rgba`."""
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def plot_confusion_matrix(
    cm,
    label_names: Sequence[str] = LABEL_NAMES,
    scale: str = "log",
    title: str | None = None,
) -> Figure:
    """Heatmap of a confusion matrix (rows true, columns predicted) with every count written in.

    Args:
        cm: counts (C, C), numpy array or list of lists (as in `compute_metrics`).
        label_names: tick labels, one per class.
        scale: "log" colours by count on a log scale, so that rare confusions stand out next to
            the large diagonal; "row" colours by the fraction of each true class (recall).
        title: optional figure title.

    Raises:
        ValueError: unknown `scale`.
    """
    cm = np.asarray(cm, dtype=np.int64)
    n = len(cm)
    if scale == "log":
        values = np.ma.masked_less(cm.astype(float), 1)  # zero cells stay white
        norm = LogNorm(vmin=1, vmax=max(2, int(cm.max())))
        colorbar_label = "count (log scale)"
    elif scale == "row":
        values = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        norm = Normalize(vmin=0.0, vmax=1.0)
        colorbar_label = "fraction of true class"
    else:
        raise ValueError(f"scale must be 'log' or 'row', got {scale!r}")
    side = max(4.0, 0.55 * n + 1.5)
    fig = Figure(figsize=(side + 1.0, side))
    ax = fig.subplots()
    image = ax.imshow(values, cmap="Blues", norm=norm)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=colorbar_label)
    fontsize = 8 if cm.max() < 1000 else 7
    for i in range(n):
        for j in range(n):
            if cm[i, j] == 0:
                continue
            color = _text_color(image.cmap(norm(values[i, j])))
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=fontsize, color=color)
    ax.set_xticks(range(n), label_names[:n])
    ax.set_yticks(range(n), label_names[:n])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = np.trace(cm) / max(int(cm.sum()), 1)
    ax.set_title(title or f"Confusion matrix (n={int(cm.sum())}, accuracy {accuracy:.4f})")
    fig.tight_layout()
    return fig


def plot_per_class(metrics: Mapping, title: str | None = None) -> Figure:
    """Grouped bars of precision and recall for each class.

    The y axis starts just below the lowest bar (it says where), since MNIST scores sit near 1.

    Args:
        metrics: a `compute_metrics` result (uses its "per_class" list).
        title: optional figure title.
    """
    rows = metrics["per_class"]
    labels = [str(r["label"]) for r in rows]
    precision = np.array([r["precision"] for r in rows])
    recall = np.array([r["recall"] for r in rows])
    x = np.arange(len(rows))
    width = 0.4
    fig = Figure(figsize=(max(6.0, 0.6 * len(rows) + 1.0), 4.0))
    ax = fig.subplots()
    ax.bar(x - width / 2, precision, width, label="precision", color="tab:blue")
    ax.bar(x + width / 2, recall, width, label="recall", color="tab:orange")
    lowest = float(min(precision.min(initial=1.0), recall.min(initial=1.0)))
    bottom = max(0.0, math.floor((1.0 - 1.3 * (1.0 - lowest)) * 100) / 100 - 0.01)
    ax.set_ylim(bottom, 1.0 + 0.1 * (1.0 - bottom))
    ax.set_xticks(x, labels)
    ax.set_xlabel("class")
    ax.set_ylabel(f"score (axis starts at {bottom:.2f})" if bottom > 0 else "score")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title or "Per-class precision and recall")
    fig.tight_layout()
    return fig


MONTAGE_GAP = 2  # pixels between the digits of a gallery
MONTAGE_CAPTION = 9  # pixels above each digit for its caption


def montage(images: np.ndarray, ncols: int) -> np.ma.MaskedArray:
    """Images (N, H, W) side by side, `ncols` per row, in one masked array: the gaps and the
    caption rows above each image are masked (drawn as the background)."""
    n, h, w = images.shape
    nrows = max(1, math.ceil(n / ncols))
    cell_h, cell_w = MONTAGE_CAPTION + h + MONTAGE_GAP, w + MONTAGE_GAP
    out = np.ma.masked_array(np.zeros((nrows * cell_h, ncols * cell_w)), mask=True)
    for k, image in enumerate(images):
        top, left = (k // ncols) * cell_h + MONTAGE_CAPTION, (k % ncols) * cell_w
        out[top : top + h, left : left + w] = image
    return out


def montage_cell(k: int, ncols: int, shape: tuple[int, int]) -> tuple[int, int]:
    """(top, left) of image k's pixels in `montage(..., ncols)` of images of `shape`."""
    h, w = shape
    return ((k // ncols) * (MONTAGE_CAPTION + h + MONTAGE_GAP) + MONTAGE_CAPTION,
            (k % ncols) * (w + MONTAGE_GAP))


def plot_misclassified(
    images,
    mistakes: Sequence[Mapping],
    label_names: Sequence[str] = LABEL_NAMES,
    ncols: int = 8,
    max_images: int = 32,
    title: str | None = None,
) -> Figure:
    """Gallery of misclassified digits, each captioned "true→pred" and the predicted probability.

    The digits are drawn as one image (`montage`) with the captions above them: one axes instead
    of one per digit, several times faster to lay out and save.

    Args:
        images: all images of the evaluated set, (N, 28, 28) or (N, 1, 28, 28), uint8 or float.
        mistakes: a `misclassified` result (dicts with "index", "label", "pred", "prob").
        label_names: class names for the captions.
        ncols: images per row.
        max_images: show at most this many (the first ones, most confident mistakes first).
        title: optional figure title.
    """
    images = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    shown = list(mistakes)[:max_images]
    ncols = max(1, min(ncols, len(shown)))
    nrows = max(1, math.ceil(len(shown) / ncols))
    fig = Figure(figsize=(1.3 * ncols + 0.2, 1.5 * nrows + 0.5))
    ax = fig.subplots()
    ax.set_axis_off()
    vmax = 255 if images.dtype == np.uint8 else 1.0
    if shown:
        shape = images.shape[-2:]
        digits = np.stack([images[m["index"]].reshape(shape) for m in shown])
        cmap = plt_colormaps["gray"].with_extremes(bad="white")
        ax.imshow(montage(digits, ncols), cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
        for k, m in enumerate(shown):
            top, left = montage_cell(k, ncols, shape)
            caption = f"{label_names[m['label']]}→{label_names[m['pred']]} {m['prob']:.2f}"
            ax.text(left + shape[1] / 2 - 0.5, top - 1.5, caption, ha="center", va="bottom",
                    fontsize=8, color="tab:red")
    else:
        ax.text(0.5, 0.5, "no misclassified examples", ha="center", va="center")
    shown_of = f"{len(shown)} of {len(mistakes)}"
    fig.suptitle(title or f"Misclassified (true→pred, probability), {shown_of}")
    fig.tight_layout()
    return fig


def _series(history: Sequence[Mapping], key: str) -> tuple[list, list]:
    """(epochs, values) of `key` over the epochs where it is present, finite and not None."""
    xs, ys = [], []
    for i, row in enumerate(history):
        value = row.get(key)
        if value is None:
            continue
        value = float(value)
        if math.isfinite(value):
            xs.append(row.get("epoch", i + 1))
            ys.append(value)
    return xs, ys


def plot_training_curves(history: Sequence[Mapping], title: str | None = None) -> Figure:
    """Loss, accuracy and learning rate per epoch from a list of per-epoch metric dicts.

    Uses the keys "epoch" (else the 1-based position), "train_loss", "val_loss", "train_acc",
    "val_acc" and "lr"; a missing, None or NaN value is skipped, and a panel with no data at all
    is left out.

    Args:
        history: one dict per epoch, e.g. the rows of `metrics.jsonl`.
        title: optional figure title.
    """
    panels = [
        ("loss", [("train_loss", "train"), ("val_loss", "val")], False),
        ("accuracy", [("train_acc", "train"), ("val_acc", "val")], False),
        ("learning rate", [("lr", "lr")], True),
    ]
    panels = [p for p in panels if any(_series(history, key)[0] for key, _ in p[1])]
    fig = Figure(figsize=(4.2 * max(1, len(panels)), 3.6))
    if not panels:
        ax = fig.subplots()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no training metrics recorded", ha="center", va="center")
        return fig
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)).ravel()
    for ax, (name, keys, log_y) in zip(axes, panels):
        for key, label in keys:
            xs, ys = _series(history, key)
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=label)
        if log_y and all(y > 0 for key, _ in keys for y in _series(history, key)[1]):
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title or "Training curves")
    fig.tight_layout()
    return fig


def plot_reliability_diagram(
    labels, probs, n_bins: int = ECE_BINS, title: str | None = None
) -> Figure:
    """Accuracy against confidence per confidence bin, with the diagonal of perfect calibration.

    Bars below the diagonal mean over-confidence. A lower panel shows how many examples fall in
    each bin (log scale), since most predictions of a good model sit in the top bin.

    Args:
        labels: true classes (N,).
        probs: predicted probabilities (N, C).
        n_bins: equal-width confidence bins (as for the ECE in `compute_metrics`).
        title: optional figure title.
    """
    bins = reliability_bins(labels, probs, n_bins)
    edges, count = bins["edges"], bins["count"]
    centers = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    filled = count > 0
    weight = count / count.sum()
    ece = float(np.sum(weight * np.abs(bins["accuracy"] - bins["confidence"])))
    fig = Figure(figsize=(5.0, 6.0))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw=dict(height_ratios=[3, 1]))
    accuracy, confidence = bins["accuracy"][filled], bins["confidence"][filled]
    top.bar(centers[filled], accuracy, width=width * 0.95, color="tab:blue", edgecolor="black",
            linewidth=0.5, label="accuracy")
    top.bar(centers[filled], np.abs(confidence - accuracy), width=width * 0.95,
            bottom=np.minimum(accuracy, confidence), facecolor="none", edgecolor="tab:red",
            hatch="///", linewidth=0.8, label="gap to mean confidence")
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left")
    top.set_title(title or f"Reliability diagram (ECE {ece:.4f}, {n_bins} bins)")
    bottom.bar(centers[filled], count[filled], width=width * 0.95, color="gray")
    bottom.set_yscale("log")
    bottom.set_xlabel("confidence (top probability)")
    bottom.set_ylabel("examples")
    fig.tight_layout()
    return fig


def _bar_text(value: float, std: float) -> str:
    """"0.991", "0.991±0.001" when a std is known, "" for a missing bar."""
    if np.isnan(value):
        return ""
    return f"{value:.4g}" if np.isnan(std) else f"{value:.4g}±{std:.2g}"


def plot_comparison(
    rows: Sequence[Mapping],
    metric: str,
    model_key: str = "model",
    dataset_key: str = "dataset",
    std_key: str | None = None,
    title: str | None = None,
) -> Figure:
    """Grouped bars of one metric: one group per model, one bar per dataset, values written on top.

    Args:
        rows: flat result rows, e.g. {"model": "simple_cnn_v1.s0", "dataset": "mnist-test",
            "accuracy": 0.991}; rows without `metric` are skipped. Models and datasets keep the
            order of their first appearance.
        metric: the key to plot.
        model_key: the key naming the model of a row.
        dataset_key: the key naming the dataset of a row.
        std_key: optional key of a standard deviation (e.g. over seeds), drawn as error bars.
        title: optional figure title.
    """
    rows = [r for r in rows if r.get(metric) is not None]
    models = list(dict.fromkeys(str(r[model_key]) for r in rows))
    datasets = list(dict.fromkeys(str(r.get(dataset_key, "")) for r in rows))
    values = {(str(r[model_key]), str(r.get(dataset_key, ""))): r for r in rows}
    fig = Figure(figsize=(max(4.0, 1.2 + len(models) * (0.5 + 0.45 * len(datasets))) + 2.5, 4.2))
    ax = fig.subplots()
    if not rows:
        ax.set_axis_off()
        ax.text(0.5, 0.5, f"no results with {metric!r}", ha="center", va="center")
        return fig
    width = 0.8 / len(datasets)
    x = np.arange(len(models))
    for d, dataset in enumerate(datasets):
        offset = (d - (len(datasets) - 1) / 2) * width
        cells = [values.get((m, dataset), {}) for m in models]
        heights = [float(c.get(metric, np.nan)) for c in cells]
        errors = None if std_key is None else [float(c.get(std_key) or np.nan) for c in cells]
        bars = ax.bar(x + offset, heights, width * 0.95, yerr=errors, capsize=3,
                      label=dataset or None)
        stds = errors or [np.nan] * len(heights)
        ax.bar_label(bars, labels=[_bar_text(h, e) for h, e in zip(heights, stds)], fontsize=7,
                     padding=2)
    tilt = len(models) > 3 or len(models) * max(map(len, models)) > 60  # long names collide
    ax.set_xticks(x, models, rotation=20 if tilt else 0, ha="right" if tilt else "center")
    ax.set_ylabel(metric)
    ax.margins(y=0.12)
    ax.grid(axis="y", alpha=0.3)
    if any(datasets):
        ax.legend(title=dataset_key, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title or f"{metric} by {model_key} and {dataset_key}")
    fig.tight_layout()
    return fig


def plot_metric_by_epoch(
    rows: Sequence[Mapping],
    metric: str = "accuracy",
    model_key: str = "model",
    dataset_key: str = "dataset",
    epoch_key: str = "epoch",
    title: str | None = None,
) -> Figure:
    """One line per (run, dataset): `metric` of each checkpoint against its epoch.

    Args:
        rows: flat result rows with the epoch of the evaluated checkpoint, e.g. the rows of
            `compare` for `RUN@all`. A model named "RUN@epoch-3" belongs to the run "RUN" (the
            part before "@"). Rows without `metric` or an epoch are skipped.
        metric: the key to plot.
        model_key: the key naming the model (or checkpoint) of a row.
        dataset_key: the key naming the dataset of a row.
        epoch_key: the key holding the epoch.
        title: optional figure title.
    """
    series: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in rows:
        if r.get(metric) is None or r.get(epoch_key) is None:
            continue
        run = str(r[model_key]).split("@")[0]
        series.setdefault((run, str(r.get(dataset_key, ""))), []).append(
            (float(r[epoch_key]), float(r[metric]))
        )
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
    if not series:
        ax.set_axis_off()
        ax.text(0.5, 0.5, f"no results with {metric!r} and an epoch", ha="center", va="center")
        return fig
    several_runs = len({run for run, _ in series}) > 1
    for (run, dataset), points in series.items():
        epochs, values = zip(*sorted(points))
        label = f"{run} on {dataset}" if several_runs else dataset or run
        ax.plot(epochs, values, marker="o" if len(epochs) < 30 else None, markersize=3, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or f"{metric} of each checkpoint")
    fig.tight_layout()
    return fig
