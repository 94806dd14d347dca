"""Turn a new image of any size and format into an MNIST-format digit: 28x28 uint8, white on black.

The pipeline follows MNIST's own recipe: find the ink, crop it, fit it into a 20x20 box keeping
the aspect ratio with anti-aliasing, and centre it by its centre of mass in a 28x28 field.
"""

from __future__ import annotations

import io
import math
import os
import struct
import warnings
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.transform import hough_line, hough_line_peaks

from digitnet.constants import IMAGE_SIZE
from digitnet.errors import DigitnetError
from digitnet.fileio import atomic_write_bytes, check_regular_file

PREPROCESS_VERSION = 2  # bump whenever a change alters outputs; recorded in data manifests

MAX_PIXELS = 40_000_000  # larger images are refused: decompression bombs, memory
MAX_SIDE = 30_000  # px; longer sides are refused whatever the pixel count
WORK_MAX_SIDE = 4_096  # px; larger images are area-averaged down to this before processing
BOX_SIZE = 20  # MNIST fits each digit into a 20x20 box (test set: 9,997 of 10,000 span 20 px)
COARSE_SIDE = 128  # px; background and connected components are worked out on a grid this size
POLARITY_SIDE = 64  # px; polarity is decided on an area-averaged copy this size
BACKGROUND_ELEMENT = 0.2  # opening element, as a fraction of the shorter side; wider than strokes
MIN_PAPER_BRIGHTNESS = 0.25  # dark ink is measured relative to paper at least this bright
MIN_CONTRAST = 0.10  # ink must differ from paper by this fraction of the full range
MIN_SNR = 6.0  # ... and by this many noise standard deviations (pure noise reaches about 4.3)
MIN_INK_PIXELS = 4  # fewer ink pixels than this is a speck, not a digit
MIN_COMPONENT_SHARE = 0.02  # ink blobs holding less of the total ink mass are dropped as dirt
MIN_KEPT_SHARE = 0.15  # when the digit's blobs hold less of the ink, it is specks, not a digit
LINE_SIDE = 512  # px; straight lines across the page are looked for on a copy this size
LINE_MIN_SPAN = 0.7  # a line runs across at least this share of the image (a digit does not)
LINE_MAX_TILT = 10  # degrees from horizontal or vertical
_LINE_ANGLES = np.deg2rad(np.arange(-LINE_MAX_TILT, LINE_MAX_TILT + 0.25, 0.5))
NEAR_DIGIT = 0.25  # blobs this close to the digit's blobs (of the group's size) join the digit
INK_WHITE_PERCENTILE = 90  # the ink residual at this percentile becomes white (255)
MIN_STROKE_WIDTH = 1.5  # px at 28x28; MNIST test by the same estimator: 5% 1.3, median 2.0

# What an image is taken for decides how it is treated (`preprocess`):
MNIST = "mnist"  # already MNIST format (28x28, centred, black frame): passed through unchanged
SCAN = "scan"  # even paper, solid ink, the digit filling the frame: plain ink extraction
DRAWING = "drawing"  # even paper, solid ink, paper around the digit: the same, as a drawing
PHOTO = "photo"  # anything else: lighting and paper texture removed first (`remove_background`)
PATHS = (MNIST, SCAN, DRAWING, PHOTO)
MNIST_PAPER = 0.1  # MNIST format: the median pixel is black (at most this), the ink's box...
MNIST_BOX_SLACK = 3  # ... BOX_SIZE px long, give or take this (MNIST: 18-20 px over 0.1)...
MNIST_MAX_OFFSET = 1.5  # ... and its centre of mass this close to the middle (MNIST: <= 0.71 px)
CLEAN_MIN_CONTRAST = 0.3  # a clean image's ink and paper differ by this much at least...
CLEAN_MAX_NOISE = 0.02  # ... its paper noise (std) is at most this ...
CLEAN_MAX_SPREAD = 0.12  # ... and its paper brightness spans at most this (no shading)
CLEAN_MAX_FRAME_INK = 0.2  # ... and, above SCAN_MAX_SIDE px, ink along at most this of its edge
SCAN_MAX_SIDE = 128  # px; larger images with dark edges are shadows or tables, not scans
TIGHT_CROP_SHARE = 0.85  # ink spanning this share of the image across or down: a tight crop

DARK_ON_LIGHT = "dark-on-light"
LIGHT_ON_DARK = "light-on-dark"

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, as Pillow's "L"
# Pillow's decoders report corrupt or truncated data with any of these.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)
_FORMATS = "PNG, JPEG, BMP, GIF, TIFF or WebP"


class ImageError(DigitnetError):
    """An input image that cannot be read, or an array that is not an image."""


class ImageTooLargeError(ImageError):
    """An image whose dimensions exceed the limits (a decompression bomb, or simply too big)."""


@dataclass
class PreprocessResult:
    """One image in MNIST format, with what happened on the way.

    `image` is all zeros when `digit_found` is False; `reason` then says why.
    """

    image: np.ndarray  # (28, 28) uint8, white digit on black
    digit_found: bool
    reason: str = ""  # why no digit was found; "" when one was
    source: str = ""  # file name, or a description of the array
    polarity: str = ""  # DARK_ON_LIGHT or LIGHT_ON_DARK, as detected
    stages: dict[str, np.ndarray] = field(default_factory=dict)  # uint8 pictures, when debugging
    path: str = ""  # MNIST, SCAN, DRAWING or PHOTO: how the image was treated (see PATHS)


# ------------------------------------------------------------------------------------- loading
def _check_size(width: int, height: int, name: str, max_pixels: int | None) -> None:
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    if width < 1 or height < 1:
        raise ImageError(f"{name}: image is empty ({width}x{height} px)")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > limit:
        raise ImageTooLargeError(
            f"{name}: image is {width}x{height} px ({width * height / 1e6:.1f} megapixels); "
            f"expected at most {limit / 1e6:g} megapixels and {MAX_SIDE} px a side "
            f"(a decompression bomb, or a photo to shrink first)"
        )


def _draft_size(img: Image.Image) -> tuple[int, int] | None:
    """For a JPEG larger than WORK_MAX_SIDE, the smallest size whose longer side still reaches
    WORK_MAX_SIDE: `Image.draft` then decodes at 1/2, 1/4 or 1/8 scale (DCT scaling), which
    costs a fraction of the memory and time, and preprocessing shrinks the rest of the way.
    None for other formats and for JPEGs that are small enough: those decode exactly as stored."""
    longest = max(img.size)
    if img.format not in ("JPEG", "MPO") or longest < 2 * WORK_MAX_SIDE:  # draft: 1/2 at least
        return None
    scale = WORK_MAX_SIDE / longest
    return max(1, math.ceil(img.width * scale)), max(1, math.ceil(img.height * scale))


def _open_image(source: str | os.PathLike | bytes, max_pixels: int | None = None) -> Image.Image:
    """Open, size-check and decode the first frame of an image file (its path, or its contents as
    bytes, e.g. an upload), honouring EXIF orientation.

    The size check reads the dimensions from the file's header, before any pixel is decoded, so a
    small file that would decode to a huge image (a decompression bomb) costs nothing. JPEGs
    of at least 2 x WORK_MAX_SIDE a side are decoded reduced (see `_draft_size`).
    """
    return _read_image(source, max_pixels, decode=True)


def check_image_size(source: str | os.PathLike | bytes | BinaryIO,
                     max_pixels: int | None = None) -> tuple[int, int]:
    """The (width, height) of an image file, read from its header alone (no pixel is decoded),
    after the checks `preprocess` makes before decoding. `source` may also be an open binary
    file (an upload still in its spooled file); it is left open, at an unknown position.

    Raises:
        ImageError: missing, empty or not an image file.
        ImageTooLargeError: more than `max_pixels` pixels (default: MAX_PIXELS) or MAX_SIDE px
            a side.
    """
    return _read_image(source, max_pixels, decode=False)


def _read_image(source, max_pixels: int | None, decode: bool):
    if hasattr(source, "read"):
        name, fp = _describe(source), source
    elif isinstance(source, bytes):
        name, fp = _describe(source), io.BytesIO(source)
        if not source:
            raise ImageError(f"{name}: empty, expected an image file ({_FORMATS})")
    else:
        try:  # a FIFO or a device such as /dev/zero would never end the read
            path = check_regular_file(source)
        except DigitnetError as e:
            raise ImageError(f"{e}; expected an image file ({_FORMATS})") from None
        name, fp = str(path), path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                _check_size(img.width, img.height, name, max_pixels)
                if not decode:
                    return img.size
                size = _draft_size(img)
                if size is not None:
                    img.draft(img.mode, size)
                img.load()  # the first frame of an animation
                return ImageOps.exif_transpose(img)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise ImageTooLargeError(
            f"{name}: refused as a possible decompression bomb ({e}); expected at most "
            f"{(MAX_PIXELS if max_pixels is None else max_pixels) / 1e6:g} megapixels"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (expected {_FORMATS})") from None
    except PermissionError as e:
        raise ImageError(f"{name}: cannot read the file ({e.strerror})") from None
    except _DECODE_ERRORS as e:
        raise ImageError(f"{name}: truncated or corrupt image data ({e}); expected a complete "
                         f"{_FORMATS} file") from None


def _pil_to_array(img: Image.Image) -> np.ndarray:
    """A Pillow image in any mode as float32 in [0, 1]: (H, W), or (H, W, C) with C in 2, 3, 4."""
    mode = img.mode
    if mode.startswith("I;16"):
        return _scaled(img, 65535.0)
    if mode in ("I", "F"):
        values = np.asarray(img).astype(np.float32)
        top = float(values.max(initial=0.0))
        scale = 1.0 if mode == "F" and top <= 1.0 else 255.0 if top <= 255.0 else 65535.0
        return np.clip(values / scale, 0.0, 1.0)
    if "transparency" in img.info or mode in ("PA", "RGBa"):
        target = "RGBA"  # palette or colour-key transparency becomes an alpha channel
    elif mode in ("L", "LA", "RGB", "RGBA"):
        return _scaled(img, 255.0)
    else:  # 1, La, P, CMYK, YCbCr, LAB, HSV, RGBX
        target = {"1": "L", "La": "LA"}.get(mode, "RGB")
    return _scaled(img.convert(target), 255.0)


def _scaled(img: Image.Image, top: float) -> np.ndarray:
    """np.asarray(img).astype(np.float32) / top, with one float32 array instead of two."""
    values = np.asarray(img).astype(np.float32)
    values /= top
    return values


def _as_float(image: np.ndarray, name: str) -> np.ndarray:
    """Any numeric array as float32 in [0, 1]: uint8 / 255, uint16 / 65535, floats as they are."""
    if image.dtype == np.bool_:
        return image.astype(np.float32)
    if image.dtype.kind in "ui":
        top = int(image.max(initial=0))
        if int(image.min(initial=0)) < 0 or top > 65535:
            raise ImageError(f"{name}: integer pixel values must lie in 0-65535, got "
                             f"{int(image.min())}..{top}")
        wide = image.dtype == np.uint16 or top > 255
        return image.astype(np.float32) / (65535.0 if wide else 255.0)
    if image.dtype.kind == "f":
        image = image.astype(np.float32, copy=False)  # np.clip below makes the copy
        if not np.isfinite(image).all():
            raise ImageError(f"{name}: float image contains NaN or infinity")
        if image.min() < -1e-3 or image.max() > 1 + 1e-3:
            raise ImageError(f"{name}: float pixel values must lie in [0, 1], got "
                             f"{image.min():.3g}..{image.max():.3g}")
        return np.clip(image, 0.0, 1.0)
    raise ImageError(f"{name}: unsupported pixel type {image.dtype} "
                     f"(expected uint8, uint16, bool or float)")


def _tensor_to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A torch image (H, W), (C, H, W) or (1, C, H, W) as a numpy array (H, W) or (H, W, C)."""
    tensor = tensor.detach().cpu()
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    if tensor.dim() == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.dim() == 3 and tensor.shape[0] in (1, 2, 3, 4):
        tensor = tensor.permute(1, 2, 0)
    return tensor.numpy()


def _to_array(image, max_pixels: int | None) -> np.ndarray:
    """A path, file contents, numpy array or torch tensor as float32 in [0, 1], channels last."""
    if isinstance(image, (str, os.PathLike, bytes)):
        return _pil_to_array(_open_image(image, max_pixels))
    name = _describe(image)
    if isinstance(image, torch.Tensor):
        image = _tensor_to_numpy(image)
    elif isinstance(image, Image.Image):
        image = _pil_to_array(ImageOps.exif_transpose(image))
    elif not isinstance(image, np.ndarray):
        raise ImageError(f"{name}: expected a file path, file contents (bytes), numpy array or "
                         f"torch tensor")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 2, 3, 4)):
        raise ImageError(f"{name}: expected an image array of shape (H, W) or (H, W, C) with "
                         f"C in 1-4, got {image.shape}")
    _check_size(image.shape[1], image.shape[0], name, max_pixels)
    return _as_float(image, name)


def _describe(image) -> str:
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    if isinstance(image, (np.ndarray, torch.Tensor)):
        kind = "tensor" if isinstance(image, torch.Tensor) else "array"
        return f"<{kind} {tuple(image.shape)} {str(image.dtype).removeprefix('torch.')}>"
    if isinstance(image, Image.Image):
        return f"<PIL image {image.width}x{image.height} {image.mode}>"
    if isinstance(image, bytes):
        return f"<{len(image)} bytes>"
    return f"<{type(image).__name__}>"


def to_grayscale(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Luminance in [0, 1] as float32 (H, W), with transparency resolved.

    Strokes drawn on a mostly transparent canvas become their opacity (light ink on dark),
    whatever their colour. A mostly opaque image is composited over its own typical colour,
    so transparent margins merge into the paper.

    Args:
        image: (H, W) or (H, W, C) with C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA);
            uint8, uint16, bool or float in [0, 1].
        name: names the image in error messages.

    Raises:
        ImageError: not an image-shaped array, or values out of range.
    """
    image = _as_float(np.asarray(image), name)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return np.ascontiguousarray(image)
    if image.ndim != 3 or image.shape[2] not in (2, 3, 4):
        raise ImageError(f"{name}: expected an image array of shape (H, W) or (H, W, C) with "
                         f"C in 1-4, got {image.shape}")
    color, alpha = image, None
    if image.shape[2] in (2, 4):
        color, alpha = image[:, :, :-1], image[:, :, -1]
    gray = color[:, :, 0] if color.shape[2] == 1 else color @ _LUMA
    if alpha is None or alpha.min() >= 1.0:
        return np.ascontiguousarray(gray, dtype=np.float32)
    opaque = alpha >= 0.5
    if opaque.mean() < 0.5:
        return np.ascontiguousarray(alpha, dtype=np.float32)  # strokes on a transparent canvas
    paper = float(np.median(gray[opaque]))
    return (alpha * gray + (1.0 - alpha) * paper).astype(np.float32)


def load_image(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as float32 luminance in [0, 1], (H, W), transparency resolved.

    Takes PNG, JPEG, BMP, GIF (first frame), TIFF and WebP in any mode, and honours the EXIF
    orientation.

    Args:
        max_pixels: refuse images with more pixels (default: MAX_PIXELS).

    Raises:
        ImageError: missing, not an image, truncated or corrupt.
        ImageTooLargeError: more than `max_pixels` pixels or MAX_SIDE px a side.
    """
    return to_grayscale(_pil_to_array(_open_image(path, max_pixels)), str(path))


# ---------------------------------------------------------------------------- array helpers
def _odd(value: float) -> int:
    """The nearest odd integer >= 3."""
    return max(3, int(round(value)) // 2 * 2 + 1)


def _max_filter(a: np.ndarray, size: int) -> np.ndarray:
    """Grey dilation with a size x size square (size odd), edges replicated."""
    if size <= 1:
        return a
    return ndimage.maximum_filter(a, size, mode="nearest")


def _min_filter(a: np.ndarray, size: int) -> np.ndarray:
    """Grey erosion with a size x size square (size odd), edges replicated."""
    if size <= 1:
        return a
    return ndimage.minimum_filter(a, size, mode="nearest")


def _block_reduce(a: np.ndarray, factor: int, reduce, pad_mode: str = "edge") -> np.ndarray:
    """Apply `reduce` (np.min, np.max, np.sum) over factor x factor blocks."""
    if factor == 1:
        return a
    h, w = a.shape
    ph, pw = -h % factor, -w % factor
    a = np.pad(a, [(0, ph), (0, pw)], mode=pad_mode)
    blocks = a.reshape((h + ph) // factor, factor, (w + pw) // factor, factor)
    return reduce(blocks, axis=(1, 3))


def _resize(a: np.ndarray, width: int, height: int, resample: Image.Resampling) -> np.ndarray:
    """Resize a float32 array with Pillow (mode "F" keeps full precision)."""
    img = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))
    return np.asarray(img.resize((width, height), resample), dtype=np.float32)


def _shrink(a: np.ndarray, max_side: int) -> np.ndarray:
    """Area-average so the longer side is at most `max_side` px (no-op for smaller images)."""
    h, w = a.shape
    if max(h, w) <= max_side:
        return a
    scale = max_side / max(h, w)
    return _resize(a, max(1, round(w * scale)), max(1, round(h * scale)), Image.Resampling.BOX)


def _coarse_factor(shape: tuple[int, int]) -> int:
    return max(1, math.ceil(max(shape) / COARSE_SIDE))


def _robust_stats(a: np.ndarray) -> tuple[float, float]:
    """Median and noise standard deviation (1.4826 x median absolute deviation) of `a`."""
    step = max(1, math.ceil(math.sqrt(a.size / 1_000_000)))  # a subsample suffices for big images
    sample = a[::step, ::step]
    median = float(np.median(sample))
    return median, 1.4826 * float(np.median(np.abs(sample - median)))


def _otsu_threshold(a: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold between two classes of values (scikit-image), on a histogram over
    [0, max]; 0 for an image with no positive value."""
    top = float(a.max())
    if top <= 0:
        return 0.0
    hist, edges = np.histogram(a, bins=bins, range=(0.0, top))
    return float(threshold_otsu(hist=(hist, (edges[:-1] + edges[1:]) / 2)))


_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a boolean grid: labels 1..n, 0 for background."""
    return ndimage.label(mask, structure=_EIGHT_CONNECTED)


def _box_mean3(a: np.ndarray) -> np.ndarray:
    """Mean over each pixel's 3x3 neighbourhood, edges replicated."""
    return ndimage.uniform_filter(a, 3, mode="nearest")


def _stroke_width(mask: np.ndarray) -> float:
    """Typical stroke width in px: area / half the boundary length (a w x L stroke gives w)."""
    padded = np.pad(mask, 1)
    edges = np.count_nonzero(padded[1:] != padded[:-1]) + np.count_nonzero(
        padded[:, 1:] != padded[:, :-1]
    )
    return 2.0 * np.count_nonzero(mask) / max(edges, 1)


def center_of_mass(image: np.ndarray) -> tuple[float, float]:
    """Intensity-weighted (row, column) centre in index coordinates; the middle if blank."""
    weights = np.asarray(image, dtype=np.float64)
    total = weights.sum()
    if total <= 0:
        return (weights.shape[0] - 1) / 2, (weights.shape[1] - 1) / 2
    rows = np.arange(weights.shape[0]) @ weights.sum(1) / total
    cols = np.arange(weights.shape[1]) @ weights.sum(0) / total
    return float(rows), float(cols)


def _to_uint8(a: np.ndarray) -> np.ndarray:
    return np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)


# ------------------------------------------------------------------------------------ pipeline
def detect_polarity(gray: np.ndarray) -> str:
    """Decide whether the ink is darker or lighter than the paper.

    Compares what sticks out of a local median background on each side, on an area-averaged
    copy: the side with more ink mass wins, so uneven lighting and shadows (which stick out
    equally on both sides of their edges) do not decide it.

    Returns:
        DARK_ON_LIGHT or LIGHT_ON_DARK (DARK_ON_LIGHT for a blank image).
    """
    small = _shrink(gray, POLARITY_SIDE)
    size = _odd(min(small.shape) / 2)
    background = Image.fromarray(small).filter(ImageFilter.MedianFilter(size))
    diff = small - np.asarray(background, dtype=np.float32)
    _, noise = _robust_stats(diff)
    dark = np.clip(-diff - 3 * noise, 0, None).sum()
    light = np.clip(diff - 3 * noise, 0, None).sum()
    return DARK_ON_LIGHT if dark >= light else LIGHT_ON_DARK


def remove_background(gray: np.ndarray, polarity: str) -> tuple[np.ndarray, np.ndarray]:
    """Subtract the paper, estimated by a large morphological opening, leaving light ink.

    The opening (at a coarse scale, after block-minimum pooling that already erases thin
    strokes) removes every light structure narrower than a third of the image: the strokes.
    What remains follows gradients, coloured or grey paper and broad shadows. Dark ink is
    measured relative to the local paper brightness (light falling on paper multiplies), so a
    stroke in shadow is as strong as one in full light.

    Returns:
        (residual, background): float32 (H, W); residual >= 0 is the ink, light on black, and
        background is the estimate in the same light-ink space.
    """
    x = 1.0 - gray if polarity == DARK_ON_LIGHT else gray
    factor = _coarse_factor(x.shape)
    low = _block_reduce(x, factor, np.min)
    size = _odd(min(low.shape) * BACKGROUND_ELEMENT)
    # Odd reflection continues slopes past the edges, where an opening would otherwise cut
    # the corners off a lighting gradient; the two filters reach size - 1 cells in all.
    pad = size - 1
    extended = np.pad(low, pad, mode="reflect", reflect_type="odd")
    opened = _max_filter(_min_filter(extended, size), size)[pad:-pad, pad:-pad]
    h, w = x.shape
    if factor > 1:
        up = _resize(opened, opened.shape[1] * factor, opened.shape[0] * factor,
                     Image.Resampling.BILINEAR)
        background = up[:h, :w]
    else:
        background = opened
    residual = x - background
    if polarity == DARK_ON_LIGHT:
        residual /= np.maximum(1.0 - background, MIN_PAPER_BRIGHTNESS)
    return np.clip(residual, 0.0, 1.0), background


def _line_pixels(mask: np.ndarray) -> np.ndarray:
    """The pixels of `mask` on straight lines that run across most of the image, within
    LINE_MAX_TILT of horizontal or vertical: ruled and squared paper, a form's frame, a table
    edge. Found by a Hough transform (scikit-image) on a copy at most LINE_SIDE px a side.

    Returns:
        bool (H, W).
    """
    factor = max(1, math.ceil(max(mask.shape) / LINE_SIDE))
    small = _block_reduce(mask, factor, np.max, pad_mode="constant")
    lines = np.zeros(small.shape, dtype=bool)
    for turned in (False, True):  # vertical lines, then horizontal ones as vertical in the transpose
        m = small.T if turned else small
        h, w = m.shape
        if h < 16 or not m.any():
            continue
        hspace, angles, dists = hough_line(m, theta=_LINE_ANGLES)
        _, found_angles, found_dists = hough_line_peaks(
            hspace, angles, dists, min_distance=3, min_angle=len(_LINE_ANGLES),
            threshold=LINE_MIN_SPAN * h)
        if not len(found_angles):
            continue
        rows, cols = np.indices(m.shape, dtype=np.float32)
        out = lines.T if turned else lines
        for angle, dist in zip(found_angles, found_dists, strict=True):
            distance = np.abs(cols * math.cos(angle) + rows * math.sin(angle) - dist)
            width = np.count_nonzero(m & (distance <= 4)) / h  # the line's thickness, px
            out |= m & (distance <= max(1.0, width / 2 + 0.5))
    full = np.repeat(np.repeat(lines, factor, axis=0), factor, axis=1)
    return full[: mask.shape[0], : mask.shape[1]] & mask


def _keep_main_components(mask: np.ndarray, ink: np.ndarray) -> np.ndarray:
    """Full-size boolean map of the digit's ink blobs: the blob with the most ink, and the blobs
    holding at least MIN_COMPONENT_SHARE of the ink that lie near it (within NEAR_DIGIT of the
    group's size, grown blob by blob: the pieces of a broken stroke). Lines, specks and marks
    elsewhere on the page are dropped.

    Works on the coarse grid, so gaps smaller than a grid cell do not split a stroke.
    """
    factor = _coarse_factor(mask.shape)
    coarse = _block_reduce(mask, factor, np.max, pad_mode="constant")
    mass = _block_reduce(ink, factor, np.sum, pad_mode="constant")
    labels, count = _label_components(coarse)
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    blob_mass = np.bincount(labels.ravel(), weights=mass.ravel(), minlength=count + 1)[1:]
    boxes = np.array([(s[0].start, s[0].stop, s[1].start, s[1].stop)
                      for s in ndimage.find_objects(labels)])
    candidates = blob_mass >= MIN_COMPONENT_SHARE * blob_mass.sum()
    group = np.zeros(count, dtype=bool)
    group[int(np.argmax(blob_mass))] = True
    while True:
        top, left = boxes[group, 0].min(), boxes[group, 2].min()
        bottom, right = boxes[group, 1].max(), boxes[group, 3].max()
        reach = NEAR_DIGIT * max(bottom - top, right - left)
        gap = np.maximum.reduce([top - boxes[:, 1], boxes[:, 0] - bottom,
                                 left - boxes[:, 3], boxes[:, 2] - right])
        grown = group | (candidates & (gap <= reach))
        if np.array_equal(grown, group):
            break
        group = grown
    keep = np.zeros(count + 1, dtype=bool)
    keep[1:] = group
    keep = _max_filter(keep[labels], 3)  # a cell of margin for faint stroke edges
    full = np.repeat(np.repeat(keep, factor, axis=0), factor, axis=1)
    return full[: mask.shape[0], : mask.shape[1]]


class _Detection(NamedTuple):
    """Where the ink is in one residual, or why there is none."""

    residual: np.ndarray  # the residual the mask was found in
    mask: np.ndarray  # bool (H, W), empty when reason is set
    level: float  # paper level of the residual
    noise: float  # paper noise standard deviation
    snr: float  # ink contrast over paper noise
    reason: str  # why there is no ink; "" when there is


def _detect_ink(residual: np.ndarray) -> _Detection:
    """Otsu's threshold, raised above the noise, and the checks that tell ink from noise."""
    level, noise = _robust_stats(residual)
    noise = max(noise, 1.0 / 255.0)  # 8-bit quantisation
    no_mask = np.zeros(residual.shape, dtype=bool)
    spread = float(residual.max()) - level
    if spread < MIN_CONTRAST:
        return _Detection(residual, no_mask, level, noise, 0.0,
                          f"blank image (contrast {spread:.3f}, expected >= {MIN_CONTRAST})")
    mask = residual > max(_otsu_threshold(residual), level + 4 * noise)
    count = np.count_nonzero(mask)
    if count < MIN_INK_PIXELS:
        return _Detection(residual, no_mask, level, noise, 0.0,
                          f"only {count} ink pixels (expected >= {MIN_INK_PIXELS})")
    contrast = float(np.median(residual[mask])) - level
    snr = contrast / noise
    reason = ""
    if contrast < MIN_CONTRAST:
        reason = f"ink too faint (contrast {contrast:.3f}, expected >= {MIN_CONTRAST})"
    elif snr < MIN_SNR:
        reason = f"only noise (ink {snr:.1f} noise std above paper, expected >= {MIN_SNR:g})"
    return _Detection(residual, no_mask if reason else mask, level, noise, snr, reason)


def find_ink(residual: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Separate ink from paper noise, keeping grey levels, or say why there is no digit.

    Ink is looked for pixel by pixel and after 3x3 averaging, and the scale where it stands
    out more from the noise wins: averaging rescues broad strokes in a noisy photo, while
    1 px strokes on clean paper are found at full resolution. The residual is then stretched
    so the paper noise floor becomes 0 and solid ink 1, and blobs too small to matter are
    dropped.

    Returns:
        (ink, mask, reason): ink float32 in [0, 1], mask bool, both (H, W); reason is "" when
        a digit was found, else why not (and ink and mask are then empty).
    """
    found = max((_detect_ink(r) for r in (residual, _box_mean3(residual))),
                key=lambda d: (not d.reason, d.snr))
    if found.reason:
        return np.zeros_like(residual), found.mask, found.reason
    values = found.residual[found.mask]
    low = found.level + 3 * found.noise
    high = max(float(np.percentile(values, INK_WHITE_PERCENTILE)), low + 1e-3)
    ink = np.clip((found.residual - low) / (high - low), 0.0, 1.0).astype(np.float32)
    lines = _line_pixels(found.mask)
    keep = _keep_main_components(found.mask & ~lines, ink * ~lines) & ~lines
    kept = float((ink * keep).sum()) / max(float((ink * ~lines).sum()), 1e-6)
    if kept < MIN_KEPT_SHARE:
        reason = f"only scattered specks (the largest group of blobs holds {kept:.0%} of the ink)"
        return np.zeros_like(residual), np.zeros_like(found.mask), reason
    return ink * keep, found.mask & keep, ""


def crop_to_ink(ink: np.ndarray, mask: np.ndarray, pad: int = 1) -> np.ndarray:
    """Crop `ink` to the bounding box of `mask` at full resolution, plus `pad` px of fringe.

    Raises:
        ValueError: `mask` is empty.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        raise ValueError("crop_to_ink needs a non-empty ink mask")
    h, w = mask.shape
    top, bottom = max(rows[0] - pad, 0), min(rows[-1] + 1 + pad, h)
    left, right = max(cols[0] - pad, 0), min(cols[-1] + 1 + pad, w)
    return ink[top:bottom, left:right]


def fit_to_box(crop: np.ndarray, box: int = BOX_SIZE) -> np.ndarray:
    """Scale a crop (light ink in [0, 1]) so its longer side is `box` px, keeping grey levels.

    When shrinking would leave strokes thinner than MIN_STROKE_WIDTH output px, the ink is
    first dilated in proportion to the shrink factor, so a 1 px stroke on a 1000 px image
    stays visible. Lanczos resampling anti-aliases; the result is stretched so its maximum is 1.

    Returns:
        float32 (h, w) with max(h, w) == box.
    """
    h, w = crop.shape
    scale = box / max(h, w)
    if scale < 1:
        width = _stroke_width(crop >= 0.5)
        needed = MIN_STROKE_WIDTH / scale  # source px
        if width < needed:
            radius = math.ceil((needed - width) / 2)
            crop = _max_filter(np.pad(crop, radius), 2 * radius + 1)
            h, w = crop.shape
            scale = box / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    fitted = np.clip(_resize(crop, *size, Image.Resampling.LANCZOS), 0.0, 1.0)
    top = float(fitted.max())
    return fitted / top if top > 0 else fitted


def _paste(fitted: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """Place `fitted` with its corner at (top, left) in a black size x size field, clipping."""
    out = np.zeros((size, size), dtype=np.float32)
    h, w = fitted.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, size), min(left + w, size)
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] = fitted[y0 - top : y1 - top, x0 - left : x1 - left]
    return out


def center_by_mass(fitted: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Place the fitted digit so its centre of mass is at (size / 2, size / 2), as MNIST does.

    The integer shift leaves the centre within half a pixel; should parts fall outside the
    field (a top-heavy 7), the shift is corrected until the centre is back within half a pixel.

    Returns:
        uint8 (size, size).
    """
    center = size / 2  # index coordinates; MNIST test images average (13.99, 14.01)
    cy, cx = center_of_mass(fitted)
    top, left = round(center - cy), round(center - cx)
    out = _paste(fitted, top, left, size)
    for _ in range(4):
        cy, cx = center_of_mass(out)
        dy, dx = round(center - cy), round(center - cx)
        if dy == 0 and dx == 0:
            break
        top, left = top + dy, left + dx
        out = _paste(fitted, top, left, size)
    return _to_uint8(out)


def fit_and_center(crop: np.ndarray) -> np.ndarray:
    """A cropped digit (light ink in [0, 1]) as a 28x28 uint8 MNIST image."""
    return center_by_mass(fit_to_box(crop))


# ------------------------------------------------------------------------------------- paths
def as_mnist_format(gray: np.ndarray) -> tuple[np.ndarray, str] | None:
    """(the image as MNIST's uint8, its polarity) if it already is an MNIST-format digit, else
    None.

    MNIST format: 28x28, mostly black (or, inverted, white), the ink's bounding box 20 px on its
    longer side (give or take MNIST_BOX_SLACK) and its centre of mass within MNIST_MAX_OFFSET px
    of the middle: all 70,000 MNIST digits pass. Such an image passes through unchanged
    (light-on-dark), or inverted (dark-on-light): an MNIST digit saved as a PNG gives exactly
    the in-memory image back.
    """
    if gray.shape != (IMAGE_SIZE, IMAGE_SIZE):
        return None
    median = float(np.median(gray))
    if median <= MNIST_PAPER:
        ink, polarity = gray, LIGHT_ON_DARK
    elif median >= 1.0 - MNIST_PAPER:
        ink, polarity = 1.0 - gray, DARK_ON_LIGHT
    else:
        return None
    if ink.max() < 0.5:
        return None
    mask = ink > MNIST_PAPER
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    longer = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    if abs(longer - BOX_SIZE) > MNIST_BOX_SLACK:
        return None
    cy, cx = center_of_mass(ink)
    if math.hypot(cy - IMAGE_SIZE / 2, cx - IMAGE_SIZE / 2) > MNIST_MAX_OFFSET:
        return None
    return _to_uint8(ink), polarity


class _CleanSplit(NamedTuple):
    """An image split by Otsu's threshold into paper and ink, with the paper's statistics."""

    polarity: str
    paper: float  # median brightness of the paper class
    ink: float  # median brightness of the ink class
    noise: float  # paper noise standard deviation (1.4826 x MAD)
    spread: float  # paper brightness range: 99th - 1st percentile
    frame_ink: float  # share of the outer ring that is ink (0 for images up to SCAN_MAX_SIDE)


def _split_clean(gray: np.ndarray) -> _CleanSplit | None:
    """Paper and ink of an image with two clear brightness classes, or None (one class only).

    The paper is the class that holds most of the image's outer ring (a frame-filling digit
    touches the ring in a few places only), or most of the image when the ring is split evenly.
    """
    step = max(1, math.ceil(math.sqrt(gray.size / 250_000)))  # a subsample for big images
    sample = gray[::step, ::step]
    lo, hi = float(sample.min()), float(sample.max())
    if hi - lo < MIN_CONTRAST:
        return None
    hist, edges = np.histogram(sample, bins=256, range=(lo, hi))
    threshold = float(threshold_otsu(hist=(hist, (edges[:-1] + edges[1:]) / 2)))
    dark = sample < threshold
    ring = max(1, min(sample.shape) // 32)
    border = np.concatenate([dark[:ring].ravel(), dark[-ring:].ravel(),
                             dark[ring:-ring, :ring].ravel(), dark[ring:-ring, -ring:].ravel()])
    dark_share = float(border.mean())
    if abs(dark_share - 0.5) < 0.1:
        dark_share = float(dark.mean())
    polarity = DARK_ON_LIGHT if dark_share < 0.5 else LIGHT_ON_DARK
    ink_mask = dark if polarity == DARK_ON_LIGHT else ~dark
    # the paper's statistics away from the strokes' anti-aliased edges (2 px, 1 in small images)
    near = _max_filter(ink_mask, 5 if min(sample.shape) > 32 else 3)
    paper_px, ink_px = sample[~near], sample[ink_mask]
    if paper_px.size == 0:
        paper_px = sample[~ink_mask]
    if paper_px.size == 0 or ink_px.size == 0:
        return None
    paper = float(np.median(paper_px))
    noise = 1.4826 * float(np.median(np.abs(paper_px - paper)))
    low, high = np.percentile(paper_px, [1, 99])
    frame_ink = 1.0 - dark_share if polarity == LIGHT_ON_DARK else dark_share
    return _CleanSplit(polarity, paper, float(np.median(ink_px)), noise, float(high - low),
                       frame_ink if max(gray.shape) > SCAN_MAX_SIDE else 0.0)


def _is_clean(split: _CleanSplit | None) -> bool:
    """Even paper and solid ink: a scan, a crop of one, or a drawing (no lighting to undo)."""
    return (split is not None and abs(split.paper - split.ink) >= CLEAN_MIN_CONTRAST
            and split.noise <= CLEAN_MAX_NOISE and split.spread <= CLEAN_MAX_SPREAD
            and split.frame_ink <= CLEAN_MAX_FRAME_INK)


def clean_ink(gray: np.ndarray, split: _CleanSplit) -> tuple[np.ndarray, np.ndarray]:
    """Ink of a clean image, light on black in [0, 1], and its mask: each pixel's distance from
    the paper level toward the ink level, the paper noise floor at 0. Nothing is removed as
    background, however much of the frame the digit fills.

    Returns:
        (ink, mask): float32 and bool (H, W).
    """
    x = (split.paper - gray) / (split.paper - split.ink)
    floor = min(0.5, 3.0 * split.noise / abs(split.paper - split.ink))
    ink = np.clip((x - floor) / (1.0 - floor), 0.0, 1.0).astype(np.float32)
    return ink, ink >= 0.5


def _touches_frame(mask: np.ndarray) -> bool:
    """Whether the ink spans nearly the whole image across or down: a tight crop (a scan cell
    or a digit set's bitmap) rather than a digit with paper around it."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return (rows[-1] - rows[0] + 1 >= TIGHT_CROP_SHARE * h
            or cols[-1] - cols[0] + 1 >= TIGHT_CROP_SHARE * w)


def preprocess(image, debug: bool = False, max_pixels: int | None = None) -> PreprocessResult:
    """Turn one image into MNIST format: 28x28 uint8, white digit on black, centred by mass.

    Args:
        image: a file path (PNG, JPEG, BMP, GIF, TIFF, WebP) or such a file's contents as bytes
            (an upload), a numpy array (H, W), (H, W, 3) or (H, W, 4) of uint8, uint16 or float
            in [0, 1], a torch tensor ((H, W) or (C, H, W)), or a PIL image.
        debug: keep every stage as a uint8 picture in `result.stages`.
        max_pixels: refuse larger images (default: MAX_PIXELS).

    Returns:
        The result; `digit_found` is False (and the image black) for blank or noise-only input.

    Raises:
        ImageError: unreadable, not an image, truncated, or not an image-shaped array.
        ImageTooLargeError: over the size limits.
    """
    source = _describe(image)
    original = _to_array(image, max_pixels)
    gray = _shrink(to_grayscale(original, source), WORK_MAX_SIDE)
    stages = {"original": _to_uint8(original), "grayscale": _to_uint8(gray)} if debug else {}
    passthrough = as_mnist_format(gray)
    if passthrough is not None:
        passthrough, polarity = passthrough
        if debug:
            stages["final"] = passthrough
        return PreprocessResult(passthrough, True, "", source, polarity, stages, MNIST)
    split = _split_clean(gray)
    if _is_clean(split):
        polarity = split.polarity
        ink, mask = clean_ink(gray, split)
        keep = _keep_main_components(mask, ink)
        ink, mask = ink * keep, mask & keep
        path = reason = ""
        if np.count_nonzero(mask) < MIN_INK_PIXELS:
            path, reason = SCAN, f"only {np.count_nonzero(mask)} ink pixels (expected >= {MIN_INK_PIXELS})"
        if debug:
            stages.update(background_removed=_to_uint8(ink),
                          ink_mask=_to_uint8(mask.astype(np.float32)))
        if not reason:
            path = SCAN if _touches_frame(mask) else DRAWING
    else:
        path = PHOTO
        polarity = detect_polarity(gray)
        residual, background = remove_background(gray, polarity)
        ink, mask, reason = find_ink(residual)
        if debug:
            paper = 1.0 - background if polarity == DARK_ON_LIGHT else background
            stages.update(background=_to_uint8(paper), background_removed=_to_uint8(ink),
                          ink_mask=_to_uint8(mask.astype(np.float32)))
    if reason:
        blank = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
        return PreprocessResult(blank, False, reason, source, polarity, stages, path)
    crop = crop_to_ink(ink, mask)
    fitted = fit_to_box(crop)
    final = center_by_mass(fitted)
    if debug:
        stages.update(crop=_to_uint8(crop), fitted=_to_uint8(fitted), final=final)
    return PreprocessResult(final, True, "", source, polarity, stages, path)


def preprocess_batch(images: Iterable, debug: bool = False) -> list[PreprocessResult | ImageError]:
    """Preprocess each image independently; an unreadable one yields its error, not a raise.

    Returns:
        One entry per input, in order: a PreprocessResult, or the ImageError that stopped it.
    """
    results: list[PreprocessResult | ImageError] = []
    for image in images:
        try:
            results.append(preprocess(image, debug=debug))
        except ImageError as e:
            results.append(e)
    return results


# ------------------------------------------------------------------------------------- saving
def encode_png(image: np.ndarray) -> bytes:
    """uint8 (H, W), (H, W, 2), (H, W, 3) or (H, W, 4) as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def output_stems(paths: Sequence[str | os.PathLike]) -> list[str]:
    """File stems to write each input under, made unique: a.png, a.jpg -> "a", "a-2"."""
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        stem = Path(path).stem or "image"
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems


def save_result(result: PreprocessResult, out_dir: str | os.PathLike, stem: str) -> list[Path]:
    """Write `<stem>.png` (only when a digit was found) and each stage as debug/<stem>/NN_*.png.

    Returns:
        The files written, the 28x28 image first.
    """
    out_dir = Path(out_dir)
    written = []
    if result.digit_found:
        written.append(out_dir / f"{stem}.png")
        atomic_write_bytes(written[-1], encode_png(result.image))
    for i, (name, picture) in enumerate(result.stages.items(), start=1):
        written.append(out_dir / "debug" / stem / f"{i:02d}_{name}.png")
        atomic_write_bytes(written[-1], encode_png(picture))
    return written
