"""Small file helpers: atomic writes (a crash never leaves half a file), content hashes, and reads
of paths that come from data (regular files only, with a size bound)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
def exclusive_lock(path: str | os.PathLike, busy: str, advice: str = "",
                   remove: bool = False) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if missing, 0644) while the block runs.

    The kernel drops the lock when the holder exits in any way (SIGKILL included), so a lock file
    that a dead process left behind never blocks anyone. The file holds the holder's process id,
    for the message of the next one. With `remove`, the holder deletes it on the way out.

    Raises:
        DigitnetError: another process holds the lock (`busy`, that process and the file, then
            `advice`), or the file cannot be created or locked.
    """
    path = Path(path)
    fd = _acquire_lock(path, busy, advice)
    try:
        yield
    finally:
        if remove:
            path.unlink(missing_ok=True)  # while still holding it: see _acquire_lock
        os.close(fd)


def _acquire_lock(path: Path, busy: str, advice: str) -> int:
    """An open descriptor of `path`, flocked, that is still the file at `path`."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies
        except OSError as e:
            raise DigitnetError(f"cannot create the lock file {path} ({e.strerror or e})") from None
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            who = f"process {holder}" if holder.isdigit() else "another process"
            raise DigitnetError(f"{busy} ({who} holds {path})"
                                + (f"; {advice}" if advice else "")) from None
        except OSError as e:  # e.g. a file system without locks
            os.close(fd)
            raise DigitnetError(f"cannot lock {path} ({e.strerror or e})") from None
        # a holder that removes the file may do so between our open and flock: then we hold a
        # lock on a file nobody else will see, so open the new one instead
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            with contextlib.suppress(OSError):  # the pid is for the message only; a full disk
                os.ftruncate(fd, 0)             # must not stop the lock from working
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)


# ---------------------------------------------------------------------------------------- JSON
MAX_JSON_BYTES = 16 * 1024 * 1024  # configs, summaries and checkpoint metadata are a few kB
MAX_JSON_DEPTH = 64  # levels of nested lists and objects; digitnet writes at most 4
MAX_JSON_VALUES = 10_000_000  # values visited in one document (YAML aliases can share a value)

_KINDS = ((bool, "true or false"), (str, "a string"), (int, "an integer"), (float, "a number"),
          (dict, "an object"), (list, "a list"), (type(None), "null"))


@dataclass(frozen=True)
class Check:
    """A schema entry that also tests the value: `Check(int, lambda v: v >= 1, "an int >= 1")`."""

    spec: object
    test: Callable[[object], bool]
    expected: str


def _expected(spec) -> str:
    if isinstance(spec, Check):
        return spec.expected
    if isinstance(spec, tuple):
        return " or ".join(_expected(s) for s in spec)
    if isinstance(spec, dict):
        return "an object"
    if isinstance(spec, list):
        return f"a list of {_expected(spec[0]).removeprefix('a ').removeprefix('an ')}s"
    if spec is None:
        return "null"
    return dict((t, name) for t, name in _KINDS)[spec]


def describe_value(value) -> str:
    """A short description of a parsed value for an error message (never a huge repr)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return f"an object with {len(value)} key(s)"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item(s)"
    if isinstance(value, (str, int, float)):
        if isinstance(value, int) and abs(value) >= 10**40:
            return "a huge integer"
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return type(value).__name__


def _is(value, typ) -> bool:
    if typ is None:
        return value is None
    if typ is float:  # a finite number; JSON does not tell 1 from 1.0
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typ)


def _mismatch(value, spec, field: str) -> tuple[str, str, bool] | None:
    """(field, expected, missing) of the first place where `value` does not fit `spec`."""
    if isinstance(spec, Check):
        bad = _mismatch(value, spec.spec, field)
        if bad is not None:  # the value itself is wrong: say what the check expects
            return (field, spec.expected, False) if bad[0] == field else bad
        return None if spec.test(value) else (field, spec.expected, False)
    if isinstance(spec, tuple):
        if any(_mismatch(value, s, field) is None for s in spec):
            return None
        return field, _expected(spec), False
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return field, "an object", False
        for key, sub in spec.items():
            name = key.removesuffix("?")
            path = f"{field}.{name}" if field else name
            if name not in value:
                if key.endswith("?"):
                    continue
                return path, _expected(sub), True
            bad = _mismatch(value[name], sub, path)
            if bad is not None:
                return bad
        return None
    if isinstance(spec, list):
        if not isinstance(value, list):
            return field, _expected(spec), False
        for i, item in enumerate(value):
            bad = _mismatch(item, spec[0], f"{field}[{i}]")
            if bad is not None:
                return bad
        return None
    return None if _is(value, spec) else (field, _expected(spec), False)


def _find(value, field: str):
    """The value at a field path such as "files[3].sha256" (for the error message)."""
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", field):
        if not isinstance(value, (dict, list)):
            return None
        if part.startswith("["):
            value = value[int(part[1:-1])]
        else:
            value = value.get(part) if isinstance(value, dict) else None
    return value


def check_json(value, schema, name: str | os.PathLike) -> None:
    """Check a parsed JSON (or YAML) value against `schema`; a DigitnetError names the field.

    A schema is a type (str, int, float: any finite number, bool, dict, list, None), a tuple of
    schemas (any of them), a dict {key: schema} for an object (a key ending in "?" is optional;
    other keys are allowed), a one-item list [schema] for a list of such items, or a `Check`.

    Raises:
        DigitnetError: `NAME: field "arch.name": expected a string, found 3`.
    """
    bad = _mismatch(value, schema, "")
    if bad is None:
        return
    field, expected, missing = bad
    if missing:
        raise DigitnetError(f'{name}: field "{field}" is missing (expected {expected})')
    where = f'field "{field}": ' if field else ""
    found = describe_value(_find(value, field) if field else value)
    raise DigitnetError(f"{name}: {where}expected {expected}, found {found}")


def check_nesting(value, name: str | os.PathLike, max_depth: int = MAX_JSON_DEPTH,
                  max_values: int = MAX_JSON_VALUES) -> None:
    """Refuse values nested deeper than `max_depth`, with more than `max_values` values (YAML
    aliases can make a small file a huge tree), or with text that is not valid Unicode."""
    stack, seen = [(value, 1)], 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if seen > max_values:
            raise DigitnetError(f"{name}: more than {max_values:,} values; expected a small file")
        if isinstance(item, str):
            _check_text(item, name)
        elif isinstance(item, (dict, list)):
            if depth > max_depth:
                raise DigitnetError(f"{name}: nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                for key in item:
                    _check_text(key, name) if isinstance(key, str) else None
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)


def _check_text(text: str, name) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate such as "\\ud800"
            raise DigitnetError(f"{name}: text {describe_value(text)} is not valid "
                                f"Unicode") from None


def parse_json(content: bytes, name: str | os.PathLike, schema=None):
    """Parse UTF-8 JSON text, check its nesting and, with `schema`, its structure.

    Raises:
        DigitnetError: not UTF-8, not JSON, too deep, or not what `schema` expects.
    """
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DigitnetError(f"{name}: not UTF-8 text (invalid byte at offset {e.start})") from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise DigitnetError(f"{name}: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as e:  # JSONDecodeError, or an integer of more than 4,300 digits
        raise DigitnetError(f"{name}: invalid JSON ({e})") from None
    check_nesting(value, name)
    if schema is not None:
        check_json(value, schema, name)
    return value


def read_json(path: str | os.PathLike, what: str = "JSON file", schema=None,
              max_bytes: int = MAX_JSON_BYTES):
    """Read a JSON file that digitnet wrote (or that comes from a user): the one reader.

    Regular files only, at most `max_bytes`, UTF-8, nesting bounded; with `schema`, checked by
    `check_json`.

    Raises:
        DigitnetError: names the file, and the field where the structure is wrong.
    """
    return parse_json(read_regular_bytes(path, max_bytes, what), path, schema)
