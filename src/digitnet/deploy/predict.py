"""Predictions on new images: the one path from a file, array or drawing to a label.

Every image goes through `digitnet.data.preprocess.preprocess` (never a copy of it; through
`preprocess_many`, which gives each image's `preprocess` result); the images with a digit then go
through the model in one batched forward pass. The CLI (`digitnet predict`)
and any demo call `predict_files` or `predict_images`.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from digitnet.constants import NUM_CLASSES
from digitnet.data.preprocess import ImageError, preprocess_many
from digitnet.deploy.fast import optimize_for_inference
from digitnet.errors import DigitnetError
from digitnet.fileio import check_regular_file
from digitnet.store import LoadedModel

DEFAULT_TOP_K = 3
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
PROB_DECIMALS = 6  # probabilities are rounded for output; 1e-6 is far below any useful precision
_GLOB_CHARS = set("*?[")


# ------------------------------------------------------------------------------------- inputs
def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """Every image file under `folder`, recursively, sorted by path; hidden files are skipped.

    An image file is one whose name ends in a known image suffix (any case) and is not a folder:
    a FIFO or device so named is listed too, for `expand_inputs` to report rather than skip.
    """
    root = Path(folder)
    found = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
             and not p.is_dir() and not _is_hidden(p, root)]
    return sorted(found)


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[tuple[str, str | None]]:
    """Turn files, folders and glob patterns into a list of files, in the order given.

    A path that exists is taken as it is: a file is kept whatever its name, a folder gives its
    image files (see `list_image_files`). Otherwise a pattern with `*`, `?` or `[` is expanded as
    a shell would (sorted, `**` recursive), and each match is treated the same way. A file met
    twice is kept once.

    Returns:
        (path, error) pairs: error is None for a file to predict, else why the input gave no file
        (a folder with no images, a pattern that matches nothing, a FIFO, device or socket,
        which a read would never finish); path then names the input.
    """
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()

    def add(path: str, error: str | None = None) -> None:
        if error is not None or path not in seen:
            seen.add(path)
            out.append((path, error))

    def add_existing(path: Path) -> None:
        if path.is_dir():
            files = list_image_files(path)
            if not files:
                add(str(path), f"{path}: no image files in this folder "
                               f"(looked for {', '.join(IMAGE_SUFFIXES)}, recursively)")
            for f in files:
                add_file(f)
        else:
            add_file(path)

    def add_file(path: Path) -> None:
        if path.exists():  # a missing path is kept: predicting it reports the error
            try:
                check_regular_file(path, "image file")
            except DigitnetError as e:
                add(str(path), str(e))
                return
        add(str(path))

    for item in inputs:
        text = os.fspath(item)
        path = Path(text).expanduser()
        if path.exists() or not _GLOB_CHARS & set(text):
            add_existing(path)  # a missing plain path is kept: predicting it reports the error
            continue
        matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
        if not matches:
            add(text, f"{text}: no files match this pattern")
        for match in matches:
            add_existing(Path(match))
    return out


# --------------------------------------------------------------------------------- prediction
def _entry(name: str, digit_found: bool = False, reason: str | None = None,
           error: str | None = None, path: str | None = None) -> dict:
    """A prediction without a label: no digit found, or an error."""
    return dict(file=name, label=None, probabilities=None, top_k=[], digit_found=digit_found,
                reason=reason, error=error, path=path)


def _labelled(entry: dict, probs: list[float], top_k: int) -> dict:
    """`probs`: the ten probabilities as Python floats (a row of `Tensor.tolist()`: the same
    values as float() of each element, without ten tensor indexings per image)."""
    values = [round(p, PROB_DECIMALS) for p in probs]
    # most probable first, ties by label: a stable sort keeps equal keys in order, also reversed
    ranked = sorted(range(NUM_CLASSES), key=probs.__getitem__, reverse=True)
    entry.update(label=ranked[0], probabilities=values,
                 top_k=[[c, values[c]] for c in ranked[:top_k]])
    return entry


_PREPARED = "_digitnet_prepared"  # marks a model already in the form predict_images runs


def prepare_for_prediction(loaded: LoadedModel) -> LoadedModel:
    """`loaded` with its model in the form `predict_images` runs: batch norm folded into the
    convolutions, channels-last (the same labels, ~1.9x eager throughput, see BENCHMARKS.md).

    `predict_images` does this on every call, which costs ~3 ms for wide-v1, several times the
    forward pass of one image; a server calls it once and passes the result (`digitnet serve`).
    The returned model has no batch norm layers, so count parameters on the original.
    """
    if getattr(loaded.model, _PREPARED, False):
        return loaded
    model = optimize_for_inference(loaded.model, script=False)
    setattr(model, _PREPARED, True)
    return dataclasses.replace(loaded, model=model)


def _check_top_k(top_k: int) -> None:
    if not 1 <= top_k <= NUM_CLASSES:
        raise DigitnetError(f"top_k must be 1 to {NUM_CLASSES}, got {top_k}")


def predict_images(
    loaded: LoadedModel,
    images: Sequence,
    top_k: int = DEFAULT_TOP_K,
    names: Sequence[str] | None = None,
    with_images: bool = False,
    max_pixels: int | None = None,
) -> list[dict]:
    """Predict the digit in each image: preprocess each one, then one batched forward pass.

    Args:
        loaded: a model from `digitnet.store.load_model`.
        images: anything `preprocess` takes: file paths, file contents (bytes), numpy arrays,
            torch tensors, PIL images.
        top_k: how many of the most probable labels to list (1-10).
        names: what to call each image in the `file` field (default: the path, or a description
            of the array).
        with_images: also return the 28x28 uint8 image the model saw under `image` (not
            JSON-serialisable; None when there was no digit or an error).
        max_pixels: refuse image files with more pixels, before decoding them (default:
            `preprocess.MAX_PIXELS`; `digitnet serve` sets a lower one).

    Returns:
        One dict per image, in order, with `file`; `label` (int, None when no digit was found
        or the image could not be read); `probabilities` (ten floats summing to 1, None without
        a label); `top_k` ([[label, probability], ...], most probable first, ties by label; []
        without a label); `digit_found` (bool; False also on error); `reason` (why no digit was
        found, else None); `error` (why the image could not be read, else None); `path` (how
        `preprocess` treated it: "mnist", "scan", "drawing" or "photo"; None on error).

    Raises:
        DigitnetError: top_k outside 1-10.
    """
    _check_top_k(top_k)
    names = list(names) if names is not None else [None] * len(images)
    if len(names) != len(images):
        raise DigitnetError(f"{len(images)} images but {len(names)} names")
    entries, found, digits = [], [], []
    results = preprocess_many(images, max_pixels)  # each image's preprocess(), or its ImageError
    for image, name, result in zip(images, names, results, strict=True):
        if isinstance(result, ImageError):
            entries.append(_entry(name or _name_of(image), error=str(result)))
            continue
        entry = _entry(name or result.source, digit_found=result.digit_found,
                       reason=result.reason or None, path=result.path or None)
        if result.digit_found:
            found.append(len(entries))
            digits.append(torch.from_numpy(result.image))
        if with_images:
            entry["image"] = result.image if result.digit_found else None
        entries.append(entry)
    if digits:
        probs = prepare_for_prediction(loaded).probs(torch.stack(digits))  # (N, 10), batched
        for i, p in zip(found, probs.tolist(), strict=True):
            _labelled(entries[i], p, top_k)
    return entries


def _name_of(image) -> str:
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    return f"<{type(image).__name__}>"


def predict_files(
    loaded: LoadedModel, inputs: Sequence[str | os.PathLike], top_k: int = DEFAULT_TOP_K
) -> list[dict]:
    """Predict every image named by `inputs` (files, folders, glob patterns; see `expand_inputs`).

    An input that gives no file (an empty folder, a pattern with no match) and a file that cannot
    be read each get an entry with `error` set; the other files are still predicted.

    Returns:
        One dict per file, in the order of `expand_inputs` (see `predict_images` for the keys).
    """
    _check_top_k(top_k)
    expanded = expand_inputs(inputs)
    paths = [p for p, error in expanded if error is None]
    predicted = iter(predict_images(loaded, paths, top_k, names=paths))
    return [next(predicted) if error is None else _entry(p, error=error) for p, error in expanded]


# ------------------------------------------------------------------------------------- output
def format_prediction(entry: dict) -> str:
    """One line: the file, then the label and the top-k with probabilities, or why there is none."""
    if entry["error"]:
        return f"{entry['file']}  error: {entry['error'].removeprefix(entry['file'] + ': ')}"
    if not entry["digit_found"]:
        return f"{entry['file']}  -  no digit found ({entry['reason']})"
    ranked = "  ".join(f"{label}:{prob:.1%}" for label, prob in entry["top_k"])
    return f"{entry['file']}  {entry['label']}  {ranked}"


def summarize(entries: list[dict]) -> str:
    """e.g. '5 files: 3 digits, 1 without a digit, 1 error'."""
    errors = sum(e["error"] is not None for e in entries)
    digits = sum(e["label"] is not None for e in entries)
    blank = len(entries) - errors - digits
    return (f"{len(entries)} file{'s' * (len(entries) != 1)}: {digits} digit{'s' * (digits != 1)}, "
            f"{blank} without a digit, {errors} error{'s' * (errors != 1)}")


def to_jsonable(entries: list[dict]) -> list[dict]:
    """The entries without the 28x28 images that `with_images` adds."""
    return [{k: v for k, v in e.items() if k != "image"} for e in entries]
