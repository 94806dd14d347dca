"""The store of ingested datasets: its folder layout, dataset names, and reading and writing a
dataset's files. Nothing else knows the layout; ingestion (data/ingest.py) decides what to add.

    datasets/NAME/
        images-idx3-ubyte.gz   every ingested digit, 28x28 uint8 white on black, in ingestion order
        labels-idx1-ubyte.gz   their labels
        manifest.json          per source file: sha256, label, source path, digit_found and
                               preprocessing version; the balance policy; the IDX contents' hash
        report.json            counts per class, imbalance ratio, warnings, skipped files

The IDX files keep every example; the balance policy (data/balance.py) is recorded and applied
when the dataset is loaded for training, so the manifest stays the record of what was ingested.
A dataset only grows: the IDX files are rewritten before the manifest, and the manifest names how
many rows it covers and their hash, so a crash in between leaves the previous dataset readable.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import numpy as np
import torch

from digitnet.constants import IMAGE_SIZE, NUM_CLASSES
from digitnet.data.augment import AUGMENTED
from digitnet.data.balance import BALANCE_POLICIES, balance_indices
from digitnet.data.datasets import TensorDataset
from digitnet.data.idx import IdxError, read_idx, write_idx
from digitnet.errors import DigitnetError
from digitnet.fileio import Check, atomic_write_json, read_json, sha256_bytes

ENV_DATASETS_DIR = "DIGITNET_DATASETS_DIR"
IMAGES_FILE = "images-idx3-ubyte.gz"
LABELS_FILE = "labels-idx1-ubyte.gz"
MANIFEST_FILE = "manifest.json"
REPORT_FILE = "report.json"
MANIFEST_FORMAT = 1
RESERVED_NAMES = ("mnist", "mnist-test", "mnist-val", AUGMENTED)
_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
MAX_MANIFEST_BYTES = 256 * 1024 * 1024  # a row per ingested file (~300 bytes): ~800,000 files
MANIFEST_SCHEMA = {  # what ingesting and loading need from manifest.json
    "format_version?": int,
    "balance": Check(str, lambda v: v in BALANCE_POLICIES,
                     " or ".join(map(repr, BALANCE_POLICIES))),
    "count": Check(int, lambda v: v >= 0, "an integer >= 0"),
    "content_sha256": str,
    "ingests": [dict],
    "files": [{"sha256": str, "source": str, "digit_found": bool,
               "label": Check(int, lambda v: 0 <= v < NUM_CLASSES, f"a label 0-{NUM_CLASSES - 1}"),
               "preprocess_version?": (int, None), "index?": (int, None),
               "path?": (str, None)}],
}


def datasets_root(datasets_dir: str | os.PathLike | None = None) -> Path:
    """`datasets_dir`, else $DIGITNET_DATASETS_DIR, else ./datasets."""
    return Path(datasets_dir or os.environ.get(ENV_DATASETS_DIR) or "datasets")


def list_datasets(datasets_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the ingested datasets in the store, sorted."""
    root = datasets_root(datasets_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST_FILE).is_file())


def check_name(name: str) -> str:
    """A dataset name is a plain file name that cannot be mistaken for a built-in dataset.

    Raises:
        DigitnetError: not of the form [A-Za-z0-9][A-Za-z0-9._-]*, or a reserved name.
    """
    if not re.fullmatch(_NAME_PATTERN, name):
        raise DigitnetError(f"dataset name {name!r}: expected letters, digits, '.', '_' or '-', "
                            f"starting with a letter or digit")
    if name in RESERVED_NAMES or name.startswith(AUGMENTED):
        raise DigitnetError(f"dataset name {name!r} is reserved for a built-in dataset; "
                            f"choose another --name")
    return name


def known_datasets(root: Path) -> str:
    """The datasets in `root` and how to make or name others, for error messages."""
    known = list_datasets(root)
    listing = f"ingested datasets in {root}: {', '.join(known)}" if known else \
        f"no ingested datasets in {root}"
    return (f"{listing} (make one with `digitnet data ingest SRC --name NAME`; "
            f"--datasets-dir or ${ENV_DATASETS_DIR} name another store)")


def _unknown(name: str, root: Path) -> DigitnetError:
    return DigitnetError(
        f"unknown dataset {name!r}: {known_datasets(root)}; evaluation also takes mnist-test, "
        f"mnist-val, {AUGMENTED}[:1-5], a folder DIR/<digit>/*.png or IMAGES,LABELS "
        f"(two IDX files)"
    )


def _array_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    content = np.ascontiguousarray(images).tobytes() + np.ascontiguousarray(labels).tobytes()
    return sha256_bytes(content)


def read_manifest(name: str, datasets_dir: str | os.PathLike | None = None) -> dict:
    """The manifest of an ingested dataset.

    Raises:
        DigitnetError: unknown name (listing the known ones) or unreadable manifest.
    """
    root = datasets_root(datasets_dir)
    path = root / name / MANIFEST_FILE
    if not re.fullmatch(_NAME_PATTERN, name) or not path.exists():
        raise _unknown(name, root)
    return read_json(path, "dataset manifest", MANIFEST_SCHEMA, MAX_MANIFEST_BYTES)


def read_arrays(folder: Path, manifest: dict) -> tuple[np.ndarray, np.ndarray]:
    """The rows the manifest covers, checked against its hash.

    Rows beyond them are left by an ingest interrupted before it wrote the manifest; ignored.
    """
    count = manifest["count"]
    if count == 0:
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8), np.zeros(0, np.uint8)
    try:
        images, labels = read_idx(folder / IMAGES_FILE), read_idx(folder / LABELS_FILE)
    except IdxError as e:
        raise DigitnetError(f"dataset {folder.name}: {e}; re-ingest it into a new name") from None
    if len(images) < count or len(labels) < count or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DigitnetError(f"dataset {folder.name}: the IDX files in {folder} hold fewer images "
                            f"than the {count} of its manifest; re-ingest it into a new name")
    images, labels = images[:count], labels[:count]
    if _array_sha256(images, labels) != manifest["content_sha256"]:
        raise DigitnetError(f"dataset {folder.name}: the IDX files in {folder} do not match "
                            f"manifest.json (changed or corrupt); re-ingest it into a new name")
    return images, labels

def empty_manifest(name: str) -> dict:
    """The manifest of a dataset before its first ingestion."""
    return dict(format_version=MANIFEST_FORMAT, name=name, balance="none", count=0,
                content_sha256=_array_sha256(np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8),
                                             np.zeros(0, np.uint8)),
                ingests=[], files=[])


def write_dataset(folder: Path, manifest: dict, images: np.ndarray, labels: np.ndarray,
                  changes: dict) -> None:
    """Rewrite the IDX files (appended rows only), then the manifest, then the report.

    Args:
        manifest: the dataset's manifest before this ingestion.
        images, labels: every row of the dataset after it.
        changes: `balance` (the policy now), `ingest` (the record of this ingestion, given its
            time here), `files` (the new manifest rows) and `report` (report.json's contents).
    """
    if len(labels) != manifest["count"]:
        write_idx(folder / IMAGES_FILE, images)
        write_idx(folder / LABELS_FILE, labels)
    now = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    manifest = dict(manifest, balance=changes["balance"], count=len(labels),
                    content_sha256=_array_sha256(images, labels), updated=now,
                    ingests=manifest["ingests"] + [dict(time=now, **changes["ingest"])],
                    files=manifest["files"] + changes["files"])
    atomic_write_json(folder / MANIFEST_FILE, manifest)
    atomic_write_json(folder / REPORT_FILE, _json_safe(changes["report"]))


def _json_safe(obj):
    """Infinite or NaN floats become None, so the file is valid JSON."""
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def load_dataset(
    name: str, datasets_dir: str | os.PathLike | None = None, balance: str = "none"
) -> TensorDataset:
    """An ingested dataset as uint8 images (N, 28, 28) and labels.

    Args:
        balance: "none" (every example, as for evaluation), "undersample" or "oversample"
            (see `balance_indices`).

    Raises:
        DigitnetError: unknown name (listing the known ones), or damaged files.
    """
    root = datasets_root(datasets_dir)
    manifest = read_manifest(name, root)
    images, labels = read_arrays(root / name, manifest)
    dataset = TensorDataset(name, torch.from_numpy(images.copy()),
                            torch.from_numpy(labels.astype(np.int64)))
    if balance != "none":
        dataset = dataset.subset(balance_indices(dataset.labels, balance))
    return dataset
