"""Checkpoints: one folder per finished epoch, written atomically, loaded without pickle.

    checkpoints/epoch-003/model.safetensors   weights (safetensors)
    checkpoints/epoch-003/state.pt            optimizer, scheduler, RNG states (weights_only load)
    checkpoints/epoch-003/meta.json           epoch, metrics, calibration, sha256 of both files, and
                                              the run's config (all that rebuilds the model)
    checkpoints/pointers.json                 {"last": "epoch-003", "best": "epoch-002", ...}

A folder is written under a temporary name and renamed into place only when complete, and the
pointers are replaced atomically afterwards: a crash or a full disk at any moment leaves the
previous checkpoint intact and findable. Temporary names start with "." (TEMPORARY names them all);
`remove_temporaries` deletes what a killed writer left. Files get the permissions of any other
file (0644 under the usual umask 022), folders those of any other folder (0755).
"""

from __future__ import annotations

import io
import os
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from digitnet.calibration import CALIBRATION_SCHEMA, Calibration, calibration_from_dict
from digitnet.errors import DigitnetError, first_line
from digitnet.fileio import (
    Check,
    atomic_write_bytes,
    atomic_write_json,
    check_regular_file,
    make_temp_dir,
    read_json,
    sha256_file,
)
from digitnet.store.refs import checkpoint_epoch
from digitnet.store.weights import WEIGHTS_FILE, CheckpointError, load_state_dict, save_state_dict

CHECKPOINT_FORMAT_VERSION = 1  # of meta.json and state.pt
STATE_FILE = "state.pt"
META_FILE = "meta.json"
POINTERS_FILE = "pointers.json"
_EPOCH_DIR = re.compile(r"^epoch-(\d+)$")
TMP_PREFIX = ".tmp-"  # checkpoint folders being written or being replaced
# what a writer that died left behind: our temporary folders, fileio's `.NAME.XXXX.tmp` files, and
# the `.epoch-NNN.XXXX` and `.stale-*` folders of earlier digitnet versions
TEMPORARY = re.compile(r"^\.(tmp-.*|.*\.tmp|epoch-\d+\..+|stale-.*)$")
META_SCHEMA = {  # what loading needs from meta.json (save_checkpoint also writes the metrics)
    "format_version?": int,
    "epoch": Check(int, lambda v: v >= 1, "an integer >= 1"),
    "sha256": Check(dict, lambda v: set(v) == {WEIGHTS_FILE, STATE_FILE} and all(
        isinstance(h, str) for h in v.values()),
        f"an object with the sha256 of {WEIGHTS_FILE} and {STATE_FILE}"),
    "metrics?": dict,
    "calibration?": CALIBRATION_SCHEMA,  # absent in checkpoints written before calibration
    "config?": dict,  # the run's config.json; absent before issue 15 (checked by the loader)
}


def epoch_dir_name(epoch: int) -> str:
    return f"epoch-{epoch:03d}"


def save_checkpoint(
    checkpoints_dir: Path,
    epoch: int,
    model_state: dict[str, torch.Tensor],
    training_state: dict,
    meta: dict,
) -> Path:
    """Write the checkpoint of a finished epoch (1-based); `write_pointers` then names it `last`.

    Args:
        training_state: optimizer and scheduler state dicts, RNG states, counters; only tensors
            and Python primitives, so that it loads with `weights_only=True`.
        meta: JSON-able facts (metrics, config digest) stored in meta.json.

    Raises:
        OSError: the folder cannot be written (a full disk: errno ENOSPC); its temporary folder
            is removed and the previous checkpoints are untouched.
    """
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoints_dir / epoch_dir_name(epoch)
    tmp = make_temp_dir(checkpoints_dir, f"{TMP_PREFIX}{final.name}.")
    try:
        save_state_dict(model_state, tmp / WEIGHTS_FILE)
        state = io.BytesIO()  # in memory, then written by fileio (see save_state_dict)
        torch.save({"format_version": CHECKPOINT_FORMAT_VERSION, "epoch": epoch,
                    **training_state}, state)
        atomic_write_bytes(tmp / STATE_FILE, state.getvalue())
        sha = {name: sha256_file(tmp / name) for name in (WEIGHTS_FILE, STATE_FILE)}
        atomic_write_json(tmp / META_FILE, {"format_version": CHECKPOINT_FORMAT_VERSION,
                                            "epoch": epoch, "sha256": sha, **meta})
        if final.exists():  # a stale checkpoint of a run resumed from an earlier epoch
            stale = make_temp_dir(checkpoints_dir, f"{TMP_PREFIX}stale-{final.name}.")
            os.replace(final, stale / final.name)
            shutil.rmtree(stale)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def write_checkpoint_calibration(path: Path, record: dict) -> None:
    """Replace the calibration record in a checkpoint's meta.json (atomically); the weights and
    the training state, whose sha256 meta.json holds, are not touched.

    Raises:
        CheckpointError: the checkpoint is incomplete, corrupt or tampered with.
    """
    meta = verify_checkpoint(path)
    atomic_write_json(path / META_FILE, {**meta, "calibration": record})


def remove_temporaries(*folders: Path) -> list[Path]:
    """Delete the temporary files and folders (TEMPORARY) that a killed writer left in `folders`.

    Only call it while holding the run's lock: a live writer's temporaries look the same.

    Returns:
        What was removed.
    """
    removed = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if not TEMPORARY.match(p.name):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def read_pointers(checkpoints_dir: Path) -> dict[str, str]:
    """{"last": "epoch-003", "best": "epoch-002"}; an unreadable file or entry is left out (the
    last checkpoint is found from the epoch folders by `list_checkpoints` instead)."""
    path = checkpoints_dir / POINTERS_FILE
    if not path.exists():
        return {}
    try:
        pointers = read_json(path, "checkpoint pointers")
    except DigitnetError:
        return {}
    if not isinstance(pointers, dict):
        return {}
    return {k: v for k, v in pointers.items() if isinstance(v, str) and _EPOCH_DIR.match(v)}


def write_pointers(checkpoints_dir: Path, **pointers) -> None:
    current = read_pointers(checkpoints_dir)
    current.update(pointers)
    atomic_write_json(checkpoints_dir / POINTERS_FILE, current)


def list_checkpoints(checkpoints_dir: Path) -> list[int]:
    """Epochs with a complete checkpoint folder, ascending."""
    if not checkpoints_dir.is_dir():
        return []
    epochs = []
    for p in checkpoints_dir.iterdir():
        m = _EPOCH_DIR.match(p.name)
        if m and p.is_dir() and (p / META_FILE).is_file():
            epochs.append(int(m.group(1)))
    return sorted(epochs)


def last_checkpoint_epoch(checkpoints_dir: Path) -> int:
    """The epoch of the checkpoint that `last` (and so a resume) names; 0 when there is none."""
    try:
        m = _EPOCH_DIR.match(resolve_checkpoint(checkpoints_dir, "last").name)
    except CheckpointError:
        return 0
    return int(m.group(1)) if m else 0


def resolve_checkpoint(checkpoints_dir: Path, which: str = "last") -> Path:
    """The folder for "last", "best", "epoch-N" or "N".

    Raises:
        CheckpointError: nothing matches, listing what exists.
    """
    epochs = list_checkpoints(checkpoints_dir)
    if not epochs:
        raise CheckpointError(f"{checkpoints_dir}: no checkpoints")
    pointers = read_pointers(checkpoints_dir)
    if which in ("last", "best"):
        name = pointers.get(which)
        if not (isinstance(name, str) and _EPOCH_DIR.match(name)):  # never a path out of here
            name = epoch_dir_name(epochs[-1]) if which == "last" else None
        if name is None or not (checkpoints_dir / name).is_dir():
            raise CheckpointError(f"{checkpoints_dir}: no '{which}' checkpoint recorded")
        return checkpoints_dir / name
    epoch = checkpoint_epoch(which)
    if epoch in epochs:
        return checkpoints_dir / epoch_dir_name(epoch)
    available = ", ".join(epoch_dir_name(e) for e in epochs)
    raise CheckpointError(f"{checkpoints_dir}: no checkpoint {which!r}; available: last, best, "
                          f"{available}")


@dataclass
class Checkpoint:
    path: Path
    epoch: int  # the number of finished epochs
    model_state: dict[str, torch.Tensor]
    training_state: dict
    meta: dict

    @property
    def calibration(self) -> Calibration | None:
        """The calibration fitted for these weights; None in checkpoints written before
        calibration."""
        recorded = self.meta.get("calibration")
        return calibration_from_dict(recorded, self.path / META_FILE) if recorded else None


def verify_checkpoint(path: Path) -> dict:
    """Check a checkpoint folder's files against the sha256 in its meta.json; return the meta.

    Raises:
        CheckpointError: a file is missing or its content changed since it was written.
    """
    if not (path / META_FILE).exists():
        raise CheckpointError(f"{path}: incomplete checkpoint, {META_FILE} missing")
    try:
        meta = read_json(path / META_FILE, "checkpoint metadata", META_SCHEMA)
    except DigitnetError as e:
        raise CheckpointError(f"{e} (corrupt or tampered)") from None
    m = _EPOCH_DIR.match(path.name)
    if m and meta["epoch"] != int(m.group(1)):
        raise CheckpointError(f"{path / META_FILE}: corrupt or tampered (epoch "
                              f"{meta['epoch']!r} in a checkpoint folder named {path.name})")
    for name, expected in meta["sha256"].items():
        file = path / name
        if not file.exists():
            raise CheckpointError(f"{file}: missing from checkpoint")
        try:
            check_regular_file(file, "checkpoint file")
        except DigitnetError as e:
            raise CheckpointError(str(e)) from None
        if sha256_file(file) != expected:
            raise CheckpointError(f"{file}: corrupt or tampered (sha256 differs from {META_FILE})")
    return meta


def load_training_state(path: Path) -> dict:
    """torch.load with weights_only=True: a payload that would run code is refused, not run."""
    try:
        check_regular_file(path, "training state")
    except DigitnetError as e:
        raise CheckpointError(str(e)) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to load: the file holds objects other than tensors and plain data "
            f"(possible code execution payload): {str(e).splitlines()[0]}"
        ) from None
    except Exception as e:  # a damaged file fails in torch's unpickler in many ways (IndexError,
        # KeyError, TypeError, ...); none of them runs code
        detail = first_line(e)
        raise CheckpointError(f"{path}: corrupt training state ({detail})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: corrupt training state (expected a dict, found "
                              f"{type(state).__name__})")
    return state


def load_checkpoint(path: Path, with_training_state: bool = True) -> Checkpoint:
    """Verify and load a checkpoint folder (weights, and optionally optimizer/RNG state)."""
    meta = verify_checkpoint(path)
    model_state = load_state_dict(path / WEIGHTS_FILE)
    training_state = load_training_state(path / STATE_FILE) if with_training_state else {}
    return Checkpoint(path, int(meta["epoch"]), model_state, training_state, meta)


def load_latest_good(checkpoints_dir: Path, which: str = "last") -> tuple[Checkpoint, list[str]]:
    """Load `which`; if it is corrupt, fall back to the newest earlier checkpoint that is good.

    Returns:
        The checkpoint and a list of warnings about the checkpoints that were skipped.
    """
    first = resolve_checkpoint(checkpoints_dir, which)
    m = _EPOCH_DIR.match(first.name)
    candidates = [first] + [
        checkpoints_dir / epoch_dir_name(e)
        for e in reversed(list_checkpoints(checkpoints_dir))
        if m and e < int(m.group(1))
    ]
    warnings = []
    for path in candidates:
        try:
            return load_checkpoint(path), warnings
        except CheckpointError as e:
            warnings.append(f"skipping bad checkpoint: {e}")
    raise CheckpointError(f"{checkpoints_dir}: no loadable checkpoint:\n  " + "\n  ".join(warnings))
