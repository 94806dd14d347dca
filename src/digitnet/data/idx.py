"""Read and write IDX files (the MNIST format), raw or gzip-compressed, with strict validation.

An IDX file is a header (two zero bytes, a type byte, the number of dimensions, then each
dimension as a big-endian uint32) followed by the elements in C order, big-endian.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from digitnet.errors import DigitnetError
from digitnet.fileio import atomic_write_bytes, check_regular_file

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
# The largest IDX file digitnet reads: 2 GiB of elements. MNIST's largest is 47 MB (60,000 x
# 28 x 28) and EMNIST's is 550 MB, so real data fits; a crafted header claiming more is refused
# before anything is allocated, and a file that decompresses to more is never expanded further.
MAX_IDX_BYTES = 2**31
MAX_IDX_NDIM = 16  # real IDX files have 1 to 4 dimensions; numpy arrays allow at most 64
_CHUNK = 1 << 20  # bytes per read: with gzip, the only memory beyond the array itself


class IdxError(DigitnetError):
    """An IDX file that is missing, corrupt or not what was expected."""


def read_idx(path: str | os.PathLike, max_bytes: int = MAX_IDX_BYTES, hasher=None) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed (detected by its magic bytes), into an array.

    The header is read and checked first; then exactly the bytes it declares are read (at most
    `max_bytes`) into the array, and one more byte to make sure nothing follows. Memory is the
    array's size, whatever the file decompresses to.

    Args:
        max_bytes: refuse a header that declares more element bytes than this.
        hasher: a `hashlib` object, updated with the decompressed IDX bytes (header and data).

    Raises:
        IdxError: the file is missing, not a regular file, corrupt, or larger than `max_bytes`;
            the message names the file and the problem.
    """
    path = Path(path)
    with _open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise IdxError(f"{path}: file is empty, expected an IDX file")
        magic = f.read(2)
        f.seek(0)
        if magic == _GZIP_MAGIC:
            with gzip.GzipFile(fileobj=f, mode="rb") as stream:
                return _read_guarded(stream, str(path), max_bytes, None, hasher)
        if path.suffix == ".gz":
            raise IdxError(f"{path}: not a gzip file (expected gzip magic bytes 1f 8b, "
                           f"got {magic.hex(' ')})")
        return _read_guarded(f, str(path), max_bytes, size, hasher)


def _open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading if it is a regular file: a FIFO or /dev/zero never ends a read."""
    try:
        return open(check_regular_file(path, "IDX file"), "rb")  # noqa: SIM115 (the caller's with)
    except DigitnetError as e:
        raise IdxError(str(e)) from None
    except OSError as e:
        raise IdxError(f"{path}: cannot read file ({e.strerror or e})") from None


def parse_idx(content: bytes, name: str = "<bytes>", max_bytes: int = MAX_IDX_BYTES,
              hasher=None) -> np.ndarray:
    """Parse IDX bytes, raw or gzip-compressed, into a numpy array in native byte order.

    The same checks as `read_idx`, with `name` in the messages.

    Raises:
        IdxError: bad magic number, unknown type byte, too few or too many dimensions, an inner
            dimension of 0, more than `max_bytes`, or a byte count that disagrees with the header.
    """
    if content[:2] == _GZIP_MAGIC:
        with gzip.GzipFile(fileobj=io.BytesIO(content), mode="rb") as stream:
            return _read_guarded(stream, name, max_bytes, None, hasher)
    return _read_guarded(io.BytesIO(content), name, max_bytes, len(content), hasher)


def _read_guarded(stream: BinaryIO, name: str, max_bytes: int, size: int | None,
                  hasher) -> np.ndarray:
    """`_read_stream`, with the errors of a broken file or gzip stream as IdxError."""
    try:
        return _read_stream(stream, name, max_bytes, size, hasher)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise IdxError(f"{name}: corrupt or truncated gzip data ({e})") from None
    except OSError as e:
        raise IdxError(f"{name}: cannot read file ({e.strerror or e})") from None


def _read_stream(stream: BinaryIO, name: str, max_bytes: int, size: int | None,
                 hasher) -> np.ndarray:
    """Read one IDX file from `stream`: header, then exactly the bytes it declares, then EOF.

    Args:
        size: the stream's length when known (a raw file), so a wrong length is refused before
            any data is read; None for a decompressing stream.
    """
    where = "file" if size is not None else "decompressed data"
    head = _read_up_to(stream, 4)
    if len(head) < 4:
        raise IdxError(f"{name}: only {len(head)} bytes, too short for an IDX header (4+ bytes)")
    if head[0] != 0 or head[1] != 0:
        raise IdxError(
            f"{name}: bad magic number {head.hex()}: an IDX file starts with two zero bytes"
        )
    type_byte, ndim = head[2], head[3]
    if type_byte not in IDX_TYPES:
        known = ", ".join(f"0x{t:02x}" for t in IDX_TYPES)
        raise IdxError(f"{name}: unknown element type byte 0x{type_byte:02x} (expected one of "
                       f"{known})")
    if ndim == 0:
        raise IdxError(f"{name}: header declares 0 dimensions")
    if ndim > MAX_IDX_NDIM:
        raise IdxError(f"{name}: header declares {ndim} dimensions, expected 1 to {MAX_IDX_NDIM}")
    header_len = 4 + 4 * ndim
    dims = _read_up_to(stream, 4 * ndim)
    if len(dims) < 4 * ndim:
        raise IdxError(f"{name}: truncated header: {ndim} dimensions need {header_len} bytes")
    shape = tuple(int.from_bytes(dims[i : i + 4], "big") for i in range(0, 4 * ndim, 4))
    dtype = IDX_TYPES[type_byte]
    # Python ints: np.prod in int64 wraps for crafted headers (2**31 * 2**31 * 4 -> 0)
    nbytes = math.prod(shape) * dtype.itemsize
    expected = header_len + nbytes
    if size is not None and size != expected:
        what = "truncated" if size < expected else "has trailing bytes"
        raise IdxError(
            f"{name}: {what}: header says shape {shape} of {dtype.name} "
            f"({expected} bytes with header), file has {size} bytes"
        )
    if 0 in shape[1:]:
        raise IdxError(f"{name}: header says shape {shape}: only the first dimension (the number "
                       f"of items) may be 0")
    item_bytes = math.prod(shape[1:]) * dtype.itemsize  # numpy refuses huge items, even 0 of them
    if nbytes > max_bytes or item_bytes > max_bytes:
        per_item = " per item" if nbytes <= max_bytes else ""
        raise IdxError(f"{name}: header says shape {shape} of {dtype.name}, "
                       f"{max(nbytes, item_bytes):,} bytes{per_item}, "
                       f"more than the limit of {max_bytes:,} bytes for an IDX file")
    array = np.empty(shape, dtype=dtype)  # big-endian, filled straight from the stream
    data = memoryview(array.reshape(-1).view(np.uint8))
    got = _read_into(stream, data)
    if got < nbytes:
        raise IdxError(
            f"{name}: truncated: header says shape {shape} of {dtype.name} "
            f"({expected} bytes with header), {where} has {header_len + got} bytes"
        )
    if stream.read(1):  # one byte is enough to know: a bomb is never expanded further
        raise IdxError(
            f"{name}: has trailing bytes: header says shape {shape} of {dtype.name} "
            f"({expected} bytes with header), {where} has more"
        )
    if hasher is not None:
        hasher.update(head + dims)
        hasher.update(data)
    native = dtype.newbyteorder("=")
    if native != dtype:
        array = array.byteswap(inplace=True).view(native)
    return array


def _read_up_to(stream: BinaryIO, n: int) -> bytes:
    """Up to `n` bytes: fewer only at the end of the stream."""
    parts, got = [], 0
    while got < n:
        part = stream.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _read_into(stream: BinaryIO, buffer: memoryview) -> int:
    """Fill `buffer` from `stream` in chunks; the number of bytes read (fewer at its end)."""
    got = 0
    while got < len(buffer):
        n = stream.readinto(buffer[got : got + _CHUNK])
        if not n:
            break
        got += n
    return got


def encode_idx(array: np.ndarray) -> bytes:
    """Encode a numpy array as IDX bytes."""
    array = np.asarray(array)
    matches = [(code, dtype) for code, dtype in IDX_TYPES.items()
               if array.dtype.kind == dtype.kind and array.dtype.itemsize == dtype.itemsize]
    if not matches:
        raise IdxError(f"cannot write dtype {array.dtype} as IDX (expected uint8, int8/16/32, "
                       f"float32/64)")
    type_byte, dtype = matches[0]
    if array.ndim == 0 or array.ndim > MAX_IDX_NDIM:
        raise IdxError(f"cannot write an array with {array.ndim} dimensions as IDX")
    header = bytes([0, 0, type_byte, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write an array as an IDX file atomically; gzip when `compress` (default: the name ends in
    .gz)."""
    path = Path(path)
    compress = path.suffix == ".gz" if compress is None else compress
    content = encode_idx(array)
    if compress:
        content = gzip.compress(content, compresslevel=6, mtime=0)  # mtime=0: reproducible bytes
    atomic_write_bytes(path, content)
    return path
