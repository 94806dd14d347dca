"""A small digit on a large photographed page among other marks (the photo path's detect then
refine, `digitnet.data.candidates` and `digitnet.data.ink.find_ink`): the digit is found, not
the lines, the rows of small print, the specks or the table showing along one edge, and it comes
out as the same digit on clean paper does."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from digitnet.data.candidates import PICKED
from digitnet.data.preprocess import PHOTO, center_of_mass, preprocess

PAGE = (1200, 1600)  # px, height and width: a page photo, small enough to run in a second
DIGIT = 90  # px tall: under 8% of the shorter side
STROKE = 4  # px: a ballpoint at this size


def _two(size: int = DIGIT, width: int = STROKE) -> np.ndarray:
    """A "2": an arc, a diagonal and a base, as coverage in [0, 1] (size x size)."""
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    s = size
    draw.arc([0.2 * s, 0.05 * s, 0.8 * s, 0.55 * s], 180, 30, fill=255, width=width)
    draw.line([(0.75 * s, 0.42 * s), (0.22 * s, 0.92 * s), (0.82 * s, 0.92 * s)], fill=255,
              width=width)
    return np.asarray(img, dtype=np.float32) / 255.0


def _page(with_marks: bool, digit_at=(560, 900), table: str = "right",
          digit_ink: float = 1.0) -> np.ndarray:
    """Grey photo of a page, float in [0, 1]: paper, light falling off, noise, the digit and,
    if asked, the other marks."""
    h, w = PAGE
    rng = np.random.default_rng(5)
    marks = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(marks)
    if with_marks:  # `digit_ink`: how dark the digit is against the marks (pencil: 0.3)
        draw.line([(80, 120), (700, 330)], fill=255, width=4)  # a drawn line, tilted
        draw.line([(1450, 150), (1400, 900)], fill=255, width=3)  # a near-upright one
        for row in range(4):  # rows of small print: letters 16 px tall
            y, x = 150 + row * 30, 820
            while x < 1300:
                if rng.random() < 0.5:
                    draw.line([(x, y), (x, y + 16)], fill=255, width=2)
                else:
                    draw.ellipse([x, y + 6, x + 9, y + 16], outline=255, width=2)
                x += 13 + (14 if rng.random() < 0.2 else 0)
        for _ in range(25):  # a cluster of specks
            cx, cy = rng.normal(300, 60), rng.normal(900, 60)
            r = rng.uniform(1, 4)
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    ink = np.asarray(marks, dtype=np.float32) / 255.0 * 0.85
    y, x = digit_at
    ink[y:y + DIGIT, x:x + DIGIT] = np.maximum(ink[y:y + DIGIT, x:x + DIGIT],
                                              digit_ink * _two())
    paper = 0.92 * (0.75 + 0.25 * np.linspace(0, 1, w, dtype=np.float32)[None, :])
    page = paper * (1 - ink) + 0.12 * ink
    if with_marks and table == "right":  # the table showing along the right edge
        page[:, -60:] = 0.25
    page = page + rng.normal(0, 0.012, page.shape).astype(np.float32)
    return np.clip(page, 0, 1)


@pytest.fixture(scope="module")
def clean():
    """The digit alone on even paper: what it should come out as."""
    result = preprocess(_page(with_marks=False))
    assert result.digit_found, result.reason
    return result.image


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of the two images' ink (> 127)."""
    x, y = a > 127, b > 127
    return float((x & y).sum()) / max(int((x | y).sum()), 1)


@pytest.mark.parametrize("digit_at", [(560, 900), (1000, 560)], ids=["middle", "low"])
def test_small_digit_among_marks_on_a_large_page_is_found(clean, digit_at):
    result = preprocess(_page(with_marks=True, digit_at=digit_at), debug=True)
    assert result.path == PHOTO and result.digit_found, result.reason
    cy, cx = center_of_mass(result.image)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5
    # the same digit as on clean paper, not a line, a row of print or the table's edge
    assert _overlap(result.image, clean) > 0.7
    corr = np.corrcoef(result.image.ravel().astype(float), clean.ravel().astype(float))[0, 1]
    assert corr > 0.9
    # the picked group is the digit's, and the debug stages show the decision
    assert "candidates" in result.stages
    assert result.stages["candidates"].max() == 255


@pytest.mark.parametrize("digit_ink", [0.3, 0.45])
def test_a_faint_pencil_digit_among_darker_marks_is_found(clean, digit_ink):
    """Dark marks set the page's threshold above a faint digit's strokes: the digit must be
    found all the same, below the threshold, and not a piece of the marks."""
    result = preprocess(_page(with_marks=True, digit_ink=digit_ink))
    assert result.path == PHOTO and result.digit_found, result.reason
    assert _overlap(result.image, clean) > 0.6
    corr = np.corrcoef(result.image.ravel().astype(float), clean.ravel().astype(float))[0, 1]
    assert corr > 0.85


@pytest.mark.parametrize("table, lit, shadow", [("right", 0.1, 0.55), ("none", 0.15, 0.4),
                                                 ("none", 0.25, 0.55)])
def test_the_page_is_dark_on_light_with_only_a_corner_in_full_light(table, lit, shadow):
    """A shadow over most of the page, a corner of it in full light: a broad light region on
    darker paper (the old polarity test, a median background of half the image, took it for
    light ink), which the thin dark strokes must outweigh."""
    from scipy import ndimage

    from digitnet.data.preprocess import DARK_ON_LIGHT

    yy, xx = np.mgrid[0:PAGE[0], 0:PAGE[1]]
    in_light = xx / PAGE[1] + 0.3 * yy / PAGE[0] > 1.3 - lit
    light = ndimage.gaussian_filter(np.where(in_light, 1.0, shadow).astype(np.float32), 15)
    result = preprocess(_page(with_marks=True, table=table) * light)
    assert result.polarity == DARK_ON_LIGHT and result.digit_found, result.reason


def test_the_decision_names_what_was_left_out():
    from digitnet.data.candidates import find_digit, line_pixels
    from digitnet.data.ink import _best_detection, _stretch, remove_background

    residual, _ = remove_background(_page(with_marks=True), "dark-on-light")
    found = _best_detection(residual)
    lines = line_pixels(found.mask)
    detection = find_digit(residual, found.mask, _stretch(found), lines)
    verdicts = {g.verdict for g in detection.groups}
    # the drawn lines are lines, the rows of print too wide or too many small pieces (the
    # table's edge is left out before: the long straight lines of `line_pixels`)
    assert PICKED in verdicts and "line" in verdicts and verdicts & {"wide", "print"}
    assert not any(g.box[3] > PAGE[1] - 60 and g.verdict in ("", PICKED)
                   for g in detection.groups)
    top, bottom, left, right = detection.picked.box  # the digit's: its middle, about its size
    assert top <= 560 + DIGIT // 2 <= bottom and left <= 900 + DIGIT // 2 <= right
    assert max(bottom - top, right - left) <= 1.3 * DIGIT


def test_a_block_of_rows_of_print_is_print_and_a_broken_digit_is_not():
    """Rows of print one above another make a square block, neither wide nor in a row; each row
    is far shorter than the block, while each stroke of a digit broken in pieces (a 7's bar and
    its stem apart) spans much of its height."""
    from digitnet.data.candidates import find_digit

    mask = np.zeros((600, 600), dtype=bool)
    for row in range(4):  # a block of four rows, 16 px tall and 30 px apart: 106 x 120 px
        mask[100 + 30 * row:116 + 30 * row, 100:220] = True
    mask[300:312, 360:410] = True  # a bold 7 in two pieces: its bar ...
    mask[318:400, 396:408] = True  # ... and, apart from it, its stem
    ink = mask.astype(np.float32)
    detection = find_digit(ink, mask, ink, np.zeros_like(mask))
    block = [g for g in detection.groups if g.box[0] == 100 and g.box[2] == 100]
    assert len(block) == 1 and block[0].verdict == "print" and len(block[0].members) == 4
    assert detection.picked.box == (300, 400, 360, 410)


def test_a_broad_faint_region_does_not_hide_the_ink():
    """A broad region only a little above the paper (the edge of a shadow the paper's estimate
    did not follow) takes Otsu's threshold to itself, and the page looked ink too faint as a
    whole; the threshold is taken again within that region, where the digit stands out."""
    from digitnet.data.ink import _best_detection

    rng = np.random.default_rng(3)
    residual = np.abs(rng.normal(0, 0.01, (400, 400))).astype(np.float32)
    residual[240:, :] += 0.08  # the faint region: 40% of the image
    digit = np.zeros_like(residual, dtype=bool)
    digit[100:180, 150:156] = digit[100:106, 150:200] = True
    residual[digit] = 0.6
    found = _best_detection(residual)
    assert not found.reason
    assert found.mask[digit].mean() > 0.9 and np.count_nonzero(found.mask[240:]) < 10  # of 64,000
