"""MNIST from its four IDX files: where they come from, downloading, verification and loading.

The data directory is chosen in this order: an explicit `data_dir` (the `--data-dir` option),
the `DIGITNET_DATA_DIR` environment variable, then a user cache directory that is filled once by
a checksum-verified download.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from digitnet.constants import IMAGE_SIZE, NUM_CLASSES
from digitnet.data.idx import IdxError, parse_idx, read_idx
from digitnet.errors import DigitnetError
from digitnet.fileio import atomic_write_bytes, sha256_bytes, sha256_file

ENV_DATA_DIR = "DIGITNET_DATA_DIR"

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# A download larger than this is refused as it arrives: the largest MNIST file is 9.9 MB gzipped.
MAX_DOWNLOAD_BYTES = 64 * 2**20


@dataclass(frozen=True)
class MnistFile:
    name: str  # standard file name, without .gz
    split: str  # "train" or "test"
    kind: str  # "images" or "labels"
    count: int  # number of examples
    content_sha256: str  # sha256 of the decompressed IDX bytes
    gzip_sha256: str  # sha256 of the .gz file on the public mirrors


MNIST_FILES = (
    MnistFile("train-images-idx3-ubyte", "train", "images", 60_000,
              "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
              "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    MnistFile("train-labels-idx1-ubyte", "train", "labels", 60_000,
              "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
              "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    MnistFile("t10k-images-idx3-ubyte", "test", "images", 10_000,
              "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
              "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    MnistFile("t10k-labels-idx1-ubyte", "test", "labels", 10_000,
              "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
              "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
)


class ChecksumError(DigitnetError):
    """A file whose bytes are not the published MNIST bytes."""


def default_cache_dir() -> Path:
    """The user cache for downloaded MNIST: $XDG_CACHE_HOME/digitnet/mnist or ~/.cache/..."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "digitnet" / "mnist"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> tuple[Path, str]:
    """Choose the MNIST folder: `data_dir`, then $DIGITNET_DATA_DIR, then the user cache.

    Returns:
        The folder and where the choice came from ("--data-dir", "DIGITNET_DATA_DIR" or "cache").
    """
    if data_dir:
        return Path(data_dir).expanduser(), "--data-dir"
    if os.environ.get(ENV_DATA_DIR):
        return Path(os.environ[ENV_DATA_DIR]).expanduser(), ENV_DATA_DIR
    return default_cache_dir(), "cache"


def find_file(data_dir: Path, f: MnistFile) -> Path | None:
    """The file for `f` in `data_dir`, gzip-compressed or raw, or None.

    Anything but a folder counts, so that a FIFO or device under the name is refused by the reader
    with a message, not taken for a missing file.
    """
    for name in (f.name + ".gz", f.name):
        if (data_dir / name).exists() and not (data_dir / name).is_dir():
            return data_dir / name
    return None


def verify_checksum(path: Path, f: MnistFile, content_sha256: str,
                    raw_sha256: str | None = None) -> str:
    """Accept the mirror's gzip sha256 or the sha256 of the decompressed content.

    Args:
        path: the file, named in errors (and hashed as stored when `raw_sha256` is None).
        content_sha256: the sha256 of the decompressed IDX bytes (see `read_idx`'s `hasher`).
        raw_sha256: the sha256 of the file's bytes as stored, if already known.

    Returns:
        Which checksum matched ("content" or "gzip").

    Raises:
        ChecksumError: neither matches.
    """
    if content_sha256 == f.content_sha256:
        return "content"
    if raw_sha256 is None and path.suffix == ".gz" and path.is_file():
        raw_sha256 = sha256_file(path)  # streamed: the file is never in memory twice
    if raw_sha256 == f.gzip_sha256:
        return "gzip"
    raise ChecksumError(
        f"{path}: checksum mismatch: content sha256 {content_sha256[:16]}... is not the "
        f"published MNIST {f.name} ({f.content_sha256[:16]}...); the file is corrupt or not MNIST"
    )


def _read_download(response, url: str) -> bytes:
    """The body of `response`, refused past MAX_DOWNLOAD_BYTES as it arrives."""
    total = int(response.headers.get("Content-Length") or 0) or None
    if total is not None and total > MAX_DOWNLOAD_BYTES:
        raise DigitnetError(f"{url}: {total:,} bytes, more than the {MAX_DOWNLOAD_BYTES:,} "
                            f"bytes an MNIST file can be")
    chunks, got = [], 0
    desc = f"download {url.rsplit('/', 1)[-1]}"
    with tqdm(total=total, unit="B", unit_scale=True, desc=desc) as bar:
        for chunk in iter(lambda: response.read(1 << 16), b""):
            got += len(chunk)
            if got > MAX_DOWNLOAD_BYTES:
                raise DigitnetError(f"{url}: more than the {MAX_DOWNLOAD_BYTES:,} bytes an MNIST "
                                    f"file can be")
            chunks.append(chunk)
            bar.update(len(chunk))
    return b"".join(chunks)


def download_file(f: MnistFile, dest_dir: Path, mirrors=MIRRORS, timeout: float = 30.0) -> Path:
    """Download `f` from the first mirror that answers, verify it, and write it atomically.

    Raises:
        DigitnetError: no mirror could be reached (with how to point digitnet at local files),
            or every download failed its checksum.
    """
    errors = []
    for mirror in mirrors:
        url = mirror + f.name + ".gz"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                raw = _read_download(response, url)
        # HTTPException: a connection dropped mid-body raises http.client.IncompleteRead
        except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as e:
            errors.append(f"{url}: {getattr(e, 'reason', e)}")
            continue
        except DigitnetError as e:
            errors.append(str(e))
            continue
        dest = dest_dir / (f.name + ".gz")
        try:
            content_hash = hashlib.sha256()
            parse_idx(raw, name=url, hasher=content_hash)  # bounded, like every IDX read
            verify_checksum(dest, f, content_hash.hexdigest(), raw_sha256=sha256_bytes(raw))
        except DigitnetError as e:
            errors.append(f"{url}: {e}")
            continue
        atomic_write_bytes(dest, raw)
        return dest
    raise DigitnetError(
        f"could not download {f.name}.gz into {dest_dir}:\n  " + "\n  ".join(errors) + "\n"
        f"If this machine is offline, copy the four MNIST IDX files into a folder and point "
        f"digitnet at it with --data-dir DIR or the {ENV_DATA_DIR} environment variable."
    )


def ensure_files(data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Paths of the four MNIST files; downloads them into the cache when it is the source.

    Raises:
        DigitnetError: a file is missing from an explicit folder, or cannot be downloaded.
    """
    folder, source = resolve_data_dir(data_dir)
    paths = {}
    for f in MNIST_FILES:
        path = find_file(folder, f)
        if path is None:
            if source != "cache":
                raise DigitnetError(
                    f"{folder / (f.name + '.gz')}: MNIST file not found (data directory chosen by "
                    f"{source}); expected {f.name}.gz or {f.name} there"
                )
            folder.mkdir(parents=True, exist_ok=True)
            print(f"MNIST cache {folder} is missing {f.name}; downloading it")
            path = download_file(f, folder)
        paths[f.name] = path
    return paths


@dataclass
class Mnist:
    """MNIST in memory as uint8 tensors: images (N, 28, 28), labels (N,) as int64."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    data_dir: Path
    sha256: dict[str, str]  # content sha256 of each file, recorded with every trained model


def check_images(images: np.ndarray, name: str | os.PathLike) -> None:
    """MNIST-format images: uint8 of shape (N, 28, 28).

    Raises:
        IdxError: another type (float images too) or shape, naming `name`.
    """
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise IdxError(
            f"{name}: expected uint8 images of shape (N, {IMAGE_SIZE}, {IMAGE_SIZE}), "
            f"got {images.dtype} {images.shape}"
        )


def check_labels(labels: np.ndarray, name: str | os.PathLike) -> None:
    """MNIST-format labels: integers 0-9 of shape (N,); float types (NaN, 2.5) are refused.

    Raises:
        IdxError: another type or shape, or a label out of range, naming `name` and the first.
    """
    if labels.dtype.kind not in "ui" or labels.ndim != 1:
        raise IdxError(f"{name}: expected integer labels 0-{NUM_CLASSES - 1} of shape (N,) "
                       f"(IDX type 0x08, unsigned byte), got {labels.dtype} {labels.shape}")
    bad = np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))
    if bad.size:
        raise IdxError(f"{name}: label {int(labels[bad[0]])} out of range 0-{NUM_CLASSES - 1} "
                       f"(at index {int(bad[0])}; {bad.size} such labels)")


def _check_array(array: np.ndarray, path: Path, f: MnistFile) -> None:
    if f.kind == "images":
        check_images(array, path)
    elif array.dtype != np.uint8 or array.ndim != 1:  # the published files are uint8
        raise IdxError(f"{path}: expected uint8 labels of shape (N,), got {array.dtype} "
                       f"{array.shape}")
    else:
        check_labels(array, path)


def load_mnist(data_dir: str | os.PathLike | None = None, verify: bool = False) -> Mnist:
    """Load all of MNIST into memory (about a second) with format and count checks.

    Args:
        data_dir: folder with the four files; None follows $DIGITNET_DATA_DIR, then the cache.
        verify: also require the published checksums (always done for downloaded files).

    Raises:
        IdxError, ChecksumError, DigitnetError: with the file and what is wrong.
    """
    paths = ensure_files(data_dir)
    arrays, sha = {}, {}
    for f in MNIST_FILES:
        path = paths[f.name]
        content_hash = hashlib.sha256()
        array = read_idx(path, hasher=content_hash)
        sha[f.name] = content_hash.hexdigest()
        if verify:
            verify_checksum(path, f, sha[f.name])
        _check_array(array, path, f)
        arrays[f.split, f.kind] = (array, path)
    for split in ("train", "test"):
        (images, ipath), (labels, lpath) = arrays[split, "images"], arrays[split, "labels"]
        if len(images) != len(labels):
            raise IdxError(
                f"{ipath} has {len(images)} images but {lpath} has {len(labels)} labels; they "
                f"must agree"
            )
    return Mnist(
        train_images=torch.from_numpy(arrays["train", "images"][0].copy()),
        train_labels=torch.from_numpy(arrays["train", "labels"][0].astype(np.int64)),
        test_images=torch.from_numpy(arrays["test", "images"][0].copy()),
        test_labels=torch.from_numpy(arrays["test", "labels"][0].astype(np.int64)),
        data_dir=paths[MNIST_FILES[0].name].parent,
        sha256=sha,
    )


def verify_mnist(data_dir: str | os.PathLike | None = None) -> list[dict]:
    """Check every MNIST file: format, example count, and checksum.

    Returns:
        One row per file with `file`, `ok`, and `detail` (what matched or what is wrong).
    """
    folder, source = resolve_data_dir(data_dir)
    rows = []
    for f in MNIST_FILES:
        path = find_file(folder, f)
        if path is None:
            rows.append(dict(file=str(folder / (f.name + ".gz")), ok=False, detail="missing"))
            continue
        try:
            content_hash = hashlib.sha256()
            array = read_idx(path, hasher=content_hash)
            _check_array(array, path, f)
            if len(array) != f.count:
                raise IdxError(f"{path}: {len(array)} examples, expected {f.count}")
            matched = verify_checksum(path, f, content_hash.hexdigest())
        except DigitnetError as e:
            rows.append(dict(file=str(path), ok=False, detail=str(e)))
            continue
        shape = "x".join(str(d) for d in array.shape)
        detail = f"{shape} {array.dtype}, sha256 ({matched}) ok"
        rows.append(dict(file=str(path), ok=True, detail=detail))
    return rows
