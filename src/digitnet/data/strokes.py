"""The stroke and scan parts of augmentation, drawn per sample from an `AugmentConfig`: MNIST-style
thickening and thinning (`thickness_prob`), stroke radii for `handwriting.change_stroke_width`
(`stroke_prob`), and binarisation and low resolution. `augment.augment_batch` applies them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from digitnet.data.augment_config import AugmentConfig
from digitnet.data.handwriting import binarize, reduce_resolution
from digitnet.data.warp import uniform


def draw_stroke_radii(cfg: AugmentConfig, n: int, generator: torch.Generator) -> torch.Tensor:
    """(n,) stroke radius changes in px: from `stroke` with chance stroke_prob, else 0."""
    chosen = torch.rand(n, generator=generator) < cfg.stroke_prob
    return torch.where(chosen, uniform(n, cfg.stroke[0], cfg.stroke[1], generator), 0.0)


BINARIZE_LEVELS = (0.3, 0.6)  # thresholds of hard binarisation, as fractions of full ink


def binarize_and_lower_resolution(
    x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """Lower the resolution of a random lowres_prob share of samples (to lowres_min..H-1 px and
    back) and binarise a binarize_prob share, at the low resolution where both apply (a binary
    scan at 16x16 that the pipeline enlarged)."""
    n, size = len(x), x.shape[-1]
    binary = torch.rand(n, generator=generator) < cfg.binarize_prob
    threshold = uniform(n, *BINARIZE_LEVELS, generator)
    if cfg.lowres_prob == 0 or cfg.lowres_min >= size:
        return binarize(x, threshold, binary)
    low = torch.rand(n, generator=generator) < cfg.lowres_prob
    sizes = torch.randint(cfg.lowres_min, size, (n,), generator=generator)
    return reduce_resolution(x, torch.where(low, sizes, size), threshold, binary)


def _cross_max(x: torch.Tensor, pad_value: float) -> torch.Tensor:
    """Max over each pixel and its 4 neighbours ("+" structuring element); (B, 1, H, W)."""
    p = F.pad(x, (1, 1, 1, 1), value=pad_value)
    vertical = torch.maximum(p[..., :-2, 1:-1], p[..., 2:, 1:-1])
    horizontal = torch.maximum(p[..., 1:-1, :-2], p[..., 1:-1, 2:])
    return torch.maximum(x, torch.maximum(vertical, horizontal))


def change_thickness(
    x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """Thicken or thin the strokes of a random subset of samples; x is (B, 1, H, W) in [0, 1].

    Each sample is thickened with probability thickness_prob / 2 and thinned with the same
    probability. Thickening is a grey-scale dilation with a 3x3 cross ("+"). Plain erosion would
    erase MNIST's 1-2 px strokes, so thinning is a soft erosion: each pixel moves from its value
    towards the eroded value by (1 - value), which dims the grey stroke edges and keeps full-ink
    cores. Both are computed for the whole batch with shifted slices (cheaper than `max_pool2d`
    here) and picked per sample with masks.
    """
    n = len(x)
    u = torch.rand(n, generator=generator).view(n, 1, 1, 1)
    thicken = u < cfg.thickness_prob / 2
    thin = (u >= cfg.thickness_prob / 2) & (u < cfg.thickness_prob)
    dilated = _cross_max(x, pad_value=0.0)
    eroded = -_cross_max(-x, pad_value=-1.0)  # padding with full ink: the border is not eroded
    thinned = eroded + x * (x - eroded)
    return torch.where(thicken, dilated, torch.where(thin, thinned, x))
