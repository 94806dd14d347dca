"""Small file helpers: atomic writes (a crash never leaves half a file), content hashes, and reads
of paths that come from data (regular files only, with a size bound)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path

from digitnet.errors import DigitnetError

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write_bytes(path: str | os.PathLike, content: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_bytes(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_regular_file(path: str | os.PathLike, what: str = "file") -> Path:
    """`path` if it is a regular file (symlinks followed); else a DigitnetError naming it.

    A FIFO, a device such as /dev/zero, a socket or a folder would hang or never end a read, so
    every path that comes from data (a CSV row, a folder listing, a glob) goes through this first.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DigitnetError(f"{path}: {what} not found") from None
    except OSError as e:
        raise DigitnetError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise DigitnetError(f"{path}: expected a regular {what}, found {kind}")
    return path


def read_regular_bytes(path: str | os.PathLike, max_bytes: int, what: str = "file") -> bytes:
    """The contents of regular file `path`, refusing more than `max_bytes` without reading them."""
    path = check_regular_file(path, what)
    try:
        with open(path, "rb") as f:
            content = f.read(max_bytes + 1)
    except OSError as e:
        raise DigitnetError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    if len(content) > max_bytes:
        raise DigitnetError(f"{path}: {what} larger than the limit of {max_bytes:,} bytes")
    return content
