"""MNIST sources: choice of data directory, verification, loading checks, faked downloads."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import os
import tracemalloc
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from bounded import run_bounded
from conftest import make_synthetic_mnist
from digitnet.cli import main
from digitnet.data import mnist
from digitnet.data.idx import IdxError, write_idx
from digitnet.data.mnist import (
    ENV_DATA_DIR,
    MNIST_FILES,
    ChecksumError,
    default_cache_dir,
    download_file,
    ensure_files,
    load_mnist,
    resolve_data_dir,
    verify_checksum,
    verify_mnist,
)
from digitnet.errors import DigitnetError
from digitnet.fileio import sha256_bytes

FILES = {f.name: f for f in MNIST_FILES}
TRAIN_LABELS = FILES["train-labels-idx1-ubyte"]
UNREACHABLE = ("http://127.0.0.1:9/",)  # discard port: connection refused at once, no network


class FakeResponse(io.BytesIO):
    """What urlopen returns, enough for download_file: a context manager with headers and read()."""

    def __init__(self, content: bytes):
        super().__init__(content)
        self.headers = {"Content-Length": str(len(content))}


def _serve(monkeypatch, files: dict[str, bytes]) -> list[str]:
    """Make urlopen answer from `files` (by file name, else URLError); returns the URLs asked."""
    asked = []

    def fake_urlopen(url, timeout=None):
        asked.append(url)
        name = url.rsplit("/", 1)[-1]
        if name not in files:
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        return FakeResponse(files[name])

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return asked


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if anything tries to download."""

    def refuse(url, timeout=None):
        raise AssertionError(f"unexpected download of {url}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No DIGITNET_DATA_DIR, and a private XDG cache under tmp_path."""
    monkeypatch.delenv(ENV_DATA_DIR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "digitnet" / "mnist"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --------------------------------------------------------------------------- data directory
@pytest.mark.parametrize(
    ("arg", "env", "expected_dir", "expected_source"),
    [
        ("explicit", "from-env", "explicit", "--data-dir"),
        ("explicit", None, "explicit", "--data-dir"),
        (None, "from-env", "from-env", ENV_DATA_DIR),
        (None, "", "xdg/digitnet/mnist", "cache"),  # an empty variable counts as unset
        (None, None, "xdg/digitnet/mnist", "cache"),
    ],
)
def test_data_dir_order(monkeypatch, tmp_path, clean_env, arg, env, expected_dir, expected_source):
    if env is not None:
        monkeypatch.setenv(ENV_DATA_DIR, str(tmp_path / env) if env else "")
    folder, source = resolve_data_dir(str(tmp_path / arg) if arg else None)
    assert folder == tmp_path / expected_dir
    assert source == expected_source


def test_cache_falls_back_to_home_without_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "digitnet" / "mnist"


@pytest.mark.parametrize("via_env", [False, True], ids=["--data-dir", ENV_DATA_DIR])
def test_explicit_folder_missing_files_is_an_error_not_a_download(
    monkeypatch, tmp_path, clean_env, no_network, via_env
):
    folder = tmp_path / "empty"
    folder.mkdir()
    if via_env:
        monkeypatch.setenv(ENV_DATA_DIR, str(folder))
    with pytest.raises(DigitnetError) as info:
        ensure_files(None if via_env else folder)
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and "not found" in message
    assert str(folder) in message
    assert (ENV_DATA_DIR if via_env else "--data-dir") in message
    assert _leftovers(folder) == []


def test_raw_files_are_found_as_well_as_gz(tmp_path, no_network):
    folder = make_synthetic_mnist(tmp_path / "m")
    raw = folder / "t10k-labels-idx1-ubyte"
    raw.write_bytes(gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    assert ensure_files(folder)["t10k-labels-idx1-ubyte"] == raw


# ------------------------------------------------------------------------------- loading
def test_load_synthetic(synthetic_mnist, no_network):
    data = load_mnist(synthetic_mnist)
    assert tuple(data.train_images.shape) == (200, 28, 28)
    assert tuple(data.test_labels.shape) == (50,)
    assert set(data.sha256) == set(FILES)
    # the arrays are the files' bytes after the IDX header, read here with gzip and numpy alone
    for name, header in (("train-images-idx3-ubyte", 16), ("train-labels-idx1-ubyte", 8),
                         ("t10k-images-idx3-ubyte", 16), ("t10k-labels-idx1-ubyte", 8)):
        content = gzip.decompress((synthetic_mnist / f"{name}.gz").read_bytes())
        assert data.sha256[name] == hashlib.sha256(content).hexdigest()  # of the content
        attr = ("train" if name.startswith("train") else "test") + (
            "_images" if "images" in name else "_labels")
        expected = np.frombuffer(content, np.uint8, offset=header)
        assert np.array_equal(getattr(data, attr).numpy().ravel(), expected)


def _bomb(header_and_data: bytes, expand_mib: int = 1024) -> bytes:
    """A ~1 MB gzip file: a valid IDX file, then `expand_mib` MiB of zeros in more members."""
    return gzip.compress(header_and_data) + gzip.compress(bytes(1 << 20)) * expand_mib


def _labels_idx(n: int) -> bytes:
    return b"\x00\x00\x08\x01" + n.to_bytes(4, "big") + bytes(n)


def test_verify_and_load_refuse_a_bomb_with_bounded_memory(synthetic_mnist, no_network):
    path = synthetic_mnist / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(_bomb(_labels_idx(50)))  # right header and count, 1 GiB of trailing zeros
    tracemalloc.start()
    try:
        rows = {Path(r["file"]).name: r for r in verify_mnist(synthetic_mnist)}
        with pytest.raises(IdxError, match="has trailing bytes") as info:
            load_mnist(synthetic_mnist)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "has trailing bytes" in rows[path.name]["detail"] and not rows[path.name]["ok"]
    assert str(path) in str(info.value)
    assert peak < 16 * 2**20  # the old reader decompressed all 1 GiB first


def test_fifo_in_the_data_folder_is_refused_not_read(synthetic_mnist, no_network):
    path = synthetic_mnist / "t10k-labels-idx1-ubyte.gz"
    path.unlink()
    os.mkfifo(path)
    rows = run_bounded(lambda: verify_mnist(synthetic_mnist), fifo=path)
    detail = {Path(r["file"]).name: r["detail"] for r in rows}[path.name]
    assert "expected a regular IDX file, found a FIFO" in detail
    error = run_bounded(lambda: load_mnist(synthetic_mnist), fifo=path)
    assert isinstance(error, IdxError) and str(path) in str(error) and "FIFO" in str(error)


def test_count_mismatch_names_both_files(synthetic_mnist, no_network):
    labels_path = synthetic_mnist / "train-labels-idx1-ubyte.gz"
    write_idx(labels_path, np.zeros(199, dtype=np.uint8))
    with pytest.raises(IdxError) as info:
        load_mnist(synthetic_mnist)
    message = str(info.value)
    assert str(synthetic_mnist / "train-images-idx3-ubyte.gz") in message
    assert str(labels_path) in message
    assert "200 images" in message and "199 labels" in message


@pytest.mark.parametrize(
    ("name", "array", "fragment"),
    [
        ("train-labels-idx1-ubyte.gz", np.full(200, 10, dtype=np.uint8), "label 10 out of range"),
        ("train-labels-idx1-ubyte.gz", np.zeros((200, 2), dtype=np.uint8), "expected uint8 labels"),
        ("t10k-images-idx3-ubyte.gz", np.zeros((50, 28, 27), np.uint8), "expected uint8 images"),
        ("t10k-images-idx3-ubyte.gz", np.zeros((50, 28, 28), np.float32), "expected uint8 images"),
    ],
    ids=["label-out-of-range", "labels-2d", "images-27-wide", "images-float"],
)
def test_wrong_layout_is_refused(synthetic_mnist, no_network, name, array, fragment):
    write_idx(synthetic_mnist / name, array)
    with pytest.raises(IdxError, match=fragment) as info:
        load_mnist(synthetic_mnist)
    assert name in str(info.value)


def test_load_with_verify_refuses_synthetic(synthetic_mnist, no_network):
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        load_mnist(synthetic_mnist, verify=True)


# ---------------------------------------------------------------------------- checksums
def test_verify_checksum_refuses_wrong_content(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    with pytest.raises(ChecksumError) as info:
        verify_checksum(path, TRAIN_LABELS, sha256_bytes(b"\x00\x00\x08\x01not mnist"))
    assert str(path) in str(info.value) and "checksum mismatch" in str(info.value)


def test_verify_checksum_accepts_content_or_mirror_gzip(mnist_dir):
    path = mnist_dir / "train-labels-idx1-ubyte.gz"
    raw = path.read_bytes()
    assert verify_checksum(path, TRAIN_LABELS, sha256_bytes(gzip.decompress(raw))) == "content"
    # the shared label files are the mirrors' bytes, so their gzip hash matches too
    assert verify_checksum(path, TRAIN_LABELS, sha256_bytes(b"wrong content"),
                           raw_sha256=sha256_bytes(raw)) == "gzip"
    # without raw_sha256, the .gz file is hashed as stored
    assert verify_checksum(path, TRAIN_LABELS, sha256_bytes(b"wrong content")) == "gzip"


def test_verify_synthetic_reports_every_failure(synthetic_mnist):
    # right counts but wrong bytes, so the checksum (not the count) is what fails
    write_idx(synthetic_mnist / "t10k-labels-idx1-ubyte.gz", np.zeros(10_000, dtype=np.uint8))
    (synthetic_mnist / "train-labels-idx1-ubyte.gz").unlink()
    rows = {Path(r["file"]).name: r for r in verify_mnist(synthetic_mnist)}
    assert not any(r["ok"] for r in rows.values())
    assert rows["train-labels-idx1-ubyte.gz"]["detail"] == "missing"
    assert "200 examples, expected 60000" in rows["train-images-idx3-ubyte.gz"]["detail"]
    assert "checksum mismatch" in rows["t10k-labels-idx1-ubyte.gz"]["detail"]


def test_cli_verify_fails_on_synthetic(synthetic_mnist, capsys):
    assert main(["data", "verify", "--data-dir", str(synthetic_mnist)]) == 1
    out = capsys.readouterr().out
    assert out.count("FAIL") == 4
    assert "4 of 4 files failed verification" in out


def test_real_mnist_verifies(mnist_dir, capsys):
    rows = verify_mnist(mnist_dir)
    assert [r["ok"] for r in rows] == [True] * 4, rows
    assert main(["data", "verify", "--data-dir", str(mnist_dir)]) == 0
    out = capsys.readouterr().out
    assert "all four files verified" in out
    assert "60000x28x28 uint8" in out and "10000 uint8" in out


# ----------------------------------------------------------------------------- downloads
def test_download_offline_says_how_to_use_local_files(tmp_path, monkeypatch):
    asked = _serve(monkeypatch, {})
    with pytest.raises(DigitnetError) as info:
        download_file(TRAIN_LABELS, tmp_path)
    message = str(info.value)
    assert "--data-dir" in message and ENV_DATA_DIR in message
    assert "train-labels-idx1-ubyte.gz" in message
    assert len(asked) == len(mnist.MIRRORS)  # every mirror was tried, each named in the message
    assert all(url in message for url in asked)
    assert _leftovers(tmp_path) == []


def test_download_from_unreachable_mirror(tmp_path):
    with pytest.raises(DigitnetError, match="--data-dir") as info:
        download_file(TRAIN_LABELS, tmp_path, mirrors=UNREACHABLE, timeout=2.0)
    assert "http://127.0.0.1:9/train-labels-idx1-ubyte.gz" in str(info.value)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "served",
    [gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07"), b"<html>captive portal</html>", b""],
    ids=["wrong-gzip-content", "not-gzip", "empty"],
)
def test_download_failing_checksum_is_refused_and_nothing_written(tmp_path, monkeypatch, served):
    _serve(monkeypatch, {"train-labels-idx1-ubyte.gz": served})
    with pytest.raises(DigitnetError) as info:
        download_file(TRAIN_LABELS, tmp_path / "cache")
    assert "could not download train-labels-idx1-ubyte.gz" in str(info.value)
    assert _leftovers(tmp_path / "cache") == []


def test_download_writes_verified_bytes_atomically(tmp_path, monkeypatch, mnist_dir):
    raw = (mnist_dir / "train-labels-idx1-ubyte.gz").read_bytes()
    _serve(monkeypatch, {"train-labels-idx1-ubyte.gz": raw})
    replaced = []
    real_replace = os.replace

    def spy_replace(src, dst):
        replaced.append((Path(src), Path(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy_replace)
    cache = tmp_path / "cache"
    dest = download_file(TRAIN_LABELS, cache)
    assert dest == cache / "train-labels-idx1-ubyte.gz"
    assert dest.read_bytes() == raw
    assert _leftovers(cache) == ["train-labels-idx1-ubyte.gz"]  # no temporary file left behind
    # written to a temporary file in the same folder, then renamed over the destination
    [(tmp, final)] = replaced
    assert final == dest and tmp.parent == cache and tmp.name.endswith(".tmp")


def test_download_falls_back_to_next_mirror(tmp_path, monkeypatch, mnist_dir):
    raw = (mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
    asked = []

    def flaky_urlopen(url, timeout=None):
        asked.append(url)
        if len(asked) == 1:
            raise urllib.error.URLError("connection reset")
        return FakeResponse(raw)

    monkeypatch.setattr(urllib.request, "urlopen", flaky_urlopen)
    dest = download_file(FILES["t10k-labels-idx1-ubyte"], tmp_path)
    assert dest.read_bytes() == raw
    assert [u.split("/")[2] for u in asked] == [m.split("/")[2] for m in mnist.MIRRORS[:2]]


def test_download_of_a_bomb_is_refused_with_bounded_memory(tmp_path, monkeypatch):
    _serve(monkeypatch, {"train-labels-idx1-ubyte.gz": _bomb(_labels_idx(60_000))})
    tracemalloc.start()
    try:
        with pytest.raises(DigitnetError, match="has trailing bytes") as info:
            download_file(TRAIN_LABELS, tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "could not download train-labels-idx1-ubyte.gz" in str(info.value)
    assert peak < 16 * 2**20  # the ~1 MB download and a chunk, not the 1 GiB it expands to
    assert _leftovers(tmp_path) == []


def test_download_larger_than_any_mnist_file_is_refused(tmp_path, monkeypatch, mnist_dir):
    raw = (mnist_dir / "train-labels-idx1-ubyte.gz").read_bytes()
    _serve(monkeypatch, {"train-labels-idx1-ubyte.gz": raw})
    monkeypatch.setattr(mnist, "MAX_DOWNLOAD_BYTES", len(raw) - 1)
    with pytest.raises(DigitnetError, match=f"more than the {len(raw) - 1:,} bytes"):
        download_file(TRAIN_LABELS, tmp_path)

    class Unannounced(FakeResponse):  # no Content-Length: refused as the bytes arrive
        def __init__(self, content):
            super().__init__(content)
            self.headers = {}

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: Unannounced(raw))
    with pytest.raises(DigitnetError, match="more than the"):
        download_file(TRAIN_LABELS, tmp_path)
    assert _leftovers(tmp_path) == []


def test_connection_dropped_mid_download_is_a_clear_error(tmp_path, monkeypatch):
    class DroppedResponse(FakeResponse):
        def read(self, size=-1):
            raise http.client.IncompleteRead(b"partial", 1000)

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: DroppedResponse(b""))
    with pytest.raises(DigitnetError, match="--data-dir") as info:
        download_file(TRAIN_LABELS, tmp_path)
    assert "7 bytes read, 1000 more expected" in str(info.value)
    assert _leftovers(tmp_path) == []


def test_empty_cache_is_filled_once_then_reused(clean_env, monkeypatch, mnist_dir, capsys):
    files = {p.name: p.read_bytes() for p in mnist_dir.glob("*.gz")}
    asked = _serve(monkeypatch, files)
    paths = ensure_files(None)
    assert sorted(Path(u).name for u in asked) == sorted(files)
    assert {p.parent for p in paths.values()} == {clean_env}
    assert all(paths[name].read_bytes() == files[paths[name].name] for name in paths)
    assert "downloading" in capsys.readouterr().out  # says what it fetches
    assert ensure_files(None) == paths
    assert len(asked) == len(files)  # the second call downloaded nothing
