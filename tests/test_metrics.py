"""Metrics against scikit-learn and hand-computed cases, including zero-division classes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from digitnet.errors import DigitnetError
from digitnet.evaluation.metrics import (
    SCALAR_METRICS,
    compute_metrics,
    confusion_matrix,
    expected_calibration_error,
    log_loss,
    misclassified,
    most_confused,
    per_class_scores,
    reliability_bins,
    top_k_accuracy,
)

CLASSES = list(range(10))


def _random_probs(labels: np.ndarray, seed: int, skill: float = 2.0) -> np.ndarray:
    """Softmax probabilities that favour the true class; every entry > 0."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(labels), 10))
    logits[np.arange(len(labels)), labels] += skill
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _case_random():
    labels = np.random.default_rng(0).integers(0, 10, size=300)
    return labels, _random_probs(labels, seed=1)


def _case_gaps():
    """Class 3 is never predicted and class 7 has no support (but is predicted)."""
    rng = np.random.default_rng(2)
    labels = rng.choice([c for c in CLASSES if c != 7], size=200)
    probs = _random_probs(labels, seed=3, skill=1.5)
    probs[:, 3] = 0.0
    probs[:5, 7] += 5.0  # make class 7 the prediction of a few examples
    probs[labels == 3, 3] = 1e-3  # class 3 keeps a small non-zero probability on its own examples
    probs /= probs.sum(axis=1, keepdims=True)
    return labels, probs


def _case_single_class_predicted():
    labels = np.arange(50) % 10
    probs = np.full((50, 10), 0.05)
    probs[:, 4] = 0.55
    return labels, probs


CASES = {
    "random": _case_random,
    "never_predicted_and_no_support": _case_gaps,
    "single_class_predicted": _case_single_class_predicted,
}


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request):
    return CASES[request.param]()


def test_confusion_matrix_matches_sklearn(case):
    labels, probs = case
    preds = probs.argmax(axis=1)
    expected = skm.confusion_matrix(labels, preds, labels=CLASSES)
    got = confusion_matrix(labels, preds)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)


def test_metrics_match_sklearn(case):
    labels, probs = case
    preds = probs.argmax(axis=1)
    m = compute_metrics(labels, probs)
    p, r, f, s = skm.precision_recall_fscore_support(
        labels, preds, labels=CLASSES, average=None, zero_division=0
    )
    np.testing.assert_allclose([c["precision"] for c in m["per_class"]], p, atol=1e-12)
    np.testing.assert_allclose([c["recall"] for c in m["per_class"]], r, atol=1e-12)
    np.testing.assert_allclose([c["f1"] for c in m["per_class"]], f, atol=1e-12)
    assert [c["support"] for c in m["per_class"]] == s.tolist()
    pm, rm, fm, _ = skm.precision_recall_fscore_support(
        labels, preds, labels=CLASSES, average="macro", zero_division=0
    )
    assert m["precision_macro"] == pytest.approx(pm, abs=1e-12)
    assert m["recall_macro"] == pytest.approx(rm, abs=1e-12)
    assert m["f1_macro"] == pytest.approx(fm, abs=1e-12)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds), abs=1e-12)
    assert m["loss"] == pytest.approx(skm.log_loss(labels, probs, labels=CLASSES), rel=1e-9)
    assert m["top2_accuracy"] == pytest.approx(
        skm.top_k_accuracy_score(labels, probs, k=2, labels=CLASSES), abs=1e-12
    )
    assert m["confusion_matrix"] == skm.confusion_matrix(labels, preds, labels=CLASSES).tolist()
    assert m["n"] == len(labels)


def test_metrics_are_json_and_never_nan(case):
    labels, probs = case
    m = compute_metrics(labels, probs)
    json.dumps(m, allow_nan=False)  # raises on NaN or a numpy type
    assert set(SCALAR_METRICS) <= set(m)
    assert all(isinstance(m[k], (int, float)) and math.isfinite(m[k]) for k in SCALAR_METRICS)


def test_zero_division_gives_zero():
    labels, probs = _case_gaps()
    m = compute_metrics(labels, probs)
    cm, per_class = np.array(m["confusion_matrix"]), m["per_class"]
    assert cm[:, 3].sum() == 0 and cm[3].sum() > 0  # class 3: examples, never predicted
    assert cm[7].sum() == 0 and cm[:, 7].sum() > 0  # class 7: predicted, no examples
    assert per_class[3]["precision"] == 0.0 and per_class[3]["recall"] == 0.0  # never predicted
    assert per_class[7]["support"] == 0 and per_class[7]["recall"] == 0.0  # no support
    assert per_class[7]["precision"] == 0.0 and per_class[7]["f1"] == 0.0


def test_hand_computed_three_classes():
    # true:  0 0 0 1 1 2 ; pred: 0 0 1 1 2 2
    labels = np.array([0, 0, 0, 1, 1, 2])
    preds = np.array([0, 0, 1, 1, 2, 2])
    probs = np.full((6, 3), 0.1)
    probs[np.arange(6), preds] = 0.8
    m = compute_metrics(labels, probs, num_classes=3)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    # precision: 2/2, 1/2, 1/2 ; recall: 2/3, 1/2, 1/1
    assert [c["precision"] for c in m["per_class"]] == pytest.approx([1.0, 0.5, 0.5])
    assert [c["recall"] for c in m["per_class"]] == pytest.approx([2 / 3, 0.5, 1.0])
    assert [c["f1"] for c in m["per_class"]] == pytest.approx([0.8, 0.5, 2 / 3])
    assert m["precision_macro"] == pytest.approx(2 / 3)
    assert m["recall_macro"] == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    assert m["f1_macro"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # p(true) is 0.8 for the 4 right answers and 0.1 for the 2 wrong ones
    assert m["loss"] == pytest.approx(-(4 * math.log(0.8) + 2 * math.log(0.1)) / 6)
    # every confidence is 0.8 (one bin): |4/6 - 0.8|
    assert m["ece"] == pytest.approx(abs(4 / 6 - 0.8))
    assert m["most_confused"] == [
        dict(label=0, pred=1, count=1),
        dict(label=1, pred=2, count=1),
    ]


@pytest.mark.parametrize(
    "confidence, correct_fraction, expected_ece",
    [
        (0.8, 0.8, 0.0),  # perfectly calibrated
        (1.0, 0.5, 0.5),  # over-confident
        (0.95, 0.75, 0.2),
        (0.5, 1.0, 0.5),  # under-confident
    ],
)
def test_ece_toy(confidence, correct_fraction, expected_ece):
    n = 20
    probs = np.full((n, 10), (1.0 - confidence) / 9)
    probs[:, 0] = confidence
    labels = np.where(np.arange(n) < round(correct_fraction * n), 0, 1)
    assert expected_calibration_error(labels, probs) == pytest.approx(expected_ece, abs=1e-12)


def test_ece_two_bins_weighted():
    # 10 examples at 0.9 confidence all right (gap 0.1), 10 at 0.6 with 3 right (gap 0.3)
    probs = np.zeros((20, 2))
    probs[:10] = [0.9, 0.1]
    probs[10:] = [0.6, 0.4]
    labels = np.array([0] * 10 + [0] * 3 + [1] * 7)
    assert expected_calibration_error(labels, probs) == pytest.approx(0.5 * 0.1 + 0.5 * 0.3)


def test_reliability_bins_edges_are_right_closed():
    probs = np.array([[1.0, 0.0], [0.6, 0.4], [0.5, 0.5]])
    bins = reliability_bins(np.array([0, 0, 0]), probs, n_bins=5)
    # 1.0 -> last bin (0.8, 1.0]; 0.6 -> (0.4, 0.6]; 0.5 -> (0.4, 0.6]
    assert bins["count"].tolist() == [0, 0, 1 + 1, 0, 1]
    assert bins["confidence"][2] == pytest.approx(0.55)


@pytest.mark.parametrize(
    "p_true, expected",
    [
        (1.0, 0.0),
        (0.5, math.log(2)),
        (0.0, -math.log(1e-15)),  # clipped, finite
    ],
)
def test_log_loss_clipping(p_true, expected):
    probs = np.array([[p_true, 1 - p_true]])
    assert log_loss(np.array([0]), probs) == pytest.approx(expected)


def test_top_k_accuracy_ties_and_k():
    probs = np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.4, 0.4, 0.2]])
    labels = np.array([1, 0, 1])
    assert top_k_accuracy(labels, probs, 1) == pytest.approx(0.0)
    assert top_k_accuracy(labels, probs, 2) == pytest.approx(2 / 3)
    assert top_k_accuracy(labels, probs, 3) == pytest.approx(1.0)


def test_most_confused_sorting_and_k():
    cm = np.array([[5, 2, 3], [3, 5, 0], [1, 0, 9]])
    assert most_confused(cm, k=3) == [
        dict(label=0, pred=2, count=3),
        dict(label=1, pred=0, count=3),
        dict(label=0, pred=1, count=2),
    ]
    assert most_confused(np.eye(3, dtype=np.int64) * 4) == []


def test_per_class_scores_all_zero_matrix():
    scores = per_class_scores(np.zeros((10, 10), dtype=np.int64))
    for key in ("precision", "recall", "f1"):
        assert not np.isnan(scores[key]).any() and (scores[key] == 0).all()


def test_misclassified_sorted_by_confidence():
    labels = np.array([0, 1, 2, 0, 1])
    probs = np.array(
        [
            [0.9, 0.05, 0.05],  # right
            [0.6, 0.3, 0.1],  # wrong, prob 0.6
            [0.1, 0.85, 0.05],  # wrong, prob 0.85
            [0.2, 0.2, 0.6],  # wrong, prob 0.6 (tie: lower index first)
            [0.1, 0.8, 0.1],  # right
        ]
    )
    got = misclassified(labels, probs)
    assert [m["index"] for m in got] == [2, 1, 3]
    assert got[0] == dict(index=2, label=2, pred=1, prob=0.85, label_prob=0.05)
    assert [m["index"] for m in misclassified(labels, probs, k=1)] == [2]


def test_accepts_torch_tensors():
    labels, probs = _case_random()
    from_numpy = compute_metrics(labels, probs)
    from_torch = compute_metrics(torch.from_numpy(labels), torch.from_numpy(probs).float())
    assert from_torch["confusion_matrix"] == from_numpy["confusion_matrix"]
    assert from_torch["loss"] == pytest.approx(from_numpy["loss"], rel=1e-5)


@pytest.mark.parametrize(
    "labels, probs, message",
    [
        (np.array([0, 1]), np.array([[2.0, -1.0], [0.0, 1.0]]), "non-negative"),
        (np.array([0, 1]), np.array([[3.0, 1.0], [0.5, 4.0]]), "not logits"),
        (np.array([0]), np.array([[0.5, 0.5], [0.5, 0.5]]), "must agree"),
        (np.array([0, 5]), np.array([[0.5, 0.5], [0.5, 0.5]]), "0..1"),
        (np.array([], dtype=np.int64), np.zeros((0, 2)), "no examples"),
        (np.array([0.0, 1.0]), np.array([[0.5, 0.5], [0.5, 0.5]]), "integer"),
    ],
)
def test_bad_inputs_raise(labels, probs, message):
    with pytest.raises(DigitnetError, match=message):
        compute_metrics(labels, probs, num_classes=probs.shape[1])


def test_wrong_number_of_columns_raises():
    with pytest.raises(DigitnetError, match="10 columns"):
        compute_metrics(np.array([0]), np.array([[0.5, 0.5]]))


# ------------------------------------------------------------------- README promises (issue 18)
def test_ece_uses_15_equal_width_bins_by_default():
    """README: "the expected calibration error (15 bins)". Confidences 0.68 (right) and 0.72
    (wrong) share the bin (2/3, 11/15] of 15 bins (ECE 0.2) but not a bin of 10 or 20 (0.52)."""
    from digitnet.evaluation.metrics import compute_metrics

    probs = np.zeros((20, 2))
    probs[:10] = [0.68, 0.32]
    probs[10:] = [0.72, 0.28]
    labels = np.array([0] * 10 + [1] * 10)
    assert expected_calibration_error(labels, probs) == pytest.approx(0.2)
    assert compute_metrics(labels, probs, num_classes=2)["ece"] == pytest.approx(0.2)
    for n_bins in (10, 20):
        assert expected_calibration_error(labels, probs, n_bins=n_bins) == pytest.approx(0.52)
    bins = reliability_bins(labels, probs)
    assert len(bins["count"]) == 15 and bins["edges"].tolist() == pytest.approx(
        np.linspace(0, 1, 16).tolist())


def test_ece_uses_15_bins_as_the_readme_says():
    # 10 right at confidence 0.62 and 10 wrong at 0.68: one bin (0.6, 0.7] with 10 bins, two
    # bins (0.6, 0.667] and (0.667, 0.733] with 15
    probs = np.zeros((20, 10))
    probs[:10, 0], probs[10:, 0] = 0.62, 0.68
    probs[:, 1:] = ((1 - probs[:, 0]) / 9)[:, None]
    labels = np.array([0] * 10 + [1] * 10)
    fifteen = 0.5 * abs(1 - 0.62) + 0.5 * abs(0 - 0.68)
    ten = abs(0.5 - 0.65)
    assert expected_calibration_error(labels, probs, n_bins=10) == pytest.approx(ten)
    assert compute_metrics(labels, probs)["ece"] == pytest.approx(fifteen)
    assert expected_calibration_error(labels, probs) == pytest.approx(fifteen)
    assert reliability_bins(labels, probs)["count"].tolist() == [0] * 9 + [10, 10] + [0] * 4


def test_averages_are_macro_not_micro_or_weighted():
    labels, probs = _case_gaps()
    preds = probs.argmax(axis=1)
    m = compute_metrics(labels, probs)
    for key, name in (("precision_macro", "precision"), ("recall_macro", "recall"),
                      ("f1_macro", "f1")):
        macro = np.mean([c[name] for c in m["per_class"]])  # every class counts once, even 3 and 7
        assert m[key] == pytest.approx(macro, abs=1e-12)
        for other in ("micro", "weighted"):
            score = getattr(skm, f"{name}_score" if name != "f1" else "f1_score")
            assert abs(m[key] - score(labels, preds, labels=CLASSES, average=other,
                                      zero_division=0)) > 0.01  # the inputs tell them apart


def test_top2_counts_the_second_choice_only():
    # true class second for 2 of 4 examples, third for 1: top-1 1/4, top-2 3/4, top-3 4/4
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.5, 0.3, 0.2], [0.6, 0.3, 0.1]])
    probs = np.pad(probs, ((0, 0), (0, 7)))
    labels = np.array([1, 1, 1, 2])
    m = compute_metrics(labels, probs)
    assert (m["accuracy"], m["top2_accuracy"]) == (0.25, 0.75)
    assert m["top2_accuracy"] == skm.top_k_accuracy_score(labels, probs, k=2, labels=CLASSES)


def test_precision_of_a_never_predicted_class_is_zero_and_counts_in_the_macro():
    labels = np.array([0, 0, 1, 1])
    probs = np.zeros((4, 10))
    probs[:, 0] = 1.0  # always predicts 0: class 1 is never predicted
    m = compute_metrics(labels, probs)
    assert m["per_class"][1]["precision"] == 0.0 and m["per_class"][0]["precision"] == 0.5
    assert m["precision_macro"] == pytest.approx(0.5 / 10)  # 0 (not NaN, not skipped) for 1..9
    assert m["precision_macro"] == pytest.approx(skm.precision_score(
        labels, probs.argmax(1), labels=CLASSES, average="macro", zero_division=0))


# ------------------------------------------------------------------- found by mutation testing
def test_per_class_support_is_int64_whatever_the_matrix_dtype():
    for cm in (np.array([[3, 1], [0, 2]], dtype=np.int32), np.array([[3.0, 1.0], [0.0, 2.0]])):
        scores = per_class_scores(cm)
        assert scores["support"].dtype == np.int64 and scores["support"].tolist() == [4, 2]
        assert scores["precision"].dtype == np.float64
        assert scores["precision"].tolist() == pytest.approx([1.0, 2 / 3])


def test_reliability_bins_first_bin_and_edges():
    # two classes, two bins (0, 0.5] and (0.5, 1]: a 50/50 tie belongs to the first bin
    probs = np.array([[0.5, 0.5], [0.7, 0.3], [0.2, 0.8]])
    bins = reliability_bins(np.array([0, 0, 0]), probs, n_bins=2)
    assert bins["count"].tolist() == [1, 2]
    assert bins["accuracy"].tolist() == [1.0, 0.5]
    assert bins["confidence"].tolist() == pytest.approx([0.5, 0.75])
    assert bins["edges"].tolist() == [0.0, 0.5, 1.0]
    assert set(bins) == {"count", "accuracy", "confidence", "edges"}
    assert reliability_bins(np.array([0]), probs[:1])["edges"].tolist() == pytest.approx(
        np.linspace(0, 1, 16).tolist())


def test_ece_uses_the_number_of_bins_given():
    # confidences 0.55 (right) and 0.95 (wrong): one bin gives |0.5 - 0.75|, three bins the mean
    # of |1 - 0.55| and |0 - 0.95|, and the default 15 bins the same as three (no shared bin)
    probs = np.array([[0.55, 0.45], [0.05, 0.95]])
    labels = np.array([0, 0])
    assert expected_calibration_error(labels, probs, n_bins=1) == pytest.approx(0.25)
    assert expected_calibration_error(labels, probs, n_bins=3) == pytest.approx(0.7)
    assert compute_metrics(labels, probs, num_classes=2, n_bins=1)["ece"] == pytest.approx(0.25)
    assert compute_metrics(labels, probs, num_classes=2)["ece"] == pytest.approx(0.7)


def test_log_loss_clips_probabilities_above_one():
    # softmax rounding may give p(true) slightly over 1 (within PROB_SUM_TOL): the loss stays 0
    assert log_loss(np.array([0]), np.array([[1.0005, 0.0]])) == 0.0


def test_top_k_ties_go_to_the_lower_class_index_with_many_classes():
    rng = np.random.default_rng(0)
    probs = np.round(rng.random((5, 40)) * 4) / 4  # many ties among 40 classes
    probs /= probs.sum(axis=1, keepdims=True)
    order = [sorted(range(40), key=lambda c: (-row[c], c)) for row in probs]  # ties: lower index
    third = np.array([o[2] for o in order])
    fourth = np.array([o[3] for o in order])
    assert top_k_accuracy(third, probs, k=3) == 1.0
    assert top_k_accuracy(fourth, probs, k=3) == 0.0


def test_per_class_rows_name_their_label():
    labels, probs = _case_random()
    assert [row["label"] for row in compute_metrics(labels, probs)["per_class"]] == CLASSES
    assert set(compute_metrics(labels, probs)["per_class"][0]) == {"label", "precision", "recall",
                                                                   "f1", "support"}


def test_tensors_that_require_grad_are_accepted():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]], requires_grad=True)
    m = compute_metrics(torch.tensor([0, 1]), logits.softmax(dim=1), num_classes=2)
    assert m["accuracy"] == 1.0 and m["n"] == 2


@pytest.mark.parametrize("labels, probs, message", [
    (np.array([[0]]), np.array([[1.0, 0.0]]), "labels: expected shape (N,), got (1, 1)"),
    (np.array([0, 2]), np.full((2, 2), 0.5), "labels: values must be in 0..1, got 0..2"),
    (np.array([0]), np.ones(2), "probs: expected shape (N, num_classes), got (2,)"),
    (np.array([0]), np.array([[np.nan, 1.0]]),
     "probs: expected finite, non-negative probabilities"),
    (np.array([], dtype=np.int64), np.zeros((0, 2)),
     "no examples: metrics need at least one label"),
    (np.array([0]), np.array([[0.7, 0.5]]),
     "probs: a row sums to 1 +0.2; pass probabilities, not logits (e.g. logits.softmax(dim=1))"),
])
def test_bad_input_messages_word_for_word(labels, probs, message):
    with pytest.raises(DigitnetError) as info:
        compute_metrics(labels, probs, num_classes=2)
    assert str(info.value) == message


def test_confusion_matrix_messages_name_preds():
    with pytest.raises(DigitnetError) as info:
        confusion_matrix(np.array([0, 1]), np.array([0, 3]), num_classes=3)
    assert str(info.value) == "preds: values must be in 0..2, got 0..3"
    with pytest.raises(DigitnetError) as info:
        confusion_matrix(np.array([0, 1]), np.array([0]), num_classes=3)
    assert str(info.value) == "2 labels but 1 preds; they must agree"
