"""A loaded model (what every loader of the store returns), and the one batched forward pass.

`batched_logits` is how digitnet runs a model on images for evaluation: training's per-epoch
validation and final test, calibration, `digitnet evaluate`, compare, ensembles and prediction
all go through it (through `LoadedModel.logits` or directly), so their numbers agree.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from digitnet.calibration import Calibration, calibrated_probs


@dataclass(frozen=True)
class ModelRef:
    """A resolved reference: a run folder, and which of its weights."""

    run_dir: Path
    checkpoint: str | None  # None: the final weights (or the last checkpoint while training)

    @property
    def label(self) -> str:
        base = f"{self.run_dir.parent.name}/{self.run_dir.name}"
        return base if self.checkpoint is None else f"{base}@{self.checkpoint}"


def _device(model: nn.Module) -> torch.device:
    """Where the model's tensors are (CPU for a module without any, such as an ONNX session)."""
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def batched_logits(model: nn.Module, images: torch.Tensor, data_config: dict,
                   batch_size: int = 1000) -> Iterator[torch.Tensor]:
    """Raw logits of `model` for uint8 images (N, 28, 28), white on black: one float tensor
    (B, 10) per batch of `batch_size` images, in order, on the model's device.

    The images are moved to that device and normalised with the data config's mean and std; the
    model's mode is left as it is (eval mode for evaluation).
    """
    from digitnet.data.datasets import to_model_input

    device = _device(model)
    mean, std = data_config["mean"], data_config["std"]
    for start in range(0, len(images), batch_size):
        x = to_model_input(images[start : start + batch_size].to(device), mean, std)
        yield model(x.contiguous(memory_format=torch.channels_last))


@dataclass
class LoadedModel:
    """An eval-mode model with everything needed to feed it and to describe it."""

    model: nn.Module
    data_config: dict  # input_size, mean, std, label_names
    config: dict  # the run's config.json
    ref: ModelRef
    epoch: int | None  # finished epochs of the weights; None for final weights without metadata
    calibration: Calibration = Calibration()  # T = 1 for weights saved before calibration

    @property
    def temperature(self) -> float:
        return self.calibration.temperature

    def logits(self, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """uint8 images (N, 28, 28), white on black -> raw float logits (N, 10) on the CPU."""
        out = [z.float().cpu() for z in batched_logits(self.model, images, self.data_config,
                                                         batch_size)]
        return torch.cat(out) if out else torch.empty(0, len(self.data_config["label_names"]))

    def probs(self, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """uint8 images (N, 28, 28) -> calibrated probabilities softmax(logits / T), float64."""
        return calibrated_probs(self.logits(images, batch_size), self.temperature)
