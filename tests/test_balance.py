"""Class balance (data/balance.py): the report of counts, ratio and warnings, and the policies
that even classes out, deterministically."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from digitnet.data.balance import balance_indices, balance_report


@pytest.mark.parametrize(
    "counts, ratio, missing, few",
    [
        ([10] * 10, 1.0, [], []),
        ([20] + [10] * 9, 2.0, [], []),
        ([30, 5] + [10] * 8, 6.0, [], [1]),
        ([10] * 9 + [0], None, [9], []),
        ([0, 0, 3] + [12] * 7, None, [0, 1], [2]),
    ],
)
def test_balance_report(counts, ratio, missing, few):
    labels = np.repeat(np.arange(10), counts)
    report = balance_report(labels, min_per_class=10)
    assert report["class_counts"] == counts and report["count"] == sum(counts)
    assert report["imbalance_ratio"] == ratio
    assert report["missing_classes"] == missing and report["under_threshold"] == few
    assert len(report["warnings"]) == bool(missing) + bool(few)
    json.dumps(report, allow_nan=False)


@pytest.mark.parametrize("policy, expected", [("undersample", 2), ("oversample", 7)])
def test_balance_policies_give_equal_counts(policy, expected):
    labels = torch.tensor([0] * 7 + [1] * 3 + [2] * 2 + [5] * 4)
    idx = balance_indices(labels, policy)
    counts = torch.bincount(labels[idx], minlength=10).tolist()
    assert counts == [expected, expected, expected, 0, 0, expected, 0, 0, 0, 0]
    assert torch.equal(idx, balance_indices(labels, policy))  # deterministic
    picks = {tuple(balance_indices(labels, policy, seed=s).tolist()) for s in range(5)}
    assert len(picks) > 1  # ...yet a random pick: other seeds choose other examples
    if policy == "oversample":
        assert set(range(len(labels))) <= set(idx.tolist())  # every example kept
    else:
        assert len(set(idx.tolist())) == len(idx)
    assert balance_indices(labels, "none").tolist() == list(range(len(labels)))
