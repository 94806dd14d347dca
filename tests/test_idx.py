"""IDX read/write: round trips, and a clear IdxError naming the file for each corruption."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import math
import os
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bounded import run_bounded
from digitnet.data.idx import IDX_TYPES, IdxError, encode_idx, parse_idx, read_idx, write_idx
from digitnet.errors import DigitnetError

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
SHAPES = [(5,), (3, 4), (2, 3, 4), (1, 1, 1, 1), (0, 28, 28), (4, 28, 28)]


def _array(dtype, shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is None:
        return rng.standard_normal(shape).astype(dtype) * 1e3
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_write_then_read_round_trip(tmp_path, dtype, shape, compress):
    array = _array(dtype, shape)
    path = write_idx(tmp_path / ("a.idx.gz" if compress else "a.idx"), array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype)  # native byte order, same kind and size
    assert back.shape == shape
    np.testing.assert_array_equal(back, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress


def test_big_endian_input_and_header_layout():
    array = np.array([[1, 2, 3], [4, 5, -6]], dtype=">i4")
    content = encode_idx(array)
    # magic 00 00, type 0x0C (int32), 2 dims, then dims 2 and 3 as big-endian uint32
    assert content[:12] == bytes([0, 0, 0x0C, 2, 0, 0, 0, 2, 0, 0, 0, 3])
    assert len(content) == 12 + 6 * 4
    np.testing.assert_array_equal(parse_idx(content), array)


def test_gzip_is_detected_by_magic_not_name(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    path = write_idx(tmp_path / "compressed-but-named.idx", array, compress=True)
    np.testing.assert_array_equal(read_idx(path), array)


def test_compressed_output_is_reproducible(tmp_path):
    array = np.arange(100, dtype=np.uint8)
    a = write_idx(tmp_path / "a.gz", array).read_bytes()
    b = write_idx(tmp_path / "b.gz", array).read_bytes()
    assert a == b


@pytest.mark.parametrize(
    "array",
    [
        np.zeros(3, dtype=np.int64),
        np.zeros(3, dtype=np.uint16),
        np.zeros(3, dtype=np.float16),
        np.zeros(3, dtype=bool),
        np.array(7, dtype=np.uint8),
    ],
    ids=["int64", "uint16", "float16", "bool", "0-d"],
)
def test_encode_rejects_what_idx_cannot_hold(array):
    with pytest.raises(IdxError, match="cannot write"):
        encode_idx(array)


# ------------------------------------------------------------------------------ corrupt files
def _header(type_byte: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, type_byte, len(dims)]) + np.asarray(dims, dtype=">u4").tobytes()


GOOD = _header(0x08, (2, 3)) + bytes(range(6))
LONG = _header(0x08, (50, 6)) + bytes(range(6)) * 50

# (id, file name, file bytes, fragment the message must contain)
CORRUPT = [
    ("empty", "x.idx", b"", "file is empty"),
    ("empty-gz", "x.idx.gz", b"", "file is empty"),
    ("too-short-for-header", "x.idx", b"\x00\x00", "too short"),
    ("bad-magic", "x.idx", b"\x01\x02" + GOOD[2:], "bad magic"),
    ("text-file", "x.idx", b"hello, this is not IDX", "bad magic"),
    ("unknown-type-0x0a", "x.idx", _header(0x0A, (2, 3)) + bytes(6), "type byte 0x0a"),
    ("unknown-type-0xff", "x.idx", _header(0xFF, (2, 3)) + bytes(6), "type byte 0xff"),
    ("zero-dims", "x.idx", bytes([0, 0, 8, 0]), "0 dimensions"),
    ("truncated-header", "x.idx", _header(0x08, (2, 3, 4))[:9], "truncated header"),
    ("truncated-data", "x.idx", GOOD[:-1], "truncated"),
    ("truncated-data-int32", "x.idx", _header(0x0C, (3,)) + bytes(11), "truncated"),
    ("header-only", "x.idx", _header(0x08, (60000, 28, 28)), "truncated"),
    ("trailing-bytes", "x.idx", GOOD + b"\x00", "trailing bytes"),
    ("int64-overflowing-dims", "x.idx", _header(0x08, (2**31, 2**31, 4)), "truncated"),
    ("gz-not-gzip", "x.idx.gz", GOOD, "not a gzip file"),
    ("gzip-truncated", "x.idx.gz", gzip.compress(LONG)[:-12], "corrupt or truncated gzip"),
    ("gzip-header-only", "x.idx.gz", gzip.compress(GOOD)[:10], "corrupt or truncated gzip"),
    ("gzip-bad-crc", "x.idx.gz", gzip.compress(GOOD)[:-8] + bytes(8), "corrupt or truncated gzip"),
    ("gzip-of-garbage", "x.idx.gz", gzip.compress(b"\x07garbage"), "bad magic"),
    ("gzip-of-truncated-idx", "x.idx.gz", gzip.compress(GOOD[:-2]), "truncated"),
]


@pytest.mark.parametrize(
    ("name", "content", "fragment"), [c[1:] for c in CORRUPT], ids=[c[0] for c in CORRUPT]
)
def test_corrupt_file_gives_clear_error_naming_the_file(tmp_path, name, content, fragment):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(IdxError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message
    assert fragment in message
    assert not isinstance(info.value, ValueError)
    # no numpy/zlib traceback chained behind the clear message (`raise ... from None`)
    error = info.value
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(IdxError, match="file not found") as info:
        read_idx(tmp_path / "nope.idx.gz")
    assert "nope.idx.gz" in str(info.value)
    with pytest.raises(IdxError, match="expected a regular IDX file, found a folder"):
        read_idx(tmp_path)


def test_idx_error_is_a_digitnet_error():
    # the CLI turns DigitnetError into a one-line message instead of a traceback
    assert issubclass(IdxError, DigitnetError)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_escape_as_numpy_errors(content):
    try:
        array = parse_idx(content, name="fuzz.idx")
    except IdxError as e:
        assert "fuzz.idx" in str(e)
    else:
        assert encode_idx(array) == content  # anything accepted is a valid IDX file


ITEM_SIZES = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=12), st.integers(4, 255))
@example(b"\x00\x00\x00\x04", 6)  # dims (4,) and exactly 4 uint8 bytes of data: valid
@example(b"\x00\x00\x00\x00\x00\x00\x00\x05", 7)  # dims (0, 5): empty, 8 trailing bytes
@example(b"\x00\x00\x00\x01\x00\x00\x00\x02", 9)  # dims (1, 2) of int32: values [1, 2]
@example(b"\x00\x00\x00\x01\x00\x00\x00\x01", 11)  # dims (1, 1) of float64: valid
def test_valid_header_with_random_dims_never_escapes(dims_bytes, type_pick):
    type_byte = [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E][type_pick % 6]
    ndim = max(1, len(dims_bytes) // 4)
    dims = tuple(int(d) for d in np.frombuffer(dims_bytes.ljust(4 * ndim, b"\xff")[: 4 * ndim],
                                               dtype=">u4"))
    content = _header(type_byte, dims) + dims_bytes
    expected_bytes = math.prod(dims) * ITEM_SIZES[type_byte]  # Python ints: no overflow
    if len(dims_bytes) == expected_bytes:  # a valid file: parsed exactly, and round-trips
        array = parse_idx(content, name="fuzz.idx")
        assert array.shape == dims and array.dtype.itemsize == ITEM_SIZES[type_byte]
        assert array.tobytes() == np.frombuffer(dims_bytes, array.dtype.newbyteorder(">")).astype(
            array.dtype).tobytes()
        assert encode_idx(array) == content
        if type_byte == 0x0C and dims == (1, 2):
            assert array.tolist() == [[1, 2]]  # big-endian on disk
    else:
        fragment = "truncated" if len(dims_bytes) < expected_bytes else "trailing bytes"
        with pytest.raises(IdxError, match=fragment) as info:
            parse_idx(content, name="fuzz.idx")
        assert "fuzz.idx" in str(info.value)


# ------------------------------------------------------------------- bounds: bombs and oddities
def _gzip_bomb(content: bytes, expand_mib: int) -> bytes:
    """gzip members: `content`, then `expand_mib` MiB of zeros (1 KB each), so a ~1 MB file that
    decompresses to `expand_mib` MiB more than `content`."""
    zeros = gzip.compress(bytes(1 << 20), compresslevel=9, mtime=0)
    return gzip.compress(content, mtime=0) + zeros * expand_mib


def _peak_while(fn) -> tuple[int, Exception | None]:
    """The tracemalloc peak (bytes) while `fn` runs, and what it raised."""
    tracemalloc.start()
    try:
        fn()
        raised = None
    except Exception as e:  # noqa: BLE001 (returned for the test to check)
        raised = e
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, raised


MIB = 1 << 20

# (id, file bytes, fragment): each costs at most a few MiB to refuse, whatever it claims or holds
BOMBS = [
    # a small file that decompresses to 1 GiB beyond the 6 bytes its header declares
    ("gzip-expands-to-1GiB", _gzip_bomb(GOOD, 1024), "has trailing bytes"),
    # a header claiming 1 TiB: refused before anything is allocated
    ("gzip-claims-1TiB", gzip.compress(_header(0x08, (2**20, 2**20)) + bytes(100)),
     "more than the limit of 2,147,483,648 bytes"),
    ("gzip-claims-limit-plus-one", gzip.compress(_header(0x08, (2**31 + 1,)) + bytes(100)),
     "more than the limit"),
    ("gzip-claims-more-than-it-holds", gzip.compress(_header(0x08, (1000, 28, 28)) + bytes(10)),
     "decompressed data has 26 bytes"),
    ("raw-claims-1TiB", _header(0x08, (2**20, 2**20)) + bytes(100), "truncated"),
    ("raw-claims-int32-4GiB", _header(0x0C, (2**30,)) + bytes(4), "truncated"),
]


@pytest.mark.parametrize(("content", "fragment"), [b[1:] for b in BOMBS], ids=[b[0] for b in BOMBS])
def test_bombs_refused_fast_with_bounded_memory(tmp_path, content, fragment):
    path = tmp_path / "bomb.idx"  # gzip or not by its magic bytes
    path.write_bytes(content)
    assert len(content) < 2 * MIB
    start = time.perf_counter()
    peak, raised = _peak_while(lambda: read_idx(path))
    assert isinstance(raised, IdxError), raised
    assert str(path) in str(raised) and fragment in str(raised)
    assert peak < 4 * MIB  # the old reader held the whole expansion (and more) in memory
    assert time.perf_counter() - start < 2.0


def test_raw_file_as_large_as_its_header_says_but_over_the_limit(tmp_path):
    path = tmp_path / "sparse.idx"
    header = _header(0x08, (3, 2**30))  # 3 GiB of elements
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + 3 * 2**30)  # sparse: no disk used, every byte reads as zero
    peak, raised = _peak_while(lambda: read_idx(path))
    assert isinstance(raised, IdxError) and str(path) in str(raised)
    assert "3,221,225,472 bytes, more than the limit of 2,147,483,648 bytes" in str(raised)
    assert peak < MIB


def test_memory_is_the_array_not_the_stream(tmp_path):
    array = np.arange(4 * MIB // 4, dtype=np.int32)  # 4 MiB of int32: byteswapped in place
    path = tmp_path / "big.idx.gz"
    path.write_bytes(gzip.compress(encode_idx(array), compresslevel=1))
    peak, raised = _peak_while(lambda: read_idx(path))
    assert raised is None
    assert peak < 4 * MIB + 2 * MIB  # the array and a 1 MiB chunk; the old reader held 2 more
    np.testing.assert_array_equal(read_idx(path), array)


def test_file_over_the_limit_is_refused_naming_it(tmp_path):
    path = write_idx(tmp_path / "a.idx", np.zeros((10, 10), np.uint8))
    with pytest.raises(IdxError, match=r"a\.idx: header says shape \(10, 10\) of uint8, 100 "
                                       r"bytes, more than the limit of 99 bytes"):
        read_idx(path, max_bytes=99)
    assert read_idx(path, max_bytes=100).shape == (10, 10)


@pytest.mark.parametrize("shape", [(0, 2**32 - 1, 2**32 - 1), (0, 2**31, 4), (0, 3, 2**31)])
def test_zero_items_of_a_huge_shape_are_refused_naming_the_file(tmp_path, shape):
    """No items, but each one larger than the limit: numpy cannot even make the empty array
    (found by hypothesis: a ValueError escaped)."""
    path = tmp_path / "empty-but-huge.idx"
    path.write_bytes(_header(0x08, shape))  # as long as its header says: no items
    with pytest.raises(IdxError, match=r"empty-but-huge\.idx: header says shape .* more than "
                                       r"the limit"):
        read_idx(path)


def test_content_hash_is_of_the_decompressed_bytes(tmp_path):
    array = np.arange(300, dtype=np.int16).reshape(3, 100)
    for name in ("a.idx", "a.idx.gz"):
        hasher = hashlib.sha256()
        read_idx(write_idx(tmp_path / name, array), hasher=hasher)
        assert hasher.hexdigest() == hashlib.sha256(encode_idx(array)).hexdigest()


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "folder"])
def test_non_regular_files_refused_without_reading(tmp_path, kind):
    if kind == "fifo":
        path = tmp_path / "pipe.idx"
        os.mkfifo(path)
    else:
        path = Path("/dev/zero") if kind == "dev-zero" else tmp_path
    found = {"fifo": "a FIFO", "dev-zero": "a device", "folder": "a folder"}[kind]
    error = run_bounded(lambda: read_idx(path), seconds=10, fifo=path if kind == "fifo" else None)
    assert isinstance(error, IdxError)
    assert str(path) in str(error) and f"expected a regular IDX file, found {found}" in str(error)


ODDITIES = [
    # (id, file bytes, fragment)
    ("255-zero-dims", _header(0x08, (0,) * 255),
     "header declares 255 dimensions, expected 1 to 16"),
    ("17-dims", _header(0x08, (1,) * 17) + b"\x00", "17 dimensions, expected 1 to 16"),
    ("zero-inner-dim", _header(0x08, (5, 0)), "only the first dimension"),
    ("zero-dims-after-empty-first", _header(0x0D, (0, 0, 0)), "only the first dimension"),
    ("gzip-trailing-decompressed", gzip.compress(GOOD + b"junk"), "has trailing bytes"),
    ("gzip-then-garbage", gzip.compress(GOOD) + b"junk", "corrupt or truncated gzip"),
    ("gzip-second-member-truncated", gzip.compress(GOOD) + gzip.compress(b"")[:-3],
     "corrupt or truncated gzip"),
]


@pytest.mark.parametrize(("content", "fragment"), [o[1:] for o in ODDITIES],
                         ids=[o[0] for o in ODDITIES])
def test_header_oddities_give_an_error_naming_the_file(tmp_path, content, fragment):
    path = tmp_path / "odd.idx"
    path.write_bytes(content)
    with pytest.raises(IdxError) as info:
        read_idx(path)
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_empty_first_dimension_is_a_valid_empty_file():
    array = parse_idx(_header(0x08, (0, 28, 28)))
    assert array.shape == (0, 28, 28) and array.dtype == np.uint8


def test_encode_refuses_what_read_refuses():
    with pytest.raises(IdxError, match="17 dimensions"):
        encode_idx(np.zeros((1,) * 17, np.uint8))


# property tests: whatever the bytes, an IdxError naming the file or an exact array, quickly
@st.composite
def _mutated_idx(draw) -> bytes:
    """A valid IDX file (raw bytes), then a few bytes changed, cut off or appended."""
    type_byte = draw(st.sampled_from(sorted(IDX_TYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=1, max_size=4)))
    dtype = IDX_TYPES[type_byte]
    size = int(np.prod(shape)) * dtype.itemsize
    content = bytearray(_header(type_byte, shape) + draw(st.binary(min_size=size, max_size=size)))
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(content) - 1))
        content[i] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(content)))
    return bytes(content[:cut] if draw(st.booleans()) else content) + draw(st.binary(max_size=4))


def _check_parse(content: bytes, decompressed: bytes) -> None:
    start = time.perf_counter()
    try:
        array = parse_idx(content, name="fuzz.idx", max_bytes=1 << 16)
    except IdxError as e:
        assert str(e).startswith("fuzz.idx: ")
    else:
        assert encode_idx(array) == decompressed  # anything accepted is exactly what it says
    assert time.perf_counter() - start < 1.0


@settings(max_examples=300, deadline=None)
@given(_mutated_idx())
def test_mutated_headers_give_idx_error_or_exact_array(content):
    _check_parse(content, content)


@settings(max_examples=200, deadline=None)
@given(_mutated_idx(), st.integers(0, 40), st.integers(0, 255))
def test_mutated_gzip_gives_idx_error_or_exact_array(content, position, value):
    packed = bytearray(gzip.compress(content, mtime=0))
    if position < len(packed):  # corrupt the gzip stream itself, too
        packed[position] = value
    try:
        decompressed = gzip.decompress(bytes(packed))
    except (OSError, EOFError, zlib.error):
        decompressed = None  # then nothing may be accepted
    _check_parse(bytes(packed), decompressed)


# ------------------------------------------------------------------- found by mutation testing
def test_compress_argument_overrides_the_file_name(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    gz = write_idx(tmp_path / "named.idx", array, compress=True).read_bytes()
    raw = write_idx(tmp_path / "named.idx.gz", array, compress=False).read_bytes()
    assert gz[:2] == b"\x1f\x8b" and gzip.decompress(gz) == encode_idx(array)
    assert raw == encode_idx(array)


def test_gzip_header_records_no_time(tmp_path):
    """Reproducible bytes: the gzip MTIME field (bytes 4..7) is 0, not the time of writing."""
    content = write_idx(tmp_path / "a.idx.gz", np.arange(10, dtype=np.uint8)).read_bytes()
    assert content[:2] == b"\x1f\x8b"
    assert content[4:8] == bytes(4)


@pytest.mark.parametrize("content, message", [
    (b"\x01\x00" + GOOD[2:],
     "<bytes>: bad magic number 01000802: an IDX file starts with two zero bytes"),
    (b"\x00\x07" + GOOD[2:],
     "<bytes>: bad magic number 00070802: an IDX file starts with two zero bytes"),
    (_header(0x0A, (2,)) + bytes(2),
     "<bytes>: unknown element type byte 0x0a (expected one of 0x08, 0x09, 0x0b, 0x0c, 0x0d, "
     "0x0e)"),
    (GOOD[:-1], "<bytes>: truncated: header says shape (2, 3) of uint8 (18 bytes with header), "
                "file has 17 bytes"),
    (GOOD + b"\x00", "<bytes>: has trailing bytes: header says shape (2, 3) of uint8 (18 bytes "
                     "with header), file has 19 bytes"),
])
def test_parse_errors_word_for_word(content, message):
    """One zero byte of the magic is not enough, and the message shows what the header said."""
    with pytest.raises(IdxError) as info:
        parse_idx(content)
    assert str(info.value) == message


def test_not_gzip_message_shows_the_two_magic_bytes(tmp_path):
    path = tmp_path / "x.idx.gz"
    path.write_bytes(GOOD)
    with pytest.raises(IdxError) as info:
        read_idx(path)
    assert str(info.value) == (f"{path}: not a gzip file (expected gzip magic bytes 1f 8b, got "
                               f"00 00)")


# ------------------------------------------ found by mutation testing of the merged idx.py
def test_a_file_that_cannot_be_opened_or_read_is_named_with_the_reason(tmp_path, monkeypatch):
    import digitnet.data.idx as idx

    path = write_idx(tmp_path / "x.idx", np.zeros(3, np.uint8))

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(idx, "open", refused, raising=False)  # root may open any file
    with pytest.raises(IdxError) as info:
        read_idx(path)
    assert str(info.value) == f"{path}: cannot read file (Permission denied)"
    monkeypatch.undo()

    class Failing(io.BytesIO):
        def read(self, *args):
            raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(IdxError) as info:
        idx._read_guarded(Failing(), "disk.idx", 100, None, None)
    assert str(info.value) == "disk.idx: cannot read file (Input/output error)"


def test_sixteen_dimensions_are_written_and_read_seventeen_refused():
    array = np.arange(2, dtype=np.uint8).reshape((1,) * 15 + (2,))
    assert np.array_equal(parse_idx(encode_idx(array)), array)
    with pytest.raises(IdxError, match="cannot write an array with 17 dimensions as IDX"):
        encode_idx(array.reshape((1,) * 16 + (2,)))


def test_parse_hashes_raw_and_compressed_bytes_alike():
    content = encode_idx(np.arange(6, dtype=np.uint8).reshape(2, 3))
    for data in (content, gzip.compress(content)):
        h = hashlib.sha256()
        parse_idx(data, hasher=h)
        assert h.hexdigest() == hashlib.sha256(content).hexdigest()


class Trickle(io.BytesIO):
    """A stream that returns at most 5 bytes a call, as a pipe or a gzip member boundary may."""

    def read(self, n=-1):
        return super().read(5 if n is None or n < 0 else min(n, 5))

    def readinto(self, buffer):
        return super().readinto(memoryview(buffer).cast("B")[:5])


def test_short_reads_are_joined_into_the_exact_array():
    import digitnet.data.idx as idx

    array = np.arange(12, dtype=">i2").reshape(3, 4)
    content = encode_idx(array)
    for size in (None, len(content)):
        h = hashlib.sha256()
        got = idx._read_guarded(Trickle(content), "t.idx", 1000, size, h)
        assert got.shape == (3, 4) and np.array_equal(got, array)
        assert h.hexdigest() == hashlib.sha256(content).hexdigest()
    with pytest.raises(IdxError, match="has trailing bytes"):
        idx._read_guarded(Trickle(content + b"\0"), "t.idx", 1000, None, None)
