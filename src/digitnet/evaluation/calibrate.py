"""`digitnet calibrate`: fit and store the temperature of a model saved without one.

Training fits T at every epoch; this is for runs and checkpoints written before it did. T is
fitted on the model's own validation split (never on test), and written into the metadata file of
those weights (summary.json or the checkpoint's meta.json), atomically: the weights are untouched.
"""

from __future__ import annotations

import os

from digitnet.calibration import calibrated_probs, fit_temperature
from digitnet.errors import DigitnetError
from digitnet.evaluation.datasets import load_eval_dataset
from digitnet.evaluation.evaluate import model_val_size
from digitnet.evaluation.metrics import expected_calibration_error
from digitnet.store import load_model, save_calibration


def calibrate_model(
    ref: str,
    data_dir: str | os.PathLike | None = None,
    models_dir: str | os.PathLike | None = None,
) -> dict:
    """Fit T on the validation split of `ref` and store it with its weights.

    Returns:
        model (label), before and after (calibration records), and the validation ECE at each.

    Raises:
        DigitnetError: an exported model (calibrate its source run), a model trained without a
            validation split (nothing held out to fit on), or another process training the run.
    """
    loaded = load_model(ref, models_dir)
    label = loaded.ref.label
    val_size = model_val_size(loaded)
    if val_size == 0:
        raise DigitnetError(f"{label} was trained on every training image (val_size 0): there are "
                            f"no held-out images to fit a temperature on, and fitting it on the "
                            f"test set would make the test results dishonest")
    val = load_eval_dataset("mnist-val", data_dir, val_size)  # the split training held out
    logits = loaded.logits(val.images)
    labels = val.labels.numpy()
    before, after = loaded.calibration, fit_temperature(logits, val.labels)
    save_calibration(loaded, after)
    return dict(model=label, before=before.to_dict(), after=after.to_dict(),
                val_ece_before=expected_calibration_error(
                    labels, calibrated_probs(logits, before.temperature).numpy()),
                val_ece_after=expected_calibration_error(
                    labels, calibrated_probs(logits, after.temperature).numpy()))


__all__ = ["calibrate_model"]
