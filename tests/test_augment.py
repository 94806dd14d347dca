"""Batch augmentation: shape, dtype and range kept, reproducible, each operation does its job."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch

from digitnet.data.augment import augment_batch, make_augmented_dataset, shift_batch
from digitnet.data.augment_config import MAX_SEVERITY, AugmentConfig
from digitnet.data.mnist import load_mnist
from digitnet.errors import DigitnetError
from pinned import assert_matches_pinned


def _digits(n: int = 16, seed: int = 0) -> torch.Tensor:
    """uint8 (n, 28, 28) blobs and strokes, enough structure for every augmentation."""
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    images[:, 6:22, 12:15] = 255  # vertical stroke
    images[:, 6:9, 8:20] = 200  # top bar
    images[:, 5:23, 11] = 120  # grey edge, as in MNIST's anti-aliasing
    return images | torch.randint(0, 20, (n, 28, 28), generator=g, dtype=torch.uint8)


def _bar(n: int) -> torch.Tensor:
    """float (n, 28, 28): a horizontal bar through the centre."""
    images = torch.zeros(n, 28, 28)
    images[:, 13:15, 4:24] = 1.0
    return images


def _changed_fraction(out: torch.Tensor, images: torch.Tensor) -> float:
    """The fraction of the batch's images that differ from the input in at least one pixel."""
    differs = (out.float() - images.float()).flatten(1).abs().amax(1) > 0
    return differs.float().mean().item()


def _centre_of_mass(images: torch.Tensor) -> torch.Tensor:
    """(n, 2): row and column of each image's ink centroid, in pixels."""
    w = images.float().reshape(len(images), 28, 28)
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    mass = w.sum(dim=(1, 2))
    return torch.stack([(w * rows).sum((1, 2)) / mass, (w * cols).sum((1, 2)) / mass], 1)


def _orientation_degrees(images: torch.Tensor) -> torch.Tensor:
    """Angle of the main axis of each image's ink, counter-clockwise on screen, in (-90, 90]."""
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    x, y = cols, -rows  # y up, as on screen
    w = images.float()
    mass = w.sum(dim=(1, 2))
    mx, my = (w * x).sum(dim=(1, 2)) / mass, (w * y).sum(dim=(1, 2)) / mass
    dx, dy = x - mx.view(-1, 1, 1), y - my.view(-1, 1, 1)
    mu20, mu02 = (w * dx * dx).sum((1, 2)), (w * dy * dy).sum((1, 2))
    mu11 = (w * dx * dy).sum((1, 2))
    return torch.rad2deg(0.5 * torch.atan2(2 * mu11, mu20 - mu02))


SEVERE = AugmentConfig.for_severity(MAX_SEVERITY)


@pytest.mark.parametrize("shape", [(8, 28, 28), (8, 1, 28, 28)])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
def test_shape_dtype_and_range_kept(shape, dtype):
    images = _digits(8).view(shape)
    if dtype.is_floating_point:
        images = images.to(dtype) / 255
    out = augment_batch(images, SEVERE, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == dtype
    if dtype.is_floating_point:
        assert out.min() >= 0.0 and out.max() <= 1.0
    assert not torch.equal(out, images)


def test_same_seed_same_bytes_different_seed_different():
    images = _digits(32)
    cfg = AugmentConfig.for_severity(3)
    a = augment_batch(images, cfg, torch.Generator().manual_seed(7))
    b = augment_batch(images, cfg, torch.Generator().manual_seed(7))
    c = augment_batch(images, cfg, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_result_does_not_depend_on_thread_count():
    images = _digits(64)
    cfg = AugmentConfig.for_severity(4)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = augment_batch(images, cfg, torch.Generator().manual_seed(0))
        torch.set_num_threads(2)
        two = augment_batch(images, cfg, torch.Generator().manual_seed(0))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    assert _changed_fraction(one, images) == 1.0


@pytest.mark.parametrize(
    "cfg", [AugmentConfig(), AugmentConfig.for_severity(0), AugmentConfig(scale=[1, 1])]
)
def test_identity_config_returns_input_unchanged(cfg):
    images = _digits(4)
    assert cfg.is_identity
    out = augment_batch(images, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(out, images) and out is not images


def test_empty_batch():
    images = torch.zeros(0, 28, 28, dtype=torch.uint8)
    assert augment_batch(images, SEVERE, torch.Generator()).shape == (0, 28, 28)


def test_labels_unchanged_and_images_reproducible():
    images, labels = _digits(30), torch.arange(30) % 10
    out, out_labels = make_augmented_dataset(images, labels, severity=3, seed=1, batch_size=8)
    assert torch.equal(out_labels, labels)
    assert out.shape == images.shape and out.dtype == torch.uint8
    again, _ = make_augmented_dataset(images, labels, severity=3, seed=1, batch_size=8)
    assert torch.equal(out, again)
    assert _changed_fraction(out, images) == 1.0  # every image augmented, not copied


def test_rotation_turns_a_horizontal_bar():
    out = augment_batch(_bar(200), AugmentConfig(rotate=45), torch.Generator().manual_seed(0))
    angles = _orientation_degrees(out)
    assert angles.abs().max() <= 46.0
    assert (angles > 30).any() and (angles < -30).any()  # clearly diagonal both ways
    assert angles.abs().mean() > 15  # spread over the range, not around 0


def test_no_rotation_keeps_bar_horizontal():
    cfg = AugmentConfig(shift=2, scale=(0.9, 1.1))
    out = augment_batch(_bar(20), cfg, torch.Generator().manual_seed(0))
    assert _orientation_degrees(out).abs().max() < 1.0
    assert _changed_fraction(out, _bar(20)) == 1.0  # shifted and scaled, only not turned


def test_scale_enlarges_and_shift_moves():
    images = _bar(4)
    bigger = augment_batch(images, AugmentConfig(scale=(1.5, 1.5)), torch.Generator())
    assert (bigger.sum(dim=(1, 2)) > 1.4 * images.sum(dim=(1, 2))).all()
    assert (bigger.sum(dim=(1, 2)) < 2.4 * images.sum(dim=(1, 2))).all()  # 1.5 ** 2 = 2.25
    images = _bar(64)
    moved = augment_batch(images, AugmentConfig(shift=4), torch.Generator().manual_seed(0))
    assert torch.allclose(moved.sum(dim=(1, 2)), images.sum(dim=(1, 2)), rtol=0.05)  # ink kept
    offset = _centre_of_mass(moved) - _centre_of_mass(images)  # (n, 2) pixels
    assert offset.abs().max() <= 4.05  # at most `shift` pixels on each axis
    assert (offset.abs().amax(1) > 0.25).float().mean() > 0.9  # nearly every bar moved
    assert (offset > 2).any(0).all() and (offset < -2).any(0).all()  # both ways on both axes


def test_thickening_adds_ink_and_thinning_removes_it():
    images = _digits(64)
    out = augment_batch(images, AugmentConfig(thickness_prob=1.0), torch.Generator().manual_seed(0))
    before, after = images.sum(dim=(1, 2)), out.sum(dim=(1, 2))
    thicker, thinner = after > before, after < before
    assert (thicker | thinner).all()  # every sample changed, one way or the other
    assert thicker.sum() > 10 and thinner.sum() > 10  # about half each
    # thickening only adds ink where there was none, thinning only removes it
    assert (out[thicker] >= images[thicker]).all()
    assert (out[thinner] <= images[thinner]).all()


def test_thinning_keeps_one_pixel_strokes():
    images = torch.zeros(64, 28, 28)
    images[:, 4:24, 14] = 1.0  # a 1 px full-ink stroke, which plain erosion would erase
    images[:, 4:24, 13] = 0.5  # its grey edge
    out = augment_batch(images, AugmentConfig(thickness_prob=1.0), torch.Generator().manual_seed(0))
    assert (out[:, 4:24, 14] == 1.0).all()
    # the grey edge is dimmed to 0.5 * 0.5 when thinned and inked to 1 when thickened: both happen
    edge = out[:, 10, 13]
    thinned, thickened = edge == 0.25, edge == 1.0
    assert (thinned | thickened).all() and thinned.sum() > 16 and thickened.sum() > 16


def test_noise_has_the_configured_std():
    images = torch.full((16, 28, 28), 0.5)
    out = augment_batch(images, AugmentConfig(noise_std=0.1), torch.Generator().manual_seed(0))
    assert (out - images).std().item() == pytest.approx(0.1, rel=0.05)


def test_elastic_distortion_changes_images_but_keeps_ink_roughly():
    images = _digits(16)
    out = augment_batch(images, AugmentConfig(elastic_alpha=1.5), torch.Generator().manual_seed(0))
    assert _changed_fraction(out, images) == 1.0
    change = (out.float() - images.float()).abs().flatten(1).mean(1)  # per image
    assert (change > 1.0).all()  # each image visibly distorted (mean |change| > 1 of 255)
    ratio = out.float().sum() / images.float().sum()
    assert 0.85 < ratio < 1.15


def test_severity_increases_change():
    images = _digits(64)
    change = []
    for level in range(MAX_SEVERITY + 1):
        cfg = AugmentConfig.for_severity(level)
        out = augment_batch(images, cfg, torch.Generator().manual_seed(0))
        change.append((out.float() - images.float()).abs().mean().item())
    assert change[0] == 0.0
    assert all(a < b for a, b in zip(change, change[1:]))  # strictly: every level changes more


@pytest.mark.parametrize("shape", [(28, 28), (2, 3, 28, 28), (1, 1, 1, 28, 28), (2, 28, 20)])
def test_bad_shape_raises(shape):
    with pytest.raises(DigitnetError, match="shape"):
        augment_batch(torch.zeros(shape, dtype=torch.uint8), SEVERE, torch.Generator())


def test_make_augmented_dataset_checks_lengths():
    with pytest.raises(DigitnetError, match="must agree"):
        make_augmented_dataset(_digits(3), torch.zeros(2, dtype=torch.int64))


@pytest.mark.slow
def test_augmented_mnist_test_set_is_reproducible(mnist_dir):
    mnist = load_mnist(mnist_dir)
    images, labels = mnist.test_images, mnist.test_labels
    first, first_labels = make_augmented_dataset(images, labels, severity=3, seed=0)
    second, _ = make_augmented_dataset(images, labels, severity=3, seed=0)
    digest = hashlib.sha256(first.numpy().tobytes()).hexdigest()
    assert digest == hashlib.sha256(second.numpy().tobytes()).hexdigest()
    assert torch.equal(first_labels, labels)
    assert first.shape == images.shape and first.dtype == torch.uint8
    # batches are augmented in order, so a prefix of whole batches gives the same bytes
    prefix, _ = make_augmented_dataset(images[:1000], labels[:1000], severity=3, seed=0)
    assert torch.equal(prefix, first[:1000])
    other, _ = make_augmented_dataset(images[:1000], labels[:1000], severity=3, seed=1)
    assert not torch.equal(other, first[:1000])
    # augmented, but still digits: most ink kept, on average in the same place
    ratio = first.float().sum() / images.float().sum()
    assert 0.8 < ratio < 1.3 and not math.isnan(ratio)


# ------------------------------------------------------------------- found by mutation testing
# Pinned uint8 results on `_digits(16)`, generator seeded 0 (tests/pinned.py: stored whole,
# compared up to the CPU's rounding): each operation alone, then whole presets through
# `make_augmented_dataset` (batches of 7). Re-pin only with a new torch pin, and say so.
def _digest(images: torch.Tensor) -> str:
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()[:16]


PINNED_OPS = [dict(rotate=20), dict(scale=(0.8, 1.2)), dict(shift=2.5), dict(shear=15),
              dict(elastic_alpha=1.5, elastic_sigma=3.0), dict(thickness_prob=0.8),
              dict(noise_std=0.1)]


@pytest.mark.parametrize("kwargs", PINNED_OPS, ids=[next(iter(k)) for k in PINNED_OPS])
def test_each_operation_gives_pinned_bytes(kwargs):
    out = augment_batch(_digits(16), AugmentConfig(**kwargs), torch.Generator().manual_seed(0))
    assert_matches_pinned(f"op-{next(iter(kwargs))}", out)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_severity_presets_give_pinned_bytes(severity):
    labels = torch.arange(20)
    out, out_labels = make_augmented_dataset(_digits(20), labels, severity=severity, seed=1,
                                             batch_size=7)
    assert_matches_pinned(f"severity-{severity}", out)
    assert torch.equal(out_labels, labels) and out_labels is not labels


def test_float_images_get_the_same_augmentation_as_uint8():
    images = _digits(16)
    cfg = AugmentConfig.for_severity(3)
    as_uint8 = augment_batch(images, cfg, torch.Generator().manual_seed(0))
    as_float = augment_batch(images.double() / 255, cfg, torch.Generator().manual_seed(0))
    assert as_float.dtype == torch.float64
    assert 0.0 <= float(as_float.min()) and float(as_float.max()) <= 1.0
    assert float((as_float * 255 - as_uint8.double()).abs().max()) <= 0.51


def test_shift_batch_moves_whole_pixels_with_zero_fill():
    images = _digits(16)
    out = shift_batch(images, 3, torch.Generator().manual_seed(0))
    assert _digest(out) == "2ec24a514fd192e7"
    for i in range(16):  # each output is its input moved by (dy, dx) in -3..3, zeros coming in
        matches = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
                   if torch.equal(out[i],
                                  torch.roll(F_pad(images[i], 3), (dy, dx), (0, 1))[3:-3, 3:-3])]
        assert matches, i
    assert torch.equal(shift_batch(images, 0, torch.Generator()), images)
    assert shift_batch(images[:0], 2, torch.Generator()).shape == (0, 28, 28)
    with pytest.raises(DigitnetError, match="max_shift must be >= 0, got -1"):
        shift_batch(images, -1, torch.Generator())


def F_pad(image: torch.Tensor, s: int) -> torch.Tensor:
    return torch.nn.functional.pad(image, (s, s, s, s))


def test_augmented_dataset_batch_size_is_checked_and_empty_is_fine():
    with pytest.raises(DigitnetError, match="batch_size must be >= 1, got 0"):
        make_augmented_dataset(_digits(3), torch.zeros(3, dtype=torch.int64), batch_size=0)
    out, labels = make_augmented_dataset(_digits(0), torch.zeros(0, dtype=torch.int64))
    assert out.shape == (0, 28, 28) and out.dtype == torch.uint8 and len(labels) == 0
    one, _ = make_augmented_dataset(_digits(3), torch.zeros(3, dtype=torch.int64), batch_size=1)
    assert one.shape == (3, 28, 28)


def test_augmented_dataset_defaults_are_the_published_definition():
    """mnist-test-augmented is severity 3, seed 0, batches of 1000 (1001 images: batching shows)."""
    images, labels = _digits(1001), torch.zeros(1001, dtype=torch.int64)
    default, _ = make_augmented_dataset(images, labels)
    explicit, _ = make_augmented_dataset(images, labels, severity=3, seed=0, batch_size=1000)
    assert torch.equal(default, explicit)


@pytest.mark.parametrize("shape", [(6, 20, 28), (6, 1, 20, 28), (6, 28, 20)])
def test_shift_batch_non_square_and_channel_images(shape):
    images = torch.randint(1, 255, shape, generator=torch.Generator().manual_seed(1),
                           dtype=torch.uint8)
    out = shift_batch(images, 2, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == images.dtype
    flat_in, flat_out = images.reshape(6, *shape[-2:]), out.reshape(6, *shape[-2:])
    for i in range(6):
        padded = F_pad(flat_in[i], 2)
        assert any(torch.equal(flat_out[i],
                               padded[2 + dy: 2 + dy + shape[-2], 2 + dx: 2 + dx + shape[-1]])
                   for dy in range(-2, 3) for dx in range(-2, 3)), i


def test_shift_batch_by_one_moves_and_zero_draws_nothing():
    images = _digits(16)
    assert not torch.equal(shift_batch(images, 1, torch.Generator().manual_seed(0)), images)
    one = shift_batch(images[:1], 3, torch.Generator().manual_seed(0))
    assert not torch.equal(one, images[:1])  # a single image is shifted too (this seed moves it)
    g = torch.Generator().manual_seed(0)
    before = g.get_state()
    shift_batch(images, 0, g)
    shift_batch(images[:0], 2, g)
    assert torch.equal(g.get_state(), before)  # a no-op consumes no random numbers


@pytest.mark.parametrize("name, kwargs", [
    ("rotate-noise", dict(rotate=10, noise_std=0.05)), ("rotate", dict(rotate=10))])
def test_skipped_steps_draw_no_random_numbers(name, kwargs):
    """Two batches from one generator: a step whose setting is 0 (elastic, noise) must not draw,
    or every later draw shifts (pinned results, as above)."""
    g = torch.Generator().manual_seed(0)
    cfg = AugmentConfig(**kwargs)
    for batch in ("first", "second"):
        assert_matches_pinned(f"two-batches-{name}-{batch}", augment_batch(_digits(16), cfg, g))
