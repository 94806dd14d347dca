"""Explore MNIST: class balance, pixel statistics, ink coverage, mean images, samples, duplicates.

`explore` computes every number into one JSON-able dict and writes PNG plots, `report.md` and
`stats.json`. The helpers are pure functions of numpy arrays, so they can be tested on tiny data.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from digitnet.constants import MNIST_MEAN, MNIST_STD, NUM_CLASSES
from digitnet.data.datasets import DEFAULT_VAL_SIZE, SPLIT_SEED, load_splits
from digitnet.errors import DigitnetError
from digitnet.evaluation.plots import save_figure
from digitnet.fileio import atomic_write_json, atomic_write_text

SPLITS = ("train", "val", "test")
PIXEL_MAX = 255  # uint8 full ink
SAMPLES_PER_CLASS = 10
SAMPLE_SEED = 0  # fixed, so the sample grid is the same picture on every run
MAX_EXAMPLES = 5  # duplicate groups listed per scope in stats.json and the report
CONSTANT_TOLERANCE = 5e-5  # constants.py keeps 4 decimals, so they agree to half a unit in the last
_CHUNK = 1 << 22  # pixels per bincount chunk: bounds its int64 temporary to 32 MB
PLOT_FILES = {
    "class_distribution": "class_distribution.png",
    "pixel_histogram": "pixel_histogram.png",
    "ink_coverage": "ink_coverage.png",
    "mean_images": "mean_images.png",
    "sample_grid": "sample_grid.png",
}


# ------------------------------------------------------------------------------ pure statistics
def class_distribution(labels: np.ndarray, num_classes: int = NUM_CLASSES) -> dict:
    """Counts and shares of each class, and the imbalance ratio (largest count / smallest count).

    Returns:
        dict with `total`, `counts`, `shares`, `min_class`, `max_class` and `imbalance_ratio`
        (None when a class has no examples, or there are no labels).

    Raises:
        DigitnetError: a label outside 0..num_classes-1.
    """
    labels = np.asarray(labels).astype(np.int64, copy=False)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DigitnetError(
            f"labels must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}"
        )
    counts = np.bincount(labels, minlength=num_classes)
    total = int(counts.sum())
    return {
        "total": total,
        "counts": [int(c) for c in counts],
        "shares": [float(c / total) if total else 0.0 for c in counts],
        "min_class": int(counts.argmin()),
        "max_class": int(counts.argmax()),
        "imbalance_ratio": float(counts.max() / counts.min()) if counts.min() > 0 else None,
    }


def _flatten(images: np.ndarray) -> np.ndarray:
    """(N, H, W) -> (N, H*W); unlike reshape(N, -1) this also works for N = 0."""
    images = np.asarray(images)
    return images.reshape(len(images), int(np.prod(images.shape[1:])))


def pixel_histogram(images: np.ndarray) -> np.ndarray:
    """How many pixels take each uint8 value: int64 (256,), counted in chunks to bound memory."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DigitnetError(f"expected uint8 images, got {images.dtype}")
    flat = images.reshape(-1)
    hist = np.zeros(PIXEL_MAX + 1, dtype=np.int64)
    for start in range(0, flat.size, _CHUNK):
        hist += np.bincount(flat[start : start + _CHUNK], minlength=PIXEL_MAX + 1)
    return hist


def stats_from_histogram(hist: np.ndarray) -> dict:
    """Mean and std (population) of pixels scaled to [0, 1], from a 256-bin value histogram.

    Returns:
        dict with `pixels`, `mean`, `std`, `zero_fraction` (background) and `full_fraction`
        (value 255); the floats are None when there are no pixels.
    """
    hist = np.asarray(hist, dtype=np.int64)
    n = int(hist.sum())
    if n == 0:
        return dict(pixels=0, mean=None, std=None, zero_fraction=None, full_fraction=None)
    values = np.arange(len(hist), dtype=np.float64) / PIXEL_MAX
    mean = float((hist * values).sum() / n)
    std = float(np.sqrt((hist * (values - mean) ** 2).sum() / n))
    return dict(
        pixels=n,
        mean=mean,
        std=std,
        zero_fraction=float(hist[0] / n),
        full_fraction=float(hist[PIXEL_MAX] / n),
    )


def pixel_stats(images: np.ndarray) -> dict:
    """Mean and std of uint8 `images` scaled to [0, 1], exact; see `stats_from_histogram`."""
    return stats_from_histogram(pixel_histogram(images))


def ink_by_class(images: np.ndarray, labels: np.ndarray, num_classes: int = NUM_CLASSES) -> dict:
    """Per class: mean fraction of pixels > 0 (`coverage`), mean pixel value (`intensity`, 0-1).

    Returns:
        dict with `coverage` and `intensity` (lists, None for an empty class) and their averages
        over all images, `coverage_all` and `intensity_all`.
    """
    flat = _flatten(images)
    labels = np.asarray(labels).astype(np.int64, copy=False)
    coverage = np.count_nonzero(flat, axis=1) / flat.shape[1]  # (N,)
    intensity = flat.sum(axis=1, dtype=np.int64) / (flat.shape[1] * PIXEL_MAX)  # (N,)
    counts = np.bincount(labels, minlength=num_classes)

    def per_class(values: np.ndarray) -> list:
        sums = np.bincount(labels, weights=values, minlength=num_classes)
        return [float(s / c) if c else None for s, c in zip(sums, counts)]

    return {
        "coverage": per_class(coverage),
        "intensity": per_class(intensity),
        "coverage_all": float(coverage.mean()) if len(flat) else None,
        "intensity_all": float(intensity.mean()) if len(flat) else None,
    }


def mean_images(
    images: np.ndarray, labels: np.ndarray, num_classes: int = NUM_CLASSES
) -> np.ndarray:
    """Each class's mean image in [0, 1]: float64 (num_classes, H, W), NaN for an empty class."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    means = np.full((num_classes, *images.shape[1:]), np.nan)
    for c in range(num_classes):
        members = images[labels == c]
        if len(members):
            means[c] = members.sum(axis=0, dtype=np.int64) / (len(members) * PIXEL_MAX)
    return means


def sample_indices(
    labels: np.ndarray,
    per_class: int = SAMPLES_PER_CLASS,
    seed: int = SAMPLE_SEED,
    num_classes: int = NUM_CLASSES,
) -> np.ndarray:
    """Deterministic random examples of each class: int64 (num_classes, per_class), sorted per row.

    A class with fewer than `per_class` examples fills the rest of its row with -1.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picked = np.full((num_classes, per_class), -1, dtype=np.int64)
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        k = min(per_class, len(members))
        picked[c, :k] = np.sort(rng.choice(members, size=k, replace=False))
    return picked


def _image_keys(images: np.ndarray) -> np.ndarray:
    """One key per image: its pixel bytes as a numpy void scalar, so equal keys mean equal bytes."""
    flat = np.ascontiguousarray(_flatten(images))
    return flat.view(np.dtype((np.void, flat.shape[1] * flat.itemsize))).ravel()


def _groups(
    ids: np.ndarray, labels: np.ndarray, min_size: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Group ids occurring at least `min_size` times in `ids`, and whether their labels disagree."""
    uniq, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    lo = np.full(len(uniq), np.iinfo(np.int64).max)
    hi = np.full(len(uniq), np.iinfo(np.int64).min)
    np.minimum.at(lo, inverse, labels)
    np.maximum.at(hi, inverse, labels)
    keep = counts >= min_size
    return uniq[keep], (lo != hi)[keep]


def find_duplicates(
    images: dict[str, np.ndarray], labels: dict[str, np.ndarray], max_examples: int = MAX_EXAMPLES
) -> dict:
    """Exact duplicate images (identical pixel bytes) within each split and across each pair.

    Args:
        images: split name -> uint8 images (N, H, W); all splits must share H and W.
        labels: split name -> labels (N,).
        max_examples: duplicate groups to list per scope, each as its members' split, index, label.

    Returns:
        dict with `unique_images`, `total_images`, `within` (per split: `groups`, `images` in
        groups, `redundant` = images - groups, `conflicting_label_groups`, `examples`) and
        `across` (per "a-b" pair: shared `groups`, images of a and of b in them, conflicts,
        examples).
    """
    names = list(images)
    split_of = np.concatenate([np.full(len(images[s]), i) for i, s in enumerate(names)])
    index_of = np.concatenate([np.arange(len(images[s])) for s in names])
    all_labels = np.concatenate([np.asarray(labels[s], dtype=np.int64) for s in names])
    keys = np.concatenate([_image_keys(images[s]) for s in names])
    _, group_of = np.unique(keys, return_inverse=True)  # (N_all,) group id per image
    group_of = group_of.ravel()

    def examples(groups: np.ndarray, mask: np.ndarray) -> list[list[dict]]:
        rows = []
        for g in groups[:max_examples]:
            members = np.flatnonzero((group_of == g) & mask)
            rows.append([
                dict(split=names[split_of[m]], index=int(index_of[m]), label=int(all_labels[m]))
                for m in members
            ])
        return rows

    within = {}
    for i, s in enumerate(names):
        mask = split_of == i
        groups, conflict = _groups(group_of[mask], all_labels[mask])
        in_groups = int(np.isin(group_of[mask], groups).sum())
        within[s] = dict(
            groups=len(groups),
            images=in_groups,
            redundant=in_groups - len(groups),
            conflicting_label_groups=int(conflict.sum()),
            examples=examples(groups, mask),
        )
    across = {}
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            b = names[j]
            shared = np.intersect1d(group_of[split_of == i], group_of[split_of == j])
            mask = ((split_of == i) | (split_of == j)) & np.isin(group_of, shared)
            groups, conflict = _groups(group_of[mask], all_labels[mask], min_size=1)
            across[f"{a}-{b}"] = {
                "groups": len(groups),
                f"images_{a}": int((mask & (split_of == i)).sum()),
                f"images_{b}": int((mask & (split_of == j)).sum()),
                "conflicting_label_groups": int(conflict.sum()),
                "examples": examples(groups, mask),
            }
    return dict(
        method="exact equality of the uint8 pixel bytes (numpy unique over a void view)",
        total_images=len(keys),
        unique_images=int(group_of.max() + 1) if len(keys) else 0,
        within=within,
        across=across,
    )


def split_stats(images: np.ndarray, labels: np.ndarray) -> dict:
    """Class distribution, pixel statistics and ink per class of one split."""
    hist = pixel_histogram(images)
    return dict(
        size=len(labels),
        class_distribution=class_distribution(labels),
        pixels=stats_from_histogram(hist),
        ink=ink_by_class(images, labels),
    )


def normalisation_stats(train_images: np.ndarray) -> dict:
    """Mean and std of the full original training set: the model input normalisation constants."""
    hist = pixel_histogram(train_images)
    stats = stats_from_histogram(hist)
    return dict(
        images=len(train_images),
        mean=stats["mean"],
        std=stats["std"],
        constants=dict(MNIST_MEAN=MNIST_MEAN, MNIST_STD=MNIST_STD),
        constants_agree=bool(
            abs(stats["mean"] - MNIST_MEAN) <= CONSTANT_TOLERANCE
            and abs(stats["std"] - MNIST_STD) <= CONSTANT_TOLERANCE
        ),
        histogram=[int(h) for h in hist],  # pixels per value 0..255
    )


# ------------------------------------------------------------------------------------ plots
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
    h, w = images.shape[1:]
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


# ----------------------------------------------------------------------------------- report
def _fmt(value, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def _examples_text(groups: list[list[dict]]) -> str:
    if not groups:
        return "none"
    return "; ".join(
        " = ".join(f"{m['split']}[{m['index']}] (label {m['label']})" for m in group)
        for group in groups
    )


def render_report(stats: dict) -> str:
    """The Markdown report: tables of every statistic, with the plots linked."""
    splits = stats["splits"]
    norm = stats["normalisation"]
    plots = stats["plots"]
    lines = [
        "# MNIST exploration",
        "",
        f"Data folder `{stats['data_dir']}`; validation split: {stats['val_size']:,} images, "
        f"stratified, seed {stats['split_seed']}, taken out of the original training images.",
        "",
        "## Normalisation constants",
        "",
        f"Pixels scaled to [0, 1] over all {norm['images']:,} original training images: "
        f"mean **{norm['mean']:.6f}**, std **{norm['std']:.6f}** "
        f"(`constants.py`: {MNIST_MEAN} and {MNIST_STD}, "
        f"{'agree' if norm['constants_agree'] else 'DISAGREE'} to {CONSTANT_TOLERANCE}).",
        "",
        "## Class distribution",
        "",
        f"![class distribution]({plots['class_distribution']})",
        "",
        "| class | " + " | ".join(f"{s} count | {s} share" for s in splits) + " |",
        "| --- | " + " | ".join("---: | ---:" for _ in splits) + " |",
    ]
    for c in range(NUM_CLASSES):
        cells = [
            f"{d['counts'][c]:,} | {d['shares'][c]:.2%}"
            for d in (splits[s]["class_distribution"] for s in splits)
        ]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    totals = [f"{splits[s]['class_distribution']['total']:,} | 100%" for s in splits]
    ratios = [
        f"{_fmt(splits[s]['class_distribution']['imbalance_ratio'], '.3f')} |" for s in splits
    ]
    lines += [
        "| total | " + " | ".join(totals) + " |",
        "| max/min | " + " | ".join(ratios) + " |",
        "",
        "## Pixel statistics",
        "",
        f"![pixel histogram]({plots['pixel_histogram']})",
        "",
        "| split | images | mean | std | pixels = 0 | pixels = 255 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s, split in splits.items():
        p = split["pixels"]
        lines.append(
            f"| {s} | {split['size']:,} | {_fmt(p['mean'])} | {_fmt(p['std'])} | "
            f"{_fmt(p['zero_fraction'], '.2%')} | {_fmt(p['full_fraction'], '.2%')} |"
        )
    lines += [
        "",
        "## Ink per class",
        "",
        "Coverage is the mean fraction of pixels > 0; intensity the mean pixel value in [0, 1].",
        "",
        f"![ink coverage]({plots['ink_coverage']})",
        "",
        "| class | " + " | ".join(f"{s} coverage" for s in splits) + " | "
        + " | ".join(f"{s} intensity" for s in splits) + " |",
        "| --- | " + " | ".join("---:" for _ in range(2 * len(splits))) + " |",
    ]
    for c in range(NUM_CLASSES):
        cov = [_fmt(splits[s]["ink"]["coverage"][c], ".3f") for s in splits]
        inten = [_fmt(splits[s]["ink"]["intensity"][c], ".3f") for s in splits]
        lines.append(f"| {c} | " + " | ".join(cov + inten) + " |")
    lines += [
        "",
        "## Mean image per class",
        "",
        f"![mean images]({plots['mean_images']})",
        "",
        "## Samples",
        "",
        f"{stats['samples']['per_class']} training images per class, chosen at random with seed "
        f"{stats['samples']['seed']} (indices into the train split are in `stats.json`).",
        "",
        f"![sample grid]({plots['sample_grid']})",
        "",
    ]
    lines += _duplicates_section(stats["duplicates"])
    return "\n".join(lines) + "\n"


def _duplicates_section(dups: dict) -> list[str]:
    lines = [
        "## Exact duplicates",
        "",
        f"Method: {dups['method']}. {dups['total_images']:,} images, "
        f"{dups['unique_images']:,} distinct.",
        "",
        "| within | duplicate groups | images in groups | redundant copies | conflicting labels "
        "| examples |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for s, d in dups["within"].items():
        lines.append(
            f"| {s} | {d['groups']:,} | {d['images']:,} | {d['redundant']:,} | "
            f"{d['conflicting_label_groups']:,} | {_examples_text(d['examples'])} |"
        )
    lines += [
        "",
        "| across | shared groups | images (first, second) | conflicting labels | examples |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for pair, d in dups["across"].items():
        a, b = pair.split("-")
        lines.append(
            f"| {pair} | {d['groups']:,} | {d[f'images_{a}']:,}, {d[f'images_{b}']:,} | "
            f"{d['conflicting_label_groups']:,} | {_examples_text(d['examples'])} |"
        )
    return lines


def format_summary(stats: dict) -> str:
    """A short plain-text table for the terminal."""
    norm = stats["normalisation"]
    header = (
        f"{'split':<6} {'images':>7} {'mean':>7} {'std':>7} {'smallest class':>15} "
        f"{'largest class':>14} {'max/min':>8} {'ink':>6} {'dup groups':>10}"
    )
    lines = [header]
    for s, split in stats["splits"].items():
        d = split["class_distribution"]
        lo, hi = d["min_class"], d["max_class"]
        smallest, largest = f"{lo}: {d['counts'][lo]:,}", f"{hi}: {d['counts'][hi]:,}"
        lines.append(
            f"{s:<6} {split['size']:>7,} {_fmt(split['pixels']['mean']):>7} "
            f"{_fmt(split['pixels']['std']):>7} {smallest:>15} "
            f"{largest:>14} {_fmt(d['imbalance_ratio'], '.3f'):>8} "
            f"{_fmt(split['ink']['coverage_all'], '.3f'):>6} "
            f"{stats['duplicates']['within'][s]['groups']:>10,}"
        )
    across = ", ".join(f"{p} {d['groups']}" for p, d in stats["duplicates"]["across"].items())
    lines += [
        f"normalisation (all {norm['images']:,} training images): mean {norm['mean']:.6f}, "
        f"std {norm['std']:.6f} ({'agrees' if norm['constants_agree'] else 'DISAGREES'} with "
        f"constants.py {MNIST_MEAN}/{MNIST_STD})",
        f"duplicate groups across splits: {across}",
        f"wrote {stats['out_dir']}/report.md, stats.json and {len(stats['plots'])} plots",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ orchestration
def compute_stats(
    images: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    train_images: np.ndarray,
    samples_per_class: int = SAMPLES_PER_CLASS,
) -> dict:
    """Every number of the exploration, for splits given as numpy arrays (JSON-able result)."""
    return dict(
        normalisation=normalisation_stats(train_images),
        splits={s: split_stats(images[s], labels[s]) for s in images},
        samples=dict(
            split="train",
            seed=SAMPLE_SEED,
            per_class=samples_per_class,
            indices=sample_indices(labels["train"], samples_per_class).tolist(),
        ),
        duplicates=find_duplicates(images, labels),
    )


def create_figures(
    stats: dict, images: dict[str, np.ndarray], labels: dict[str, np.ndarray]
) -> dict[str, Figure]:
    """The exploration plots, keyed like `PLOT_FILES`."""
    splits = stats["splits"]
    norm = stats["normalisation"]
    return {
        "class_distribution": plot_class_distribution(
            {s: splits[s]["class_distribution"] for s in splits}
        ),
        "pixel_histogram": plot_pixel_histogram(
            np.asarray(norm["histogram"]),
            f"Pixel values of the {norm['images']:,} original training images\n"
            f"scaled to [0, 1]: mean {norm['mean']:.4f}, std {norm['std']:.4f}",
        ),
        "ink_coverage": plot_ink_coverage({s: splits[s]["ink"] for s in splits}),
        "mean_images": plot_mean_images({s: mean_images(images[s], labels[s]) for s in images}),
        "sample_grid": plot_sample_grid(
            images["train"],
            np.asarray(stats["samples"]["indices"]),
            f"Training samples per class (seed {stats['samples']['seed']})",
        ),
    }


def explore(
    data_dir: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    val_size: int = DEFAULT_VAL_SIZE,
    samples_per_class: int = SAMPLES_PER_CLASS,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Explore MNIST's train, val and test splits; write plots, `report.md` and `stats.json`.

    Args:
        data_dir: MNIST folder; None follows $DIGITNET_DATA_DIR, then the user cache.
        out_dir: folder for the outputs (created if needed).
        val_size: images held out of the 60,000 training images as the stratified validation split.
        samples_per_class: columns of the sample grid.
        log: called with a short progress message before each step (e.g. `print`).

    Returns:
        The statistics, as written to `stats.json`.

    Raises:
        DigitnetError: the data cannot be loaded, or `val_size` is out of range.
    """
    log = log or (lambda message: None)
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    log("loading MNIST")
    splits = load_splits(data_dir, val_size)
    images = {s: splits[s].images.numpy() for s in SPLITS}
    labels = {s: splits[s].labels.numpy() for s in SPLITS}
    log(f"computing statistics ({time.perf_counter() - t0:.1f}s)")
    stats = dict(
        data_dir=str(splits["mnist"].data_dir),
        sha256=splits["mnist"].sha256,
        val_size=val_size,
        split_seed=SPLIT_SEED,
        out_dir=str(out_dir),
        plots=dict(PLOT_FILES),
    )
    train_images = splits["mnist"].train_images.numpy()  # all 60,000, for the normalisation
    stats.update(compute_stats(images, labels, train_images, samples_per_class))
    log(f"drawing plots ({time.perf_counter() - t0:.1f}s)")
    for key, fig in create_figures(stats, images, labels).items():
        save_figure(fig, out_dir / PLOT_FILES[key])
    atomic_write_text(out_dir / "report.md", render_report(stats))
    atomic_write_json(out_dir / "stats.json", stats)
    log(f"done ({time.perf_counter() - t0:.1f}s)")
    return stats
