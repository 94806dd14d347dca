"""The optimizer and the learning-rate schedule of a training run."""

from __future__ import annotations

import math

import torch
from torch import nn

from digitnet.config import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Weight decay on conv and linear weights only (not on batch norm and biases)."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [dict(params=decay, weight_decay=cfg.weight_decay),
              dict(params=no_decay, weight_decay=0.0)]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """One cycle: linear warm-up to `lr` over `warmup_frac` of the steps, then linear decay to 0."""
    total = cfg.epochs * steps_per_epoch
    warmup = max(1, round(cfg.warmup_frac * total))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def steps_per_epoch(n_train: int, cfg: TrainConfig) -> int:
    steps = math.ceil(n_train / cfg.batch_size)
    return min(steps, cfg.max_steps) if cfg.max_steps else steps
