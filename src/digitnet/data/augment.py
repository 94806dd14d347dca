"""Batch augmentation of digit images: affine warp, elastic distortion, stroke width and noise,
and what other people's handwriting varies in once the new-image pipeline has brought it to
MNIST format: stroke width, aspect ratio, binarisation and resolution. Also the fixed augmented
test set, and the cheap whole-pixel shifts of the fast recipes.

`augment_batch` applies an `AugmentConfig` (data/augment_config.py) in order; the steps are drawn
in data/warp.py (the geometry) and data/strokes.py (stroke width, binarisation, low resolution),
and computed by data/handwriting.py's pure batch operations.

Every operation acts on a whole batch at once (no per-sample Python loop), and all randomness
comes from an explicit `torch.Generator`, so a seed fixes the result. Labels are never changed:
each augmentation keeps a digit the digit it was (the label-aware styles draw only what belongs
to the digit's own class).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from digitnet.data.augment_config import HANDWRITING, MAX_SEVERITY, SEVERITIES, AugmentConfig
from digitnet.data.handwriting import affine_grid, change_stroke_width, normalize_peak
from digitnet.data.strokes import binarize_and_lower_resolution, change_thickness, draw_stroke_radii
from digitnet.data.styles import draw_styles
from digitnet.data.warp import draw_affine_theta, draw_elastic_field, draw_refit_theta
from digitnet.errors import DigitnetError

# AugmentConfig and its presets live in data/augment_config.py; importable from here too, as
# training/loop.py and the tests do.
__all__ = ["AUGMENTED", "AUGMENTED_SEED", "AUGMENTED_SEVERITY", "HANDWRITING", "MAX_SEVERITY",
           "SEVERITIES", "AugmentConfig", "augment_batch", "make_augmented_dataset", "shift_batch"]

# The fixed augmented test set: MNIST test under `make_augmented_dataset` with these defaults
AUGMENTED = "mnist-test-augmented"  # its dataset name; AUGMENTED:N picks severity N
AUGMENTED_SEVERITY = 3
AUGMENTED_SEED = 0  # every model sees the same augmented images


def augment_batch(
    images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Randomly perturb every image of a batch; labels stay valid because no digit changes class.

    Steps, each skipped when its setting is zero: writing styles of the digit's own class
    (flag_one_prob, cross_seven_prob: data/styles.py), stroke thickening/thinning (thickness_prob,
    then stroke_prob), then one `grid_sample` call for aspect stretch, rotation, zoom, shear,
    shift and elastic distortion (bilinear, zero padding; with `refit`, the ink placed as the
    new-image pipeline places it, and its peak set to 1), then low resolution and binarisation,
    then additive Gaussian noise, then clamping to the valid range.

    Args:
        images: uint8 (B, H, W) or (B, 1, H, W) with H == W and values 0-255, or floating point
            of the same shapes with intensities in [0, 1] (before mean/std normalisation).
        cfg: augmentation strengths; an identity config returns a copy of `images`.
        generator: the only source of randomness (CPU generator). The same generator state, config
            and batch give the same result; the result also depends on the batch size.
        labels: (B,) classes; needed only by the label-aware styles (`cfg.needs_labels`).

    Returns:
        A new tensor of the same shape and dtype: uint8 rounded and clamped to 0-255, floats
        clamped to [0, 1].

    Raises:
        DigitnetError: `images` is not a batch of square single-channel images, or `cfg` needs
            labels and none (or not one per image) were given.
    """
    single_channel = images.dim() == 3 or (images.dim() == 4 and images.shape[1] == 1)
    if not single_channel or images.shape[-1] != images.shape[-2]:
        raise DigitnetError(
            f"expected images of shape (B, H, H) or (B, 1, H, H), got {tuple(images.shape)}"
        )
    if cfg.needs_labels and (labels is None or labels.shape != (len(images),)):
        got = "none" if labels is None else f"shape {tuple(labels.shape)}"
        raise DigitnetError(f"this augmentation draws class-specific styles and needs one label "
                            f"per image ({len(images)}), got {got}")
    if cfg.is_identity or len(images) == 0:
        return images.clone()
    is_uint8 = images.dtype == torch.uint8
    x = images.reshape(len(images), 1, *images.shape[-2:]).float()  # (B, 1, H, W)
    if is_uint8:
        x = x / 255.0
    n, size = len(x), x.shape[-1]
    if cfg.needs_labels:
        x = draw_styles(x, labels, cfg.flag_one_prob, cfg.cross_seven_prob, generator)
    if cfg.thickness_prob > 0:
        x = change_thickness(x, cfg, generator)
    if cfg.stroke_prob > 0:
        x = change_stroke_width(x, draw_stroke_radii(cfg, n, generator))
    if cfg.has_warp:
        if cfg.refit:
            grid = affine_grid(draw_refit_theta(cfg, x, generator), size)  # (B, H, W, 2)
        else:  # F.affine_grid keeps the bytes of the severities and mnist-test-augmented
            theta = draw_affine_theta(cfg, n, size, generator)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
        if cfg.elastic_alpha > 0:
            grid = grid + draw_elastic_field(cfg, n, size, generator)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if cfg.refit:
        x = normalize_peak(x)
    if cfg.binarize_prob > 0 or cfg.lowres_prob > 0:
        x = binarize_and_lower_resolution(x, cfg, generator)
    if cfg.noise_std > 0:
        x = x + cfg.noise_std * torch.randn(x.shape, generator=generator)
    x = x.clamp(0.0, 1.0).view(images.shape)
    if is_uint8:
        return (x * 255.0).round().to(torch.uint8)
    return x.to(images.dtype)


def make_augmented_dataset(
    images: torch.Tensor,
    labels: torch.Tensor,
    severity: int = AUGMENTED_SEVERITY,
    seed: int = AUGMENTED_SEED,
    batch_size: int = 1000,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed augmented copy of a dataset (e.g. `mnist-test-augmented` from the test set).

    The bytes are fixed by (images, severity, seed, batch_size) on a given torch build: the
    batches are augmented in order with one generator seeded by `seed`.

    Args:
        images: uint8 (N, 28, 28).
        labels: (N,); returned as an unchanged copy.
        severity: 0..5, see `AugmentConfig.for_severity`.
        seed: seed of the generator.
        batch_size: images per `augment_batch` call; part of the definition of the result.

    Returns:
        (uint8 images of the same shape, labels).

    Raises:
        DigitnetError: bad severity, or images and labels of different lengths.
    """
    if len(images) != len(labels):
        raise DigitnetError(f"{len(images)} images but {len(labels)} labels; they must agree")
    if batch_size < 1:
        raise DigitnetError(f"batch_size must be >= 1, got {batch_size}")
    cfg = AugmentConfig.for_severity(severity)
    generator = torch.Generator().manual_seed(seed)
    batches = [
        augment_batch(images[start : start + batch_size], cfg, generator)
        for start in range(0, len(images), batch_size)
    ]
    out = torch.cat(batches) if batches else images.clone()
    return out, labels.clone()


def shift_batch(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by a random whole number of pixels in x and y, up to `max_shift`.

    Zero padding, then each sample's crop picked from a view of all its crops (`unfold`): no
    interpolation, about 40x cheaper than the `warp` augmentation of `augment_batch` (865k
    against 23k images/s at severity 2, 21k at 3; 512-image batches on one thread,
    benchmarks/results/augment-speed.json), for fast recipes.

    Args:
        images: (B, H, W) or (B, 1, H, W), any dtype; pixels shifted out are lost, new ones are 0.
        max_shift: 0 returns a copy.
        generator: the only source of randomness.

    Returns:
        A new tensor of the same shape and dtype.
    """
    if max_shift < 0:
        raise DigitnetError(f"max_shift must be >= 0, got {max_shift}")
    if max_shift == 0 or len(images) == 0:
        return images.clone()
    n, height, width = len(images), images.shape[-2], images.shape[-1]
    padded = F.pad(images.reshape(n, height, width), (max_shift,) * 4)  # (B, H + 2s, W + 2s)
    crops = padded.unfold(1, height, 1).unfold(2, width, 1)  # view (B, 2s + 1, 2s + 1, H, W)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    return crops[torch.arange(n), dy, dx].reshape(images.shape)
