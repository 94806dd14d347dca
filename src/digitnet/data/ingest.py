"""`digitnet data ingest`: add people's own labelled digits to a named dataset, each file through
the new-image preprocessing, and report the dataset's class balance.

Sources are listed by data/sources.py, the dataset's files read and written by
data/dataset_store.py (which describes them), and the balance policies are data/balance.py's.
Ingestion only appends, and one ingestion into a dataset runs at a time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from digitnet.constants import NUM_CLASSES
from digitnet.data.balance import (
    DEFAULT_MIN_PER_CLASS,
    balance_indices,
    balance_report,
    check_policy,
)
from digitnet.data.dataset_store import (
    MANIFEST_FILE,
    check_name,
    datasets_root,
    empty_manifest,
    read_arrays,
    read_manifest,
    write_dataset,
)
from digitnet.data.preprocess import PREPROCESS_VERSION, ImageError, preprocess
from digitnet.data.sources import Source, list_sources
from digitnet.errors import DigitnetError
from digitnet.fileio import check_regular_file, exclusive_lock, sha256_file

__all__ = ["LABEL_CONFLICT", "NO_DIGIT", "UNLABELLED", "UNREADABLE", "IngestResult",
           "format_ingest", "ingest"]

# why a source file was skipped
UNREADABLE = "unreadable"
NO_DIGIT = "no digit"
UNLABELLED = "unlabelled"
LABEL_CONFLICT = "label conflict"


@dataclass
class IngestResult:
    """What one ingestion did; `to_dict` is what report.json holds."""

    name: str
    folder: Path
    source: str
    new: int = 0
    duplicates: int = 0
    skipped: list[dict] = field(default_factory=list)  # {file, why, detail}
    balance: str = "none"
    changed: bool = False  # whether anything was written
    dataset: dict = field(default_factory=dict)  # balance_report of the whole dataset
    balanced_class_counts: list[int] = field(default_factory=list)  # after the policy
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(dataset=self.name, path=str(self.folder), source=self.source,
                    preprocess_version=PREPROCESS_VERSION, new=self.new, duplicates=self.duplicates,
                    skipped=self.skipped, balance=self.balance, **self.dataset,
                    balanced_class_counts=self.balanced_class_counts, notes=self.notes)


def _process(sources: list[Source], known: dict[str, dict], result: IngestResult,
             progress: bool) -> tuple[list[dict], list[np.ndarray]]:
    """Hash, deduplicate and preprocess each source; returns new manifest rows and their images."""
    rows, images = [], []
    for s in tqdm(sources, desc="ingest", unit="img", disable=not progress, leave=False):
        if s.label is None:
            result.skipped.append(dict(file=str(s.path), why=UNLABELLED, detail=s.problem))
            continue
        try:
            # a FIFO or /dev/zero named by a CSV row or found in a folder would never end a read
            digest = sha256_file(check_regular_file(s.path, "image file"))
        except DigitnetError as e:
            result.skipped.append(dict(file=str(s.path), why=UNREADABLE, detail=str(e)))
            continue
        except OSError as e:
            why = "file not found" if isinstance(e, FileNotFoundError) else e.strerror
            detail = f"{s.path}: {why}"
            result.skipped.append(dict(file=str(s.path), why=UNREADABLE, detail=detail))
            continue
        if digest in known:
            first = known[digest]
            if first["label"] != s.label:
                result.skipped.append(dict(
                    file=str(s.path), why=LABEL_CONFLICT,
                    detail=f"same content as {first['source']}, which is labelled "
                           f"{first['label']}, not {s.label}; kept the first"))
            else:
                result.duplicates += 1
            continue
        try:
            pre = preprocess(s.path)
        except ImageError as e:
            result.skipped.append(dict(file=str(s.path), why=UNREADABLE, detail=str(e)))
            continue
        row = dict(sha256=digest, label=s.label, source=str(s.path.resolve()),
                   digit_found=pre.digit_found, preprocess_version=PREPROCESS_VERSION, index=None,
                   path=pre.path)
        known[digest] = row
        rows.append(row)
        if pre.digit_found:
            images.append(pre.image)
        else:
            result.skipped.append(dict(file=str(s.path), why=NO_DIGIT, detail=pre.reason))
    return rows, images


def ingest(
    src: str | os.PathLike,
    name: str,
    balance: str | None = None,
    min_per_class: int = DEFAULT_MIN_PER_CLASS,
    datasets_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> IngestResult:
    """Add the labelled images of `src` to the dataset `name`, creating it if needed.

    Every file goes through `preprocess`. Files already in the dataset (same sha256) are counted
    as duplicates and left alone; unreadable, unlabelled and blank files are skipped and listed
    (blank ones are recorded in the manifest with digit_found false, and not in the IDX files).

    Args:
        src: a folder SRC/<digit>/* or a CSV file of path,label rows (header optional).
        balance: policy applied when the dataset is loaded for training ("none", "undersample",
            "oversample"); None keeps the dataset's current one ("none" for a new dataset).
        min_per_class: warn about classes with fewer examples.
        datasets_dir: the data store (default: $DIGITNET_DATASETS_DIR, else ./datasets).

    Returns:
        What happened, with the class balance of the whole dataset.

    Raises:
        DigitnetError: bad name, policy or source, or an existing dataset that is damaged.
    """
    check_name(name)
    if balance is not None:
        check_policy(balance)
    if min_per_class < 1:
        raise DigitnetError(f"min_per_class must be >= 1, got {min_per_class}")
    root = datasets_root(datasets_dir)
    folder = root / name
    sources = list_sources(src)
    with _lock(root, name):
        return _ingest_locked(sources, src, folder, balance, min_per_class, progress)


def _lock(root: Path, name: str):
    """Only one ingestion into a dataset at a time: the second would drop the first's files.

    An flock on DATASETS/.NAME.lock (`fileio.exclusive_lock`): a run that was killed never
    leaves a lock that blocks the next one. The file is removed on the way out.

    Raises:
        DigitnetError: another process holds the lock, naming the dataset and that process.
    """
    root.mkdir(parents=True, exist_ok=True)
    return exclusive_lock(root / f".{name}.lock", f"dataset {name}: another ingestion is running",
                          "wait for it to finish, then try again", remove=True)


def _ingest_locked(sources: list[Source], src: str | os.PathLike, folder: Path,
                   balance: str | None, min_per_class: int, progress: bool) -> IngestResult:
    """Add the new sources to the dataset in `folder` (see `ingest`)."""
    name = folder.name
    has_manifest = (folder / MANIFEST_FILE).is_file()
    manifest = read_manifest(name, folder.parent) if has_manifest else empty_manifest(name)
    old_images, old_labels = read_arrays(folder, manifest)
    result = IngestResult(name, folder, str(src), balance=balance or manifest["balance"])
    known = {row["sha256"]: row for row in manifest["files"]}
    rows, new_images = _process(sources, known, result, progress)
    result.new = len(new_images)
    labels = np.concatenate([old_labels, np.array([r["label"] for r in rows if r["digit_found"]],
                                                  np.uint8)])
    images = np.concatenate([old_images, np.stack(new_images)]) if new_images else old_images
    for i, row in enumerate((r for r in rows if r["digit_found"]), start=len(old_labels)):
        row["index"] = i
    versions = {r.get("preprocess_version") for r in manifest["files"]} - {PREPROCESS_VERSION}
    if versions:
        result.notes.append(f"dataset {name} holds images from preprocessing version(s) "
                            f"{sorted(versions)}, now {PREPROCESS_VERSION}; ingest into a new "
                            f"name for a consistent set")
    result.dataset = balance_report(labels, min_per_class)
    label_tensor = torch.from_numpy(labels.astype(np.int64))
    balanced = label_tensor[balance_indices(label_tensor, result.balance)]
    result.balanced_class_counts = torch.bincount(balanced, minlength=NUM_CLASSES).tolist()
    # a new dataset is made only when there is an image to put in it
    result.changed = (bool(rows) or result.balance != manifest["balance"]) and len(labels) > 0
    if result.changed:
        ingest_record = dict(source=result.source, new=result.new, duplicates=result.duplicates,
                             skipped=len(result.skipped), balance=result.balance,
                             preprocess_version=PREPROCESS_VERSION)
        write_dataset(folder, manifest, images, labels,
                      dict(balance=result.balance, ingest=ingest_record, files=rows,
                           report=result.to_dict()))
    return result


def format_ingest(result: IngestResult) -> str:
    """The printed report: what was added and skipped, then the class balance."""
    d = result.dataset
    lines = [(f"ingested {result.source} into dataset {result.name} ({result.folder}, "
              f"preprocessing v{PREPROCESS_VERSION})"),
             f"{result.new} new, {result.duplicates} duplicates, {len(result.skipped)} skipped"]
    for s in result.skipped:
        detail = s["detail"].removeprefix(f"{s['file']}: ")  # image errors start with the path
        lines.append(f"  skipped ({s['why']}) {s['file']}: {detail}")
    ratio = d["imbalance_ratio"]
    ratio_text = f"{ratio:.2f}" if ratio is not None else \
        f"inf (class{'es' * (len(d['missing_classes']) > 1)} missing)"
    lines.append(f"dataset {result.name}: {d['count']} images; per class "
                 + " ".join(f"{c}:{n}" for c, n in enumerate(d["class_counts"])))
    lines.append(f"imbalance ratio (max/min): {ratio_text}")
    if result.balance != "none":
        lines.append(f"balance policy {result.balance} (applied when training): per class "
                     + " ".join(f"{c}:{n}" for c, n in enumerate(result.balanced_class_counts)))
    lines += [f"warning: {w}" for w in d["warnings"] + result.notes]
    if not result.changed:
        lines.append("nothing changed")
    return "\n".join(lines)
