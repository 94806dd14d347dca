"""MNIST digits rendered the way other sources hand digits in: frame-filling scans, phone photos,
canvas drawings and MNIST itself as PNG files, for the real-world benchmark (real_world.py).

Each rendering is a function `(digit, rng) -> (file bytes, extension, parameters)` that takes one
MNIST digit (uint8 28x28, white on black) and writes it as one image file. The same digit and
generator state give the same bytes. `render_split` picks validation or test digits and renders
them: tune on "val", report on "test".

This file is longer than most here because each rendering is a short recipe of shared steps, and
keeping them side by side makes them easy to compare and to keep hard enough.
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage, special
from skimage.morphology import skeletonize

VAL_SIZE = 5_000  # the validation digits: as `train_val_split` in digitnet.data.datasets
ORIENTATION = 0x0112  # the EXIF tag
PENS = {  # RGB of the ink
    "black": (25, 25, 30), "blue": (30, 50, 150), "red": (160, 30, 35), "green": (25, 105, 55),
    "graphite": (80, 80, 88),
}
PAPERS = {  # RGB of the paper in even light
    "white": (246, 246, 242), "cream": (240, 232, 210), "grey": (190, 190, 186),
    "blue": (188, 204, 232), "yellow": (244, 232, 165),
}
LIGHT_STEP = 4  # px of the photo per px of its light field
RenderFn = Callable[[np.ndarray, np.random.Generator], tuple[bytes, str, dict]]


@dataclass(frozen=True)
class Rendering:
    """A named way of turning an MNIST digit into an image file, and what kind of input it is."""

    name: str
    kind: str  # "scan", "photo", "drawing" or "mnist"
    render: RenderFn
    about: str  # which real source it stands for
    share: float = 1.0  # of n_per_class that render_split makes (large photos are slow to handle)

    def __call__(self, digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str, dict]:
        return self.render(digit, rng)


# ------------------------------------------------------------------------------- shared steps
def _coverage(digit: np.ndarray) -> np.ndarray:
    """The digit's ink as float32 coverage in [0, 1], cropped to its bounding box."""
    cover = digit.astype(np.float32) / 255.0
    rows, cols = np.flatnonzero(cover.any(1)), np.flatnonzero(cover.any(0))
    if len(rows) == 0:
        return np.zeros((1, 1), np.float32)
    return cover[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _crop(cover: np.ndarray, level: float = 0.02) -> np.ndarray:
    """Crop a coverage array to where it exceeds `level`."""
    rows, cols = np.flatnonzero((cover > level).any(1)), np.flatnonzero((cover > level).any(0))
    if len(rows) == 0:
        return cover[:1, :1]
    return cover[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _resize(cover: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resample coverage to (height, width): bicubic up, antialiased (Lanczos) down."""
    up = width >= cover.shape[1] and height >= cover.shape[0]
    method = Image.Resampling.BICUBIC if up else Image.Resampling.LANCZOS
    out = Image.fromarray(cover.astype(np.float32), "F").resize((max(1, width), max(1, height)),
                                                                method)
    return np.clip(np.asarray(out, np.float32), 0, 1)


def _scaled(cover: np.ndarray, height: int) -> np.ndarray:
    """Coverage scaled so that its height is `height` px, aspect ratio kept."""
    width = max(1, round(cover.shape[1] * height / cover.shape[0]))
    return _resize(cover, width, height)


def _rotated(cover: np.ndarray, degrees: float) -> np.ndarray:
    """Coverage rotated counter-clockwise, the canvas grown to hold it, then cropped to the ink."""
    out = Image.fromarray(cover, "F").rotate(degrees, Image.Resampling.BICUBIC, expand=True)
    return _crop(np.clip(np.asarray(out, np.float32), 0, 1))


def _deslanted(cover: np.ndarray) -> np.ndarray:
    """Coverage sheared so that its principal axis is vertical (deslanting by image moments)."""
    ys, xs = np.mgrid[0:cover.shape[0], 0:cover.shape[1]].astype(np.float32)
    mass = cover.sum()
    if mass == 0:
        return cover
    cy, cx = (ys * cover).sum() / mass, (xs * cover).sum() / mass
    mu11 = ((ys - cy) * (xs - cx) * cover).sum() / mass
    mu02 = ((ys - cy) ** 2 * cover).sum() / mass
    shear = float(mu11 / mu02) if mu02 > 0 else 0.0
    pad = int(math.ceil(abs(shear) * cover.shape[0] / 2)) + 2
    padded = np.pad(cover, ((0, 0), (pad, pad)))
    # output (x, y) takes input (x + shear * (y - cy), y): the slant is undone
    matrix = (1.0, shear, -shear * cy, 0.0, 1.0, 0.0)
    out = Image.fromarray(padded, "F").transform(padded.shape[::-1], Image.Transform.AFFINE,
                                                 matrix, Image.Resampling.BILINEAR)
    return _crop(np.clip(np.asarray(out, np.float32), 0, 1))


def _thickened(cover: np.ndarray, radius: float) -> np.ndarray:
    """Grey dilation by a disk of `radius` px: a broader pen, same shape."""
    if radius < 0.5:
        return cover
    r = int(math.ceil(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = yy ** 2 + xx ** 2 <= radius ** 2
    return ndimage.grey_dilation(cover, footprint=disk)


def _png(array: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    image = Image.fromarray(array, "L" if mode == "1" else mode)
    (image.convert("1", dither=Image.Dither.NONE) if mode == "1" else image).save(buf, "PNG")
    return buf.getvalue()


def _jpeg(rgb: np.ndarray, quality: int, orientation: int | None = None) -> bytes:
    buf = io.BytesIO()
    kwargs = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        kwargs["exif"] = exif
    Image.fromarray(rgb, "RGB").save(buf, "JPEG", quality=quality, **kwargs)
    return buf.getvalue()


def _u8(array: np.ndarray) -> np.ndarray:
    return np.clip(np.round(array), 0, 255).astype(np.uint8)


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


# ------------------------------------------------------------------------------------- scans
def _scan_pen(cover: np.ndarray, rng: np.random.Generator, scale: int) -> tuple[np.ndarray, float]:
    """Upscale the cropped digit `scale` times and broaden it as pens vary: (coverage, radius)."""
    big = _scaled(cover, cover.shape[0] * scale)
    radius = float(rng.uniform(0, 1.0)) * scale  # up to 1 MNIST px broader on each side
    return _thickened(big, radius), round(radius / scale, 2)


def _scan_grey(cover: np.ndarray, paper: float, ink: float) -> np.ndarray:
    return _u8(paper + (ink - paper) * cover)


def scan16_grey(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str, dict]:
    """Deslanted and size-normalised to fill a 16x16 box, grey (as USPS-style scans)."""
    big, radius = _scan_pen(_coverage(digit), rng, 4)
    big = _deslanted(big)
    widen = float(rng.uniform(1.0, 1.4))  # normalising the size widens narrow digits
    h, w = big.shape
    width = min(16, max(1, round(w * 16 / h * widen))) if h >= w else 16
    height = 16 if h >= w else min(16, max(1, round(h * 16 / w * widen)))
    small = _resize(big, width, height)
    box = np.zeros((16, 16), np.float32)
    top, left = (16 - height) // 2, (16 - width) // 2
    box[top:top + height, left:left + width] = small
    box = box / max(float(box.max()), 1e-6)  # normalised: the darkest pixel is full ink
    paper, ink = float(rng.uniform(225, 255)), float(rng.uniform(0, 40))
    params = dict(radius=radius, widen=round(widen, 3), paper=round(paper), ink=round(ink))
    return _png(_scan_grey(box, paper, ink), "L"), "png", params


def scan16_binary_stretched(digit: np.ndarray,
                            rng: np.random.Generator) -> tuple[bytes, str, dict]:
    """Thresholded to black and white and stretched to fill a 16x16 box, aspect ratio lost
    (as Semeion-style digits); a narrow digit is stretched at most MAX_STRETCH times more across
    than down, so a 1 stays a stroke rather than a block."""
    big, radius = _scan_pen(_coverage(digit), rng, 4)
    h, w = big.shape
    sx, sy = 16 / w, 16 / h
    max_stretch = 2.5
    sx, sy = min(sx, sy * max_stretch), min(sy, sx * max_stretch)
    width, height = min(16, max(1, round(w * sx))), min(16, max(1, round(h * sy)))
    box = np.zeros((16, 16), np.float32)
    top, left = (16 - height) // 2, (16 - width) // 2
    box[top:top + height, left:left + width] = _resize(big, width, height)
    threshold = float(rng.uniform(0.3, 0.6))
    mode = _pick(rng, ["1", "L"])
    ink = np.where(box > threshold, 0, 255).astype(np.uint8)
    params = dict(radius=radius, threshold=round(threshold, 3), mode=mode,
                  stretch=round(max(sx, sy) / min(sx, sy), 3))
    return _png(ink, mode), "png", params


def scan32_binary(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str, dict]:
    """Black and white 32x32 with the aspect ratio kept, the long side filling the box (as
    bitmaps of normalised form digits)."""
    big, radius = _scan_pen(_coverage(digit), rng, 4)
    small = _scaled(big, 32) if big.shape[0] >= big.shape[1] else _resize(
        big, 32, max(1, round(big.shape[0] * 32 / big.shape[1])))
    small = small[:32, :32]
    box = np.zeros((32, 32), np.float32)
    top, left = (32 - small.shape[0]) // 2, (32 - small.shape[1]) // 2
    box[top:top + small.shape[0], left:left + small.shape[1]] = small
    threshold = float(rng.uniform(0.3, 0.6))
    ink = np.where(box > threshold, 0, 255).astype(np.uint8)
    params = dict(radius=radius, threshold=round(threshold, 3))
    return _png(ink, "1"), "png", params


def scan64_grey(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str, dict]:
    """64x64 grey with a thin margin, scanner noise and blur (as a digit cell cut from a form)."""
    big, radius = _scan_pen(_coverage(digit), rng, 4)
    margin = int(rng.integers(1, 5))
    side = 64 - 2 * margin
    h, w = big.shape
    height, width = (side, max(1, round(w * side / h))) if h >= w else (
        max(1, round(h * side / w)), side)
    box = np.zeros((64, 64), np.float32)
    top = margin + (side - height) // 2
    left = margin + int(rng.integers(0, side - min(width, side) + 1))
    box[top:top + height, left:left + width] = _resize(big, width, height)[:, :64 - left]
    paper, ink = float(rng.uniform(200, 250)), float(rng.uniform(10, 80))
    grey = paper + (ink - paper) * box
    grey = ndimage.gaussian_filter(grey, float(rng.uniform(0.3, 0.9)))
    noise = float(rng.uniform(1, 5))
    grey = grey + rng.normal(0, noise, grey.shape)
    params = dict(radius=radius, margin=margin, paper=round(paper), ink=round(ink),
                  noise=round(noise, 2))
    return _png(_u8(grey), "L"), "png", params


# ------------------------------------------------------------------------------------ photos
@dataclass
class _Photo:
    """A photo being made: the page's colours as RGB floats in 0-255 (h, w, 3), the light falling
    on it as a float32 (h, w) factor (paper texture, gradients, shadows: all multiply), and
    where the digit sits."""

    rgb: np.ndarray
    light: np.ndarray  # at 1/LIGHT_STEP of the resolution: light changes slowly across a page
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, height, width of the digit
    blur: float = 0.0  # px: focus blur, applied to each ink layer as it is laid


def _paper(height: int, width: int, color: tuple[int, int, int],
           rng: np.random.Generator) -> _Photo:
    """Paper with a faint blotchy texture (low-frequency brightness changes of about 1%)."""
    small = rng.normal(0, 1, (max(2, height // 48), max(2, width // 48))).astype(np.float32)
    light = 1 + 0.01 * _resize_any(small, -(-width // LIGHT_STEP), -(-height // LIGHT_STEP))
    rgb = np.empty((height, width, 3), np.float32)
    rgb[:] = np.asarray(color, np.float32)
    return _Photo(rgb, light, blur=float(rng.uniform(0.3, 1.2)))


def _resize_any(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bicubic resize of any float array (no clipping)."""
    img = Image.fromarray(array.astype(np.float32), "F")
    return np.asarray(img.resize((width, height), Image.Resampling.BICUBIC), np.float32)


def _lay_ink(photo: _Photo, cover: np.ndarray, top: int, left: int,
             pen: tuple[int, int, int], opacity: float = 1.0) -> None:
    """Blend ink of colour `pen` into the photo where `cover` (placed at top, left) says."""
    if photo.blur > 0.25:  # focus blur; the paper and the light are smooth already
        pad = int(math.ceil(3 * photo.blur))
        cover = ndimage.gaussian_filter(np.pad(cover, pad), photo.blur)
        top, left = top - pad, left - pad
        cover = cover[max(0, -top):, max(0, -left):]
        top, left = max(0, top), max(0, left)
    h, w = cover.shape
    region = photo.rgb[top:top + h, left:left + w]
    alpha = (cover[:region.shape[0], :region.shape[1]] * opacity)[..., None]
    region *= 1 - alpha
    region += alpha * np.asarray(pen, np.float32)


def _place_digit(photo: _Photo, cover: np.ndarray, rng: np.random.Generator,
                 pen: tuple[int, int, int], opacity: float = 1.0, margin: float = 0.06) -> None:
    """Put the digit anywhere in the photo at least `margin` of the sides from the edges."""
    height, width = photo.rgb.shape[:2]
    my, mx = round(margin * height), round(margin * width)
    top = int(rng.integers(my, max(my + 1, height - cover.shape[0] - my)))
    left = int(rng.integers(mx, max(mx + 1, width - cover.shape[1] - mx)))
    _lay_ink(photo, cover, top, left, pen, opacity)
    photo.box = (top, left, cover.shape[0], cover.shape[1])


def _photo_digit(digit: np.ndarray, rng: np.random.Generator, height: int,
                 stroke: float | None) -> np.ndarray:
    """The digit at `height` px, tilted a little, with a pen of `stroke` px (None: MNIST's)."""
    return _stroked(digit, height, stroke, float(rng.uniform(-8, 8)))


def _stroked(digit: np.ndarray, height: int, stroke: float | None,
             degrees: float = 0.0, keep_filled: bool = False) -> np.ndarray:
    """The digit, rotated by `degrees`, scaled so that it was `height` px tall before rotating,
    redrawn along its skeleton with a pen `stroke` px wide (None: MNIST's own strokes).

    A thin ballpoint, a thick marker or a drawing program differ from MNIST's pressure-varying
    strokes like this: the same path, a constant width. The shape is worked out at 4x MNIST's
    size and only then scaled: the distance to the skeleton scales with the image, so the pen
    width comes out the same, far faster than skeletonising a large image. With `keep_filled`,
    parts of the ink far thicker than its strokes (a loop its writer filled in) stay filled: a
    skeleton would redraw them as a line, another digit (an 8 as a P).
    """
    cover = _coverage(digit)
    work = _rotated(_scaled(cover, cover.shape[0] * 4), degrees)
    factor = height / (cover.shape[0] * 4)
    if stroke is None:
        return _resize(work, max(1, round(work.shape[1] * factor)),
                       max(1, round(work.shape[0] * factor)))
    pad = math.ceil(stroke / 2 / factor) + 1  # room for the pen beyond the skeleton
    dist = _skeleton_distance(np.pad(work, pad), keep_filled)
    far = _resize_any(dist, round(dist.shape[1] * factor), round(dist.shape[0] * factor)) * factor
    return _crop(np.clip(stroke / 2 + 0.5 - far, 0, 1).astype(np.float32))


FILLED_WIDTH = 1.8  # ink this many times as thick as its typical stroke is a filled-in area


def _skeleton_distance(cover: np.ndarray, keep_filled: bool = False) -> np.ndarray:
    """Distance (px) from each pixel to the skeleton of the ink (cover > 0.5); with
    `keep_filled`, to the skeleton or to the ink's filled-in areas: where a disk FILLED_WIDTH
    times as wide as the ink's median stroke fits inside it."""
    mask = cover > 0.5
    skeleton = skeletonize(mask) if mask.any() else mask
    if not skeleton.any():
        skeleton = cover >= cover.max()
    if keep_filled and mask.any():
        depth = ndimage.distance_transform_edt(mask)  # on the skeleton: half the stroke's width
        on = skeleton & mask
        radius = FILLED_WIDTH * float(np.median(depth[on])) if on.any() else 0.0
        if radius >= 1:
            r = int(math.ceil(radius))
            yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
            disk = yy ** 2 + xx ** 2 <= radius ** 2
            skeleton = skeleton | ndimage.binary_opening(mask, structure=disk)
    return ndimage.distance_transform_edt(~skeleton).astype(np.float32)


def _light(photo: _Photo, rng: np.random.Generator, low: float = 0.7) -> float:
    """Uneven light: a gradient across the page down to `low` of full brightness."""
    h, w = photo.light.shape
    theta = rng.uniform(0, 2 * math.pi)
    fall = float(rng.uniform(low, 1.0))
    photo.light *= fall + (1 - fall) * _ramp(h, w, theta)
    return round(fall, 3)


def _ramp(h: int, w: int, theta: float) -> np.ndarray:
    """0 to 1 across the image along direction theta, as float32 (h, w)."""
    ys = np.linspace(0, 1, h, dtype=np.float32)[:, None] * math.sin(theta)
    xs = np.linspace(0, 1, w, dtype=np.float32)[None, :] * math.cos(theta)
    along = ys + xs
    return (along - along.min()) / max(float(np.ptp(along)), 1e-6)


def _shadow(photo: _Photo, rng: np.random.Generator, depth: tuple[float, float],
            across_digit: bool) -> dict:
    """A soft-edged shadow (of a hand or a phone) that darkens part of the page.

    across_digit: the shadow edge runs through the digit's box, so part of it is in shadow.
    """
    h, w = photo.light.shape
    theta = float(rng.uniform(0, 2 * math.pi))
    along = _ramp(h, w, theta)
    if across_digit:
        top, left, dh, dw = (v / LIGHT_STEP for v in photo.box)
        cy, cx = top + dh * rng.uniform(0.3, 0.7), left + dw * rng.uniform(0.3, 0.7)
        edge = float(along[min(h - 1, int(cy)), min(w - 1, int(cx))])
    else:
        edge = float(rng.uniform(0.2, 0.8))
    softness = float(rng.uniform(0.005, 0.04))
    dark = float(rng.uniform(*depth))
    shade = special.expit((along - edge) / softness)
    photo.light *= dark + (1 - dark) * shade
    return dict(shadow_depth=round(dark, 3), shadow_softness=round(softness, 4))


def _camera(photo: _Photo, rng: np.random.Generator,
            noise: tuple[float, float] = (1.5, 5.0)) -> tuple[np.ndarray, dict]:
    """The light on the page and sensor noise: the photo as uint8 RGB.

    The noise is a random 128x128 tile repeated over the image: as strong as per-pixel noise
    where a pipeline looks, at a fraction of the cost of drawing a number for every pixel.
    """
    h, w = photo.rgb.shape[:2]
    level = float(rng.uniform(*noise))
    tile = level * rng.standard_normal((128, 128, 3), dtype=np.float32)
    reps = (math.ceil(h / 128), math.ceil(w / 128), 1)
    light = _resize_any(photo.light, photo.light.shape[1] * LIGHT_STEP,
                        photo.light.shape[0] * LIGHT_STEP)[:h, :w]
    rgb = photo.rgb * light[..., None]
    rgb += np.tile(tile, reps)[:h, :w]
    rgb += 0.5  # round, not truncate, in the cast below
    np.clip(rgb, 0, 255, out=rgb)
    return rgb.astype(np.uint8), dict(blur=round(photo.blur, 2), noise=round(level, 2))


def _photo_size(rng: np.random.Generator, low: int = 400, high: int = 1100) -> tuple[int, int]:
    """(height, width) of a 4:3 photo, portrait or landscape."""
    long = int(rng.integers(low, high + 1))
    short = round(long * 3 / 4)
    return (long, short) if rng.random() < 0.5 else (short, long)


def _basic_photo(digit: np.ndarray, rng: np.random.Generator, *, pen: str, paper: str,
                 stroke_share: tuple[float, float] | None, fill: tuple[float, float] = (0.3, 0.6),
                 opacity: tuple[float, float] = (0.9, 1.0), size: tuple[int, int] = (400, 1100),
                 ) -> tuple[_Photo, dict]:
    """Paper, uneven light not yet applied, and the digit: the start of most photos."""
    height, width = _photo_size(rng, *size)
    photo = _paper(height, width, PAPERS[paper], rng)
    digit_h = round(min(height, width) * float(rng.uniform(*fill)))
    stroke = None if stroke_share is None else max(1.0, digit_h * float(rng.uniform(*stroke_share)))
    cover = _photo_digit(digit, rng, digit_h, stroke)
    alpha = float(rng.uniform(*opacity))
    _place_digit(photo, cover, rng, PENS[pen], alpha)
    params = dict(size=[width, height], pen=pen, paper=paper, digit_height=digit_h,
                  stroke=None if stroke is None else round(stroke, 2), opacity=round(alpha, 3))
    return photo, params


def _finish(photo: _Photo, rng: np.random.Generator, params: dict,
            quality: tuple[int, int] = (70, 95)) -> tuple[bytes, str, dict]:
    """Camera and JPEG: the file bytes."""
    rgb, camera = _camera(photo, rng)
    q = int(rng.integers(quality[0], quality[1] + 1))
    return _jpeg(rgb, q), "jpg", {**params, **camera, "quality": q}


def photo_pencil(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str, dict]:
    """Pencil: grey, grainy, thin strokes at low contrast."""
    height, width = _photo_size(rng)
    paper = _pick(rng, ["white", "cream"])
    photo = _paper(height, width, PAPERS[paper], rng)
    digit_h = round(min(height, width) * float(rng.uniform(0.25, 0.55)))
    stroke = max(1.0, digit_h * float(rng.uniform(0.03, 0.06)))
    cover = _photo_digit(digit, rng, digit_h, stroke)
    grain = rng.uniform(0.5, 1.0, cover.shape).astype(np.float32)  # graphite on paper fibres
    alpha = float(rng.uniform(0.3, 0.55))
    _place_digit(photo, cover * grain, rng, PENS["graphite"], alpha)
    fall = _light(photo, rng, 0.7)
    params = dict(size=[width, height], paper=paper, digit_height=digit_h,
                  stroke=round(stroke, 2), opacity=round(alpha, 3), light=fall)
    return _finish(photo, rng, params)


def photo_ballpoint(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str, dict]:
    """Ballpoint pen: thin strokes of constant width, blue or black."""
    photo, params = _basic_photo(digit, rng, pen=_pick(rng, ["blue", "black"]),
                                 paper=_pick(rng, ["white", "cream", "yellow"]),
                                 stroke_share=(0.02, 0.04), opacity=(0.7, 1.0))
    params["light"] = _light(photo, rng, 0.7)
    return _finish(photo, rng, params)


def photo_marker(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str, dict]:
    """Felt marker: thick strokes of constant width."""
    photo, params = _basic_photo(digit, rng, pen=_pick(rng, ["black", "blue", "red", "green"]),
                                 paper=_pick(rng, ["white", "cream"]),
                                 stroke_share=(0.1, 0.18))
    params["light"] = _light(photo, rng, 0.7)
    return _finish(photo, rng, params)


def photo_blue_paper(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str, dict]:
    """Blue ink on blue or grey paper: little contrast in brightness."""
    photo, params = _basic_photo(digit, rng, pen="blue", paper=_pick(rng, ["blue", "grey"]),
                                 stroke_share=(0.04, 0.09), opacity=(0.6, 0.9))
    params["light"] = _light(photo, rng, 0.75)
    return _finish(photo, rng, params)


def _lines(photo: _Photo, positions: np.ndarray, width: float, color: tuple[int, int, int],
           axis: int, opacity: float) -> None:
    """Straight printed lines across the page at `positions` px along `axis` (0: horizontal)."""
    n = photo.rgb.shape[axis]
    coords = np.arange(n, dtype=np.float32)
    dist = np.min(np.abs(coords[:, None] - positions[None, :]), axis=1) if len(positions) else (
        np.full(n, np.inf, np.float32))
    profile = np.clip(width / 2 + 0.5 - dist, 0, 1) * opacity  # (n,) antialiased
    if photo.blur > 0.25:
        profile = ndimage.gaussian_filter1d(profile, photo.blur)
    alpha = profile[:, None, None] if axis == 0 else profile[None, :, None]
    photo.rgb *= 1 - alpha
    photo.rgb += alpha * np.asarray(color, np.float32)


def photo_ruled(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str, dict]:
    """Ruled paper: blue lines about one digit height apart, often a red margin line."""
    height, width = _photo_size(rng)
    photo = _paper(height, width, PAPERS["white"], rng)
    digit_h = round(min(height, width) * float(rng.uniform(0.25, 0.45)))
    spacing = digit_h * float(rng.uniform(1.0, 1.4))
    offset = float(rng.uniform(0, spacing))
    line_w = max(1.0, min(height, width) * float(rng.uniform(0.002, 0.006)))
    _lines(photo, np.arange(offset, height, spacing, dtype=np.float32), line_w, (120, 160, 215),
           0, float(rng.uniform(0.5, 0.9)))
    margin = rng.random() < 0.5
    if margin:
        _lines(photo, np.array([width * rng.uniform(0.08, 0.2)], np.float32), line_w,
               (215, 90, 100), 1, 0.8)
    pen = _pick(rng, ["blue", "black"])
    stroke = max(1.0, digit_h * float(rng.uniform(0.03, 0.08)))
    cover = _photo_digit(digit, rng, digit_h, stroke)
    _place_digit(photo, cover, rng, PENS[pen], float(rng.uniform(0.8, 1.0)))
    params = dict(size=[width, height], pen=pen, digit_height=digit_h, stroke=round(stroke, 2),
                  spacing=round(spacing, 1), line_width=round(line_w, 2), margin_line=margin,
                  light=_light(photo, rng, 0.7))
    return _finish(photo, rng, params)


def photo_grid(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str, dict]:
    """Squared (grid) paper: the digit spans one or two cells, grid lines cross it."""
    height, width = _photo_size(rng)
    photo = _paper(height, width, PAPERS["white"], rng)
    digit_h = round(min(height, width) * float(rng.uniform(0.25, 0.45)))
    cell = digit_h / float(rng.uniform(1.3, 2.2))
    line_w = max(1.0, min(height, width) * float(rng.uniform(0.0015, 0.005)))
    color = (140, 170, 210) if rng.random() < 0.6 else (160, 160, 160)
    opacity = float(rng.uniform(0.5, 0.9))
    for axis, n in ((0, height), (1, width)):
        _lines(photo, np.arange(rng.uniform(0, cell), n, cell, dtype=np.float32), line_w, color,
               axis, opacity)
    pen = _pick(rng, ["blue", "black"])
    stroke = max(1.0, digit_h * float(rng.uniform(0.03, 0.08)))
    cover = _photo_digit(digit, rng, digit_h, stroke)
    _place_digit(photo, cover, rng, PENS[pen], float(rng.uniform(0.8, 1.0)))
    params = dict(size=[width, height], pen=pen, digit_height=digit_h, stroke=round(stroke, 2),
                  cell=round(cell, 1), line_width=round(line_w, 2), light=_light(photo, rng, 0.7))
    return _finish(photo, rng, params)


def photo_shadow(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str, dict]:
    """A strong shadow whose edge runs across the digit, over a gradient."""
    photo, params = _basic_photo(digit, rng, pen=_pick(rng, ["blue", "black"]),
                                 paper=_pick(rng, ["white", "cream"]),
                                 stroke_share=(0.03, 0.1))
    params["light"] = _light(photo, rng, 0.6)
    params.update(_shadow(photo, rng, (0.3, 0.55), across_digit=True))
    return _finish(photo, rng, params)


def _marks(photo: _Photo, rng: np.random.Generator, n: int) -> list[str]:
    """Other marks on the page away from the digit: lines, specks and rows of small print."""
    h, w = photo.rgb.shape[:2]
    layer = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(layer)
    top, left, dh, dw = photo.box
    keep_out = (left - dw, top - dh, left + 2 * dw, top + 2 * dh)  # x0, y0, x1, y1
    kinds = []

    def spot() -> tuple[float, float]:
        for _ in range(50):
            x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
            if not (keep_out[0] < x < keep_out[2] and keep_out[1] < y < keep_out[3]):
                return x, y
        return 0.0, 0.0

    unit = max(h, w) / 100  # marks scale with the page, not with the digit
    for _ in range(n):
        kind = _pick(rng, ["line", "specks", "text"])
        x, y = spot()
        if kind == "line":  # a ruled or hand-drawn straight line, clipped by the keep-out box
            angle = rng.uniform(0, math.pi)
            length = unit * rng.uniform(10, 40)
            end = (x + length * math.cos(angle), y + length * math.sin(angle))
            draw.line([(x, y), end], fill=255, width=max(1, round(unit * rng.uniform(0.1, 0.3))))
        elif kind == "specks":
            for _ in range(int(rng.integers(5, 30))):
                sx, sy = x + unit * rng.normal(0, 4), y + unit * rng.normal(0, 4)
                r = unit * rng.uniform(0.05, 0.2)
                draw.ellipse([sx - r, sy - r, sx + r, sy + r], fill=255)
        else:  # a few rows of small printed words
            _glyph_rows(draw, rng, x, y, unit, int(rng.integers(2, 5)))
        kinds.append(kind)
    # nothing may touch the digit: clear the keep-out box
    draw.rectangle(keep_out, fill=0)
    cover = np.asarray(layer, np.float32) / 255.0
    _lay_ink(photo, cover, 0, 0, PENS[_pick(rng, ["black", "blue", "graphite"])], 0.85)
    return kinds


def _glyph_rows(draw: ImageDraw.ImageDraw, rng: np.random.Generator, x: float, y: float,
                unit: float, rows: int) -> None:
    """Rows of letter-like marks (strokes, bowls, arcs) `unit` px tall, as small print."""
    pen = max(1, round(unit * 0.12))
    for row in range(rows):
        cx, cy = x, y + row * unit * 1.8
        for _ in range(int(rng.integers(3, 8))):  # words
            for _ in range(int(rng.integers(2, 7))):  # letters
                w = unit * rng.uniform(0.4, 0.7)
                shape = int(rng.integers(3))
                if shape == 0:
                    draw.line([(cx, cy), (cx, cy + unit)], fill=255, width=pen)
                elif shape == 1:
                    draw.ellipse([cx, cy + unit * 0.4, cx + w, cy + unit], outline=255, width=pen)
                else:
                    draw.arc([cx, cy + unit * 0.3, cx + w, cy + unit], 30, 330, fill=255,
                             width=pen)
                cx += w + unit * 0.15
            cx += unit * 0.6


def photo_small_in_large(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str, dict]:
    """A small thin-pen or pencil digit in a large photo (2-4 MP) with a shadow, other marks on
    the page and sometimes the table showing at one edge."""
    height, width = _photo_size(rng, 1600, 2400)
    paper = _pick(rng, ["white", "cream"])
    photo = _paper(height, width, PAPERS[paper], rng)
    digit_h = round(min(height, width) * float(rng.uniform(0.04, 0.1)))
    pencil = rng.random() < 0.5
    stroke = max(1.0, digit_h * float(rng.uniform(0.03, 0.07)))
    cover = _photo_digit(digit, rng, digit_h, stroke)
    if pencil:
        cover = cover * rng.uniform(0.5, 1.0, cover.shape).astype(np.float32)
    pen = "graphite" if pencil else _pick(rng, ["blue", "black"])
    alpha = float(rng.uniform(0.35, 0.6) if pencil else rng.uniform(0.8, 1.0))
    _place_digit(photo, cover, rng, PENS[pen], alpha, margin=0.15)
    marks = _marks(photo, rng, int(rng.integers(2, 7)))
    table = rng.random() < 0.4
    if table:  # the paper ends before the photo does: a dark table strip along one side
        side = int(rng.integers(4))
        depth = int(min(height, width) * rng.uniform(0.03, 0.08))
        strip = [np.s_[:depth, :], np.s_[-depth:, :], np.s_[:, :depth], np.s_[:, -depth:]][side]
        photo.rgb[strip] = np.asarray((70, 55, 45), np.float32)
    params = dict(size=[width, height], paper=paper, pen=pen, digit_height=digit_h,
                  stroke=round(stroke, 2), opacity=round(alpha, 3), marks=marks, table=table,
                  light=_light(photo, rng, 0.6))
    params.update(_shadow(photo, rng, (0.4, 0.7), across_digit=rng.random() < 0.5))
    return _finish(photo, rng, params)


def _back_text(h: int, w: int, rng: np.random.Generator, row: float) -> np.ndarray:
    """Handwriting-like rows on the back of the page, mirrored and blurred: float32 (h, w)."""
    layer = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(layer)
    pen = max(1, round(row * 0.08))
    for y in np.arange(rng.uniform(0, row), h, row * rng.uniform(1.1, 1.6)):
        x = float(rng.uniform(0, row))
        while x < w:
            word = row * rng.uniform(1, 4)
            xs = np.linspace(x, x + word, int(word / (row * 0.15)) + 2)
            ys = y + row * 0.3 * np.sin(xs / (row * 0.12) + rng.uniform(0, 6)) * rng.uniform(
                0.5, 1.0, len(xs))
            draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=255, width=pen)
            x += word + row * rng.uniform(0.4, 1.0)
    back = layer.transpose(Image.Transpose.FLIP_LEFT_RIGHT).filter(
        ImageFilter.GaussianBlur(row * 0.05))
    return np.asarray(back, np.float32) / 255.0


def photo_showthrough(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str, dict]:
    """Thin paper with writing on the back showing through, mirrored and blurred."""
    height, width = _photo_size(rng)
    paper = _pick(rng, ["white", "cream"])
    photo = _paper(height, width, PAPERS[paper], rng)
    digit_h = round(min(height, width) * float(rng.uniform(0.25, 0.5)))
    row = digit_h * float(rng.uniform(0.4, 0.9))
    strength = float(rng.uniform(0.12, 0.3))
    _lay_ink(photo, _back_text(height, width, rng, row), 0, 0, PENS["black"], strength)
    pen = _pick(rng, ["blue", "black"])
    stroke = max(1.0, digit_h * float(rng.uniform(0.03, 0.09)))
    cover = _photo_digit(digit, rng, digit_h, stroke)
    _place_digit(photo, cover, rng, PENS[pen], float(rng.uniform(0.8, 1.0)))
    params = dict(size=[width, height], paper=paper, pen=pen, digit_height=digit_h,
                  stroke=round(stroke, 2), back_row=round(row, 1),
                  showthrough=round(strength, 3), light=_light(photo, rng, 0.7))
    return _finish(photo, rng, params)


def photo_jpeg_low(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str, dict]:
    """A small photo saved as JPEG at quality 30-60 (messaging apps, web uploads)."""
    photo, params = _basic_photo(digit, rng, pen=_pick(rng, ["blue", "black", "graphite"]),
                                 paper=_pick(rng, ["white", "cream", "grey"]),
                                 stroke_share=(0.04, 0.1), size=(240, 640))
    params["light"] = _light(photo, rng, 0.7)
    return _finish(photo, rng, params, quality=(30, 60))


# the stored pixels, as a transpose of the upright photo, for each EXIF orientation a phone writes
_STORED = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90,
           8: Image.Transpose.ROTATE_270}


def photo_exif_rotated(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str, dict]:
    """A phone photo whose pixels are stored sideways or upside down, with the EXIF orientation
    tag saying how to turn them upright."""
    photo, params = _basic_photo(digit, rng, pen=_pick(rng, ["blue", "black"]),
                                 paper=_pick(rng, ["white", "cream"]), stroke_share=(0.04, 0.1))
    params["light"] = _light(photo, rng, 0.7)
    rgb, camera = _camera(photo, rng)
    orientation = int(_pick(rng, ["6", "8", "3", "6"]))  # 6 most often, as phones held upright
    stored = np.asarray(Image.fromarray(rgb, "RGB").transpose(_STORED[orientation]))
    q = int(rng.integers(70, 96))
    return _jpeg(stored, q, orientation), "jpg", {**params, **camera, "quality": q,
                                                    "orientation": orientation}


def _perspective_coeffs(src: list[tuple[float, float]],
                        dst: list[tuple[float, float]]) -> tuple[float, ...]:
    """PIL PERSPECTIVE coefficients mapping output points `dst` to input points `src`."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    return tuple(np.linalg.solve(np.asarray(rows, float), np.asarray(rhs, float)).tolist())


def photo_perspective(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str, dict]:
    """A photo taken at an angle: the page seen in mild perspective."""
    photo, params = _basic_photo(digit, rng, pen=_pick(rng, ["blue", "black"]),
                                 paper=_pick(rng, ["white", "cream"]),
                                 stroke_share=(0.04, 0.1), fill=(0.3, 0.5))
    params["light"] = _light(photo, rng, 0.7)
    rgb, camera = _camera(photo, rng)
    h, w = rgb.shape[:2]
    strength = float(rng.uniform(0.04, 0.12))  # corners move up to this share of the side
    corners = [(0, 0), (w, 0), (w, h), (0, h)]
    src = [(x + (1 if x == 0 else -1) * w * strength * rng.uniform(0, 1),
            y + (1 if y == 0 else -1) * h * strength * rng.uniform(0, 1)) for x, y in corners]
    coeffs = _perspective_coeffs(src, corners)
    warped = Image.fromarray(rgb, "RGB").transform((w, h), Image.Transform.PERSPECTIVE, coeffs,
                                                   Image.Resampling.BILINEAR)
    q = int(rng.integers(70, 96))
    return _jpeg(np.asarray(warped), q), "jpg", {**params, **camera, "quality": q,
                                                 "perspective": round(strength, 3)}


def _euro_one(rng: np.random.Generator) -> np.ndarray:
    """A European-style 1 (long flag, upright, a base), as a 28x28 white-on-black digit."""
    layer = Image.new("L", (112, 112), 0)
    draw = ImageDraw.Draw(layer)
    width = int(rng.integers(8, 14))
    x_top, x_bottom = 60 + rng.uniform(-4, 6), 56 + rng.uniform(-6, 2)
    top, bottom = 16 + rng.uniform(-4, 4), 96 + rng.uniform(-4, 4)
    flag = (x_top - rng.uniform(18, 30), top + rng.uniform(14, 28))
    draw.line([flag, (x_top, top), (x_bottom, bottom)], fill=255, width=width, joint="curve")
    if rng.random() < 0.7:
        half = rng.uniform(14, 22)
        draw.line([(x_bottom - half, bottom), (x_bottom + half, bottom)], fill=255, width=width)
    small = layer.filter(ImageFilter.GaussianBlur(1.5)).resize((20, 20), Image.Resampling.LANCZOS)
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 4:24] = np.asarray(small)
    return digit


def photo_euro_one(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str, dict]:
    """A European-style 1 with a flag and a base, written as a ballpoint photo. The MNIST digit
    is ignored (the label is always 1): report it apart from the ten-class renderings."""
    del digit
    bytes_, ext, params = photo_ballpoint(_euro_one(rng), rng)
    return bytes_, ext, {**params, "euro_one": True}


# ---------------------------------------------------------------------------------- drawings
def _drawing(digit: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Strokes as drawn on a 280x280 canvas with an 18-25 px brush: coverage (280, 280)."""
    side = 280
    digit_h = round(side * float(rng.uniform(0.5, 0.85)))
    brush = float(rng.uniform(18, 25))
    ink = _coverage(digit)  # a wide digit is drawn as wide as it fits: nobody draws off the canvas
    digit_h = min(digit_h, math.floor((side - brush - 2) * ink.shape[0] / ink.shape[1]))
    cover = _stroked(digit, digit_h, brush, keep_filled=True)
    cover = cover[:side, :side]
    canvas = np.zeros((side, side), np.float32)
    top = int(rng.integers(0, side - cover.shape[0] + 1))
    left = int(rng.integers(0, side - cover.shape[1] + 1))
    canvas[top:top + cover.shape[0], left:left + cover.shape[1]] = cover
    return canvas, dict(digit_height=digit_h, brush=round(brush, 2), offset=[left, top])


def drawing_dark(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str, dict]:
    """Dark strokes on a white canvas (a paint program's default), RGB PNG."""
    canvas, params = _drawing(digit, rng)
    pen = _pick(rng, ["black", "black", "blue", "red"])
    rgb = 255 + (np.asarray(PENS[pen], np.float32) - 255) * canvas[..., None]
    return _png(_u8(rgb), "RGB"), "png", {**params, "pen": pen}


def drawing_light(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str, dict]:
    """White strokes on a black canvas (as the demo page draws), grey or RGB PNG."""
    canvas, params = _drawing(digit, rng)
    mode = _pick(rng, ["L", "RGB"])
    grey = _u8(255 * canvas)
    array = grey if mode == "L" else np.repeat(grey[..., None], 3, axis=2)
    return _png(array, mode), "png", {**params, "mode": mode}


def drawing_transparent(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str, dict]:
    """Strokes on a transparent canvas (alpha = the strokes), RGBA PNG; the hidden colour of the
    transparent pixels is black or white, as apps differ."""
    canvas, params = _drawing(digit, rng)
    pen = _pick(rng, ["black", "black", "blue"])
    hidden = int(_pick(rng, ["0", "255"]))
    rgb = np.where(canvas[..., None] > 0, np.asarray(PENS[pen], np.float32), float(hidden))
    rgba = np.dstack([_u8(rgb), _u8(255 * canvas)])
    return _png(rgba, "RGBA"), "png", {**params, "pen": pen, "hidden_rgb": hidden}


# ------------------------------------------------------------------------------------- mnist
def mnist_png(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str, dict]:
    """The MNIST digit itself as a 28x28 grey PNG: it must pass through unchanged."""
    del rng
    return _png(np.ascontiguousarray(digit, np.uint8), "L"), "png", {}


def _entry(fn: RenderFn, kind: str, about: str, share: float = 1.0) -> tuple[str, Rendering]:
    name = fn.__name__.replace("_", "-")
    return name, Rendering(name, kind, fn, about, share)


RENDERINGS: dict[str, Rendering] = dict([
    _entry(scan16_grey, "scan", "USPS-style: deslanted, size-normalised 16x16 grey"),
    _entry(scan16_binary_stretched, "scan", "Semeion-style: 16x16 black and white, stretched"),
    _entry(scan32_binary, "scan", "normalised form bitmaps: 32x32 black and white"),
    _entry(scan64_grey, "scan", "a form's digit cell scanned at 64x64, thin margin"),
    _entry(photo_pencil, "photo", "pencil on paper, low contrast"),
    _entry(photo_ballpoint, "photo", "ballpoint pen, thin strokes"),
    _entry(photo_marker, "photo", "felt marker, thick strokes"),
    _entry(photo_blue_paper, "photo", "blue ink on blue or grey paper"),
    _entry(photo_ruled, "photo", "ruled notebook paper"),
    _entry(photo_grid, "photo", "squared (grid) paper"),
    _entry(photo_shadow, "photo", "a hand or phone shadow across the digit"),
    _entry(photo_small_in_large, "photo", "small digit in a 2-4 MP photo with other marks", 0.3),
    _entry(photo_showthrough, "photo", "writing on the back shows through"),
    _entry(photo_jpeg_low, "photo", "JPEG quality 30-60"),
    _entry(photo_exif_rotated, "photo", "phone photo stored rotated, EXIF orientation tag"),
    _entry(photo_perspective, "photo", "page photographed at an angle"),
    _entry(drawing_dark, "drawing", "paint program: dark brush on white"),
    _entry(drawing_light, "drawing", "demo canvas: white brush on black"),
    _entry(drawing_transparent, "drawing", "drawing app export: transparent PNG"),
    _entry(mnist_png, "mnist", "MNIST itself written as PNG files"),
])
# a one-class rendering (every image is a 1 whatever the digit): not in RENDERINGS' ten-class rows
EURO_ONE = Rendering("photo-euro-one", "photo", photo_euro_one,
                     "European-style 1 with a flag and a base, ballpoint photo")


# ------------------------------------------------------------------------------- the digits
def pick_digits(split: str, n_per_class: int, seed: int = 0,
                data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n_per_class digits of each class from the validation or test digits.

    Args:
        split: "val" (the stratified 5,000 validation digits of the MNIST training set) or
            "test" (the MNIST test set).

    Returns:
        images uint8 (N, 28, 28), labels int64 (N,) and their indices into the MNIST training
        ("val") or test ("test") arrays, class by class.
    """
    from digitnet.data.datasets import SPLIT_SEED, stratified_indices
    from digitnet.data.mnist import load_mnist

    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', not {split!r}")
    mnist = load_mnist(data_dir)
    if split == "val":
        images, labels = mnist.train_images, mnist.train_labels
        pool = stratified_indices(labels, VAL_SIZE, SPLIT_SEED).numpy()
    else:
        images, labels = mnist.test_images, mnist.test_labels
        pool = np.arange(len(labels))
    images, labels = images.numpy(), labels.numpy()
    rng = np.random.default_rng([seed, 0 if split == "val" else 1])
    picked = []
    for c in range(10):
        members = pool[labels[pool] == c]
        picked.append(np.sort(rng.choice(members, min(n_per_class, len(members)), replace=False)))
    index = np.concatenate(picked)
    return images[index], labels[index].astype(np.int64), index


def render_one(name: str, digit: np.ndarray, index: int, seed: int = 0) -> tuple[bytes, str, dict]:
    """One rendering of one digit; the generator depends on (seed, index, name) only."""
    rendering = EURO_ONE if name == EURO_ONE.name else RENDERINGS[name]
    rng = np.random.default_rng([seed, int(index), zlib.crc32(name.encode())])
    return rendering(digit, rng)


def count_for(name: str, n_per_class: int) -> int:
    """How many digits of each class `render_split` renders for a rendering."""
    rendering = EURO_ONE if name == EURO_ONE.name else RENDERINGS[name]
    return max(1, round(n_per_class * rendering.share))


def render_split(split: str, n_per_class: int, seed: int = 0, names: list[str] | None = None,
                 data_dir: str | None = None) -> Iterator[tuple[str, int, int, bytes, str]]:
    """Render the picked digits of a split: yields (name, label, mnist index, bytes, extension).

    Every rendering gets the same digits (the first `count_for(name, n_per_class)` of each
    class), rendering by rendering. `names` defaults to all of RENDERINGS.
    """
    images, labels, index = pick_digits(split, n_per_class, seed, data_dir)
    for name in names if names is not None else list(RENDERINGS):
        keep = _first_per_class(labels, count_for(name, n_per_class))
        for i in keep:
            data, ext, _ = render_one(name, images[i], int(index[i]), seed)
            label = 1 if name == EURO_ONE.name else int(labels[i])
            yield name, label, int(index[i]), data, ext


def _first_per_class(labels: np.ndarray, k: int) -> np.ndarray:
    """Positions of the first k of each class in `labels`, in order."""
    return np.concatenate([np.flatnonzero(labels == c)[:k] for c in range(10)]).astype(int)
