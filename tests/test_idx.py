"""IDX read/write: round trips, and a clear IdxError naming the file for each corruption."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digitnet.data.idx import IdxError, encode_idx, parse_idx, read_idx, read_idx_bytes, write_idx
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
    ("gzip-truncated", "x.idx.gz", gzip.compress(GOOD * 50)[:-12], "corrupt or truncated gzip"),
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
    with pytest.raises(IdxError, match="cannot read file"):
        read_idx_bytes(tmp_path)


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


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=12), st.integers(4, 255))
def test_valid_header_with_random_dims_never_escapes(dims_bytes, type_pick):
    type_byte = [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E][type_pick % 6]
    ndim = max(1, len(dims_bytes) // 4)
    dims = np.frombuffer(dims_bytes.ljust(4 * ndim, b"\xff")[: 4 * ndim], dtype=">u4")
    content = _header(type_byte, tuple(int(d) for d in dims)) + dims_bytes
    try:
        parse_idx(content, name="fuzz.idx")
    except IdxError as e:
        assert "fuzz.idx" in str(e)


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
    (b"\x01\x00" + GOOD[2:], "<bytes>: bad magic number 01000802: an IDX file starts with two zero bytes"),
    (b"\x00\x07" + GOOD[2:], "<bytes>: bad magic number 00070802: an IDX file starts with two zero bytes"),
    (_header(0x0A, (2,)) + bytes(2),
     "<bytes>: unknown element type byte 0x0a (expected one of 0x08, 0x09, 0x0b, 0x0c, 0x0d, 0x0e)"),
    (GOOD[:-1], "<bytes>: truncated: header says shape (2, 3) of uint8 (18 bytes with header), "
                "file has 17 bytes"),
    (GOOD + b"\x00", "<bytes>: has trailing bytes: header says shape (2, 3) of uint8 (18 bytes with "
                     "header), file has 19 bytes"),
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
    assert str(info.value) == f"{path}: not a gzip file (expected gzip magic bytes 1f 8b, got 00 00)"
