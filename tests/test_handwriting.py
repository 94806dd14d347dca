"""The `handwriting` augmentation: stroke width, refit into the 20x20 box, aspect, fill,
binarisation and low resolution each do their job, reproducibly, without touching labels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from digitnet.config import TrainConfig
from digitnet.data.augment import (
    HANDWRITING,
    MAX_SEVERITY,
    AugmentConfig,
    augment_batch,
    make_augmented_dataset,
)
from digitnet.data.handwriting import affine_grid, change_stroke_width, reduce_resolution
from digitnet.errors import DigitnetError
from digitnet.training.loop import batch_augmentation
from pinned import assert_matches_pinned


def _strokes(n: int = 16, seed: int = 0) -> torch.Tensor:
    """uint8 (n, 28, 28): a small off-centre "7" (bar and stem) with a grey edge, placed at
    random."""
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    for i in range(n):
        top, left = (int(v) for v in torch.randint(2, 12, (2,), generator=g))
        images[i, top:top + 2, left:left + 10] = 255  # bar, 10 px wide
        images[i, top:top + 12, left + 8:left + 10] = 255  # stem, 12 px tall
        images[i, top + 2:top + 12, left + 7] = 100  # grey edge
    return images


def _ink_box(images: torch.Tensor, level: int = 26) -> torch.Tensor:
    """(n, 2): height and width of each image's ink bounding box (pixels above `level`), px."""
    ink = images.reshape(len(images), 28, 28) > level
    sizes = []
    for axis in (2, 1):  # rows that hold ink, then columns
        hit = ink.any(axis).float()
        first = hit.argmax(1)
        last = 27 - hit.flip(1).argmax(1)
        sizes.append(last - first + 1)
    return torch.stack(sizes, 1)


def _centre_of_mass(images: torch.Tensor) -> torch.Tensor:
    """(n, 2): row and column of each image's ink centroid, index coordinates."""
    w = images.float().reshape(len(images), 28, 28)
    i = torch.arange(28.0)
    mass = w.sum((1, 2))
    return torch.stack([(w.sum(2) @ i) / mass, (w.sum(1) @ i) / mass], 1)


# ----------------------------------------------------------------------------- stroke width
def _line(width: int) -> torch.Tensor:
    """float (1, 1, 28, 28): a full-ink vertical line `width` px wide, rows 6-21."""
    x = torch.zeros(1, 1, 28, 28)
    x[..., 6:22, 13:13 + width] = 1.0
    return x


@pytest.mark.parametrize("radius, width", [(1.0, 3), (2.0, 5), (3.0, 7), (4.0, 9)])
def test_thickening_by_whole_radius_widens_a_line_by_two_radii(radius, width):
    out = change_stroke_width(_line(1), torch.tensor([radius]))
    assert int((out[0, 0, 14] > 0.99).sum()) == width
    assert ((out == 0) | (out == 1)).all()  # binary in, binary out: a plain dilation


def test_thickening_grows_a_dot_into_a_disc():
    """Radius 2 is "+" then 3x3: a 5x5 square less its corners (21 px), rounder than "+" twice
    (a 13 px diamond) or 3x3 twice (25 px)."""
    dot = torch.zeros(1, 1, 28, 28)
    dot[..., 14, 14] = 1.0
    grown = change_stroke_width(dot, torch.tensor([2.0]))[0, 0]
    assert int((grown == 1).sum()) == 21
    assert grown[12, 12] == 0 and grown[12, 13] == 1 and grown[14, 16] == 1


def test_fractional_radius_blends_the_neighbouring_whole_radii():
    x = _line(1)
    one, two = (change_stroke_width(x, torch.tensor([r])) for r in (1.0, 2.0))
    half = change_stroke_width(x, torch.tensor([1.25]))
    assert torch.allclose(half, 0.75 * one + 0.25 * two)


def test_thinning_dims_edges_and_keeps_the_core():
    x = _line(3) * 0.6
    x[..., 6:22, 14] = 1.0  # full-ink core with grey edges
    out = change_stroke_width(x, torch.tensor([-1.0]))
    assert (out[0, 0, 8:20, 14] == 1.0).all()  # the core survives
    assert (out[0, 0, 8:20, 13] < 0.5).all()  # the grey edges dim: the stroke is thinner
    assert out.sum() < x.sum()
    twice = change_stroke_width(x, torch.tensor([-2.0]))
    assert twice.sum() < out.sum()


def test_each_sample_gets_its_own_radius_and_zero_changes_nothing():
    x = _line(1).repeat(3, 1, 1, 1)
    out = change_stroke_width(x, torch.tensor([0.0, 2.0, -1.0]))
    assert torch.equal(out[0], x[0])
    widths = (out[:, 0, 14] > 0.99).sum(1).tolist()
    assert widths == [1, 5, 1]


# ------------------------------------------------------------------------------------ refit
REFIT = AugmentConfig(refit=True)


def test_refit_places_the_ink_as_the_pipeline_does():
    """Small, off-centre digits come out with their longer side 20 px and centred by mass."""
    images = _strokes(32)
    out = augment_batch(images, REFIT, torch.Generator().manual_seed(0))
    box = _ink_box(out)
    assert (box.amax(1) >= 19).all() and (box.amax(1) <= 21).all()
    assert (_centre_of_mass(out) - 14.0).abs().max() < 0.6
    assert (out.flatten(1).amax(1) == 255).all()  # peak ink 1, as the pipeline's fit step
    before = _ink_box(images)  # the aspect ratio is kept
    ratio_before = before[:, 0] / before[:, 1]
    ratio_after = box[:, 0] / box[:, 1]
    assert torch.allclose(ratio_after.float(), ratio_before.float(), rtol=0.12)


def test_refit_sets_the_peak_ink_to_full():
    """The pipeline stretches each fitted digit so its brightest pixel is 255: faint ink too."""
    faint = (_strokes(8).float() * 0.5).round().to(torch.uint8)  # peak 128
    out = augment_batch(faint, REFIT, torch.Generator().manual_seed(0))
    assert (out.flatten(1).amax(1) == 255).all()
    plain = augment_batch(faint, AugmentConfig(shift=1), torch.Generator().manual_seed(0))
    assert (plain.flatten(1).amax(1) < 200).all()  # only the refit does it


def test_refit_of_an_mnist_like_digit_changes_little():
    """A digit already 20 px tall and centred by mass stays where it is."""
    images = _strokes(1)
    fitted = augment_batch(images, REFIT, torch.Generator().manual_seed(0))
    again = augment_batch(fitted, REFIT, torch.Generator().manual_seed(0))
    assert (again.float() - fitted.float()).abs().mean() < 8  # of 255, interpolation only


def test_aspect_stretches_both_ways_within_the_limit():
    images = _strokes(64)
    out = augment_batch(images, AugmentConfig(refit=True, aspect=1.5),
                        torch.Generator().manual_seed(0))
    before, after = _ink_box(images).float(), _ink_box(out).float()
    change = (after[:, 0] / after[:, 1]) / (before[:, 0] / before[:, 1])  # height/width ratio
    assert change.max() > 1.25 and change.min() < 1 / 1.25  # taller and wider both happen
    assert change.max() < 1.5 * 1.2 and change.min() > 1 / (1.5 * 1.2)


def test_fill_stretches_the_ink_box_to_a_square():
    """A scan stretched to fill its frame: a narrow "1" becomes a 20 x 20 block of ink."""
    images = torch.zeros(8, 28, 28, dtype=torch.uint8)
    images[:, 4:24, 13:16] = 255  # 20 x 3 px
    out = augment_batch(images, AugmentConfig(refit=True, fill_prob=1.0), torch.Generator())
    box = _ink_box(out, level=127)  # half ink: enlarging 3 px to 20 blurs the edges over ~3 px
    assert (box >= 19).all() and (box <= 21).all()
    kept = augment_batch(images, REFIT, torch.Generator())
    assert (_ink_box(kept)[:, 1] <= 5).all()  # without fill it stays narrow


def test_own_affine_grid_matches_torch():
    theta = torch.randn(16, 2, 3, generator=torch.Generator().manual_seed(0))
    expected = F.affine_grid(theta, [16, 1, 28, 28], align_corners=False)
    assert torch.allclose(affine_grid(theta, 28), expected, atol=1e-5)


# ------------------------------------------------------------- binarisation and resolution
def test_binarize_gives_two_levels():
    images = _strokes(16)
    out = augment_batch(images.float() / 255, AugmentConfig(binarize_prob=1.0), torch.Generator())
    assert set(out.unique().tolist()) == {0.0, 1.0}
    assert ((out == 1) <= (images > 0)).all()  # ink only where there was ink
    assert (out[:, :, :][images == 255] == 1).all()  # full ink stays ink at every threshold


def test_low_resolution_is_a_shrink_and_enlarge_at_one_of_the_allowed_sizes():
    images = _strokes(24).float().unsqueeze(1) / 255
    cfg = AugmentConfig(lowres_prob=1.0, lowres_min=16)
    out = augment_batch(images, cfg, torch.Generator().manual_seed(0))
    candidates = {s: F.interpolate(F.interpolate(images, size=(s, s), mode="area"), size=(28, 28),
                                   mode="bicubic", align_corners=False).clamp(0, 1)
                  for s in range(16, 28)}
    used = []
    for i in range(len(images)):
        match = [s for s, c in candidates.items() if torch.allclose(out[i], c[i], atol=1e-6)]
        assert match, i
        used.append(match[0])
    assert len(set(used)) >= 5  # sizes vary across the batch


def test_reduce_resolution_binarises_at_the_low_size():
    x = _strokes(4).float().unsqueeze(1) / 255
    sizes, threshold = torch.tensor([16, 16, 28, 28]), torch.full((4,), 0.5)
    binary = torch.tensor([True, False, True, False])
    out = reduce_resolution(x, sizes, threshold, binary)
    small = F.interpolate(x[:1], size=(16, 16), mode="area")
    expected = F.interpolate((small > 0.5).float(), size=(28, 28), mode="bicubic",
                             align_corners=False).clamp(0, 1)
    assert torch.allclose(out[0], expected[0], atol=1e-6)
    assert set(out[2].unique().tolist()) == {0.0, 1.0} and torch.equal(out[3], x[3])
    assert not torch.equal(out[1], x[1])


# ------------------------------------------------------------------- presets and wiring
@pytest.mark.parametrize("level", range(1, MAX_SEVERITY + 1))
def test_presets_keep_shape_dtype_labels_and_are_reproducible(level):
    images, labels = _strokes(40), torch.arange(40) % 10
    out, out_labels = make_augmented_dataset(images, labels, severity=0, seed=0)
    assert torch.equal(out, images)  # severity 0 still returns the images unchanged
    cfg = AugmentConfig.for_handwriting(level)
    a = augment_batch(images, cfg, torch.Generator().manual_seed(3), labels)
    b = augment_batch(images, cfg, torch.Generator().manual_seed(3), labels)
    assert a.shape == images.shape and a.dtype == torch.uint8 and torch.equal(a, b)
    assert not torch.equal(a, augment_batch(images, cfg, torch.Generator().manual_seed(4), labels))
    assert torch.equal(out_labels, labels)


def test_presets_grow_stronger():
    """Each level changes stroke width more often and more: the spread of ink mass grows."""
    images = _strokes(256)
    spread = []
    for level in range(1, MAX_SEVERITY + 1):
        out = augment_batch(images, AugmentConfig.for_handwriting(level),
                            torch.Generator().manual_seed(0), torch.arange(len(images)) % 10)
        spread.append(out.float().sum((1, 2)).std().item())
    assert all(a < b for a, b in zip(spread, spread[1:])), spread


def test_handwriting_preset_3_gives_pinned_bytes():
    """Update only with a new torch pin or a deliberate change of the preset, and say so (last:
    the label-aware styles of data/styles.py joined the presets, December 2026)."""
    out = augment_batch(_strokes(16), AugmentConfig.for_handwriting(3),
                        torch.Generator().manual_seed(0), torch.arange(16) % 10)
    assert_matches_pinned("handwriting-3", out)  # preset 3 on _strokes(16), seed 0



def test_result_does_not_depend_on_thread_count():
    images, labels = _strokes(64), torch.arange(64) % 10
    cfg = AugmentConfig.for_handwriting(5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = augment_batch(images, cfg, torch.Generator().manual_seed(0), labels)
        torch.set_num_threads(2)
        two = augment_batch(images, cfg, torch.Generator().manual_seed(0), labels)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_training_uses_the_handwriting_preset():
    images = _strokes(32)
    augment = batch_augmentation(TrainConfig(augment_kind="handwriting", augment_severity=4))
    labels = torch.arange(len(images)) % 10
    out = augment(images, labels, torch.Generator().manual_seed(0))
    expected = augment_batch(images, HANDWRITING[4], torch.Generator().manual_seed(0), labels)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("level", [0, 6, 2.0, True, None])
def test_bad_handwriting_level_raises(level):
    with pytest.raises(DigitnetError, match="handwriting augmentation level must be an integer"):
        AugmentConfig.for_handwriting(level)


@pytest.mark.parametrize("kwargs, message", [
    (dict(stroke=(1.0, 0.5)), "AugmentConfig.stroke: expected (min, max) with -2 <= min <= max, "
                              "got (1.0, 0.5)"),
    (dict(stroke=(-3.0, 1.0)), "AugmentConfig.stroke: expected (min, max) with -2 <= min <= max, "
                               "got (-3.0, 1.0)"),
    (dict(stroke_prob=1.5), "AugmentConfig.stroke_prob: expected 0..1, got 1.5"),
    (dict(binarize_prob=-0.1), "AugmentConfig.binarize_prob: expected 0..1, got -0.1"),
    (dict(lowres_prob=2), "AugmentConfig.lowres_prob: expected 0..1, got 2"),
    (dict(aspect=0.9), "AugmentConfig.aspect: expected >= 1, got 0.9"),
    (dict(lowres_min=3), "AugmentConfig.lowres_min: expected an integer >= 4, got 3"),
    (dict(lowres_min=16.0), "AugmentConfig.lowres_min: expected an integer >= 4, got 16.0"),
    (dict(fill_prob=0.5), "AugmentConfig.fill_prob: needs refit=True (the ink box is measured "
                          "by the refit)"),
])
def test_bad_handwriting_config_message(kwargs, message):
    with pytest.raises(DigitnetError) as info:
        AugmentConfig(**kwargs)
    assert str(info.value) == message


def test_train_config_accepts_handwriting_and_names_the_kinds():
    assert TrainConfig(augment_kind="handwriting").augment_kind == "handwriting"
    with pytest.raises(DigitnetError) as info:
        TrainConfig(augment_kind="rotate")
    assert str(info.value) == ("invalid training configuration: augment_kind must be one of "
                               "'warp', 'shift', 'handwriting'")


def test_cli_trains_with_the_handwriting_augmentation(tmp_path, synthetic_mnist, capsys):
    """`--augment-kind handwriting` is a CLI choice, lands in the run's config and trains."""
    import json

    from digitnet.cli import main

    argv = ["train", "--arch", "linear", "--epochs", "1", "--batch-size", "32", "--val-size",
            "50", "--augment-kind", "handwriting", "--augment-severity", "3", "--no-progress",
            "--threads", "1", "--name", "hw", "--data-dir", str(synthetic_mnist),
            "--models-dir", str(tmp_path / "models")]
    assert main(argv) == 0
    config = json.loads(next((tmp_path / "models").glob("*/hw/config.json")).read_text())
    train = config["train"]
    assert (train["augment_kind"], train["augment_severity"]) == ("handwriting", 3)
    with pytest.raises(SystemExit):
        main([*argv[:9], "--augment-kind", "handwritten"])
    assert "invalid choice: 'handwritten'" in capsys.readouterr().err
