"""The model reference grammar: the one parser from the text a user types to a typed reference.

    hf://USER/NAME[@REVISION]     a model on the Hugging Face Hub (HubRef)
    PATH[@CHECKPOINT]             a model, checkpoint or export folder (PathRef)
    latest[@CHECKPOINT]           the newest model of any architecture (LatestRef)
    ARCH-vN/RUN[@CHECKPOINT]      a run of the store; RUN may be `latest` or a glob (StoreRef)

CHECKPOINT is `last`, `best`, `epoch-N` (also `epochN` or `N`) or, where several models are
taken, `all` (every epoch checkpoint of the run). A path is explicit when it is absolute or starts
with `./`, `../` or `~`; any other text is a path only when it is an existing folder with no `..`
in it, else a store reference, whose RUN is one folder name (never `..`, never with a `/`).
Parsing looks at the file system only for that rule; what a reference names is found by
`digitnet.store.catalog.resolve_ref`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from digitnet.errors import DigitnetError

HUB_PREFIX = "hf://"
ARCH_ID_PATTERN = r"[A-Za-z0-9][\w.-]*-v\d+"
ALL_CHECKPOINTS = "all"  # REF@all: every epoch checkpoint of a run
GLOB_CHARS = "*?["
_EPOCH = re.compile(r"(?:epoch-?)?(\d+)")
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_REVISION = re.compile(r"[A-Za-z0-9][\w.+/-]*", re.ASCII)


@dataclass(frozen=True)
class PathRef:
    text: str  # as typed
    path: Path  # `~` expanded, not resolved
    checkpoint: str | None


@dataclass(frozen=True)
class LatestRef:
    text: str
    checkpoint: str | None


@dataclass(frozen=True)
class StoreRef:
    text: str
    arch_id: str
    run: str  # one folder name, "latest", or a glob of folder names
    checkpoint: str | None

    @property
    def is_glob(self) -> bool:
        return any(c in self.run for c in GLOB_CHARS)


@dataclass(frozen=True)
class HubRef:
    text: str
    repo_id: str
    revision: str | None


Ref = PathRef | LatestRef | StoreRef | HubRef


def is_explicit_path(base: str) -> bool:
    """A reference that is a path, whatever else exists: absolute, or `./`, `../`, `~`."""
    return (Path(base).is_absolute() or base in (".", "..", "~")
            or base.startswith(("./", "../", "~/", ".\\", "..\\")))


def _is_path(base: str) -> bool:
    """Explicit, or an existing folder named without `..` (so `cnn-v1/../..` never counts)."""
    if is_explicit_path(base):
        return True
    return ".." not in Path(base).parts and Path(base).is_dir()


def parse_ref(ref: str) -> Ref:
    """Parse a model reference (see the module docstring).

    Raises:
        DigitnetError: a Hub reference with an invalid repository or revision, or text that is
            neither a path nor ARCH-vN/RUN with RUN one folder name of the store.
    """
    if ref.startswith(HUB_PREFIX):
        return HubRef(ref, *parse_hub_ref(ref))
    base, _, checkpoint = ref.partition("@")
    checkpoint = checkpoint or None
    if _is_path(base):
        return PathRef(ref, Path(base).expanduser(), checkpoint)
    if base == "latest":
        return LatestRef(ref, checkpoint)
    arch_id, sep, run = base.partition("/")
    if not sep or not re.fullmatch(ARCH_ID_PATTERN, arch_id):
        raise DigitnetError(
            f"model reference {ref!r}: expected ARCH-vN/RUN, ARCH-vN/latest (optionally with "
            f"@last, @best or @epoch-N) or the path to a model folder"
        )
    if not run or run in (".", "..") or any(c in run for c in "/\\\0"):
        raise DigitnetError(
            f"model reference {ref!r}: the run name {run!r} is not one folder name of the store; "
            f"a path to a folder elsewhere must start with /, ./, ../ or ~"
        )
    return StoreRef(ref, arch_id, run, checkpoint)


def may_be_glob(ref: str) -> bool:
    """Whether `ref` has a glob character after its first `/` and before any `@` (only such a
    reference can name several runs; `parse_ref` then says whether it is one)."""
    _, sep, rest = ref.partition("@")[0].partition("/")
    return bool(sep) and any(c in rest for c in GLOB_CHARS)


def checkpoint_epoch(which: str) -> int | None:
    """The epoch a checkpoint name gives (`epoch-N`, `epochN` or `N`); None for any other name."""
    m = _EPOCH.fullmatch(which)
    return int(m.group(1)) if m else None


# --------------------------------------------------------------------------------- Hub names
def check_repo_id(repo_id: str, what: str) -> None:
    """USER/NAME, by digitnet's rule and by the Hub's own validator (`validate_repo_id`).

    Raises:
        DigitnetError: `what` (the option or reference) and why the Hub would refuse it.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not _REPO_ID.fullmatch(repo_id):
        raise DigitnetError(f"{what}: expected USER/NAME")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        reason = str(e).splitlines()[0].rsplit(": '", 1)[0].rstrip(".:")
        raise DigitnetError(f"{what}: the Hub does not accept {repo_id!r} as USER/NAME "
                            f"({reason})") from None


def check_revision(revision: str, what: str) -> None:
    """A branch, tag or commit as git names them (`git check-ref-format`, simplified): the Hub
    client also uses it as a path in its cache, so `..` and the like must never reach it."""
    parts = revision.split("/")
    if (len(revision) > 255 or not _REVISION.fullmatch(revision)
            or any(not p or p.startswith(".") or p.endswith(".lock") for p in parts)
            or ".." in revision or revision.endswith(".")):
        raise DigitnetError(f"{what}: {revision!r} is not a branch, tag or commit name (letters, "
                            f"digits and - _ . + / only, no '..', no part starting with '.')")


def parse_hub_ref(ref: str) -> tuple[str, str | None]:
    """`hf://USER/NAME[@REVISION]` -> (repo_id, revision)."""
    repo_id, at, revision = ref.removeprefix(HUB_PREFIX).partition("@")
    what = f"model reference {ref!r}"
    if not _REPO_ID.fullmatch(repo_id):
        raise DigitnetError(f"{what}: expected hf://USER/NAME or hf://USER/NAME@REVISION")
    check_repo_id(repo_id, what)
    if at and not revision:
        raise DigitnetError(f"{what}: nothing after '@'; expected hf://USER/NAME@REVISION")
    if revision:
        check_revision(revision, what)
    return repo_id, revision or None
