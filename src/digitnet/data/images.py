"""Reading images: files (PNG, JPEG, BMP, GIF, TIFF, WebP) or their contents, numpy arrays, torch
tensors and PIL images, as float32 in [0, 1], with the size limits checked before any pixel is
decoded; and luminance with transparency resolved."""

from __future__ import annotations

import io
import math
import os
import struct
import warnings
import zlib
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from digitnet.errors import DigitnetError
from digitnet.fileio import check_regular_file

MAX_PIXELS = 40_000_000  # larger images are refused: decompression bombs, memory
MAX_SIDE = 30_000  # px; longer sides are refused whatever the pixel count
WORK_MAX_SIDE = 2_000  # px; larger images are area-averaged down to this before processing

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, as Pillow's "L"
# Pillow's decoders report corrupt or truncated data with any of these.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)
_FORMATS = "PNG, JPEG, BMP, GIF, TIFF or WebP"


class ImageError(DigitnetError):
    """An input image that cannot be read, or an array that is not an image."""


class ImageTooLargeError(ImageError):
    """An image whose dimensions exceed the limits (a decompression bomb, or simply too big)."""


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
    """For a JPEG of at least 2 x WORK_MAX_SIDE a side, the smallest size whose longer side still
    reaches WORK_MAX_SIDE: `Image.draft` then decodes at 1/2, 1/4 or 1/8 scale (DCT scaling),
    which costs a fraction of the memory and time, and preprocessing shrinks the rest of the way
    (a 12-megapixel phone photo, 4032 px across, decodes at half scale). None for other formats
    and for smaller JPEGs: those decode at full size."""
    longest = max(img.size)
    if img.format not in ("JPEG", "MPO") or longest < 2 * WORK_MAX_SIDE:  # draft: 1/2 at least
        return None
    scale = WORK_MAX_SIDE / longest
    return max(1, math.ceil(img.width * scale)), max(1, math.ceil(img.height * scale))


def _draft(img: Image.Image) -> None:
    """Decode a colour JPEG straight to luminance (its Y channel: the same ITU-R 601-2 luma that
    `to_grayscale` computes, without converting three channels), and a large one reduced."""
    if img.format not in ("JPEG", "MPO"):
        return
    size = _draft_size(img)
    mode = "L" if img.mode in ("RGB", "L") else img.mode
    if size is not None or mode != img.mode:
        img.draft(mode, size or img.size)


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
        name, fp = describe(source), source
    elif isinstance(source, bytes):
        name, fp = describe(source), io.BytesIO(source)
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
                _draft(img)
                img.load()  # the first frame of an animation
                return _oriented(img)
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


_ORIENTATION_KEYS = {"exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp"}


def _oriented(img: Image.Image) -> Image.Image:
    """`ImageOps.exif_transpose(img)` of a loaded image just opened here: turned in place, not
    copied (exif_transpose copies even when there is nothing to turn: 3 MB for a phone photo);
    a PNG with none of the chunks an orientation is read from (Pillow's `getexif`: eXIf, a raw
    EXIF profile, XMP) is returned as it is, without looking."""
    if img.format == "PNG" and not _ORIENTATION_KEYS & img.info.keys():
        return img
    ImageOps.exif_transpose(img, in_place=True)
    return img


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
    """np.asarray(img).astype(np.float32) / top, in one pass (the same float32 division)."""
    return np.divide(np.asarray(img), np.float32(top), dtype=np.float32)


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


def to_array(image, max_pixels: int | None) -> np.ndarray:
    """A path, file contents, numpy array or torch tensor as float32 in [0, 1], channels last."""
    if isinstance(image, (str, os.PathLike, bytes)):
        return _pil_to_array(_open_image(image, max_pixels))
    name = describe(image)
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


def read_gray(image, max_pixels: int | None, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(to_array(image, max_pixels), to_grayscale(that, name)): for a file decoded as 8-bit
    grayscale without transparency, both are the same array (its values k / 255 need none of
    to_grayscale's checks, and its copy would be the same values)."""
    if isinstance(image, (str, os.PathLike, bytes)):
        img = _open_image(image, max_pixels)
        original = _pil_to_array(img)
        if img.mode == "L" and "transparency" not in img.info:
            return original, original
    else:
        original = to_array(image, max_pixels)
    return original, to_grayscale(original, name)


def describe(image) -> str:
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
