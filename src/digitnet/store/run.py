"""A run folder: the only code that writes it, and reads what it wrote.

    models/cnn-v1/20261125-120000/
        config.json          architecture, hyperparameters, data checksums, library versions
        metrics.jsonl        one line per finished epoch
        model.safetensors    final weights (written when training finishes)
        summary.json         final metrics
        checkpoints/         one folder per epoch, plus pointers to the best and the last
        train.lock           held by the process that trains into the folder

Training goes through a `Run`: create the folder (config.json, lock), append a metrics row, save
a checkpoint and its pointers, finish (final weights and summary), or reopen a run to resume it.
A write that fails (a full disk) raises one DigitnetError naming the last good checkpoint.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from digitnet.calibration import CALIBRATION_SCHEMA
from digitnet.errors import DigitnetError
from digitnet.fileio import (
    MAX_JSON_BYTES,
    atomic_write_json,
    atomic_write_text,
    check_json,
    exclusive_lock,
    parse_json,
    read_json,
    read_regular_bytes,
)
from digitnet.store.checkpoint import (
    META_FILE,
    Checkpoint,
    epoch_dir_name,
    last_checkpoint_epoch,
    list_checkpoints,
    load_latest_good,
    remove_temporaries,
    save_checkpoint,
    write_pointers,
)
from digitnet.store.records import ARCH_SCHEMA, DATA_CONFIG_SCHEMA, _at_least
from digitnet.store.weights import WEIGHTS_FILE, save_state_dict

RUN_FORMAT_VERSION = 1  # of config.json
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINTS_DIR = "checkpoints"
LOCK_FILE = "train.lock"  # held by the process that trains into the run folder

# What loading needs from a run's files (other keys are kept but not relied on).
RUN_CONFIG_SCHEMA = {"format_version?": int, "arch": ARCH_SCHEMA,
                     "data_config": DATA_CONFIG_SCHEMA, "train?": {"val_size?": _at_least(0)},
                     "data?": dict, "env?": dict, "created?": (str, None), "ref?": (str, None)}
SUMMARY_SCHEMA = {"epochs_done?": _at_least(0), "test_acc?": (float, None),
                  "calibration?": CALIBRATION_SCHEMA}
METRICS_ROW_SCHEMA = {"epoch": _at_least(1), "seconds?": float, "val_acc?": (float, None)}
_FAILED_WRITE = {errno.ENOSPC: "no space left on {}", errno.EDQUOT: "disk quota exceeded on {}",
                 errno.EROFS: "{} is on a read-only file system"}
T = TypeVar("T")


# -------------------------------------------------------------------------------------- reading
def read_run_config(run_dir: Path) -> dict:
    """A run's config.json, checked to hold what loading and resuming need.

    Raises:
        DigitnetError: unreadable, not JSON, or a field missing or of the wrong type (named).
    """
    return read_json(run_dir / CONFIG_FILE, "run config", RUN_CONFIG_SCHEMA)


def checkpoint_config(path: Path, meta: dict) -> dict:
    """The run config a checkpoint folder was written with: its own copy in meta.json, so that
    the folder rebuilds its model by itself. Checkpoints written before that copy existed
    (digitnet before issue 15) fall back to the config.json of the run folder they lie in.

    Raises:
        DigitnetError: the copy lacks what loading needs, or an old checkpoint lies outside a run.
    """
    if "config" in meta:
        check_json(meta, {"config": RUN_CONFIG_SCHEMA}, path / META_FILE)
        return meta["config"]
    return read_run_config(path.parent.parent)


def read_metrics(run_dir: Path) -> list[dict]:
    """Per-epoch metrics of a run (a torn last line from a crash is ignored).

    Raises:
        DigitnetError: an earlier line is not a metrics row (the file and line are named).
    """
    path = run_dir / METRICS_FILE
    if not path.exists():
        return []
    lines = read_regular_bytes(path, MAX_JSON_BYTES, "metrics file").split(b"\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(parse_json(line, f"{path} line {number}", METRICS_ROW_SCHEMA))
        except DigitnetError:
            if number == len(lines):  # no newline after it: a write cut short
                break
            raise
    return rows


def read_summary(run_dir: Path) -> dict | None:
    """A finished run's summary.json (None when there is none)."""
    path = run_dir / SUMMARY_FILE
    return read_json(path, "run summary", SUMMARY_SCHEMA) if path.is_file() else None


def write_summary_calibration(run_dir: Path, record: dict) -> None:
    """Replace the calibration record in a finished run's summary.json (atomically; the caller
    holds the run's lock); the final weights are not touched.

    Raises:
        DigitnetError: the run has no summary.json (it is not finished).
    """
    summary = read_summary(run_dir)
    if summary is None:
        raise DigitnetError(f"{run_dir / SUMMARY_FILE}: not found; only a finished run (or one of "
                            f"its checkpoints, REF@last) can be calibrated")
    atomic_write_json(run_dir / SUMMARY_FILE, {**summary, "calibration": record})


def training_done(run_dir: Path) -> bool:
    return (run_dir / WEIGHTS_FILE).is_file() and (run_dir / SUMMARY_FILE).is_file()


def has_weights(run_dir: Path) -> bool:
    """Final weights or at least one checkpoint: something a reference can load."""
    return (run_dir / WEIGHTS_FILE).is_file() or bool(list_checkpoints(run_dir / CHECKPOINTS_DIR))


def lock_run(run_dir: Path):
    """A context manager that holds `run_dir`'s lock: one training process per run folder.

    Raises:
        DigitnetError: another live process trains into the folder (a killed one does not count).
    """
    return exclusive_lock(run_dir / LOCK_FILE,
                          f"run {run_dir.parent.name}/{run_dir.name} is being trained by another "
                          f"process", "wait for it to end or stop it")


# ------------------------------------------------------------------------------- new run folders
def new_run_dir(root: Path, arch_id: str, name: str | None) -> Path:
    """A fresh folder for a run; a timestamp name gets a suffix if taken.

    Raises:
        DigitnetError: `name` is taken; says what the folder holds and what to do.
    """
    if name:
        run_dir = root / arch_id / name
        try:
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            run_dir.mkdir()
        except FileExistsError:
            raise DigitnetError(_taken(run_dir)) from None
        return run_dir
    base = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir, i = root / arch_id / base, 2
    root.joinpath(arch_id).mkdir(parents=True, exist_ok=True)
    while True:
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            run_dir, i = root / arch_id / f"{base}-{i}", i + 1


def check_name_free(root: Path, arch_id: str, name: str | None) -> None:
    """Refuse a run name that is taken, before any work (`new_run_dir` checks again).

    Raises:
        DigitnetError: says what the folder holds and what to do.
    """
    if name and (root / arch_id / name).exists():
        raise DigitnetError(_taken(root / arch_id / name))


def _taken(run_dir: Path) -> str:
    ref = f"{run_dir.parent.name}/{run_dir.name}"
    if not (run_dir / CONFIG_FILE).is_file():
        return (f"{run_dir} already exists and is not a run (no {CONFIG_FILE}); remove it or "
                f"choose another --name")
    if training_done(run_dir):
        return f"{run_dir} already exists (a finished run {ref}); choose another --name"
    done = len(list_checkpoints(run_dir / CHECKPOINTS_DIR))
    if not done:
        return (f"{run_dir} already exists: run {ref} stopped before it finished an epoch; "
                f"`digitnet train --resume {ref}` starts it again with its own configuration, or "
                f"choose another --name")
    return (f"{run_dir} already exists: run {ref} stopped after {done} finished epoch(s); continue "
            f"it with `digitnet train --resume {ref}` or choose another --name")


@contextlib.contextmanager
def _writing(folder: Path, run_dir: Path | None):
    """Turn an OSError of the writes in the block (into `folder`) into one DigitnetError that
    names the folder and the last good checkpoint of `run_dir` (None: a run not created yet)."""
    try:
        yield
    except OSError as e:
        what = _FAILED_WRITE.get(e.errno, "cannot write in {}" + f" ({e.strerror or e})")
        if run_dir is None:
            raise DigitnetError(f"{what.format(folder)}; the run was not created") from e
        ref = f"{run_dir.parent.name}/{run_dir.name}"
        epoch = last_checkpoint_epoch(run_dir / CHECKPOINTS_DIR)
        last = f"last good checkpoint is epoch {epoch}" if epoch else "no checkpoint yet"
        raise DigitnetError(f"{what.format(folder)}, {last}; make room, then continue with "
                            f"`digitnet train --resume {ref}`") from e


# ----------------------------------------------------------------------------------------- Run
class Run:
    """A run folder this process trains into, holding its lock (entered into the caller's
    ExitStack, so it is held until the run ends): the only writer of the folder's files."""

    def __init__(self, run_dir: Path, config: dict):
        self.dir = run_dir
        self.config = config  # config.json

    @property
    def ref(self) -> str:
        return f"{self.dir.parent.name}/{self.dir.name}"

    @property
    def checkpoints_dir(self) -> Path:
        return self.dir / CHECKPOINTS_DIR

    @classmethod
    def create(cls, root: Path, name: str | None, stack: contextlib.ExitStack, *, arch: dict,
               data_config: dict, train: dict, data: dict, env: dict) -> Run:
        """A new run folder under `root` (named `name`, else by the time) with its config.json.

        Raises:
            DigitnetError: the name is taken, or the folder cannot be written (nothing is left).
        """
        with _writing(root / arch["id"], None):
            run_dir = new_run_dir(root, arch["id"], name)
        config = dict(format_version=RUN_FORMAT_VERSION, arch=arch, data_config=data_config,
                      train=train, data=data, env=env,
                      created=dt.datetime.now().astimezone().isoformat(timespec="microseconds"),
                      ref=f"{arch['id']}/{run_dir.name}")
        try:
            with _writing(run_dir, None):
                stack.enter_context(lock_run(run_dir))
                atomic_write_json(run_dir / CONFIG_FILE, config)
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing of the run exists yet: no leftover
            raise
        return cls(run_dir, config)

    @classmethod
    def reopen(cls, run_dir: Path, stack: contextlib.ExitStack,
               parse_train: Callable[[object, str], T]) -> tuple[Run, T]:
        """Lock an existing run folder to continue training into it.

        Args:
            parse_train: checks the training options of config.json first (their ranges are not
                the store's to know): (the "train" value, its source name) -> the options.

        Returns:
            The run and what `parse_train` returned.

        Raises:
            DigitnetError: config.json is unreadable or lacks what resuming needs, or another
                process trains into the folder.
        """
        path = run_dir / CONFIG_FILE  # written once, atomically: no lock needed
        config = read_json(path, "run config")
        options = parse_train(config.get("train") if isinstance(config, dict) else config,
                              f"{path} (train)")
        check_json(config, RUN_CONFIG_SCHEMA, path)
        with _writing(run_dir, run_dir):
            stack.enter_context(lock_run(run_dir))
        return cls(run_dir, config), options

    def is_finished(self) -> bool:
        return training_done(self.dir)

    def checkpoint_epochs(self) -> list[int]:
        return list_checkpoints(self.checkpoints_dir)

    def remove_temporaries(self) -> list[Path]:
        """Delete what a killed or failed writer left (safe: this process holds the lock)."""
        return remove_temporaries(self.dir, self.checkpoints_dir)

    def load_checkpoint(self, which: str) -> tuple[Checkpoint, list[str]]:
        """`which` checkpoint, or the newest earlier good one; see `load_latest_good`."""
        return load_latest_good(self.checkpoints_dir, which)

    def metrics(self) -> list[dict]:
        return read_metrics(self.dir)

    def truncate_metrics(self, epoch: int) -> None:
        """Forget the metrics rows of epochs after `epoch` (0: all of them), as a resume from
        `epoch`'s checkpoint must: a killed run may have logged one more."""
        rows = [r for r in read_metrics(self.dir) if r["epoch"] <= epoch] if epoch else []
        with _writing(self.dir, self.dir):
            atomic_write_text(self.dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in rows))

    def append_metrics(self, row: dict) -> None:
        with _writing(self.dir, self.dir), open(self.dir / METRICS_FILE, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def save_checkpoint(self, epoch: int, model_state: dict[str, torch.Tensor],
                        training_state: dict, metrics: dict, calibration: dict,
                        is_best: bool) -> None:
        """The checkpoint of a finished epoch, then the pointers that name it `last` (and `best`).

        An epoch counts once `last` names it, and a resume forgets the metrics rows of later
        epochs: append the epoch's metrics first, so that a crash or a full disk between any two
        writes leaves a consistent run.
        """
        with _writing(self.checkpoints_dir, self.dir):
            save_checkpoint(self.checkpoints_dir, epoch, model_state, training_state,
                            dict(metrics=metrics, calibration=calibration, config=self.config))
            write_pointers(self.checkpoints_dir, last=epoch_dir_name(epoch),
                           **({"best": epoch_dir_name(epoch)} if is_best else {}))

    def save_final_weights(self, model_state: dict[str, torch.Tensor]) -> None:
        with _writing(self.dir, self.dir):
            save_state_dict(model_state, self.dir / WEIGHTS_FILE)

    def finish(self, test_loss: float, test_acc: float, calibration: dict) -> dict:
        """Write summary.json after the final weights (`save_final_weights`): the run is done.

        Returns:
            The summary: ref, path, epochs_done, final (last metrics row), test_loss, test_acc,
            best_checkpoint, total_seconds, calibration.
        """
        rows = read_metrics(self.dir)
        summary = dict(ref=self.ref, path=str(self.dir),
                       epochs_done=rows[-1]["epoch"] if rows else 0,
                       final=rows[-1] if rows else {}, test_loss=test_loss, test_acc=test_acc,
                       best_checkpoint=f"{self.ref}@best",
                       total_seconds=sum(r["seconds"] for r in rows), calibration=calibration)
        with _writing(self.dir, self.dir):
            atomic_write_json(self.dir / SUMMARY_FILE, summary)
        return summary
