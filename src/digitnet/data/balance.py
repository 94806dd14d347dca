"""Class balance of an ingested dataset: the policies that even it out when it is combined into a
training set, and the report of its counts and warnings that ingestion prints.
"""

from __future__ import annotations

import numpy as np
import torch

from digitnet.constants import NUM_CLASSES
from digitnet.data.stats import class_distribution
from digitnet.errors import DigitnetError

BALANCE_POLICIES = ("none", "undersample", "oversample")
BALANCE_SEED = 0  # fixed: which examples a policy drops or repeats is part of the data definition
DEFAULT_MIN_PER_CLASS = 10  # fewer examples of a class than this draws a warning


def check_policy(policy: str) -> None:
    if policy not in BALANCE_POLICIES:
        raise DigitnetError(f"balance policy {policy!r}: expected one of "
                            f"{', '.join(BALANCE_POLICIES)}")


def balance_indices(labels: torch.Tensor, policy: str, seed: int = BALANCE_SEED) -> torch.Tensor:
    """Indices that give each class present in `labels` the same count, deterministically.

    `undersample` keeps a random `min count` examples of each class; `oversample` keeps every
    example and repeats those of smaller classes (whole copies, then a random part) up to the
    max count. Absent classes stay absent. The result is sorted.

    Raises:
        DigitnetError: unknown policy.
    """
    check_policy(policy)
    if policy == "none" or len(labels) == 0:
        return torch.arange(len(labels))
    counts = torch.bincount(labels, minlength=NUM_CLASSES)
    present = counts[counts > 0]
    target = int(present.min() if policy == "undersample" else present.max())
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in range(NUM_CLASSES):
        members = torch.nonzero(labels == c).flatten()
        if not len(members):
            continue
        order = members[torch.randperm(len(members), generator=g)]
        if policy == "undersample":
            picked.append(order[:target])
        else:
            repeats, rest = divmod(target, len(members))
            picked.append(torch.cat([members.repeat(repeats), order[:rest]]))
    return torch.sort(torch.cat(picked)).values


def balance_report(labels: np.ndarray, min_per_class: int = DEFAULT_MIN_PER_CLASS) -> dict:
    """Counts per class, imbalance ratio (max/min; None when a class is missing) and warnings."""
    dist = class_distribution(np.asarray(labels))
    counts = dist["counts"]
    missing = [c for c in range(NUM_CLASSES) if counts[c] == 0]
    few = [c for c in range(NUM_CLASSES) if 0 < counts[c] < min_per_class]
    warnings = []
    if missing:
        warnings.append(f"class{'es' * (len(missing) > 1)} {', '.join(map(str, missing))} "
                        f"missing: a model trained on this alone cannot learn "
                        f"{'them' if len(missing) > 1 else 'it'}")
    if few:
        listed = ", ".join(f"{c} ({counts[c]})" for c in few)
        warnings.append(f"fewer than {min_per_class} examples of "
                        f"class{'es' * (len(few) > 1)} {listed}")
    return dict(count=dist["total"], class_counts=counts, imbalance_ratio=dist["imbalance_ratio"],
                missing_classes=missing, under_threshold=few, min_per_class=min_per_class,
                warnings=warnings)
