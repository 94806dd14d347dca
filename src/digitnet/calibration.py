"""Temperature scaling: one number T, fitted on held-out logits, that makes probabilities honest.

A model trained with label smoothing is under-confident (a clean 7 gets 91%). Dividing its
logits by T before the softmax fixes most of that without changing any prediction: T > 0 keeps
the order of the logits, so the argmax is the same (Guo et al. 2017, "On Calibration of Modern
Neural Networks"). T is fitted after training by minimising the negative log-likelihood of the
validation split, and stored with the weights (a checkpoint's meta.json, a run's summary.json,
an export's config.json) as the record that `calibration_from_dict` reads back.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from digitnet.fileio import Check, check_json

MIN_TEMPERATURE = 0.05  # a sane range, far wider than real fits (dev-default 0.41, dev-fast 0.42)
MAX_TEMPERATURE = 20.0
FIT_TOLERANCE = 1e-6  # on log T: T to ~6 significant digits, far below what changes an ECE
NO_VALIDATION = "no validation split (val_size 0), so no held-out images to fit a temperature on"
NOT_RECORDED = ("written before digitnet calibrated its models; `digitnet calibrate REF` fits "
                "one on the validation split")

_TEMPERATURE = Check(float, lambda v: MIN_TEMPERATURE <= v <= MAX_TEMPERATURE,
                     f"a number from {MIN_TEMPERATURE} to {MAX_TEMPERATURE}")
CALIBRATION_SCHEMA = Check(
    {"temperature": _TEMPERATURE, "calibrated": bool, "reason?": (str, None),
     "images?": Check(int, lambda v: v >= 0, "an integer >= 0"),
     "nll_before?": (float, None), "nll_after?": (float, None)},
    lambda v: v["calibrated"] or v["temperature"] == 1.0,
    "a calibration record (temperature 1 when not calibrated)",
)


@dataclass(frozen=True)
class Calibration:
    """The temperature of one set of weights and where it came from."""

    temperature: float = 1.0  # logits are divided by it before the softmax
    calibrated: bool = False  # False: T = 1, the raw softmax, for `reason`
    reason: str | None = NOT_RECORDED  # why it is not calibrated; None when it is
    images: int = 0  # validation images the fit used
    nll_before: float | None = None  # mean NLL on them at T = 1
    nll_after: float | None = None  # ... and at the fitted T

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One line for train's and calibrate's output."""
        if not self.calibrated:
            return f"not calibrated (temperature 1): {self.reason}"
        return (f"calibrated with temperature {self.temperature:.4f}, fitted on {self.images:,} "
                f"validation images (NLL {self.nll_before:.4f} -> {self.nll_after:.4f})")


def not_calibrated(reason: str) -> Calibration:
    return Calibration(1.0, False, reason)


def calibration_from_dict(record: dict | None, source) -> Calibration:
    """The Calibration stored in a metadata file; None (an older file) is T = 1, not calibrated.

    Raises:
        DigitnetError: `source`: the record is not a calibration (a temperature of 0, negative,
            NaN, a string, out of range, or not 1 in an uncalibrated record).
    """
    if record is None:
        return Calibration()
    check_json(record, CALIBRATION_SCHEMA, source)
    return Calibration(float(record["temperature"]), record["calibrated"], record.get("reason"),
                       record.get("images", 0), record.get("nll_before"), record.get("nll_after"))


def _mean_nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    from scipy.special import logsumexp

    scaled = logits / temperature
    return float(np.mean(logsumexp(scaled, axis=1) - scaled[np.arange(len(labels)), labels]))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> Calibration:
    """The T in [MIN_TEMPERATURE, MAX_TEMPERATURE] that minimises the mean NLL of
    softmax(logits / T) on (logits, labels), found by a bounded search over log T (the NLL is
    unimodal in it). A few milliseconds for 5,000 images.

    With no images there is nothing to fit: T = 1, not calibrated.
    """
    if len(labels) == 0:
        return not_calibrated(NO_VALIDATION)
    from scipy.optimize import minimize_scalar  # here: a second of import that predict never needs

    z = logits.detach().double().cpu().numpy()
    y = labels.detach().cpu().numpy().astype(np.int64)
    result = minimize_scalar(lambda log_t: _mean_nll(z, y, math.exp(log_t)), method="bounded",
                             bounds=(math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)),
                             options=dict(xatol=FIT_TOLERANCE))
    temperature = min(max(math.exp(float(result.x)), MIN_TEMPERATURE), MAX_TEMPERATURE)
    before, after = _mean_nll(z, y, 1.0), _mean_nll(z, y, temperature)
    if not after <= before:  # never worse than leaving it alone (a flat or degenerate NLL)
        temperature, after = 1.0, before
    return Calibration(temperature, True, None, len(y), before, after)


def calibrated_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / T) in float64: the probabilities every command reports."""
    return torch.softmax(logits.double() / temperature, dim=1)


class TemperatureScaled(nn.Module):
    """`model` with its logits divided by T: for exports whose users apply the softmax."""

    def __init__(self, model: nn.Module, temperature: float):
        super().__init__()
        self.model = model
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 28, 28) -> (B, 10)
        return self.model(x) / self.temperature


__all__ = ["CALIBRATION_SCHEMA", "Calibration", "TemperatureScaled", "calibrated_probs",
           "calibration_from_dict", "fit_temperature", "not_calibrated"]
