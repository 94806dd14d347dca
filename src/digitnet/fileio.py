"""Small file helpers: atomic writes (a crash never leaves half a file), content hashes, and reads
of paths that come from data (regular files only, with a size bound)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so no protection against a second writer
    fcntl = None

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


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A new uniquely named folder in `parent` with the permissions of any other folder (mkdtemp
    makes 0700), to be renamed into place once complete."""
    path = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    os.chmod(path, 0o777 & ~_UMASK)
    return path


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


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, busy: str, advice: str = "") -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if missing, 0644) while the block runs.

    The kernel drops the lock when the holder exits in any way (SIGKILL included), so a lock file
    that a dead process left behind never blocks anyone; the file itself stays (deleting it would
    let two processes lock two different files). It holds the holder's process id.

    Raises:
        DigitnetError: another process holds the lock: `busy`, that process's id, `advice`.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                pid = f" (process {holder})" if holder.isdigit() else ""
                raise DigitnetError(f"{busy}{pid}" + (f"; {advice}" if advice else "")) from None
        with contextlib.suppress(OSError):  # the pid is for the message only; a full disk
            os.ftruncate(fd, 0)             # must not stop the lock from working
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
