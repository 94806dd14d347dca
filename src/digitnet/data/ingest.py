"""Named datasets of people's own digits: ingestion through the new-image preprocessing, class
balance, and loading them for training and evaluation.

    datasets/NAME/
        images-idx3-ubyte.gz   every ingested digit, 28x28 uint8 white on black, in ingestion order
        labels-idx1-ubyte.gz   their labels
        manifest.json          per source file: sha256, label, source path, digit_found and
                               preprocessing version; the balance policy; the IDX contents' hash
        report.json            counts per class, imbalance ratio, warnings, skipped files

The IDX files keep every example; the balance policy (`none`, `undersample`, `oversample`) is
recorded and applied when the dataset is combined into a training set, so the manifest stays the
record of what was ingested. Ingestion only appends: the IDX files are rewritten before the
manifest, and the manifest names how many rows it covers and their hash, so a crash in between
leaves the previous dataset readable.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from digitnet.constants import IMAGE_SIZE, LABEL_NAMES, NUM_CLASSES
from digitnet.data.datasets import TensorDataset
from digitnet.data.stats import class_distribution
from digitnet.data.idx import IdxError, read_idx, write_idx
from digitnet.data.preprocess import PREPROCESS_VERSION, ImageError, preprocess
from digitnet.errors import DigitnetError
from digitnet.fileio import (
    Check,
    atomic_write_json,
    check_regular_file,
    exclusive_lock,
    read_json,
    read_regular_bytes,
    sha256_bytes,
    sha256_file,
)

ENV_DATASETS_DIR = "DIGITNET_DATASETS_DIR"
IMAGES_FILE = "images-idx3-ubyte.gz"
LABELS_FILE = "labels-idx1-ubyte.gz"
MANIFEST_FILE = "manifest.json"
REPORT_FILE = "report.json"
MANIFEST_FORMAT = 1
BALANCE_POLICIES = ("none", "undersample", "oversample")
BALANCE_SEED = 0  # fixed: which examples a policy drops or repeats is part of the data definition
DEFAULT_MIN_PER_CLASS = 10  # fewer examples of a class than this draws a warning
RESERVED_NAMES = ("mnist", "mnist-test", "mnist-val", "mnist-test-augmented")
_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
MAX_CSV_BYTES = 64 * 2**20  # a CSV source larger than this is refused (about a million rows)
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

# why a source file was skipped
UNREADABLE = "unreadable"
NO_DIGIT = "no digit"
UNLABELLED = "unlabelled"
LABEL_CONFLICT = "label conflict"


# -------------------------------------------------------------------------------- the store
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
    if name in RESERVED_NAMES or name.startswith("mnist-test-augmented"):
        raise DigitnetError(f"dataset name {name!r} is reserved for a built-in dataset; "
                            f"choose another --name")
    return name


def _known_datasets(root: Path) -> str:
    known = list_datasets(root)
    listing = f"ingested datasets in {root}: {', '.join(known)}" if known else \
        f"no ingested datasets in {root}"
    return (f"{listing} (make one with `digitnet data ingest SRC --name NAME`; "
            f"--datasets-dir or ${ENV_DATASETS_DIR} name another store)")


def _unknown(name: str, root: Path) -> DigitnetError:
    return DigitnetError(
        f"unknown dataset {name!r}: {_known_datasets(root)}; evaluation also takes mnist-test, "
        f"mnist-val, mnist-test-augmented[:1-5], a folder DIR/<digit>/*.png or IMAGES,LABELS "
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


def _read_arrays(folder: Path, manifest: dict) -> tuple[np.ndarray, np.ndarray]:
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


# -------------------------------------------------------------------------------- balance
def _check_policy(policy: str) -> None:
    if policy not in BALANCE_POLICIES:
        raise DigitnetError(f"balance policy {policy!r}: expected one of "
                            f"{', '.join(BALANCE_POLICIES)}")


def balance_indices(labels: torch.Tensor, policy: str, seed: int = BALANCE_SEED) -> torch.Tensor:
    """Indices that give each class present in `labels` the same count, deterministically.

    `undersample` keeps a random `min count` examples of each class; `oversample` keeps every
    example and repeats those of smaller classes (whole copies, then a random part) up to the
    max count. Absent classes stay absent. The result is sorted.

    Raises:
        DigitnetError: unknown policy.
    """
    _check_policy(policy)
    if policy == "none" or len(labels) == 0:
        return torch.arange(len(labels))
    counts = torch.bincount(labels, minlength=NUM_CLASSES)
    present = counts[counts > 0]
    target = int(present.min() if policy == "undersample" else present.max())
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in range(NUM_CLASSES):
        members = torch.nonzero(labels == c).flatten()
        if not len(members):
            continue
        order = members[torch.randperm(len(members), generator=g)]
        if policy == "undersample":
            picked.append(order[:target])
        else:
            repeats, rest = divmod(target, len(members))
            picked.append(torch.cat([members.repeat(repeats), order[:rest]]))
    return torch.sort(torch.cat(picked)).values


def balance_report(labels: np.ndarray, min_per_class: int = DEFAULT_MIN_PER_CLASS) -> dict:
    """Counts per class, imbalance ratio (max/min; None when a class is missing) and warnings."""
    dist = class_distribution(np.asarray(labels))
    counts = dist["counts"]
    missing = [c for c in range(NUM_CLASSES) if counts[c] == 0]
    few = [c for c in range(NUM_CLASSES) if 0 < counts[c] < min_per_class]
    warnings = []
    if missing:
        warnings.append(f"class{'es' * (len(missing) > 1)} {', '.join(map(str, missing))} "
                        f"missing: a model trained on this alone cannot learn "
                        f"{'them' if len(missing) > 1 else 'it'}")
    if few:
        listed = ", ".join(f"{c} ({counts[c]})" for c in few)
        warnings.append(f"fewer than {min_per_class} examples of "
                        f"class{'es' * (len(few) > 1)} {listed}")
    return dict(count=dist["total"], class_counts=counts, imbalance_ratio=dist["imbalance_ratio"],
                missing_classes=missing, under_threshold=few, min_per_class=min_per_class,
                warnings=warnings)


# -------------------------------------------------------------------------------- sources
@dataclass
class _Source:
    """One file named by the source, with its label or why it has none."""

    path: Path
    label: int | None
    problem: str = ""  # why the label is missing or invalid


def _parse_label(text: str) -> int | None:
    text = text.strip()
    return int(text) if text in LABEL_NAMES else None


def _folder_sources(src: Path) -> list[_Source]:
    """SRC/<digit>/... : every non-hidden entry but a folder, labelled by its top-level folder.

    A FIFO, device or broken link is listed too, so that it is skipped as unreadable with a
    reason instead of silently.
    """
    sources = []
    for path in sorted(p for p in src.rglob("*") if not p.is_dir()):
        parts = path.relative_to(src).parts
        if any(part.startswith(".") for part in parts):
            continue
        if len(parts) == 1:
            sources.append(_Source(path, None, f"not inside a label folder {src}/<digit>/"))
            continue
        label = int(parts[0]) if parts[0] in LABEL_NAMES else None
        problem = "" if label is not None else f"folder name {parts[0]!r} is not a digit 0-9"
        sources.append(_Source(path, label, problem))
    return sources


def _is_header(row: list[str]) -> bool:
    return (row[0].strip().lower() in ("path", "file", "filename", "image", "file_name")
            or (len(row) > 1 and row[1].strip().lower() in ("label", "digit", "class")))


def _csv_sources(src: Path) -> list[_Source]:
    """Rows `path,label` (a header row is optional); paths are relative to the CSV's folder."""
    content = read_regular_bytes(src, MAX_CSV_BYTES, "CSV file")
    try:
        rows = list(csv.reader(io.StringIO(content.decode("utf-8-sig"), newline="")))
    except (UnicodeDecodeError, csv.Error) as e:
        raise DigitnetError(f"{src}: cannot read the CSV file ({e})") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if rows and _is_header(rows[0]):
        rows = rows[1:]
    sources = []
    for number, row in enumerate(rows, start=1):
        path = src.parent / row[0].strip()
        if len(row) < 2 or not row[1].strip():
            sources.append(_Source(path, None, f"row {number}: no label"))
            continue
        label = _parse_label(row[1])
        problem = "" if label is not None else f"row {number}: label {row[1]!r} is not a digit 0-9"
        sources.append(_Source(path, label, problem))
    return sources


def list_sources(src: str | os.PathLike) -> list[_Source]:
    """The files named by a folder per label (`SRC/7/*.png`) or a CSV of `path,label` rows.

    Raises:
        DigitnetError: SRC is neither a folder nor a .csv file.
    """
    src = Path(src)
    if src.is_dir():
        return _folder_sources(src)
    if src.suffix.lower() == ".csv" and src.exists():
        return _csv_sources(src)  # which refuses a FIFO or device by name, never reading it
    what = "not found" if not src.exists() else "not a folder or .csv file"
    raise DigitnetError(f"{src}: {what}; expected a folder SRC/<digit>/*.png or a CSV file of "
                        f"path,label rows")


# -------------------------------------------------------------------------------- ingestion
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


def _empty_manifest(name: str) -> dict:
    return dict(format_version=MANIFEST_FORMAT, name=name, balance="none", count=0,
                content_sha256=_array_sha256(np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8),
                                             np.zeros(0, np.uint8)),
                ingests=[], files=[])


def _process(sources: list[_Source], known: dict[str, dict], result: IngestResult,
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
        _check_policy(balance)
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


def _ingest_locked(sources: list[_Source], src: str | os.PathLike, folder: Path,
                   balance: str | None, min_per_class: int, progress: bool) -> IngestResult:
    """Add the new sources to the dataset in `folder` (see `ingest`)."""
    name = folder.name
    has_manifest = (folder / MANIFEST_FILE).is_file()
    manifest = read_manifest(name, folder.parent) if has_manifest else _empty_manifest(name)
    old_images, old_labels = _read_arrays(folder, manifest)
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
        _write_dataset(folder, manifest, rows, images, labels, result)
    return result


def _write_dataset(folder: Path, manifest: dict, rows: list[dict], images: np.ndarray,
                   labels: np.ndarray, result: IngestResult) -> None:
    """Rewrite the IDX files (appended rows only), then the manifest, then the report."""
    if len(labels) != manifest["count"]:
        write_idx(folder / IMAGES_FILE, images)
        write_idx(folder / LABELS_FILE, labels)
    now = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    manifest = dict(manifest, balance=result.balance, count=len(labels),
                    content_sha256=_array_sha256(images, labels), updated=now,
                    ingests=manifest["ingests"] + [dict(
                        time=now, source=result.source, new=result.new,
                        duplicates=result.duplicates, skipped=len(result.skipped),
                        balance=result.balance, preprocess_version=PREPROCESS_VERSION)],
                    files=manifest["files"] + rows)
    atomic_write_json(folder / MANIFEST_FILE, manifest)
    atomic_write_json(folder / REPORT_FILE, _json_safe(result.to_dict()))


def _json_safe(obj):
    """Infinite or NaN floats become None, so the file is valid JSON."""
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


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


# -------------------------------------------------------------------------------- loading
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
    images, labels = _read_arrays(root / name, manifest)
    dataset = TensorDataset(name, torch.from_numpy(images.copy()),
                            torch.from_numpy(labels.astype(np.int64)))
    if balance != "none":
        dataset = dataset.subset(balance_indices(dataset.labels, balance))
    return dataset


def dataset_fingerprint(name: str, datasets_dir: str | os.PathLike | None = None) -> dict:
    """What a training run records about an ingested dataset: count, policy and hashes."""
    root = datasets_root(datasets_dir)
    manifest = read_manifest(name, root)
    return dict(name=name, path=str((root / name).resolve()), count=manifest["count"],
                balance=manifest["balance"], content_sha256=manifest["content_sha256"],
                manifest_sha256=sha256_file(root / name / MANIFEST_FILE))


def combine_training_data(
    mnist_train: TensorDataset,
    names: tuple[str, ...],
    datasets_dir: str | os.PathLike | None = None,
) -> TensorDataset:
    """Concatenate the training datasets named in `names`, in order.

    "mnist" stands for `mnist_train`; any other name is an ingested dataset, taken with the balance
    policy recorded when it was ingested.

    Raises:
        DigitnetError: an unknown name, or a combination with no images.
    """
    root = datasets_root(datasets_dir)
    parts = []
    for name in dict.fromkeys(names):  # a name given twice counts once
        if name == "mnist":
            parts.append(mnist_train)
            continue
        if name not in list_datasets(root):
            raise DigitnetError(f"training dataset {name!r}: expected 'mnist' or an ingested "
                                f"dataset; {_known_datasets(root)}")
        parts.append(load_dataset(name, root, read_manifest(name, root)["balance"]))
    combined = TensorDataset("+".join(p.name for p in parts), torch.cat([p.images for p in parts]),
                             torch.cat([p.labels for p in parts]))
    if not len(combined):
        raise DigitnetError(f"training datasets {', '.join(names)} hold no images")
    return combined
