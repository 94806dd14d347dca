"""The labelled image files a source names, for `digitnet data ingest`: a folder with one
subfolder per label (`SRC/7/*.png`) or a CSV file of `path,label` rows.

Listing reads no image: each file comes with its label, or with why it has none, and ingestion
(data/ingest.py) skips the unlabelled ones with that reason.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

from digitnet.constants import LABEL_NAMES
from digitnet.errors import DigitnetError
from digitnet.fileio import read_regular_bytes

MAX_CSV_BYTES = 64 * 2**20  # a CSV source larger than this is refused (about a million rows)


@dataclass
class Source:
    """One file named by the source, with its label or why it has none."""

    path: Path
    label: int | None
    problem: str = ""  # why the label is missing or invalid


def _parse_label(text: str) -> int | None:
    text = text.strip()
    return int(text) if text in LABEL_NAMES else None


def _folder_sources(src: Path) -> list[Source]:
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
            sources.append(Source(path, None, f"not inside a label folder {src}/<digit>/"))
            continue
        label = int(parts[0]) if parts[0] in LABEL_NAMES else None
        problem = "" if label is not None else f"folder name {parts[0]!r} is not a digit 0-9"
        sources.append(Source(path, label, problem))
    return sources


def _is_header(row: list[str]) -> bool:
    return (row[0].strip().lower() in ("path", "file", "filename", "image", "file_name")
            or (len(row) > 1 and row[1].strip().lower() in ("label", "digit", "class")))


def _csv_sources(src: Path) -> list[Source]:
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
            sources.append(Source(path, None, f"row {number}: no label"))
            continue
        label = _parse_label(row[1])
        problem = "" if label is not None else f"row {number}: label {row[1]!r} is not a digit 0-9"
        sources.append(Source(path, label, problem))
    return sources


def list_sources(src: str | os.PathLike) -> list[Source]:
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
