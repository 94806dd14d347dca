"""Read and write IDX files (the MNIST format), raw or gzip-compressed, with strict validation.

An IDX file is a header (two zero bytes, a type byte, the number of dimensions, then each
dimension as a big-endian uint32) followed by the elements in C order, big-endian.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from digitnet.errors import DigitnetError
from digitnet.fileio import atomic_write_bytes

# type byte -> big-endian numpy dtype
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


class IdxError(DigitnetError):
    """An IDX file that is missing, corrupt or not what was expected."""


def read_idx_bytes(path: str | os.PathLike) -> bytes:
    """Return the decompressed bytes of an IDX file (gzip is detected by its magic bytes).

    Raises:
        IdxError: the file is missing, empty, or a `.gz` file that is not valid gzip.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise IdxError(f"{path}: file not found") from None
    except OSError as e:
        raise IdxError(f"{path}: cannot read file ({e.strerror})") from None
    if not raw:
        raise IdxError(f"{path}: file is empty, expected an IDX file")
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise IdxError(f"{path}: corrupt or truncated gzip data ({e})") from None
    if path.suffix == ".gz":
        raise IdxError(f"{path}: not a gzip file (expected gzip magic bytes 1f 8b, got {raw[:2].hex(' ')})")
    return raw


def parse_idx(content: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse decompressed IDX bytes into a numpy array in native byte order.

    Raises:
        IdxError: bad magic number, unknown type byte, no dimensions, or a byte count that
            disagrees with the header.
    """
    if len(content) < 4:
        raise IdxError(f"{name}: only {len(content)} bytes, too short for an IDX header (4+ bytes)")
    if content[0] != 0 or content[1] != 0:
        raise IdxError(
            f"{name}: bad magic number {content[:4].hex()}: an IDX file starts with two zero bytes"
        )
    type_byte, ndim = content[2], content[3]
    if type_byte not in IDX_TYPES:
        known = ", ".join(f"0x{t:02x}" for t in IDX_TYPES)
        raise IdxError(f"{name}: unknown element type byte 0x{type_byte:02x} (expected one of {known})")
    if ndim == 0:
        raise IdxError(f"{name}: header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(content) < header_len:
        raise IdxError(f"{name}: truncated header: {ndim} dimensions need {header_len} bytes")
    shape = tuple(int(d) for d in np.frombuffer(content, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[type_byte]
    # math.prod on Python ints: np.prod in int64 wraps for crafted headers (2**31 * 2**31 * 4 -> 0)
    expected = header_len + math.prod(shape) * dtype.itemsize
    if len(content) != expected:
        what = "truncated" if len(content) < expected else "has trailing bytes"
        raise IdxError(
            f"{name}: {what}: header says shape {shape} of {dtype.name} "
            f"({expected} bytes with header), file has {len(content)} bytes"
        )
    array = np.frombuffer(content, dtype=dtype, offset=header_len).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed, into a numpy array.

    Raises:
        IdxError: the file is missing or corrupt; the message names the file and the problem.
    """
    return parse_idx(read_idx_bytes(path), name=str(path))


def encode_idx(array: np.ndarray) -> bytes:
    """Encode a numpy array as IDX bytes."""
    array = np.asarray(array)
    for type_byte, dtype in IDX_TYPES.items():
        if array.dtype.kind == dtype.kind and array.dtype.itemsize == dtype.itemsize:
            break
    else:
        raise IdxError(f"cannot write dtype {array.dtype} as IDX (expected uint8, int8/16/32, float32/64)")
    if array.ndim == 0 or array.ndim > 255:
        raise IdxError(f"cannot write an array with {array.ndim} dimensions as IDX")
    header = bytes([0, 0, type_byte, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write an array as an IDX file atomically; gzip when `compress` (default: name ends in .gz)."""
    path = Path(path)
    compress = path.suffix == ".gz" if compress is None else compress
    content = encode_idx(array)
    if compress:
        content = gzip.compress(content, compresslevel=6, mtime=0)  # mtime=0: reproducible bytes
    atomic_write_bytes(path, content)
    return path
