"""Label-aware augmentation (data/styles.py): the European 1's flag and base and the crossed 7
are drawn only on digits of their own class, where they belong, and the augmentation needs the
labels to do so."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from digitnet.data.augment import augment_batch
from digitnet.data.augment_config import HANDWRITING, AugmentConfig
from digitnet.data.styles import draw_segments, draw_styles
from digitnet.errors import DigitnetError


def _stem(n: int, slant: float = 0.0) -> torch.Tensor:
    """(n, 1, 28, 28) bare 1s: a 2 px stroke from row 4 to row 23, leaning by `slant` px."""
    x = torch.zeros(n, 1, 28, 28)
    for row in range(4, 24):
        col = round(14 + slant * (row - 14) / 10)
        x[:, 0, row, col - 1:col + 1] = 1.0
    return x


def test_a_segment_is_drawn_with_its_width_and_length():
    x = torch.zeros(2, 1, 28, 28)
    x[:, 0, 0, 14] = 1.0  # full ink somewhere: the stroke is drawn at the sample's peak
    start, end = torch.tensor([[5.0, 14.0]] * 2), torch.tensor([[22.0, 14.0]] * 2)
    out = draw_segments(x, start, end, torch.tensor([3.0, 1.0]))
    assert out.max() <= 1.0 and out.min() >= 0.0
    wide, thin = out[0, 0], out[1, 0]
    assert (wide[13:16, 5:23] == 1).all() and wide[11].max() == 0 and wide[17].max() == 0
    assert (thin[14, 5:23] == 1).all() and thin[12].max() == 0 and thin[16].max() == 0
    assert wide[:, :4].max() == 0 and wide[:, 24:].max() == 0  # no further than its ends
    # drawn at each sample's own peak ink level, over what is there
    dim = torch.full((1, 1, 28, 28), 0.2)
    dim[0, 0, 0, 0] = 0.7
    drawn = draw_segments(dim, start[:1], end[:1], torch.tensor([2.0]))
    assert drawn[0, 0, 14, 10] == pytest.approx(0.7) and drawn[0, 0, 2, 2] == pytest.approx(0.2)


def test_only_ones_and_sevens_get_a_style_of_their_own_class():
    n = 40
    x = _stem(n, slant=2.0)
    labels = torch.arange(n) % 10
    out = draw_styles(x, labels, 1.0, 1.0, torch.Generator().manual_seed(0))
    changed = (out != x).flatten(1).any(1)
    assert torch.equal(changed, (labels == 1) | (labels == 7))
    assert (out >= x).all() and out.max() <= 1.0  # ink is only added
    added = (out - x)[:, 0]
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    for i in torch.nonzero(labels == 1).flatten():
        ink = added[i]
        flag = ink[:12]  # the flag leaves the top of the stem down to the left
        assert flag.sum() > 2 and (flag * cols[:12]).sum() / flag.sum() < 13
    for i in torch.nonzero(labels == 7).flatten():
        ink = added[i]  # the crossbar sits across the stem a little below the middle
        centre = float((ink * rows).sum() / ink.sum())
        assert 11 <= centre <= 19 and ink[:, :12].sum() > 0 and ink[:, 16:].sum() > 0


def test_chances_and_randomness_do_not_depend_on_the_labels():
    x = _stem(200)
    ones = torch.ones(200, dtype=torch.long)
    flagged = (draw_styles(x, ones, 0.3, 0.0, torch.Generator().manual_seed(1)) != x).flatten(
        1).any(1)
    assert 30 <= int(flagged.sum()) <= 90  # about 30% of the 1s
    for labels in (ones, torch.zeros(200, dtype=torch.long), torch.arange(200) % 10):
        g = torch.Generator().manual_seed(1)
        draw_styles(x, labels, 0.3, 0.2, g)
        assert torch.equal(g.get_state(), _state_after(x, ones))


def _state_after(x, labels):
    g = torch.Generator().manual_seed(1)
    draw_styles(x, labels, 0.3, 0.2, g)
    return g.get_state()


def test_the_augmentation_needs_one_label_per_image_when_it_draws_styles():
    images = (255 * _stem(8)[:, 0]).to(torch.uint8)
    cfg = AugmentConfig(flag_one_prob=0.5)
    assert cfg.needs_labels and not AugmentConfig().needs_labels
    for labels in (None, torch.ones(3, dtype=torch.long)):
        with pytest.raises(DigitnetError, match="needs one label per image"):
            augment_batch(images, cfg, torch.Generator().manual_seed(0), labels)
    out = augment_batch(images, cfg, torch.Generator().manual_seed(0),
                        torch.ones(8, dtype=torch.long))
    assert out.dtype == torch.uint8 and not torch.equal(out, images)
    with pytest.raises(DigitnetError, match="flag_one_prob"):
        AugmentConfig(flag_one_prob=1.5)


def test_the_handwriting_presets_draw_styles_and_the_severities_do_not():
    assert all(HANDWRITING[k].needs_labels for k in HANDWRITING)
    assert [HANDWRITING[k].flag_one_prob for k in sorted(HANDWRITING)] == sorted(
        HANDWRITING[k].flag_one_prob for k in HANDWRITING)
    from digitnet.data.augment_config import SEVERITIES

    assert not any(cfg.needs_labels for cfg in SEVERITIES.values())  # mnist-test-augmented
    assert np.isclose(HANDWRITING[2].flag_one_prob, 0.2)
