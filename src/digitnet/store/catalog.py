"""The store's folder of runs: where it is, what it holds, and which folder a reference names.

A store reference always names a folder inside the store (`models_root`); references are parsed
by `digitnet.store.refs.parse_ref` only.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import replace
from pathlib import Path

from digitnet.errors import DigitnetError
from digitnet.fileio import read_json
from digitnet.store.checkpoint import META_FILE, epoch_dir_name, list_checkpoints
from digitnet.store.loaded import ModelRef
from digitnet.store.refs import (
    ALL_CHECKPOINTS,
    HubRef,
    LatestRef,
    PathRef,
    Ref,
    StoreRef,
    may_be_glob,
    parse_ref,
)
from digitnet.store.run import CHECKPOINTS_DIR, CONFIG_FILE, has_weights

ENV_MODELS_DIR = "DIGITNET_MODELS_DIR"


def models_root(models_dir: str | os.PathLike | None = None) -> Path:
    """`models_dir`, else $DIGITNET_MODELS_DIR, else ./models."""
    return Path(models_dir or os.environ.get(ENV_MODELS_DIR) or "models")


def list_runs(models_dir: str | os.PathLike | None = None,
              arch_id: str | None = None) -> list[Path]:
    """Model folders in the store, oldest first (by the time recorded in config.json)."""
    root = models_root(models_dir)
    if not root.is_dir():
        return []
    runs = []
    for arch_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if arch_id and arch_dir.name != arch_id:
            continue
        for run in arch_dir.iterdir():
            if (run / CONFIG_FILE).is_file():
                runs.append(run)

    def created(run: Path) -> str:
        try:
            config = read_json(run / CONFIG_FILE, "run config")
        except DigitnetError:  # listed anyway; loading it says what is wrong
            return ""
        created = config.get("created") if isinstance(config, dict) else None
        return created if isinstance(created, str) else ""

    return sorted(runs, key=lambda r: (created(r), r.name))


def _newest_run(root: Path, arch_id: str | None, ref: str) -> Path:
    """The most recent run (of `arch_id`, or of any architecture) that has weights."""
    runs = [r for r in list_runs(root, arch_id) if has_weights(r)]
    if not runs:
        what = f"{arch_id} model" if arch_id else "model"
        raise DigitnetError(f"model reference {ref!r}: no trained {what} in {root}")
    return runs[-1]


def resolve_ref(ref: str | Ref, models_dir: str | os.PathLike | None = None) -> ModelRef:
    """Turn a reference into a model folder and a checkpoint name.

    Raises:
        DigitnetError: nothing matches (says what exists), a store reference that would leave
            the store, or a Hub reference (it names no folder of the store).
    """
    parsed = parse_ref(ref) if isinstance(ref, str) else ref
    text, checkpoint = parsed.text, getattr(parsed, "checkpoint", None)
    if isinstance(parsed, HubRef):
        raise DigitnetError(f"model reference {text!r}: a model on the Hub, not a run of the "
                            f"store")
    if isinstance(parsed, PathRef):
        path = parsed.path
        if not path.is_dir():
            raise DigitnetError(f"model reference {text!r}: {path} is not a folder")
        if (path / CONFIG_FILE).is_file():
            return ModelRef(path.resolve(), checkpoint)
        if (path / META_FILE).is_file() and path.parent.name == CHECKPOINTS_DIR:
            return ModelRef(path.parent.parent.resolve(), path.name)
        raise DigitnetError(f"{path}: not a model folder (no {CONFIG_FILE}) or checkpoint folder")
    root = models_root(models_dir)
    if isinstance(parsed, LatestRef):
        return ModelRef(_newest_run(root, None, text).resolve(), checkpoint)
    assert isinstance(parsed, StoreRef)
    if parsed.run == "latest":
        return ModelRef(_newest_run(root, parsed.arch_id, text).resolve(), checkpoint)
    run_dir = root / parsed.arch_id / parsed.run
    if not (run_dir / CONFIG_FILE).is_file():
        known = [r.name for r in list_runs(root, parsed.arch_id)]
        hint = (f"; {parsed.arch_id} models: {', '.join(known[-10:])}" if known
                else f"; no {parsed.arch_id} models in {root}")
        raise DigitnetError(f"model reference {text!r}: {run_dir} not found{hint}")
    return ModelRef(run_dir.resolve(), checkpoint)


def expand_refs(refs: list[str], models_dir: str | os.PathLike | None = None) -> list[str]:
    """Expand references whose run name is a glob (`wide-v1/ens-*`, `cnn-v1/*@best`) into one
    `ARCH-vN/RUN` reference per matching run, oldest first; other references pass unchanged.

    Raises:
        DigitnetError: a pattern matches no run, or is not one folder name of the store.
    """
    root = models_root(models_dir)
    out = []
    for ref in refs:
        parsed = parse_ref(ref) if may_be_glob(ref) else None
        if not (isinstance(parsed, StoreRef) and parsed.is_glob):
            out.append(ref)
            continue
        at = f"@{parsed.checkpoint}" if parsed.checkpoint else ""
        runs = [r.name for r in list_runs(root, parsed.arch_id)
                if fnmatch.fnmatchcase(r.name, parsed.run)]
        if not runs:
            raise DigitnetError(f"model reference {ref!r}: no {parsed.arch_id} run in {root} "
                                f"matches {parsed.run!r}")
        out += [f"{parsed.arch_id}/{run}{at}" for run in runs]
    return out


def expand_checkpoints(refs: list[str], models_dir: str | os.PathLike | None = None) -> list[str]:
    """`REF@all` stands for every epoch checkpoint of that run, in order (as paths); other
    references pass unchanged."""
    expanded = []
    for ref in refs:
        parsed = parse_ref(ref)
        if getattr(parsed, "checkpoint", None) != ALL_CHECKPOINTS:
            expanded.append(ref)
            continue
        run_dir = resolve_ref(replace(parsed, checkpoint=None), models_dir).run_dir
        epochs = list_checkpoints(run_dir / CHECKPOINTS_DIR)
        expanded += [f"{run_dir}@{epoch_dir_name(e)}" for e in epochs]
    return expanded
