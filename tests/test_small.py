"""The fast route for small 8-bit images (data/small.py, preprocess_many) gives what the general
route gives, bit for bit: split_small and split_many against clean.split_clean, keep_small against
ink.keep_main_components, and preprocess_many against preprocess, on varied images (random
levels, two classes with noise, flat, binary, 1 px to SMALL_SIDE px a side, either polarity)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from digitnet.data.clean import SMALL_SIDE, clean_ink, is_clean, split_clean
from digitnet.data.imagestats import BYTE_LEVELS
from digitnet.data.ink import keep_main_components
from digitnet.data.preprocess import ImageError, preprocess, preprocess_batch, preprocess_many
from digitnet.data.small import keep_small, small_codes, split_many, split_small


def _codes(rng, h: int, w: int, kind: int) -> np.ndarray:
    if kind == 0:  # any level anywhere
        c = rng.integers(0, 256, (h, w))
    elif kind == 1:  # ink and paper, each with a little noise, either way round
        ink, paper = sorted(rng.integers(0, 256, 2))[:: 1 if rng.random() < 0.5 else -1]
        c = np.where(rng.random((h, w)) < rng.random(), ink, paper) + rng.integers(-3, 4, (h, w))
    elif kind == 2:  # flat
        c = np.full((h, w), rng.integers(0, 256))
    else:  # a stroke: a thick line, with blobs elsewhere now and then
        c = np.full((h, w), 250)
        c[h // 4 : h // 4 + max(1, h // 5), :] = 20
        c[:, w // 2 : w // 2 + max(1, w // 6)] = 20
        if rng.random() < 0.5:
            c[rng.integers(0, h), rng.integers(0, w)] = 0
    return np.clip(c, 0, 255).astype(np.uint8)


def _stacks(seed: int, trials: int):
    rng = np.random.default_rng(seed)
    for _ in range(trials):
        h, w = int(rng.integers(1, SMALL_SIDE + 1)), int(rng.integers(1, SMALL_SIDE + 1))
        kind = int(rng.integers(0, 4))
        codes = np.stack([_codes(rng, h, w, kind) for _ in range(int(rng.integers(1, 6)))])
        yield BYTE_LEVELS[codes], codes


def test_splits_are_split_cleans_bit_for_bit():
    seen = 0
    for gray, codes in _stacks(3, 250):
        many = split_many(gray, codes)
        for i in range(len(codes)):
            assert small_codes(gray[i]) is not None
            expected = split_clean(gray[i])
            assert split_small(gray[i], codes[i]) == expected
            assert many[i] == expected
            seen += expected is not None
    assert seen > 200  # most trials have two classes


def test_keep_small_is_keep_main_components():
    blobs = 0
    for gray, codes in _stacks(5, 250):
        for g, c in zip(gray, codes, strict=True):
            split = split_small(g, c)
            if not is_clean(split):
                continue
            ink, mask = clean_ink(g, split)
            expected = keep_main_components(mask, ink)
            ours = keep_small(mask, ink)
            assert ours.dtype == expected.dtype and np.array_equal(ours, expected)
            blobs += 1
    assert blobs > 100


def test_small_codes_refuses_what_the_route_does_not_cover():
    assert small_codes(np.zeros((SMALL_SIDE + 1, 8), np.float32)) is None
    assert small_codes(np.full((8, 8), 0.3, np.float32)) is None  # not k / 255
    assert small_codes(BYTE_LEVELS[np.arange(64, dtype=np.uint8).reshape(8, 8)]) is not None


def _png(codes: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(codes).save(buffer, "PNG")
    return buffer.getvalue()


def _same(a, b) -> bool:
    if isinstance(a, ImageError) or isinstance(b, ImageError):
        return type(a) is type(b) and str(a) == str(b)
    return (a.image.tobytes() == b.image.tobytes() and a.image.shape == b.image.shape
            and (a.digit_found, a.reason, a.source, a.polarity, a.path)
            == (b.digit_found, b.reason, b.source, b.polarity, b.path))


@pytest.mark.parametrize("batch", [1, 7])
def test_preprocess_many_is_preprocess(monkeypatch, batch):
    import digitnet.data.preprocess as P

    monkeypatch.setattr(P, "BATCH", batch)  # full batches and a partial one
    inputs = []
    for _, codes in _stacks(9, 60):
        inputs += [_png(c) for c in codes]
    rng = np.random.default_rng(2)
    inputs += [b"not an image", _png(rng.integers(0, 256, (90, 70)).astype(np.uint8)),
               rng.random((20, 20)).astype(np.float32), _png(np.full((28, 28), 255, np.uint8))]
    many = preprocess_many(inputs)
    assert len(many) == len(inputs)
    for image, ours in zip(inputs, many, strict=True):
        try:
            expected = preprocess(image)
        except ImageError as e:
            expected = e
        assert _same(ours, expected)
    assert all(_same(a, b) for a, b in zip(preprocess_batch(inputs), many, strict=True))
