"""Batch augmentation of digit images: affine warp, elastic distortion, stroke width and noise,
and (data/handwriting.py) what other people's handwriting varies in once the new-image pipeline
has brought it to MNIST format: stroke width, aspect ratio, binarisation and resolution.

Every operation acts on a whole batch at once (no per-sample Python loop), and all randomness
comes from an explicit `torch.Generator`, so a seed fixes the result. Labels are never changed:
each augmentation keeps a digit the digit it was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from digitnet.data.handwriting import (
    MAX_THINNING,
    affine_grid,
    binarize,
    change_stroke_width,
    normalize_peak,
    reduce_resolution,
    refit_theta,
)
from digitnet.errors import DigitnetError

MAX_SEVERITY = 5
# The fixed augmented test set: MNIST test under `make_augmented_dataset` with these defaults
AUGMENTED = "mnist-test-augmented"  # its dataset name; AUGMENTED:N picks severity N
AUGMENTED_SEVERITY = 3
AUGMENTED_SEED = 0  # every model sees the same augmented images
_TRUNCATE_SIGMAS = 3.0  # Gaussian kernel radius in standard deviations


@dataclass(frozen=True)
class AugmentConfig:
    """How strongly to perturb each image; the default changes nothing.

    Each sample draws its own parameters uniformly from the given ranges.
    """

    rotate: float = 0.0  # max rotation, degrees: angle ~ U(-rotate, rotate), > 0 = anticlockwise
    scale: tuple[float, float] = (1.0, 1.0)  # zoom factor range (min, max); > 1 enlarges the digit
    shift: float = 0.0  # max translation, pixels, drawn separately for x and y
    shear: float = 0.0  # max horizontal shear (slant), degrees
    elastic_alpha: float = 0.0  # RMS of the elastic displacement, pixels
    elastic_sigma: float = 4.0  # smoothness of the elastic displacement, pixels (Gaussian std)
    thickness_prob: float = 0.0  # chance of changing stroke width: half thickened, half thinned
    noise_std: float = 0.0  # additive Gaussian noise std, in intensity units where ink = 1
    # What real handwriting varies in and MNIST does not (all off by default):
    stroke_prob: float = 0.0  # chance of a new stroke width, by a radius drawn from `stroke`
    stroke: tuple[float, float] = (0.0, 0.0)  # stroke radius change range, px (< 0 thins, down
    # to -MAX_THINNING; > 0 thickens); fractional radii blend, so widths vary continuously
    aspect: float = 1.0  # max stretch: width / height changes by a factor in [1/aspect, aspect]
    fill_prob: float = 0.0  # chance of stretching the ink box to a square (a scan stretched to
    # fill its frame, aspect ratio lost); needs refit
    refit: bool = False  # after the warp, place the ink as the new-image pipeline does: its box
    # fitted into 20x20 times `scale`, centre of mass in the middle, `shift` added, peak ink 1
    binarize_prob: float = 0.0  # chance of a hard threshold at a level drawn from 0.3..0.6
    lowres_prob: float = 0.0  # chance of shrinking to lowres_min..H-1 px and enlarging back
    lowres_min: int = 16  # smallest side of the low-resolution copy, px

    def __post_init__(self):
        for name in ("scale", "stroke"):  # YAML gives lists
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if len(self.scale) != 2:
            raise DigitnetError(f"AugmentConfig.scale: expected (min, max), got {self.scale}")
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise DigitnetError(f"AugmentConfig.scale: expected 0 < min <= max, got {self.scale}")
        if len(self.stroke) != 2 or not -MAX_THINNING <= self.stroke[0] <= self.stroke[1]:
            raise DigitnetError(f"AugmentConfig.stroke: expected (min, max) with "
                                f"-{MAX_THINNING} <= min <= max, got {self.stroke}")
        for name in ("thickness_prob", "stroke_prob", "fill_prob", "binarize_prob", "lowres_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise DigitnetError(f"AugmentConfig.{name}: expected 0..1, got {value}")
        if not self.aspect >= 1.0:
            raise DigitnetError(f"AugmentConfig.aspect: expected >= 1, got {self.aspect}")
        if isinstance(self.lowres_min, bool) or not isinstance(self.lowres_min, int) or (
                self.lowres_min < 4):
            raise DigitnetError(
                f"AugmentConfig.lowres_min: expected an integer >= 4, got {self.lowres_min!r}")
        if self.fill_prob > 0 and not self.refit:
            raise DigitnetError("AugmentConfig.fill_prob: needs refit=True (the ink box is "
                                "measured by the refit)")
        if self.elastic_sigma <= 0:
            raise DigitnetError(
                f"AugmentConfig.elastic_sigma: expected > 0, got {self.elastic_sigma}"
            )
        for name in ("rotate", "shift", "shear", "elastic_alpha", "noise_std"):
            value = getattr(self, name)
            if value < 0:
                raise DigitnetError(f"AugmentConfig.{name}: expected >= 0, got {value}")

    @property
    def is_identity(self) -> bool:
        """True when augmenting with this config returns the images unchanged."""
        return self == AugmentConfig(elastic_sigma=self.elastic_sigma)

    @property
    def has_warp(self) -> bool:
        """True when the config moves pixels (affine or elastic), so `grid_sample` is needed."""
        moves = self.rotate or self.shift or self.shear or self.elastic_alpha or self.refit
        return bool(moves) or self.scale != (1.0, 1.0) or self.aspect != 1.0

    @classmethod
    def for_severity(cls, level: int) -> AugmentConfig:
        """A preset: 0 = unchanged, 1 = mild, 3 = the augmented test set, 5 = harsh.

        Raises:
            DigitnetError: `level` is not an integer 0..5.
        """
        if isinstance(level, bool) or not isinstance(level, int) or level not in SEVERITIES:
            raise DigitnetError(
                f"augmentation severity must be an integer 0..{MAX_SEVERITY}, got {level!r}"
            )
        return SEVERITIES[level]

    @classmethod
    def for_handwriting(cls, level: int) -> AugmentConfig:
        """A `handwriting` preset, 1 (mild) to 5 (harsh): see HANDWRITING.

        Raises:
            DigitnetError: `level` is not an integer 1..5.
        """
        if isinstance(level, bool) or not isinstance(level, int) or level not in HANDWRITING:
            raise DigitnetError(
                f"handwriting augmentation level must be an integer 1..{MAX_SEVERITY}, got "
                f"{level!r}")
        return HANDWRITING[level]


# Chosen by eye on grids of MNIST test digits: level 3 clearly changes slant, size, position and
# stroke while the digits stay readable; at level 5 some digits become hard to read.
SEVERITIES: dict[int, AugmentConfig] = {
    0: AugmentConfig(),
    1: AugmentConfig(rotate=5, scale=(0.95, 1.05), shift=1, shear=5, elastic_alpha=0.5,
                     thickness_prob=0.1, noise_std=0.02),
    2: AugmentConfig(rotate=10, scale=(0.9, 1.1), shift=1.5, shear=10, elastic_alpha=0.75,
                     thickness_prob=0.2, noise_std=0.04),
    3: AugmentConfig(rotate=15, scale=(0.85, 1.15), shift=2, shear=15, elastic_alpha=1.0,
                     thickness_prob=0.3, noise_std=0.06),
    4: AugmentConfig(rotate=20, scale=(0.8, 1.18), shift=2.5, shear=18, elastic_alpha=1.3,
                     thickness_prob=0.4, noise_std=0.1),
    5: AugmentConfig(rotate=25, scale=(0.75, 1.2), shift=3, shear=22, elastic_alpha=1.6,
                     thickness_prob=0.5, noise_std=0.15),
}

# The `handwriting` training augmentation (TrainConfig.augment_kind): the digits as the new-image
# pipeline hands in other people's writing (ink box refitted into 20x20, centred by mass, peak 1),
# with stroke widths from thin to very thick, stretched or squeezed, slanted, sometimes binarised
# or at low resolution, sometimes a scan stretched to fill its square frame.
HANDWRITING: dict[int, AugmentConfig] = {
    1: AugmentConfig(rotate=5, scale=(0.95, 1.0), shift=0.5, shear=8, refit=True, aspect=1.15,
                     fill_prob=0.03, stroke_prob=0.2, stroke=(-1.0, 1.0), binarize_prob=0.05,
                     lowres_prob=0.05, lowres_min=22),
    2: AugmentConfig(rotate=8, scale=(0.93, 1.02), shift=1, shear=12, refit=True, aspect=1.25,
                     fill_prob=0.05, stroke_prob=0.35, stroke=(-1.0, 1.5), binarize_prob=0.1,
                     lowres_prob=0.1, lowres_min=20),
    3: AugmentConfig(rotate=10, scale=(0.9, 1.03), shift=1, shear=16, refit=True, aspect=1.4,
                     fill_prob=0.08, stroke_prob=0.5, stroke=(-1.5, 2.5), binarize_prob=0.15,
                     lowres_prob=0.15, lowres_min=18),
    4: AugmentConfig(rotate=12, scale=(0.88, 1.04), shift=1.5, shear=20, refit=True, aspect=1.5,
                     fill_prob=0.12, stroke_prob=0.6, stroke=(-1.5, 3.0), binarize_prob=0.2,
                     lowres_prob=0.2, lowres_min=16),
    5: AugmentConfig(rotate=15, scale=(0.85, 1.05), shift=1.5, shear=25, refit=True, aspect=1.6,
                     fill_prob=0.16, stroke_prob=0.7, stroke=(-2.0, 3.5), binarize_prob=0.25,
                     lowres_prob=0.25, lowres_min=14),
}


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def _draw_affine(cfg: AugmentConfig, n: int, generator: torch.Generator) -> tuple:
    """Per-sample angle (radians), zoom, shear (tangent) and shift (n, 2) px, in this order."""
    angle = torch.deg2rad(_uniform(n, -cfg.rotate, cfg.rotate, generator))
    zoom = _uniform(n, cfg.scale[0], cfg.scale[1], generator)
    shear = torch.tan(torch.deg2rad(_uniform(n, -cfg.shear, cfg.shear, generator)))
    shift = _uniform(2 * n, -cfg.shift, cfg.shift, generator).view(n, 2)
    return angle, zoom, shear, shift


def _draw_stretch(cfg: AugmentConfig, n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 2, 2) diagonal maps that widen by sqrt(f) and flatten by 1 / sqrt(f), f log-uniform
    in [1/aspect, aspect]; the identity (and no draw) when aspect is 1."""
    if cfg.aspect == 1.0:
        return torch.eye(2).expand(n, 2, 2)
    root = torch.exp(_uniform(n, -0.5, 0.5, generator) * math.log(cfg.aspect))  # sqrt(f)
    return torch.diag_embed(torch.stack([root, 1.0 / root], -1))


def _affine_theta(
    cfg: AugmentConfig, n: int, size: int, generator: torch.Generator
) -> torch.Tensor:
    """Per-sample matrices (n, 2, 3) mapping output to input coordinates for `F.affine_grid`.

    The forward map is x -> R S H A x + t (aspect stretch A, shear H, zoom S, rotation R, shift
    t); `affine_grid` needs its inverse, A^-1 H^-1 S^-1 R^-1 (x - t), in normalised coordinates
    where 2 = `size` pixels.
    """
    angle, zoom, shear, shift = _draw_affine(cfg, n, generator)
    shift = shift * (2.0 / size)
    # The grid's y axis points down the image, so a counter-clockwise turn on screen is R(-angle).
    cos, sin = torch.cos(angle), torch.sin(angle)
    r_inv = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (n,2,2)
    h_inv = torch.zeros(n, 2, 2)
    h_inv[:, 0, 0] = 1.0
    h_inv[:, 0, 1] = -shear
    h_inv[:, 1, 1] = 1.0
    linear = h_inv @ r_inv / zoom.view(n, 1, 1)
    if cfg.aspect != 1.0:
        linear = torch.linalg.inv(_draw_stretch(cfg, n, generator)) @ linear
    offset = -(linear @ shift.unsqueeze(-1))  # (n, 2, 1)
    return torch.cat([linear, offset], dim=2)


def _refit_theta(cfg: AugmentConfig, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """`F.affine_grid` matrices (n, 2, 3): stretch, slant and turn each sample (R H A), then fit
    its ink box into the 20x20 box times the drawn zoom and centre it by mass, as the new-image
    pipeline would (`handwriting.refit_theta`), then shift it."""
    n = len(x)
    angle, zoom, shear, shift = _draw_affine(cfg, n, generator)
    cos, sin = torch.cos(angle), torch.sin(angle)
    turn = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
    slant = torch.eye(2).repeat(n, 1, 1)
    slant[:, 0, 1] = shear
    linear = turn @ slant @ _draw_stretch(cfg, n, generator)
    fill = torch.rand(n, generator=generator) < cfg.fill_prob if cfg.fill_prob > 0 else (
        torch.zeros(n, dtype=torch.bool))
    return refit_theta(x, linear, zoom, fill, shift)


def _draw_stroke_radii(cfg: AugmentConfig, n: int, generator: torch.Generator) -> torch.Tensor:
    """(n,) stroke radius changes in px: from `stroke` with chance stroke_prob, else 0."""
    chosen = torch.rand(n, generator=generator) < cfg.stroke_prob
    return torch.where(chosen, _uniform(n, cfg.stroke[0], cfg.stroke[1], generator), 0.0)


BINARIZE_LEVELS = (0.3, 0.6)  # thresholds of hard binarisation, as fractions of full ink


def _binarize_and_lower_resolution(
    x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """Lower the resolution of a random lowres_prob share of samples (to lowres_min..H-1 px and
    back) and binarise a binarize_prob share, at the low resolution where both apply (a binary
    scan at 16x16 that the pipeline enlarged)."""
    n, size = len(x), x.shape[-1]
    binary = torch.rand(n, generator=generator) < cfg.binarize_prob
    threshold = _uniform(n, *BINARIZE_LEVELS, generator)
    if cfg.lowres_prob == 0 or cfg.lowres_min >= size:
        return binarize(x, threshold, binary)
    low = torch.rand(n, generator=generator) < cfg.lowres_prob
    sizes = torch.randint(cfg.lowres_min, size, (n,), generator=generator)
    return reduce_resolution(x, torch.where(low, sizes, size), threshold, binary)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian of std `sigma` pixels, truncated at _TRUNCATE_SIGMAS * sigma."""
    radius = max(1, math.ceil(_TRUNCATE_SIGMAS * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def _gaussian_matrix(sigma: float, size: int) -> torch.Tensor:
    """(size, size) matrix G such that G @ v is v convolved with `_gaussian_kernel` (zero padding).

    Two matrix products (G @ x @ G^T) do the separable blur ~10x faster on CPU than 1-channel
    `conv2d` calls for 28 px images (24 ms against 220 ms for 2000 fields, 2 threads).
    """
    kernel = _gaussian_kernel(sigma)
    radius = len(kernel) // 2
    i = torch.arange(size)
    offset = i.view(1, -1) - i.view(-1, 1)  # column - row
    inside = offset.abs() <= radius
    return torch.where(inside, kernel[(offset + radius).clamp(0, 2 * radius)], torch.zeros(()))


def _elastic_field(
    cfg: AugmentConfig, n: int, size: int, generator: torch.Generator
) -> torch.Tensor:
    """Smooth random displacements (n, size, size, 2) in normalised grid units.

    White noise is blurred with a separable Gaussian of std `elastic_sigma` (G @ noise @ G^T) and
    rescaled so that each displacement component has RMS `elastic_alpha` pixels away from the
    border (blurring unit white noise leaves std ||kernel_1d||_2 ** 2).
    """
    blur = _gaussian_matrix(cfg.elastic_sigma, size)
    noise = torch.randn(n * 2, size, size, generator=generator)
    field = blur @ noise @ blur.T  # (2n, size, size)
    noise_gain = float(_gaussian_kernel(cfg.elastic_sigma).square().sum())
    gain = cfg.elastic_alpha / noise_gain * (2.0 / size)  # pixels -> normalised units
    return (field * gain).view(n, 2, size, size).permute(0, 2, 3, 1)


def _cross_max(x: torch.Tensor, pad_value: float) -> torch.Tensor:
    """Max over each pixel and its 4 neighbours ("+" structuring element); (B, 1, H, W)."""
    p = F.pad(x, (1, 1, 1, 1), value=pad_value)
    vertical = torch.maximum(p[..., :-2, 1:-1], p[..., 2:, 1:-1])
    horizontal = torch.maximum(p[..., 1:-1, :-2], p[..., 1:-1, 2:])
    return torch.maximum(x, torch.maximum(vertical, horizontal))


def _change_thickness(
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


def augment_batch(
    images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """Randomly perturb every image of a batch; labels stay valid because no digit changes class.

    Steps, each skipped when its setting is zero: stroke thickening/thinning (thickness_prob,
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

    Returns:
        A new tensor of the same shape and dtype: uint8 rounded and clamped to 0-255, floats
        clamped to [0, 1].

    Raises:
        DigitnetError: `images` is not a batch of square single-channel images.
    """
    single_channel = images.dim() == 3 or (images.dim() == 4 and images.shape[1] == 1)
    if not single_channel or images.shape[-1] != images.shape[-2]:
        raise DigitnetError(
            f"expected images of shape (B, H, H) or (B, 1, H, H), got {tuple(images.shape)}"
        )
    if cfg.is_identity or len(images) == 0:
        return images.clone()
    is_uint8 = images.dtype == torch.uint8
    x = images.reshape(len(images), 1, *images.shape[-2:]).float()  # (B, 1, H, W)
    if is_uint8:
        x = x / 255.0
    n, size = len(x), x.shape[-1]
    if cfg.thickness_prob > 0:
        x = _change_thickness(x, cfg, generator)
    if cfg.stroke_prob > 0:
        x = change_stroke_width(x, _draw_stroke_radii(cfg, n, generator))
    if cfg.has_warp:
        if cfg.refit:
            grid = affine_grid(_refit_theta(cfg, x, generator), size)  # (B, H, W, 2)
        else:  # F.affine_grid keeps the bytes of the severities and mnist-test-augmented
            theta = _affine_theta(cfg, n, size, generator)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
        if cfg.elastic_alpha > 0:
            grid = grid + _elastic_field(cfg, n, size, generator)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if cfg.refit:
        x = normalize_peak(x)
    if cfg.binarize_prob > 0 or cfg.lowres_prob > 0:
        x = _binarize_and_lower_resolution(x, cfg, generator)
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
    interpolation, about 40x cheaper than `augment_batch` (870k against 23k images/s on one
    core), for fast recipes.

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
