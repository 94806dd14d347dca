"""Statistics of a labelled set of uint8 digit images: class balance, pixel statistics, ink per
class, mean images, deterministic samples and exact duplicates.

Pure functions of numpy arrays (tiny data tests them), JSON-able results; `digitnet data explore`
(data/explore.py) reports them and ingestion (data/balance.py) checks class balance with them.
"""

from __future__ import annotations

import numpy as np

from digitnet.constants import MNIST_MEAN, MNIST_STD, NUM_CLASSES
from digitnet.errors import DigitnetError

PIXEL_MAX = 255  # uint8 full ink
SAMPLES_PER_CLASS = 10
SAMPLE_SEED = 0  # fixed, so the sample grid is the same picture on every run
MAX_EXAMPLES = 5  # duplicate groups listed per scope in stats.json and the report
CONSTANT_TOLERANCE = 5e-5  # constants.py keeps 4 decimals, so they agree to half a unit in the last
_CHUNK = 1 << 22  # pixels per bincount chunk: bounds its int64 temporary to 32 MB


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
