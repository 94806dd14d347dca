"""One training epoch: batches drawn and augmented reproducibly, one optimizer step each."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NoReturn

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from digitnet.config import TrainConfig
from digitnet.data.datasets import TensorDataset, iterate_batches, to_model_input
from digitnet.errors import DigitnetError
from digitnet.training.inputs import batch_augmentation


def epoch_seed(seed: int, epoch: int) -> int:
    # modulo 2**64, what torch's generators take: the same seeds as before for every seed that
    # fitted, and any seed of TrainConfig's range (up to 2**63 - 1) now works too
    return (seed * 1_000_003 + epoch) % 2**64


def train_one_epoch(
    model: nn.Module,
    train: TensorDataset,
    optimizer: torch.optim.Optimizer,
    scheduler,
    cfg: TrainConfig,
    data_config: dict,
    generator: torch.Generator,
    class_weights: torch.Tensor | None = None,
    progress: tqdm | None = None,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> dict:
    """One pass over `train` on the model's device; returns train_loss, train_acc, images, steps.

    Batches are drawn and augmented on the CPU (with `generator`, so runs are reproducible and
    resumable), then moved to the model's device. `batches` replaces the shuffled batches of
    `train` (one rank's shard of a distributed run); `generator` then only augments.
    """
    if batches is None:
        batches = iterate_batches(train, cfg.batch_size, shuffle=True, generator=generator)
    augment = batch_augmentation(cfg)
    device = next(model.parameters()).device
    model.train()
    # running sums stay on the device: no host sync per step (MPS has no float64)
    total_loss = torch.zeros((), dtype=torch.float32 if device.type == "mps" else torch.float64,
                             device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    check_every = 1 if device.type == "cpu" else 20  # reading the loss waits for the device
    seen = steps = 0
    for images, labels in batches:
        if augment is not None:
            images = augment(images, labels, generator)
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        x = to_model_input(images, data_config["mean"], data_config["std"])
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            logits = model(x).float()  # (B, 10)
        loss = F.cross_entropy(logits, labels, weight=class_weights,
                               label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total_loss += loss.detach().to(total_loss.dtype) * len(labels)
        correct += (logits.argmax(1) == labels).sum()
        seen += len(labels)
        steps += 1
        if steps % check_every == 0 and not math.isfinite(loss.item()):
            _diverged(loss, cfg)
        if progress is not None:
            progress.update(len(labels))
            if steps % 20 == 0:
                progress.set_postfix(loss=f"{total_loss.item() / seen:.4f}",
                                     acc=f"{correct.item() / seen:.2%}")
        if cfg.max_steps and steps >= cfg.max_steps:
            break
    if not math.isfinite(total_loss.item()):
        _diverged(loss, cfg)
    return dict(train_loss=total_loss.item() / max(seen, 1),
                train_acc=correct.item() / max(seen, 1), images=seen, steps=steps)


def _diverged(loss: torch.Tensor, cfg: TrainConfig) -> NoReturn:
    raise DigitnetError(f"training diverged (loss {loss.item()}); lower --lr (now {cfg.lr})")
