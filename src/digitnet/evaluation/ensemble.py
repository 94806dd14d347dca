"""Ensembles: average the class probabilities of several saved models and evaluate the average."""

from __future__ import annotations

import os

import torch

from digitnet.calibration import calibrated_probs
from digitnet.errors import DigitnetError
from digitnet.evaluation.datasets import load_eval_dataset
from digitnet.evaluation.evaluate import model_val_size
from digitnet.evaluation.metrics import compute_metrics, expected_calibration_error
from digitnet.store import load_model


def average_probs(probs: list[torch.Tensor]) -> torch.Tensor:
    """The mean of several (N, C) probability tensors (an equal-weight ensemble).

    Raises:
        DigitnetError: no tensors, or tensors of different shapes.
    """
    if not probs:
        raise DigitnetError("an ensemble needs at least one model")
    if any(p.shape != probs[0].shape for p in probs):
        raise DigitnetError(f"probabilities of different shapes: {[tuple(p.shape) for p in probs]}")
    return torch.stack(probs).mean(dim=0)


def evaluate_ensemble(
    refs: list[str],
    datasets: list[str],
    data_dir: str | os.PathLike | None = None,
    models_dir: str | os.PathLike | None = None,
) -> list[dict]:
    """Evaluate each model and the average of their probabilities on each dataset.

    Each member's probabilities are calibrated with its own temperature before averaging.
    `mnist-val` is the validation split of the first model; every model must share it.

    Returns:
        One dict per dataset: `dataset`, `models` (the references), `members` (accuracy and
        temperature of each model), every metric of `compute_metrics` for the ensemble, and
        `ece_uncalibrated` (the ECE of the average of the raw softmax outputs).

    Raises:
        DigitnetError: no references, or models trained with different validation splits.
    """
    if not refs:
        raise DigitnetError("an ensemble needs at least one model reference")
    models = [load_model(ref, models_dir) for ref in refs]
    val_sizes = {model_val_size(m) for m in models}
    if "mnist-val" in datasets and len(val_sizes) > 1:
        raise DigitnetError(
            f"the models hold out different validation splits ({sorted(val_sizes)})")
    results = []
    for name in datasets:
        dataset = load_eval_dataset(name, data_dir, model_val_size(models[0]))
        logits = [m.logits(dataset.images) for m in models]
        probs = [calibrated_probs(z, m.temperature) for m, z in zip(models, logits)]
        labels = dataset.labels
        members = [dict(model=m.ref.label, accuracy=float((p.argmax(1) == labels).double().mean()),
                        temperature=m.temperature) for m, p in zip(models, probs)]
        metrics = compute_metrics(labels.numpy(), average_probs(probs).numpy())
        raw = average_probs([calibrated_probs(z, 1.0) for z in logits]).numpy()
        metrics["ece_uncalibrated"] = expected_calibration_error(labels.numpy(), raw)
        results.append(dict(dataset=dataset.name, model=f"ensemble of {len(models)}",
                            models=[m.ref.label for m in models], members=members, **metrics))
    return results


__all__ = ["average_probs", "evaluate_ensemble"]
