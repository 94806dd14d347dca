"""What a training run feeds its model: the training data, its augmentation, and class weights."""

from __future__ import annotations

import torch

from digitnet.config import TrainConfig
from digitnet.constants import NUM_CLASSES
from digitnet.data.datasets import TensorDataset, load_splits


def load_training_data(cfg: TrainConfig, data_dir) -> dict:
    """Train/val/test splits of MNIST plus any ingested datasets named in `cfg.data`."""
    splits = load_splits(data_dir, val_size=cfg.val_size, subset=cfg.subset)
    extra = [name for name in cfg.data if name != "mnist"]
    if "mnist" not in cfg.data or extra:
        from digitnet.data.training_data import combine_training_data

        splits["train"] = combine_training_data(splits["train"], cfg.data)
    return splits


def batch_augmentation(cfg: TrainConfig):
    """The training augmentation as `f(uint8 images, labels, generator) -> images`, or None when
    off."""
    if not cfg.augment:
        return None
    from digitnet.data.augment import AugmentConfig, augment_batch, shift_batch

    if cfg.augment_kind == "shift":  # whole-pixel shifts of up to `augment_severity` pixels
        return lambda images, labels, generator: shift_batch(images, cfg.augment_severity,
                                                            generator)
    if cfg.augment_kind == "handwriting":
        warp = AugmentConfig.for_handwriting(cfg.augment_severity)
    else:
        warp = AugmentConfig.for_severity(cfg.augment_severity)
    return lambda images, labels, generator: augment_batch(images, warp, generator, labels)


def class_weights_for(train: TensorDataset) -> torch.Tensor:
    """Inverse class frequency, normalised to mean 1 (absent classes get weight 0)."""
    counts = train.class_counts().double()
    weights = torch.where(counts > 0, counts.sum() / (NUM_CLASSES * counts.clamp(min=1)), 0.0)
    return weights.float()
