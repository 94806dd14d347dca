"""Label-aware augmentation: ways of writing a digit that people use and MNIST barely has, drawn
onto training digits of the class they belong to, so the class never changes.

- The European 1: a long flag from the top of the stem down to the left, often a base (a short
  bar under the stem). MNIST's 1s are almost all a bare stroke, so a model trained on it reads a
  flagged 1 as a 7.
- The crossed 7: a short bar across the stem, as most of continental Europe writes it. Drawn
  beside the flagged 1 so that "a bar at the top" does not become evidence for 1 alone.

The strokes are drawn on the raw 28x28 digit before any other augmentation (so stroke width,
slant, stretch and the refit act on them too), with the digit's own stroke width, anti-aliased.
Everything is batched: one distance field per drawn segment over the whole batch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from digitnet.data.warp import uniform

ONE, SEVEN = 1, 7
INK = 0.3  # a pixel above this share of the sample's peak counts as ink when measuring the digit
END_ROWS = 2  # rows at the top and bottom of the ink whose ink gives the stem's ends
# Ranges, in units of the digit's ink height, wider than any one writer's habit:
FLAG_LENGTH = (0.15, 0.5)
FLAG_ANGLE = (15.0, 65.0)  # degrees below the horizontal, towards the left
BASE_PROB = 0.6  # chance that a flagged 1 also gets a base
BASE_HALF = (0.1, 0.3)  # half the base's length
CROSS_HALF = (0.12, 0.3)  # half the crossbar's length
CROSS_HEIGHT = (0.45, 0.65)  # where the crossbar sits, from the top of the ink
CROSS_TILT = 10.0  # degrees either way
STROKE_RANGE = (1.2, 4.0)  # px: the estimated stroke width is clamped to this


def _pixel_centres(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    i = torch.arange(size, dtype=torch.float32)
    rows, cols = torch.meshgrid(i, i, indexing="ij")
    return cols, rows  # x, y (size, size)


def draw_segments(x: torch.Tensor, start: torch.Tensor, end: torch.Tensor,
                  width: torch.Tensor) -> torch.Tensor:
    """Draw one anti-aliased line segment onto each sample, at each sample's peak ink level.

    Args:
        x: (B, 1, S, S) ink in [0, 1].
        start, end: (B, 2) segment ends in pixel coordinates (x = column, y = row).
        width: (B,) stroke width in px.

    Returns:
        A new tensor like `x`: the maximum of the image and the stroke.
    """
    px, py = _pixel_centres(x.shape[-1])
    sx, sy = (v.view(-1, 1, 1) for v in start.unbind(1))
    dx, dy = (v.view(-1, 1, 1) for v in (end - start).unbind(1))
    length2 = (dx * dx + dy * dy).clamp(min=1e-6)
    t = (((px - sx) * dx + (py - sy) * dy) / length2).clamp(0.0, 1.0)
    dist = torch.hypot(px - (sx + t * dx), py - (sy + t * dy))  # (B, S, S)
    stroke = (width.view(-1, 1, 1) / 2 + 0.5 - dist).clamp(0.0, 1.0)
    peak = x.flatten(1).amax(1).clamp(min=0.5).view(-1, 1, 1)
    return torch.maximum(x, (stroke * peak).unsqueeze(1))


class _Stem(NamedTuple):
    """Where each sample's ink starts and ends (rows, and the ink's mean column there), its
    height and its stroke width, all (B,) floats."""

    top: torch.Tensor
    bottom: torch.Tensor
    x_top: torch.Tensor
    x_bottom: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor


def _column_near(img: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """The ink-weighted mean column of each sample's rows lo..hi; img (B, S, S), lo, hi (B,)."""
    rows = torch.arange(img.shape[-1])
    band = (rows.view(1, -1) >= lo.view(-1, 1)) & (rows.view(1, -1) <= hi.view(-1, 1))
    w = img * band.unsqueeze(-1)
    px, _ = _pixel_centres(img.shape[-1])
    return (w * px).flatten(1).sum(1) / w.flatten(1).sum(1).clamp(min=1e-6)


def _stem(img: torch.Tensor) -> _Stem:
    """The stem of each sample of img (B, S, S): ink above INK of its peak."""
    n, size = len(img), img.shape[-1]
    ink = img > INK * img.flatten(1).amax(1).clamp(min=1e-6).view(n, 1, 1)
    rows = ink.any(2)  # (B, S)
    idx = torch.arange(size)
    top = torch.where(rows, idx, size).amin(1)
    bottom = torch.where(rows, idx, -1).amax(1)
    height = (bottom - top + 1).clamp(min=1).float()
    x_top = _column_near(img, top, top + END_ROWS)
    x_bottom = _column_near(img, bottom - END_ROWS, bottom)
    # a stroke's width is its ink (pixels at full ink) over its length; a 1 is one slanted stem
    length = torch.hypot(height, x_top - x_bottom)
    width = (img.flatten(1).sum(1) / length).clamp(*STROKE_RANGE)
    return _Stem(top.float(), bottom.float(), x_top, x_bottom, height, width)


def draw_styles(x: torch.Tensor, labels: torch.Tensor, one_prob: float, seven_prob: float,
                generator: torch.Generator) -> torch.Tensor:
    """Give a `one_prob` share of the 1s a flag (and some a base) and a `seven_prob` share of the
    7s a crossbar; x is (B, 1, S, S) ink in [0, 1], labels (B,). Returns a new tensor.

    The draws are made for the whole batch (so the randomness used does not depend on the
    labels) and applied where the label and the chance agree.
    """
    n = len(x)
    chance = torch.rand(n, generator=generator)
    flag_len, flag_angle = uniform(n, *FLAG_LENGTH, generator), uniform(n, *FLAG_ANGLE, generator)
    base = torch.rand(n, generator=generator) < BASE_PROB
    base_half = uniform(n, *BASE_HALF, generator)
    cross_half, cross_at = uniform(n, *CROSS_HALF, generator), uniform(n, *CROSS_HEIGHT, generator)
    cross_tilt = uniform(n, -CROSS_TILT, CROSS_TILT, generator)
    out = x.clone()
    ones = torch.nonzero((labels == ONE) & (chance < one_prob)).flatten()
    if len(ones):  # a flag from the top of the stem down to the left, often a base under it
        sub = x[ones]
        stem = _stem(sub[:, 0])
        angle = torch.deg2rad(flag_angle[ones])
        top = torch.stack([stem.x_top, stem.top], 1)
        reach = (flag_len[ones] * stem.height).unsqueeze(1)
        flagged = draw_segments(sub, top, top + reach * torch.stack(
            [-torch.cos(angle), torch.sin(angle)], 1), stem.width)
        foot = torch.stack([stem.x_bottom, stem.bottom], 1)
        half = (base_half[ones] * stem.height).unsqueeze(1) * torch.tensor([1.0, 0.0])
        based = draw_segments(flagged, foot - half, foot + half, stem.width)
        out[ones] = torch.where(base[ones].view(-1, 1, 1, 1), based, flagged)
    sevens = torch.nonzero((labels == SEVEN) & (chance < seven_prob)).flatten()
    if len(sevens):  # a crossbar through the stem, a little below the middle
        sub = x[sevens]
        stem = _stem(sub[:, 0])
        at = stem.top + cross_at[sevens] * stem.height
        centre = torch.stack([_column_near(sub[:, 0], (at - 1).round().long(),
                                           (at + 1).round().long()), at], 1)
        tilt = torch.deg2rad(cross_tilt[sevens])
        bar = (cross_half[sevens] * stem.height).unsqueeze(1) * torch.stack(
            [torch.cos(tilt), torch.sin(tilt)], 1)
        out[sevens] = draw_segments(sub, centre - bar, centre + bar, stem.width)
    return out
