"""Figures of `digitnet data explore`: class balance, pixel histogram, ink coverage, mean images
and a sample grid. Each function returns a matplotlib Figure; the caller saves it.
"""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from digitnet.constants import NUM_CLASSES
from digitnet.data.stats import PIXEL_MAX


def plot_class_distribution(distributions: dict[str, dict]) -> Figure:
    """One bar chart per split: images per class, with the uniform share as a dashed line."""
    fig = Figure(figsize=(4.2 * len(distributions), 3.6), layout="constrained")
    axes = fig.subplots(1, len(distributions), squeeze=False)[0]
    for ax, (name, dist) in zip(axes, distributions.items()):
        classes = np.arange(len(dist["counts"]))
        bars = ax.bar(classes, dist["counts"], color="tab:blue")
        ax.bar_label(
            bars, fmt="{:,.0f}", label_type="center", rotation=90, color="white", fontsize=8
        )
        ax.axhline(dist["total"] / len(classes), color="gray", ls="--", lw=1)
        ratio = dist["imbalance_ratio"]
        ratio_text = f"{ratio:.2f}" if ratio is not None else "n/a"
        ax.set_title(f"{name}: {dist['total']:,} images, max/min = {ratio_text}", fontsize=10)
        ax.set_xlabel("digit class")
        ax.set_ylabel("images")
        ax.set_xticks(classes)
        ax.margins(y=0.08)
    fig.suptitle("Class distribution per split (dashed line: equal share per class)")
    return fig


def plot_pixel_histogram(hist: np.ndarray, title: str) -> Figure:
    """Bar chart of how many pixels take each value 0..255, on a log scale."""
    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.stairs(hist, np.arange(len(hist) + 1) - 0.5, fill=True, color="tab:gray")
    ax.set_yscale("log")
    ax.set_xlabel("pixel value (0 = background, 255 = full ink)")
    ax.set_ylabel("pixels (log scale)")
    ax.set_xlim(-3, len(hist) + 2)
    ax.set_title(title, fontsize=10)
    return fig


def plot_ink_coverage(inks: dict[str, dict]) -> Figure:
    """Grouped bars: mean fraction of pixels > 0 per class, one bar per split."""
    fig = Figure(figsize=(8, 3.8), layout="constrained")
    ax = fig.subplots()
    classes = np.arange(NUM_CLASSES)
    width = 0.8 / len(inks)
    for k, (name, ink) in enumerate(inks.items()):
        values = [np.nan if v is None else v for v in ink["coverage"]]
        ax.bar(classes + (k - (len(inks) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(classes)
    ax.set_xlabel("digit class")
    ax.set_ylabel("mean fraction of pixels > 0")
    ax.set_title("Ink coverage per class")
    ax.legend(title="split", fontsize=8)
    return fig


def plot_mean_images(means: dict[str, np.ndarray], pad: int = 2) -> Figure:
    """One row per split, one column per class: the class mean image (pixel values in [0, 1])."""
    tiles = np.stack(list(means.values()))  # (splits, classes, H, W)
    rows, cols, h, w = tiles.shape
    fig = Figure(figsize=(0.9 * cols + 1.6, 0.9 * rows + 1.0), layout="constrained")
    ax = fig.subplots()
    cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")  # white lines between tiles
    shown = ax.imshow(_montage(tiles, pad), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks(np.arange(cols) * (w + pad) + (w - 1) / 2, [f"digit {c}" for c in range(cols)])
    ax.set_yticks(np.arange(rows) * (h + pad) + (h - 1) / 2, list(means))
    ax.tick_params(length=0, labeltop=True, labelbottom=False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.colorbar(shown, ax=ax, shrink=0.8, label="mean pixel value")
    fig.suptitle("Mean image per class and split")
    return fig


def _montage(tiles: np.ndarray, pad: int = 2) -> np.ndarray:
    """(R, C, H, W) tiles -> one float (R*(H+pad)-pad, C*(W+pad)-pad) image, NaN in the gaps."""
    rows, cols, h, w = tiles.shape
    padded = np.full((rows, cols, h + pad, w + pad), np.nan)
    padded[:, :, :h, :w] = tiles
    montage = padded.transpose(0, 2, 1, 3).reshape(rows * (h + pad), cols * (w + pad))
    return montage[: rows * (h + pad) - pad, : cols * (w + pad) - pad]  # no gap after the last


def plot_sample_grid(images: np.ndarray, indices: np.ndarray, title: str, pad: int = 2) -> Figure:
    """Examples drawn as one image: row c shows `images[indices[c]]` (-1 leaves a blank)."""
    rows, cols = indices.shape
    h = images.shape[1]
    tiles = images[np.clip(indices, 0, None)].astype(np.float64)  # (rows, cols, H, W)
    tiles[indices < 0] = 0.0
    fig = Figure(figsize=(0.75 * cols + 1.0, 0.75 * rows + 0.6), layout="constrained")
    ax = fig.subplots()
    cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")  # white lines between tiles
    ax.imshow(_montage(tiles, pad), cmap=cmap, vmin=0, vmax=PIXEL_MAX, interpolation="nearest")
    ax.set_yticks(np.arange(rows) * (h + pad) + (h - 1) / 2, [f"digit {c}" for c in range(rows)])
    ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title)
    return fig
