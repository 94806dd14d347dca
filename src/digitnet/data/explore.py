"""Explore MNIST: class balance, pixel statistics, ink coverage, mean images, samples, duplicates.

`explore` computes every number (data/stats.py) into one JSON-able dict, draws the plots
(data/explore_plots.py) and writes them with `report.md` (its tables are rendered here) and
`stats.json`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from digitnet.constants import MNIST_MEAN, MNIST_STD, NUM_CLASSES
from digitnet.data.datasets import DEFAULT_VAL_SIZE, SPLIT_SEED, load_splits
from digitnet.data.explore_plots import (
    plot_class_distribution,
    plot_ink_coverage,
    plot_mean_images,
    plot_pixel_histogram,
    plot_sample_grid,
)
from digitnet.data.stats import (
    CONSTANT_TOLERANCE,
    SAMPLE_SEED,
    SAMPLES_PER_CLASS,
    find_duplicates,
    mean_images,
    normalisation_stats,
    sample_indices,
    split_stats,
)
from digitnet.figures import save_figure
from digitnet.fileio import atomic_write_json, atomic_write_text

SPLITS = ("train", "val", "test")
PLOT_FILES = {
    "class_distribution": "class_distribution.png",
    "pixel_histogram": "pixel_histogram.png",
    "ink_coverage": "ink_coverage.png",
    "mean_images": "mean_images.png",
    "sample_grid": "sample_grid.png",
}


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
        (f"Data folder `{stats['data_dir']}`; validation split: {stats['val_size']:,} images, "
         f"stratified, seed {stats['split_seed']}, taken out of the original training images."),
        "",
        "## Normalisation constants",
        "",
        (f"Pixels scaled to [0, 1] over all {norm['images']:,} original training images: "
         f"mean **{norm['mean']:.6f}**, std **{norm['std']:.6f}** "
         f"(`constants.py`: {MNIST_MEAN} and {MNIST_STD}, "
         f"{'agree' if norm['constants_agree'] else 'DISAGREE'} to {CONSTANT_TOLERANCE})."),
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
        (f"{stats['samples']['per_class']} training images per class, chosen at random with seed "
         f"{stats['samples']['seed']} (indices into the train split are in `stats.json`)."),
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
        (f"Method: {dups['method']}. {dups['total_images']:,} images, "
         f"{dups['unique_images']:,} distinct."),
        "",
        ("| within | duplicate groups | images in groups | redundant copies | conflicting labels "
         "| examples |"),
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
        (f"normalisation (all {norm['images']:,} training images): mean {norm['mean']:.6f}, "
         f"std {norm['std']:.6f} ({'agrees' if norm['constants_agree'] else 'DISAGREES'} with "
         f"constants.py {MNIST_MEAN}/{MNIST_STD})"),
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
