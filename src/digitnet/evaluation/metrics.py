"""Classification metrics as pure functions of labels and predicted probabilities (numpy only).

Every result is made of Python ints, floats, lists and dicts, so it can be written as JSON as is.
"""

from __future__ import annotations

import numpy as np

from digitnet.constants import NUM_CLASSES
from digitnet.errors import DigitnetError

ECE_BINS = 15  # equal-width confidence bins, as in Guo et al. 2017 ("On Calibration of Modern NNs")
LOG_EPS = 1e-15  # probabilities are clipped to [LOG_EPS, 1] before the log, so the loss is finite
PROB_SUM_TOL = 1e-3  # rows of `probs` must sum to 1 within this (float16/float32 softmax rounding)
MOST_CONFUSED_K = 10  # off-diagonal pairs listed by `compute_metrics`

# The keys of `compute_metrics` whose values are single numbers (one CSV column each).
SCALAR_METRICS = (
    "n",
    "loss",
    "accuracy",
    "top2_accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "ece",
)


def _as_numpy(array) -> np.ndarray:
    """numpy view of a numpy array, torch tensor (any device) or sequence."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def _check_labels(labels, num_classes: int, name: str = "labels") -> np.ndarray:
    labels = _as_numpy(labels)
    if labels.ndim != 1:
        raise DigitnetError(f"{name}: expected shape (N,), got {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise DigitnetError(f"{name}: expected integer class indices, got dtype {labels.dtype}")
    labels = labels.astype(np.int64, copy=False)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DigitnetError(
            f"{name}: values must be in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}"
        )
    return labels


def _check_probs(labels, probs) -> tuple[np.ndarray, np.ndarray]:
    """Validate (labels (N,), probs (N, C)); returns int64 labels and float64 probs."""
    probs = _as_numpy(probs)
    if probs.ndim != 2:
        raise DigitnetError(f"probs: expected shape (N, num_classes), got {probs.shape}")
    labels = _check_labels(labels, probs.shape[1])
    if len(labels) != len(probs):
        raise DigitnetError(f"{len(labels)} labels but {len(probs)} rows of probs; they must agree")
    if len(labels) == 0:
        raise DigitnetError("no examples: metrics need at least one label")
    probs = probs.astype(np.float64, copy=False)
    if not np.isfinite(probs).all() or probs.min() < 0:
        raise DigitnetError("probs: expected finite, non-negative probabilities")
    worst = float(np.abs(probs.sum(axis=1) - 1.0).max())
    if worst > PROB_SUM_TOL:
        raise DigitnetError(
            f"probs: a row sums to 1 {worst:+.3g}; pass probabilities, not logits "
            "(e.g. logits.softmax(dim=1))"
        )
    return labels, probs


def confusion_matrix(labels, preds, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Count each (true class, predicted class) pair.

    Args:
        labels: true classes, shape (N,).
        preds: predicted classes, shape (N,).
        num_classes: size of the matrix; classes that never occur get rows/columns of zeros.

    Returns:
        int64 array (num_classes, num_classes): rows are true classes, columns predicted classes.

    Raises:
        DigitnetError: shapes disagree or a class index is outside 0..num_classes-1.
    """
    labels = _check_labels(labels, num_classes)
    preds = _check_labels(preds, num_classes, name="preds")
    if labels.shape != preds.shape:
        raise DigitnetError(f"{len(labels)} labels but {len(preds)} preds; they must agree")
    flat = np.bincount(labels * num_classes + preds, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, with 0.0 where the denominator is 0 (never NaN)."""
    out = np.zeros(numerator.shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support of every class from a confusion matrix.

    Zero division gives 0.0, as scikit-learn's `zero_division=0`: a class that is never
    predicted has precision 0.0, a class with no true examples (no support) has recall 0.0, and
    F1 = 2 TP / (2 TP + FP + FN) is 0.0 when that denominator is 0. No value is ever NaN.

    Args:
        cm: confusion matrix (C, C), rows true, columns predicted.

    Returns:
        dict of float64 arrays (C,) "precision", "recall", "f1", and int64 "support".
    """
    cm = np.asarray(cm, dtype=np.int64)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)  # TP + FP
    support = cm.sum(axis=1)  # TP + FN
    return dict(
        precision=_safe_divide(tp, predicted),
        recall=_safe_divide(tp, support),
        f1=_safe_divide(2 * tp, predicted + support),
        support=support,
    )


def reliability_bins(labels, probs, n_bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Group predictions by confidence (the top probability) into equal-width bins on [0, 1].

    Bin b holds confidences in (b/n_bins, (b+1)/n_bins]; a confidence of exactly 0 goes to bin 0.

    Returns:
        dict of arrays (n_bins,): "count" (int64), "accuracy" and "confidence" (mean within the
        bin, 0.0 for an empty bin), and "edges" (n_bins + 1,).
    """
    labels, probs = _check_probs(labels, probs)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # side="left" puts a confidence equal to an inner edge into the bin below it (right-closed)
    index = np.clip(np.searchsorted(edges[1:-1], confidence, side="left"), 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    return dict(
        count=count.astype(np.int64),
        accuracy=_safe_divide(np.bincount(index, weights=correct, minlength=n_bins), count),
        confidence=_safe_divide(np.bincount(index, weights=confidence, minlength=n_bins), count),
        edges=edges,
    )


def expected_calibration_error(labels, probs, n_bins: int = ECE_BINS) -> float:
    """ECE: sum over confidence bins of (bin size / N) * |accuracy in bin - mean confidence in bin|.

    Uses `n_bins` equal-width bins of the top-class probability (see `reliability_bins`). 0.0 is
    perfectly calibrated; always predicting with confidence 1.0 at 90% accuracy gives 0.1.
    """
    bins = reliability_bins(labels, probs, n_bins)
    weight = bins["count"] / bins["count"].sum()
    return float(np.sum(weight * np.abs(bins["accuracy"] - bins["confidence"])))


def log_loss(labels, probs, eps: float = LOG_EPS) -> float:
    """Mean cross-entropy -log p(true class), natural log, with p clipped to [eps, 1]."""
    labels, probs = _check_probs(labels, probs)
    p_true = probs[np.arange(len(labels)), labels]
    return float(np.mean(-np.log(np.clip(p_true, eps, 1.0))))


def top_k_accuracy(labels, probs, k: int) -> float:
    """Fraction of examples whose true class is among the `k` highest probabilities.

    Ties are broken by class index (lower index first), as `np.argsort(-probs, stable)` does.
    """
    labels, probs = _check_probs(labels, probs)
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # (N, k)
    return float(np.mean((top == labels[:, None]).any(axis=1)))


def most_confused(cm: np.ndarray, k: int = MOST_CONFUSED_K) -> list[dict]:
    """The `k` largest off-diagonal cells of a confusion matrix (only cells with count > 0).

    Returns:
        [{"label": true class, "pred": predicted class, "count": n}, ...] sorted by count
        (largest first), ties by label then pred.
    """
    cm = np.asarray(cm, dtype=np.int64)
    rows, cols = np.nonzero(cm * (1 - np.eye(len(cm), dtype=np.int64)))
    order = np.lexsort((cols, rows, -cm[rows, cols]))[:k]
    return [
        dict(label=int(rows[i]), pred=int(cols[i]), count=int(cm[rows[i], cols[i]])) for i in order
    ]


def compute_metrics(
    labels, probs, num_classes: int = NUM_CLASSES, n_bins: int = ECE_BINS
) -> dict:
    """Every metric of a classifier's predicted probabilities, as a JSON-able dict.

    Predictions are `probs.argmax(axis=1)` (the lowest class index wins a tie). Precision,
    recall and F1 follow scikit-learn with `zero_division=0` (see `per_class_scores`), and the
    macro averages are unweighted means over all `num_classes` classes, including classes that
    are absent from `labels` or never predicted.

    Args:
        labels: true classes (N,), numpy array or torch tensor.
        probs: predicted probabilities (N, num_classes); each row sums to 1 (not logits).
        num_classes: number of classes (columns of `probs`).
        n_bins: confidence bins for the expected calibration error.

    Returns:
        dict with the scalar keys of `SCALAR_METRICS`:
        "n" (examples), "loss" (mean cross-entropy, natural log, probabilities clipped to
        [1e-15, 1]), "accuracy", "top2_accuracy", "precision_macro", "recall_macro", "f1_macro",
        "ece" (expected calibration error, `n_bins` equal-width bins); and
        "per_class": [{"label", "precision", "recall", "f1", "support"}] one per class,
        "confusion_matrix": list of rows (true class) of counts per predicted class,
        "most_confused": the largest off-diagonal cells, see `most_confused`.

    Raises:
        DigitnetError: no examples, shapes disagree, labels out of range, or `probs` is not a
            probability matrix with `num_classes` columns.
    """
    labels, probs = _check_probs(labels, probs)
    if probs.shape[1] != num_classes:
        raise DigitnetError(f"probs: expected {num_classes} columns, got {probs.shape[1]}")
    cm = confusion_matrix(labels, probs.argmax(axis=1), num_classes)
    scores = per_class_scores(cm)
    per_class = [
        dict(
            label=c,
            precision=float(scores["precision"][c]),
            recall=float(scores["recall"][c]),
            f1=float(scores["f1"][c]),
            support=int(scores["support"][c]),
        )
        for c in range(num_classes)
    ]
    return dict(
        n=int(len(labels)),
        loss=log_loss(labels, probs),
        accuracy=float(np.trace(cm) / cm.sum()),
        top2_accuracy=top_k_accuracy(labels, probs, k=min(2, num_classes)),
        precision_macro=float(scores["precision"].mean()),
        recall_macro=float(scores["recall"].mean()),
        f1_macro=float(scores["f1"].mean()),
        ece=expected_calibration_error(labels, probs, n_bins),
        per_class=per_class,
        confusion_matrix=cm.tolist(),
        most_confused=most_confused(cm),
    )


def misclassified(labels, probs, k: int | None = None) -> list[dict]:
    """The wrongly classified examples, most confident mistakes first.

    Args:
        labels: true classes (N,).
        probs: predicted probabilities (N, C).
        k: keep at most this many; None keeps all.

    Returns:
        [{"index", "label", "pred", "prob" (probability of `pred`), "label_prob" (probability of
        the true class)}, ...] sorted by "prob" descending, ties by index.
    """
    labels, probs = _check_probs(labels, probs)
    preds = probs.argmax(axis=1)
    wrong = np.nonzero(preds != labels)[0]
    prob = probs[wrong, preds[wrong]]
    order = np.lexsort((wrong, -prob))[:k]
    return [
        dict(
            index=int(wrong[i]),
            label=int(labels[wrong[i]]),
            pred=int(preds[wrong[i]]),
            prob=float(prob[i]),
            label_prob=float(probs[wrong[i], labels[wrong[i]]]),
        )
        for i in order
    ]
