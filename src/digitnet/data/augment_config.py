"""How strongly to augment digit images: `AugmentConfig`, its severity presets (the augmented
test set and the `warp` training augmentation) and its `handwriting` presets.

data/augment.py applies a config to batches; data/warp.py and data/strokes.py do its steps.
"""

from __future__ import annotations

from dataclasses import dataclass

from digitnet.data.handwriting import MAX_THINNING
from digitnet.errors import DigitnetError

MAX_SEVERITY = 5


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
    # Label-aware (data/styles.py; `augment_batch` then needs the labels):
    flag_one_prob: float = 0.0  # chance that a 1 gets a European flag (and maybe a base)
    cross_seven_prob: float = 0.0  # chance that a 7 gets a crossbar

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
        for name in ("thickness_prob", "stroke_prob", "fill_prob", "binarize_prob", "lowres_prob",
                     "flag_one_prob", "cross_seven_prob"):
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
    def needs_labels(self) -> bool:
        """True when some step depends on the class (data/styles.py)."""
        return self.flag_one_prob > 0 or self.cross_seven_prob > 0

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
                     lowres_prob=0.05, lowres_min=22,
                     flag_one_prob=0.1, cross_seven_prob=0.05),
    2: AugmentConfig(rotate=8, scale=(0.93, 1.02), shift=1, shear=12, refit=True, aspect=1.25,
                     fill_prob=0.05, stroke_prob=0.35, stroke=(-1.0, 1.5), binarize_prob=0.1,
                     lowres_prob=0.1, lowres_min=20,
                     flag_one_prob=0.2, cross_seven_prob=0.1),
    3: AugmentConfig(rotate=10, scale=(0.9, 1.03), shift=1, shear=16, refit=True, aspect=1.4,
                     fill_prob=0.08, stroke_prob=0.5, stroke=(-1.5, 2.5), binarize_prob=0.15,
                     lowres_prob=0.15, lowres_min=18,
                     flag_one_prob=0.25, cross_seven_prob=0.15),
    4: AugmentConfig(rotate=12, scale=(0.88, 1.04), shift=1.5, shear=20, refit=True, aspect=1.5,
                     fill_prob=0.12, stroke_prob=0.6, stroke=(-1.5, 3.0), binarize_prob=0.2,
                     lowres_prob=0.2, lowres_min=16,
                     flag_one_prob=0.3, cross_seven_prob=0.2),
    5: AugmentConfig(rotate=15, scale=(0.85, 1.05), shift=1.5, shear=25, refit=True, aspect=1.6,
                     fill_prob=0.16, stroke_prob=0.7, stroke=(-2.0, 3.5), binarize_prob=0.25,
                     lowres_prob=0.25, lowres_min=14,
                     flag_one_prob=0.35, cross_seven_prob=0.25),
}
