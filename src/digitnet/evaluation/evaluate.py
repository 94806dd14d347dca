"""Evaluate any saved model or checkpoint on one or more test datasets; write JSON, plots, report.

The logits come from `LoadedModel.logits`, the store's one batched forward pass, which training's
per-epoch validation and final test also use.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from digitnet.calibration import calibrated_probs
from digitnet.data.datasets import DEFAULT_VAL_SIZE, TensorDataset
from digitnet.evaluation.datasets import load_eval_dataset
from digitnet.evaluation.metrics import compute_metrics, expected_calibration_error, misclassified
from digitnet.store import LoadedModel, load_model, read_metrics

MAX_MISCLASSIFIED = 200  # listed per dataset in the JSON output, most confident mistakes first


def predict_probs(loaded: LoadedModel, images: torch.Tensor,
                  batch_size: int = 1000) -> torch.Tensor:
    """Calibrated class probabilities (N, 10) in float64 for uint8 images (N, 28, 28)."""
    return loaded.probs(images, batch_size)


def evaluate_on(loaded: LoadedModel, dataset: TensorDataset) -> tuple[dict, torch.Tensor]:
    """All metrics of `loaded` on `dataset` from its calibrated probabilities, plus the ECE of the
    raw softmax (`ece_uncalibrated`: what calibration did); returns the row and the probabilities.
    """
    logits = loaded.logits(dataset.images)
    probs = calibrated_probs(logits, loaded.temperature)
    metrics = compute_metrics(dataset.labels.numpy(), probs.numpy())
    raw = calibrated_probs(logits, 1.0).numpy()
    metrics["ece_uncalibrated"] = expected_calibration_error(dataset.labels.numpy(), raw)
    wrong = misclassified(dataset.labels.numpy(), probs.numpy(), MAX_MISCLASSIFIED)
    for row in wrong:
        row["probabilities"] = [round(float(p), 6) for p in probs[row["index"]]]
    result = dict(dataset=dataset.name, model=loaded.ref.label, epoch=loaded.epoch, **metrics,
                  calibration=loaded.calibration.to_dict(), misclassified=wrong)
    return result, probs


def model_val_size(loaded: LoadedModel) -> int:
    """The validation split size the model was trained with (defines its `mnist-val`)."""
    return loaded.config.get("train", {}).get("val_size", DEFAULT_VAL_SIZE)


def evaluate_model(
    ref: str,
    datasets: list[str],
    data_dir: str | os.PathLike | None = None,
    models_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
) -> list[dict]:
    """Evaluate one model on each dataset; with `out_dir`, also write plots and a report.

    Returns:
        One result dict per dataset (see `evaluate_on`).
    """
    loaded = load_model(ref, models_dir)
    results = []
    for name in datasets:
        dataset = load_eval_dataset(name, data_dir, model_val_size(loaded))
        result, probs = evaluate_on(loaded, dataset)
        results.append(result)
        if out_dir is not None:
            from digitnet.evaluation.report import write_dataset_plots

            write_dataset_plots(Path(out_dir), result, dataset, probs)
    if out_dir is not None:
        from digitnet.evaluation.report import write_report

        write_report(Path(out_dir), loaded, results, read_metrics(loaded.ref.run_dir))
    return results


def format_results(results: list[dict]) -> str:
    """A short table: one line per dataset with the headline metrics."""
    lines = [f"{'dataset':<28}{'n':>7}{'loss':>9}{'accuracy':>10}{'precision':>11}{'recall':>9}"
             f"{'f1':>9}{'ece':>8}{'ece T=1':>9}"]
    for r in results:
        raw = f"{r['ece_uncalibrated']:>9.4f}" if "ece_uncalibrated" in r else f"{'-':>9}"
        lines.append(f"{r['dataset']:<28}{r['n']:>7}{r['loss']:>9.4f}{r['accuracy']:>10.2%}"
                     f"{r['precision_macro']:>11.4f}{r['recall_macro']:>9.4f}{r['f1_macro']:>9.4f}"
                     f"{r['ece']:>8.4f}{raw}")
    for r in results:
        pairs = ", ".join(f"{p['label']}->{p['pred']} ({p['count']})"
                          for p in r["most_confused"][:5] if p["count"])
        if pairs:
            lines.append(f"most confused on {r['dataset']}: {pairs}")
    return "\n".join(lines)
