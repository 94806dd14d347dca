"""New-image preprocessing: every mode and format, blank and broken files, polarity, lighting,
MNIST round trip, centring properties and the `digitnet preprocess` command."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw, features

from digitnet.cli import main
from digitnet.data import images
from digitnet.data import preprocess as pp
from digitnet.data.idx import read_idx
from digitnet.data.preprocess import (
    DARK_ON_LIGHT,
    DRAWING,
    LIGHT_ON_DARK,
    PHOTO,
    PREPROCESS_VERSION,
    ImageError,
    ImageTooLargeError,
    center_of_mass,
    load_image,
    preprocess,
    preprocess_batch,
    to_grayscale,
)
from digitnet.errors import DigitnetError

SIZE = 160  # px; test images are small so the whole file runs in seconds


# ------------------------------------------------------------------------------------- helpers
def draw_seven(size: int = SIZE, width: int | None = None) -> np.ndarray:
    """A "7" with a crossbar as ink coverage in [0, 1], (size, size); asymmetric on purpose."""
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    s, w = size, width or max(1, size // 14)
    draw.line([(0.3 * s, 0.2 * s), (0.7 * s, 0.2 * s), (0.45 * s, 0.8 * s)], fill=255, width=w)
    draw.line([(0.4 * s, 0.5 * s), (0.65 * s, 0.5 * s)], fill=255, width=w)
    return np.asarray(img, dtype=np.float32) / 255.0


def on_paper(ink: np.ndarray, paper=(255, 255, 255), pen=(0, 0, 0)) -> Image.Image:
    """Paint the ink coverage with `pen` on `paper` as an RGB image."""
    paper, pen = np.array(paper, np.float32), np.array(pen, np.float32)
    rgb = paper * (1 - ink[..., None]) + pen * ink[..., None]
    return Image.fromarray(np.round(rgb).astype(np.uint8))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(np.float64), b.ravel().astype(np.float64))[0, 1])


def assert_mnist_like(result, reference: np.ndarray | None = None, min_corr: float = 0.9) -> None:
    """28x28 uint8, white digit on black, centred by mass; close to `reference` if given."""
    assert result.digit_found, result.reason
    image = result.image
    assert image.shape == (28, 28) and image.dtype == np.uint8
    assert image.max() == 255
    assert np.median(image) == 0  # black background
    border = np.concatenate([image[:2].ravel(), image[-2:].ravel(), image[:, :2].ravel(),
                             image[:, -2:].ravel()])
    assert border.mean() < 10
    cy, cx = center_of_mass(image)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
    if reference is not None:
        assert correlation(image, reference) > min_corr


def png_header(width: int, height: int) -> bytes:
    """A PNG with a valid signature and IHDR claiming the given size, then a tiny IDAT."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def seven() -> np.ndarray:
    return draw_seven()


@pytest.fixture(scope="module")
def reference(seven) -> np.ndarray:
    """The 28x28 output for the clean digit given directly as light ink on black."""
    return preprocess(seven).image


# ------------------------------------------------------------------------- modes and formats
def _mode_image(mode: str, ink: np.ndarray) -> Image.Image:
    alpha = Image.fromarray(np.round(ink * 255).astype(np.uint8))
    if mode == "L":
        return on_paper(ink).convert("L")
    if mode == "RGB":
        return on_paper(ink, paper=(240, 220, 150), pen=(20, 30, 140))  # blue pen, yellow paper
    if mode == "RGBA":  # black strokes on a fully transparent black canvas: only alpha tells
        img = Image.new("RGBA", alpha.size, (0, 0, 0, 0))
        img.putalpha(alpha)
        return img
    if mode == "LA":
        img = Image.new("LA", alpha.size, (0, 0))
        img.putalpha(alpha)
        return img
    if mode == "P":
        return on_paper(ink, paper=(200, 230, 255), pen=(90, 0, 0)).quantize(16)
    if mode == "P-transparent":  # ink and canvas share a colour; only transparency tells
        img = Image.new("P", alpha.size, 0)
        img.putpalette([0, 0, 0, 0, 0, 0] + [0] * 762)
        img.paste(1, mask=alpha.point(lambda v: 255 if v >= 128 else 0))
        img.info["transparency"] = 0
        return img
    if mode == "I;16":
        values = np.round(60000 - 55000 * ink).astype(np.uint16)
        return Image.fromarray(values)
    if mode == "I":
        return Image.fromarray(np.round(50000 - 45000 * ink).astype(np.int32))
    if mode == "CMYK":
        return on_paper(ink, pen=(10, 60, 10)).convert("CMYK")
    if mode == "1":
        return on_paper(ink).convert("L").convert("1", dither=Image.Dither.NONE)
    raise AssertionError(mode)


@pytest.mark.parametrize(
    "mode, suffix",
    [("L", ".png"), ("RGB", ".png"), ("RGBA", ".png"), ("LA", ".png"), ("P", ".png"),
     ("P-transparent", ".png"), ("P-transparent", ".gif"), ("I;16", ".png"), ("I;16", ".tiff"),
     ("I", ".tiff"), ("CMYK", ".tiff"), ("CMYK", ".jpg"), ("1", ".png"), ("1", ".bmp")],
)
def test_every_mode(tmp_path, seven, reference, mode, suffix):
    img = _mode_image(mode, seven)
    path = tmp_path / f"digit{suffix}"
    if "transparency" in img.info:
        img.save(path, transparency=img.info["transparency"])
    else:
        img.save(path)
    assert_mnist_like(preprocess(path), reference, min_corr=0.85)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".gif", ".tiff", ".webp"])
def test_every_format(tmp_path, seven, reference, suffix):
    if suffix == ".webp" and not features.check("webp"):
        pytest.skip("this Pillow has no WebP support")
    path = tmp_path / f"digit{suffix}"
    on_paper(seven, paper=(250, 245, 235), pen=(30, 30, 30)).save(path)
    assert_mnist_like(preprocess(path), reference)


def test_gif_first_frame(tmp_path, seven, reference):
    first = on_paper(seven)
    second = on_paper(np.rot90(seven).copy())
    path = tmp_path / "anim.gif"
    first.save(path, save_all=True, append_images=[second], duration=100)
    assert_mnist_like(preprocess(path), reference)


def test_exif_orientation_honoured(tmp_path, seven, reference):
    upright = on_paper(seven)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # Orientation 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    tagged, untagged = tmp_path / "tagged.jpg", tmp_path / "untagged.jpg"
    stored.save(tagged, exif=exif, quality=95)
    stored.save(untagged, quality=95)
    assert load_image(tagged).shape == (SIZE, SIZE)
    assert_mnist_like(preprocess(tagged), reference)
    assert correlation(preprocess(untagged).image, reference) < 0.5


@pytest.mark.parametrize(
    "make",
    [
        lambda ink: np.round(255 * (1 - ink)).astype(np.uint8),  # (H, W) uint8
        lambda ink: np.round(65535 * (1 - ink)).astype(np.uint16),  # (H, W) uint16
        lambda ink: (1 - ink).astype(np.float64),  # (H, W) float in [0, 1]
        lambda ink: np.asarray(on_paper(ink, paper=(255, 200, 200))),  # (H, W, 3) uint8
        lambda ink: np.dstack([np.zeros_like(ink), np.zeros_like(ink), np.zeros_like(ink), ink]),
        lambda ink: (ink > 0.5)[..., None],  # (H, W, 1) bool
        lambda ink: torch.from_numpy(ink),  # (H, W) float tensor, light on dark
        lambda ink: torch.from_numpy(np.array(on_paper(ink))).permute(2, 0, 1),  # (3, H, W)
        lambda ink: Image.fromarray(np.round(255 * ink).astype(np.uint8)),  # PIL image
    ],
    ids=["u8", "u16", "float", "rgb", "rgba-float", "bool", "tensor", "tensor-chw", "pil"],
)
def test_arrays_and_tensors(seven, reference, make):
    assert_mnist_like(preprocess(make(seven)), reference)


def test_version_and_grayscale_contract(seven):
    assert PREPROCESS_VERSION == 4  # 3: polarity rules, a small digit among marks; 4: faint digits
    gray = to_grayscale(np.asarray(on_paper(seven)))
    assert gray.dtype == np.float32 and gray.shape == seven.shape
    assert 0.0 <= gray.min() and gray.max() <= 1.0
    # black ink on white paper: the paper's level minus the ink, as painted (8-bit rounding)
    np.testing.assert_allclose(gray, np.round(255 * (1 - seven)) / 255, atol=1e-6)
    # colours weigh as ITU-R 601-2 luma (Pillow's "L"), not as a plain mean of the channels
    primaries = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    np.testing.assert_allclose(to_grayscale(primaries), [[0.299, 0.587, 0.114]], atol=1e-6)


# ------------------------------------------------------------------------------- blank inputs
@pytest.mark.parametrize(
    "image",
    [
        np.zeros((50, 50), np.uint8),
        np.full((120, 90), 255, np.uint8),
        np.full((64, 64, 3), (180, 200, 90), np.uint8),
        np.zeros((40, 40, 4), np.uint8),  # fully transparent
        np.clip(0.8 + np.random.default_rng(0).normal(0, 0.01, (200, 200)), 0, 1),  # faint noise
        np.clip(0.5 + np.random.default_rng(1).normal(0, 0.08, (150, 150)), 0, 1),  # strong noise
        np.tile(np.linspace(0.3, 0.9, 200), (150, 1)),  # a lighting gradient, no digit
        np.zeros((1, 1), np.uint8),
    ],
    ids=["black", "white", "colour", "transparent", "faint-noise", "noise", "gradient", "1px"],
)
def test_blank_images_give_no_digit(image):
    result = preprocess(image)
    assert not result.digit_found
    assert result.reason
    assert result.image.shape == (28, 28) and result.image.dtype == np.uint8
    assert result.image.max() == 0


# ------------------------------------------------------------------------------- broken files
def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("shopping list: eggs, milk")
    with pytest.raises(ImageError, match=r"notes\.png: not an image file \(expected PNG"):
        preprocess(path)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_file(tmp_path, seven, suffix):
    path = tmp_path / f"cut{suffix}"
    on_paper(seven).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ImageError, match=rf"cut\{suffix}: truncated or corrupt"):
        preprocess(path)


@pytest.mark.parametrize("name", ["missing.png", "."])
def test_missing_file_or_folder(tmp_path, name):
    with pytest.raises(ImageError, match="expected an image file"):
        preprocess(tmp_path / name)


@pytest.mark.parametrize(
    "width, height, match",
    [
        (10_000, 10_000, "decompression bomb"),  # Pillow warns: turned into an error
        (70_000, 70_000, "decompression bomb"),  # Pillow refuses outright
        (8_000, 6_000, "48.0 megapixels"),  # below Pillow's limit, above ours
        (40_000, 2, "30000 px a side"),  # absurd dimensions
    ],
)
def test_huge_images_refused(tmp_path, width, height, match):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(width, height))
    with pytest.raises(ImageTooLargeError, match=match) as info:
        preprocess(path)
    assert str(path) in str(info.value) and isinstance(info.value, DigitnetError)


def test_pixel_limit_is_configurable(tmp_path, seven, monkeypatch):
    path = tmp_path / "ok.png"
    on_paper(seven).save(path)
    with pytest.raises(ImageTooLargeError, match="expected at most 0.01 megapixels"):
        preprocess(path, max_pixels=10_000)
    monkeypatch.setattr(images, "MAX_PIXELS", 10_000)
    with pytest.raises(ImageTooLargeError):
        load_image(path)
    with pytest.raises(ImageTooLargeError):
        preprocess(np.zeros((200, 200), np.uint8))


@pytest.mark.parametrize(
    "image, match",
    [
        (np.zeros((4, 4, 5), np.uint8), "expected an image array"),
        (np.zeros(10, np.uint8), "expected an image array"),
        (np.zeros((0, 5), np.uint8), "empty"),
        (np.full((8, 8), 2.0), r"must lie in \[0, 1\]"),
        (np.full((8, 8), np.nan), "NaN"),
        (np.full((8, 8), -3, np.int32), "0-65535"),
        ("not/a/file.png", "file not found"),
        ([1, 2, 3], "expected a file path, file contents"),
    ],
)
def test_bad_arrays(image, match):
    with pytest.raises(ImageError, match=match):
        preprocess(image)


def test_file_contents_as_bytes_give_the_same_digit_as_the_file(tmp_path, seven):
    path = tmp_path / "seven.jpg"
    on_paper(seven).save(path, quality=90)
    from_file, from_bytes = preprocess(path), preprocess(path.read_bytes())
    assert from_bytes.digit_found and np.array_equal(from_bytes.image, from_file.image)
    assert from_bytes.source == f"<{path.stat().st_size} bytes>"


@pytest.mark.parametrize(
    "content, error, match",
    [
        (b"", ImageError, "<0 bytes>: empty"),
        (b"plain text, not an image", ImageError, "not an image file"),
        ("half a png", ImageError, "truncated or corrupt"),
        (png_header(10_000, 10_000), ImageTooLargeError, "decompression bomb"),
    ],
    ids=["empty", "text", "truncated", "bomb"],
)
def test_bad_file_contents(content, error, match, seven, tmp_path):
    if content == "half a png":
        on_paper(seven).save(tmp_path / "seven.png")
        whole = (tmp_path / "seven.png").read_bytes()
        content = whole[: len(whole) // 2]
    with pytest.raises(error, match=match):
        preprocess(content)


def test_batch_continues_after_errors(seven, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    results = preprocess_batch([seven, bad, np.zeros((9, 9))])
    assert results[0].digit_found
    assert isinstance(results[1], ImageError) and "bad.jpg" in str(results[1])
    assert not results[2].digit_found


# ------------------------------------------------------------------------ polarity and paper
def test_polarity_detected(seven, reference):
    dark = preprocess(1 - seven)
    light = preprocess(seven)
    assert (dark.polarity, light.polarity) == (DARK_ON_LIGHT, LIGHT_ON_DARK)
    assert correlation(dark.image, light.image) > 0.97
    assert np.abs(dark.image.astype(int) - light.image).mean() < 5


@pytest.mark.parametrize(
    "paper, ink_level", [(0.55, 0.1), (0.25, 0.9), (0.9, 0.6), (0.1, 0.35)],
    ids=["grey-paper", "chalkboard", "pencil", "dim-light-ink"],
)
def test_polarity_with_grey_levels(seven, reference, paper, ink_level):
    image = paper + (ink_level - paper) * seven
    assert_mnist_like(preprocess(image.astype(np.float32)), reference)


def test_uneven_lighting_and_coloured_paper(seven, reference):
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    light = 0.35 + 0.6 * xx  # a strong gradient across the page
    light *= np.where(yy > 0.6, 0.7, 1.0)  # a shadow over the lower part
    paper = np.array([0.95, 0.85, 0.55])  # yellowish paper
    pen = np.array([0.1, 0.1, 0.35])
    rgb = light[..., None] * (paper * (1 - seven[..., None]) + pen * seven[..., None])
    rgb += np.random.default_rng(0).normal(0, 0.01, rgb.shape)
    result = preprocess(np.clip(rgb, 0, 1))
    assert_mnist_like(result, reference)
    background = result.image[reference == 0]
    assert background.mean() < 3 and np.percentile(background, 99) < 40


def test_small_specks_dropped(seven, reference):
    image = 1 - seven
    rng = np.random.default_rng(0)
    for y, x in rng.integers(0, SIZE - 2, size=(6, 2)):
        image[y : y + 2, x : x + 2] = 0  # dust
    assert_mnist_like(preprocess(image), reference, min_corr=0.95)


def test_thin_strokes_survive_large_images():
    ink = draw_seven(1000, width=1)
    result = preprocess(1 - ink)
    assert_mnist_like(result)
    assert np.count_nonzero(result.image > 128) >= 30  # strokes, not a few dots
    assert correlation(result.image, preprocess(draw_seven(1000, width=60)).image) > 0.6


def test_tiny_images_are_upscaled():
    result = preprocess(draw_seven(10, width=1))
    assert_mnist_like(result)


# ---------------------------------------------------------------------------- MNIST round trip
@pytest.fixture(scope="module")
def mnist_test_images(mnist_dir) -> np.ndarray:
    return read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")[:20]


@pytest.mark.parametrize("index", [0, 1, 2, 3, 4, 5, 7, 8, 9, 10])
def test_mnist_round_trip(mnist_test_images, index):
    digit = mnist_test_images[index]
    upscaled = np.asarray(Image.fromarray(digit).resize((300, 300), Image.Resampling.BICUBIC))
    result = preprocess(255 - upscaled)  # dark on light, like a scan
    assert result.polarity == DARK_ON_LIGHT
    assert_mnist_like(result, digit.astype(np.float32), min_corr=0.8)


def test_mnist_round_trip_overall(mnist_test_images):
    """Outputs agree with MNIST's own rendering up to a pixel of centring (corr 0.95 average)."""
    scores = []
    for digit in mnist_test_images:
        big = np.asarray(Image.fromarray(digit).resize((300, 300), Image.Resampling.BICUBIC))
        scores.append(correlation(preprocess(255 - big).image, digit))
    assert np.mean(scores) > 0.9


# --------------------------------------------------------------------------------- properties
@st.composite
def images_with_ink(draw):
    """Random size, paper level, polarity and noise with a few random strokes."""
    h, w = draw(st.integers(8, 200)), draw(st.integers(8, 200))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    img = Image.new("L", (w, h), 0)
    canvas = ImageDraw.Draw(img)
    for _ in range(draw(st.integers(1, 4))):
        points = [tuple(rng.uniform(0, 1, 2) * (w - 1, h - 1)) for _ in range(rng.integers(2, 5))]
        canvas.line(points, fill=255, width=int(rng.integers(1, max(2, min(h, w) // 8))))
    ink = np.asarray(img, dtype=np.float32) / 255.0
    paper, pen = rng.uniform(0, 1), rng.uniform(0, 1)
    image = paper + (pen - paper) * ink + rng.normal(0, rng.uniform(0, 0.05), ink.shape)
    return np.clip(image, 0, 1).astype(np.float32)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(images_with_ink())
def test_any_image_maps_to_centred_28x28(image):
    result = preprocess(image)
    assert result.image.shape == (28, 28) and result.image.dtype == np.uint8
    if result.digit_found:
        assert result.image.max() == 255  # the ink scaled to full white, as in MNIST
        cy, cx = center_of_mass(result.image)
        assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
    else:
        assert result.image.max() == 0 and result.reason


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 60), st.integers(1, 60), st.integers(0, 2**32 - 1),
       st.sampled_from([np.uint8, np.uint16, np.float32]), st.sampled_from([0, 3, 4]))
def test_arbitrary_arrays_never_crash(h, w, seed, dtype, channels):
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 0 else (h, w, channels)
    if dtype == np.float32:
        image = rng.random(shape, dtype=np.float32)
    else:
        image = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    before = image.copy()
    result = preprocess(image)
    assert result.image.shape == (28, 28) and result.image.dtype == np.uint8
    assert np.array_equal(image, before)  # the caller's array is left alone
    if result.digit_found:  # MNIST format: full ink somewhere, centred by mass
        assert result.image.max() == 255 and not result.reason
        cy, cx = center_of_mass(result.image)
        assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
    else:
        assert result.image.max() == 0 and result.reason
    again = preprocess(image)
    assert again.digit_found == result.digit_found and np.array_equal(again.image, result.image)


# ----------------------------------------------------------------------------------------- CLI
def test_cli_preprocess_debug(tmp_path, seven, capsys):
    good_a, good_b, bad = tmp_path / "a.png", tmp_path / "in" / "b.jpg", tmp_path / "broken.png"
    good_b.parent.mkdir()
    on_paper(seven).save(good_a)
    on_paper(seven, paper=(30, 30, 30), pen=(250, 250, 250)).save(good_b)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    code = main(["preprocess", str(good_a), str(bad), str(good_b), "--out", str(out), "--debug"])
    captured = capsys.readouterr()
    assert code == 1
    assert f"FAIL   {bad}" in captured.err
    assert "2 of 3 images processed" in captured.out and str(bad) in captured.out
    for stem, path in (("a", good_a), ("b", good_b)):
        image = np.asarray(Image.open(out / f"{stem}.png"))
        assert image.shape == (28, 28) and image.dtype == np.uint8
        assert np.array_equal(image, preprocess(path).image)  # what `preprocess` gives for it
        stages = sorted(p.name for p in (out / "debug" / stem).iterdir())
        result = preprocess(path)
        assert f"-> {out / stem}.png ({result.path}, {result.polarity})" in captured.out
        # a clean drawing has no lighting to remove, so no background stage; a photo has one
        expected = ["01_original.png", "02_grayscale.png", "03_background_removed.png",
                    "04_ink_mask.png", "05_crop.png", "06_fitted.png", "07_final.png"]
        if result.path == PHOTO:
            expected = ["01_original.png", "02_grayscale.png", "03_background.png",
                        "04_background_removed.png", "05_ink_mask.png", "06_crop.png",
                        "07_fitted.png", "08_final.png"]
        assert stages == expected
    assert preprocess(good_a).path == DRAWING  # a PNG with even paper
    assert not (out / "broken.png").exists()


def test_cli_preprocess_blank_and_name_clash(tmp_path, seven, capsys):
    Image.new("L", (40, 40), 200).save(tmp_path / "blank.png")
    on_paper(seven).save(tmp_path / "x.png")
    (tmp_path / "y").mkdir()
    on_paper(seven).save(tmp_path / "y" / "x.png")
    out = tmp_path / "out"
    args = [str(tmp_path / "blank.png"), str(tmp_path / "x.png"), str(tmp_path / "y" / "x.png")]
    assert main(["preprocess", *args, "--out", str(out)]) == 0
    captured = capsys.readouterr().out
    assert "no digit found" in captured
    assert sorted(p.name for p in out.iterdir()) == ["x-2.png", "x.png"]
    assert not Path(out / "debug").exists()


# ------------------------------------------------------------------------ decoding with a budget
def test_image_size_read_from_the_header_alone(tmp_path, monkeypatch):
    from PIL import ImageFile

    def refuse(self):
        raise AssertionError("decoded pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    assert pp.check_image_size(png_header(300, 200)) == (300, 200)
    with pytest.raises(ImageTooLargeError, match="6300x6300 px .39.7 megapixels.; expected at "
                                                 "most 16 megapixels"):
        pp.check_image_size(png_header(6300, 6300), max_pixels=16_000_000)
    with pytest.raises(ImageTooLargeError, match="at most 16 megapixels"):
        preprocess(png_header(6300, 6300), max_pixels=16_000_000)  # refused before decoding
    with pytest.raises(ImageError, match="not an image file"):
        pp.check_image_size(b"junk")


def test_jpeg_within_twice_the_working_size_decodes_at_full_size(tmp_path, seven):
    """Up to 2 x WORK_MAX_SIDE a JPEG decodes at full size, straight to luminance (its Y
    channel): what Pillow's RGB decode and "L" conversion give, up to their rounding."""
    path = tmp_path / "photo.jpg"
    on_paper(seven).resize((2 * pp.WORK_MAX_SIDE - 1, 900)).save(path, quality=85)
    with Image.open(path) as img:
        assert images._draft_size(img) is None
        img.load()
        via_rgb = np.asarray(img.convert("L"), dtype=np.int16)
    decoded = images._open_image(path)
    assert decoded.size == (2 * pp.WORK_MAX_SIDE - 1, 900) and decoded.mode == "L"
    assert np.abs(np.asarray(decoded, dtype=np.int16) - via_rgb).max() <= 3


def test_huge_jpeg_is_decoded_reduced_to_the_working_size(tmp_path, seven, monkeypatch):
    """A JPEG of >= 2 x WORK_MAX_SIDE a side is decoded at 1/2 scale or less (DCT scaling):
    less memory and time, and the same digit as a full decode."""
    path = tmp_path / "panorama.jpg"
    canvas = Image.new("RGB", (9_000, 1_500), (235, 235, 235))
    canvas.paste(on_paper(seven).resize((1_200, 1_200)), (4_000, 150))
    canvas.save(path, quality=90)
    reduced = images._open_image(path)
    assert reduced.size == (2_250, 375)  # 1/4: the longer side still >= WORK_MAX_SIDE (2,000)
    drafted = preprocess(path)
    monkeypatch.setattr(images, "_draft_size", lambda img: None)
    full = preprocess(path)
    assert images._open_image(path).size == (9_000, 1_500)
    assert drafted.digit_found and full.digit_found
    assert correlation(drafted.image, full.image) > 0.85  # measured 0.92: a 1 px shift at 28x28


@pytest.mark.parametrize("kind, found", [("fifo", "a FIFO"), ("device", "a device"),
                                         ("folder", "a folder")])
def test_image_paths_that_are_not_regular_files_are_refused_unread(tmp_path, kind, found):
    """`preprocess` (and so predict, ingest, serve) never opens a FIFO or a device: the read
    would never end."""
    import os

    from bounded import run_bounded

    path = {"fifo": tmp_path / "pipe.png", "device": Path("/dev/zero"), "folder": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    error = run_bounded(lambda: preprocess(path), seconds=10,
                        fifo=path if kind == "fifo" else None)
    assert isinstance(error, ImageError)
    assert str(error) == (f"{path}: expected a regular file, found {found}; expected an image "
                          f"file (PNG, JPEG, BMP, GIF, TIFF or WebP)")


# ------------------------------------------------------------------- found by mutation testing
# (the MNIST-format step and the output files: crop, fit, centre, paste, PNG, names)
def test_center_of_mass_exact():
    assert pp.center_of_mass(np.zeros((5, 8))) == (2.0, 3.5)  # blank: the middle
    one = np.zeros((5, 8))
    one[1, 6] = 0.5
    assert pp.center_of_mass(one) == (1.0, 6.0)
    two = np.zeros((5, 8))
    two[0, 0], two[4, 2] = 1.0, 3.0  # weights 1 and 3
    assert pp.center_of_mass(two) == pytest.approx((3.0, 1.5))


def test_to_uint8_clips_and_rounds():
    out = pp._to_uint8(np.array([-1.0, 0.0, 0.002, 0.5, 0.999, 1.0, 7.0]))
    assert out.dtype == np.uint8 and out.tolist() == [0, 0, 1, 128, 255, 255, 255]


def test_crop_to_ink_keeps_the_padding_inside_the_image():
    ink = np.arange(100, dtype=np.float32).reshape(10, 10)
    mask = np.zeros((10, 10), dtype=bool)
    mask[3:6, 4:7] = True
    assert np.array_equal(pp.crop_to_ink(ink, mask), ink[2:7, 3:8])
    assert np.array_equal(pp.crop_to_ink(ink, mask, pad=0), ink[3:6, 4:7])
    assert np.array_equal(pp.crop_to_ink(ink, mask, pad=3), ink[0:9, 1:10])
    corner = np.zeros((10, 10), dtype=bool)
    corner[0, 9] = corner[1, 8] = True
    assert np.array_equal(pp.crop_to_ink(ink, corner), ink[0:3, 7:10])
    with pytest.raises(ValueError, match="crop_to_ink needs a non-empty ink mask"):
        pp.crop_to_ink(ink, np.zeros((10, 10), dtype=bool))


@pytest.mark.parametrize("shape, fitted", [((10, 5), (20, 10)), ((5, 10), (10, 20)),
                                           ((60, 20), (20, 7)), ((3, 3), (20, 20))])
def test_fit_to_box_longer_side_is_the_box(shape, fitted):
    crop = np.ones(shape, dtype=np.float32) * 0.6
    out = pp.fit_to_box(crop)
    assert out.shape == fitted and out.dtype == np.float32
    assert float(out.max()) == pytest.approx(1.0)  # stretched so the maximum is 1
    assert float(out.min()) >= 0.0
    assert pp.fit_to_box(crop, box=8).shape == tuple(round(s * 8 / 20) or 1 for s in fitted)


def test_fit_to_box_of_a_blank_crop_stays_blank():
    out = pp.fit_to_box(np.zeros((30, 10), dtype=np.float32))
    assert out.shape[0] == 20 and out.dtype == np.float32 and not out.any()


def test_fit_to_box_thickens_thin_strokes_only_when_shrinking_needs_it():
    thin = np.zeros((400, 400), dtype=np.float32)
    thin[:, 200] = 1.0  # a 1 px stroke shrunk 20x would vanish
    out = pp.fit_to_box(thin)
    assert out.shape[0] == 20 and out.shape[1] >= 1
    assert (out >= 0.5).sum(axis=1).min() >= 1  # visible on every row
    width = (out > 0.25).sum(axis=1).mean()
    assert 1.0 <= width <= 3.0  # about MIN_STROKE_WIDTH, not a blob
    thick = np.zeros((40, 40), dtype=np.float32)
    thick[:, 10:30] = 1.0  # 20 px stroke, shrunk 2x: already wide enough, no dilation
    assert pp.fit_to_box(thick).shape == (20, 20)
    assert (pp.fit_to_box(thick)[10] > 0.5).sum() == 10


def test_paste_clips_at_every_edge():
    fitted = np.arange(1, 10, dtype=np.float32).reshape(3, 3)
    out = pp._paste(fitted, 1, 2, 5)
    assert out.dtype == np.float32 and out.shape == (5, 5)
    assert np.array_equal(out[1:4, 2:5], fitted) and out.sum() == fitted.sum()
    assert np.array_equal(pp._paste(fitted, -1, -2, 5)[:2, :1], fitted[1:, 2:])
    assert pp._paste(fitted, -1, -2, 5).sum() == fitted[1:, 2:].sum()
    assert np.array_equal(pp._paste(fitted, 3, 4, 5)[3:, 4:], fitted[:2, :1])
    assert pp._paste(fitted, 3, 4, 5).sum() == fitted[:2, :1].sum()
    assert not pp._paste(fitted, 5, 0, 5).any() and not pp._paste(fitted, 0, -3, 5).any()


def test_center_by_mass_puts_the_centre_within_half_a_pixel():
    bar = np.zeros((20, 6), dtype=np.float32)
    bar[:, 1:3] = 1.0  # off-centre in its own box
    out = pp.center_by_mass(bar)
    assert out.shape == (28, 28) and out.dtype == np.uint8 and out.max() == 255
    cy, cx = pp.center_of_mass(out)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5
    assert (out == 255).sum() == 40  # nothing lost: the whole bar is inside
    seven = np.zeros((20, 20), dtype=np.float32)
    seven[0:3, :] = 1.0  # a heavy top bar, a thin stem
    seven[:, 17:19] = 0.2
    cy, cx = pp.center_of_mass(pp.center_by_mass(seven))
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5
    assert pp.center_by_mass(bar, size=40).shape == (40, 40)


def test_fit_and_center_is_fit_then_center():
    crop = np.zeros((30, 12), dtype=np.float32)
    crop[2:28, 3:9] = 0.9
    assert np.array_equal(pp.fit_and_center(crop), pp.center_by_mass(pp.fit_to_box(crop)))


def test_output_stems_are_unique():
    stems = pp.output_stems(["a.png", "x/a.jpg", "b.png", "a.gif", ""])
    assert stems == ["a", "a-2", "b", "a-3", "image"]
    assert pp.output_stems([]) == []


def test_save_result_writes_the_image_then_numbered_stages(tmp_path):
    image = np.zeros((28, 28), dtype=np.uint8)
    image[5:9, 10:12] = 200
    stages = {"gray": np.full((4, 5), 7, dtype=np.uint8),
              "ink": np.full((2, 3, 3), 9, dtype=np.uint8)}
    result = pp.PreprocessResult(image=image, digit_found=True, stages=stages)
    written = pp.save_result(result, tmp_path, "seven")
    assert written == [tmp_path / "seven.png", tmp_path / "debug" / "seven" / "01_gray.png",
                       tmp_path / "debug" / "seven" / "02_ink.png"]
    assert np.array_equal(np.asarray(Image.open(written[0])), image)
    assert np.array_equal(np.asarray(Image.open(written[1])), stages["gray"])
    assert np.array_equal(np.asarray(Image.open(written[2])), stages["ink"])
    blank = pp.PreprocessResult(image=np.zeros((28, 28), np.uint8), digit_found=False,
                                reason="blank")
    assert pp.save_result(blank, tmp_path / "b", "x") == []
    assert not (tmp_path / "b").exists()


def test_encode_png_round_trips_every_channel_count():
    rng = np.random.default_rng(0)
    for shape in [(6, 7), (6, 7, 2), (6, 7, 3), (6, 7, 4)]:
        image = rng.integers(0, 256, size=shape, dtype=np.uint8)
        png = pp.encode_png(image)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert np.array_equal(np.asarray(Image.open(__import__("io").BytesIO(png))), image)


def test_center_by_mass_corrects_for_parts_that_fall_outside():
    """A heavy corner and a faint body: the first placement cuts off part of the body, which moves
    the centre, so one correction follows (found by mutation testing: nothing ran that loop)."""
    corner = np.full((20, 20), 0.01, dtype=np.float32)
    corner[0:3, 0:3] = 1.0
    out = pp.center_by_mass(corner)
    assert (out == 255).sum() == 9 and (out[11:14, 11:14] == 255).all()  # placed at (11, 11)
    cy, cx = pp.center_of_mass(out)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5
    mirrored = pp.center_by_mass(corner[:, ::-1].copy())
    assert (mirrored == 255).sum() == 9 and (mirrored[11:14, 15:18] == 255).all()  # at (11, -2)
    cy, cx = pp.center_of_mass(mirrored)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


@pytest.mark.parametrize("axis", [0, 1])
def test_center_by_mass_of_ink_far_from_the_middle_of_its_box(axis):
    bar = np.zeros((20, 20), dtype=np.float32)
    bar[:, 17:19] = 1.0  # mass centre at column 17.5 of its box
    if axis == 0:
        bar = bar.T.copy()
    out = pp.center_by_mass(bar)
    assert (out == 255).sum() == 40
    cy, cx = pp.center_of_mass(out)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_crop_to_ink_at_the_left_and_top_edges_and_its_message():
    ink = np.arange(100, dtype=np.float32).reshape(10, 10)
    mask = np.zeros((10, 10), dtype=bool)
    mask[0, 0] = True
    assert np.array_equal(pp.crop_to_ink(ink, mask), ink[0:2, 0:2])
    with pytest.raises(ValueError) as info:
        pp.crop_to_ink(ink, np.zeros((10, 10), dtype=bool))
    assert str(info.value) == "crop_to_ink needs a non-empty ink mask"


def test_fit_to_box_dilation_is_pinned():
    """A 1 px stroke on 400 px, full or half ink (>= 0.5 counts as stroke): the dilation before
    the 20x shrink gives these exact sums."""
    for value in (1.0, 0.5):
        thin = np.zeros((400, 400), dtype=np.float32)
        thin[:, 200] = value
        out = pp.fit_to_box(thin)
        assert out.shape == (20, 20) and float(out.sum()) == pytest.approx(39.3274, abs=1e-3)


def test_fit_to_box_does_not_thicken_when_not_shrinking():
    exact = np.zeros((20, 20), dtype=np.float32)  # already 20 px: scale 1, no dilation
    exact[2:18, 10] = 1.0
    assert np.abs(pp.fit_to_box(exact) - exact).max() < 0.05
    small = np.zeros((15, 15), dtype=np.float32)  # enlarged 4/3: a 1 px stroke stays thin
    small[2:13, 7] = 1.0
    assert (pp.fit_to_box(small)[10] > 0.5).sum() <= 2
    assert pp.fit_to_box(np.ones((20, 1), dtype=np.float32)).shape == (20, 1)


def test_fit_to_box_clips_lanczos_ringing_before_stretching():
    """Lanczos overshoots at sharp edges (about -0.02 and 1.03 here): the fitted crop is clipped
    to [0, 1] first, so the block's inside stays exactly 1 and nothing is negative."""
    block = np.zeros((50, 50), dtype=np.float32)
    block[10:40, 10:40] = 1.0
    out = pp.fit_to_box(block)
    assert out.shape == (20, 20) and float(out.min()) == 0.0
    assert (out == 1.0).sum() == 72
    assert float(out.sum()) == pytest.approx(144.1619, abs=1e-3)  # Lanczos, not another filter


@pytest.mark.parametrize("transpose", [False, True], ids=["x", "y"])
def test_center_by_mass_corrects_one_axis_alone(transpose):
    """A heavy edge column (or row) and a faint body: only that axis needs the correction, from
    12 to 13 (the loop must not stop while the other axis is already right)."""
    edge = np.full((20, 20), 0.02, dtype=np.float32)
    edge[:, 0:2] = 1.0
    if transpose:
        edge = edge.T.copy()
    out = pp.center_by_mass(edge)
    placed = out.T if transpose else out
    assert (placed[4:24, 13:15] == 255).all() and (placed == 255).sum() == 40
    cy, cx = pp.center_of_mass(out)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_fit_to_box_counts_half_ink_as_stroke_and_keeps_one_pixel_rows():
    three = np.zeros((400, 400), dtype=np.float32)
    three[:, 200:203] = 0.5  # a 3 px stroke of exactly half ink: measured 3 px wide, not 0
    assert float(pp.fit_to_box(three).sum()) == pytest.approx(37.04, abs=1e-3)  # 37.1224 if 0
    assert pp.fit_to_box(np.ones((1, 20), dtype=np.float32)).shape == (1, 20)


# ------------------------------- found by mutation testing of the decoding functions (merged code)
def _encoded(size: tuple[int, int], fmt: str) -> bytes:
    import io

    buffer = io.BytesIO()
    image = Image.new("L", size, 255)
    extra = dict(save_all=True, append_images=[image]) if fmt == "MPO" else {}  # MPO: 2+ frames
    image.save(buffer, format=fmt, **extra)
    return buffer.getvalue()


def test_check_image_size_reads_an_open_file_and_names_it():
    import io

    assert pp.check_image_size(io.BytesIO(_encoded((7, 5), "PNG"))) == (7, 5)
    with pytest.raises(pp.ImageError) as info:
        pp.check_image_size(io.BytesIO(b"not an image at all"))
    assert str(info.value).startswith("<BytesIO>: not an image file (expected ")


@pytest.mark.parametrize("fmt", ["JPEG", "MPO"])
def test_draft_size_reduces_large_jpegs_from_twice_the_working_size(fmt):
    import io

    side = 2 * pp.WORK_MAX_SIDE
    with Image.open(io.BytesIO(_encoded((side, 1), fmt))) as img:
        assert img.format == fmt
        assert images._draft_size(img) == (pp.WORK_MAX_SIDE, 1)  # never below 1 px a side
    with Image.open(io.BytesIO(_encoded((1, side), fmt))) as img:
        assert images._draft_size(img) == (1, pp.WORK_MAX_SIDE)
    with Image.open(io.BytesIO(_encoded((side - 1, 1), fmt))) as img:
        assert images._draft_size(img) is None


def test_size_limits_are_inclusive_and_the_message_exact():
    images._check_size(images.MAX_SIDE, 1, "x", None)
    images._check_size(1, images.MAX_SIDE, "x", None)
    images._check_size(10, 10, "x", 100)
    with pytest.raises(ImageTooLargeError) as info:
        images._check_size(1050, 1000, "x.png", 1_000_000)
    assert str(info.value) == ("x.png: image is 1050x1000 px (1.1 megapixels); expected at most "
                               "1 megapixels and 30000 px a side (a decompression bomb, or a photo "
                               "to shrink first)")


def test_pillow_bomb_refusal_states_the_limit_asked_for(monkeypatch):
    header = png_header(10_000, 10_000)  # over Pillow's own limit: refused while opening
    for max_pixels, limit in ((None, "40"), (5_000_000, "5"), (100_000_000, "100")):
        with pytest.raises(ImageTooLargeError) as info:
            pp.check_image_size(header, max_pixels=max_pixels)
        assert str(info.value).endswith(f"; expected at most {limit} megapixels")

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pp.Image, "open", refused)
    with pytest.raises(ImageError) as info:
        pp.check_image_size(header)
    assert str(info.value) == f"<{len(header)} bytes>: cannot read the file (Permission denied)"


def test_twelve_megapixel_phone_photo_decodes_at_half_scale(tmp_path, seven, monkeypatch):
    """A 4032x3024 JPEG (a 12 MP phone photo) decodes at half scale, to luminance, and gives the
    digit that a full-size colour decode gives."""
    path = tmp_path / "phone.jpg"
    canvas = Image.new("RGB", (4_032, 3_024), (228, 226, 220))
    canvas.paste(on_paper(seven).resize((1_400, 1_400)), (1_300, 800))
    canvas.save(path, quality=90)
    decoded = images._open_image(path)
    assert decoded.size == (2_016, 1_512) and decoded.mode == "L"
    drafted = preprocess(path)
    monkeypatch.setattr(images, "_draft", lambda img: None)
    full = preprocess(path)
    assert drafted.digit_found and full.digit_found
    assert correlation(drafted.image, full.image) > 0.9
