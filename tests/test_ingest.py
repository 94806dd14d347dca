"""Ingestion of people's own digits: folder and CSV sources, skipped files, deduplication,
append-only storage, class balance, and training and evaluation on an ingested dataset."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import digitnet
from bounded import run_bounded
from digit_folders import mnist_test_digits, write_digits
from digitnet import fileio
from digitnet.cli import main
from digitnet.data import ingest as ingest_module
from digitnet.data import sources as sources_module
from digitnet.data.dataset_store import (
    IMAGES_FILE,
    LABELS_FILE,
    MANIFEST_FILE,
    REPORT_FILE,
    list_datasets,
    load_dataset,
    read_manifest,
)
from digitnet.data.idx import read_idx, write_idx
from digitnet.data.ingest import ingest
from digitnet.data.preprocess import PREPROCESS_VERSION
from digitnet.errors import DigitnetError


@pytest.fixture(scope="module")
def mnist_digits(mnist_dir) -> dict[int, np.ndarray]:
    return mnist_test_digits(mnist_dir)


@pytest.fixture
def store(tmp_path) -> Path:
    return tmp_path / "datasets"


# -------------------------------------------------------------------------------- sources
def test_folder_ingest_writes_idx_manifest_and_report(tmp_path, store, mnist_digits):
    write_digits(tmp_path / "src", mnist_digits, {c: 2 for c in range(10)})
    result = ingest(tmp_path / "src", "mine", datasets_dir=store)
    assert (result.new, result.duplicates, result.skipped) == (20, 0, [])
    folder = store / "mine"
    images, labels = read_idx(folder / IMAGES_FILE), read_idx(folder / LABELS_FILE)
    assert images.shape == (20, 28, 28) and images.dtype == np.uint8
    assert labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert images[:, 0, 0].max() == 0 and images.max() == 255  # white digit on black
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    first = manifest["files"][0]
    assert {"sha256", "label", "source", "digit_found", "preprocess_version"} <= set(first)
    assert first["preprocess_version"] == PREPROCESS_VERSION and first["digit_found"]
    assert first["source"] == str((tmp_path / "src" / "0" / "0.png").resolve())
    assert [f["index"] for f in manifest["files"]] == list(range(20))
    report = json.loads((folder / REPORT_FILE).read_text())
    assert report["class_counts"] == [2] * 10 and report["imbalance_ratio"] == 1.0
    assert list_datasets(store) == ["mine"]
    dataset = load_dataset("mine", store)
    assert dataset.images.shape == (20, 28, 28) and dataset.labels.dtype == torch.int64


@pytest.mark.parametrize("header", ["", "path,label\n", "file,digit\n"])
def test_csv_ingest_with_or_without_header(tmp_path, store, mnist_digits, header):
    paths = write_digits(tmp_path / "imgs", mnist_digits, {3: 2, 8: 1})
    rows = [f"{p.relative_to(tmp_path)},{p.parent.name}" for p in paths]
    rows += ["imgs/3/0.png,", "imgs/8/0.png,eight", "imgs/none.png,4", "", "imgs/8/0.png"]
    (tmp_path / "labels.csv").write_text(header + "\n".join(rows) + "\n")
    result = ingest(tmp_path / "labels.csv", "csv", datasets_dir=store)
    assert result.new == 3
    assert load_dataset("csv", store).labels.tolist() == [3, 3, 8]
    why = sorted((Path(s["file"]).name, s["why"]) for s in result.skipped)
    assert why == [("0.png", "unlabelled"), ("0.png", "unlabelled"), ("0.png", "unlabelled"),
                   ("none.png", "unreadable")]
    [eight] = [s for s in result.skipped if "'eight'" in s["detail"]]  # the one bad label
    assert "'eight' is not a digit" in eight["detail"] and eight["why"] == "unlabelled"


def test_unreadable_blank_and_unlabelled_files_are_skipped_and_listed(
        tmp_path, store, mnist_digits, capsys):
    src = tmp_path / "src"
    write_digits(src, mnist_digits, {1: 2})
    (src / "1" / "broken.png").write_bytes((src / "1" / "0.png").read_bytes()[:100])
    Image.new("L", (80, 80), 250).save(src / "1" / "blank.png")
    (src / "seven").mkdir()
    Image.new("L", (80, 80), 0).save(src / "seven" / "x.png")
    Image.new("L", (80, 80), 0).save(src / "loose.png")
    (src / ".DS_Store").write_bytes(b"\0")
    code = main(["data", "ingest", str(src), "--name", "mine", "--datasets-dir", str(store)])
    out = capsys.readouterr().out
    assert code == 0
    assert "2 new, 0 duplicates, 4 skipped" in out
    for why, name in [("unreadable", "broken.png"), ("no digit", "blank.png"),
                      ("unlabelled", "x.png"), ("unlabelled", "loose.png")]:
        assert f"skipped ({why}) {src}" in out and name in out
    assert "folder name 'seven' is not a digit 0-9" in out
    assert len(load_dataset("mine", store)) == 2
    manifest = read_manifest("mine", store)
    blank = [f for f in manifest["files"] if f["source"].endswith("blank.png")]
    assert blank and blank[0]["digit_found"] is False and blank[0]["index"] is None
    report = json.loads((store / "mine" / REPORT_FILE).read_text())
    assert len(report["skipped"]) == 4


def test_nothing_to_ingest_creates_nothing(tmp_path, store, capsys):
    (tmp_path / "src" / "4").mkdir(parents=True)
    Image.new("L", (50, 50), 255).save(tmp_path / "src" / "4" / "blank.png")
    assert main(["data", "ingest", str(tmp_path / "src"), "--name", "empty",
                 "--datasets-dir", str(store)]) == 1
    assert "not created" in capsys.readouterr().err and not (store / "empty").exists()


@pytest.mark.parametrize("name", ["mnist", "mnist-test", "mnist-test-augmented:2", "../up", "a b",
                                  ""])
def test_bad_names_refused(tmp_path, store, name):
    with pytest.raises(DigitnetError, match="dataset name"):
        ingest(tmp_path, name, datasets_dir=store)


def test_bad_source(tmp_path, store):
    with pytest.raises(DigitnetError, match="not found"):
        ingest(tmp_path / "nope", "x", datasets_dir=store)
    (tmp_path / "list.txt").write_text("a.png,1\n")
    with pytest.raises(DigitnetError, match="not a folder or .csv file"):
        ingest(tmp_path / "list.txt", "x", datasets_dir=store)


# --------------------------------------------------------------------- dedup and appending
def test_reingest_changes_nothing(tmp_path, store, mnist_digits, capsys):
    write_digits(tmp_path / "src", mnist_digits, {c: 1 for c in range(10)})
    args = ["data", "ingest", str(tmp_path / "src"), "--name", "mine", "--datasets-dir", str(store)]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in (store / "mine").iterdir()}
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "0 new, 10 duplicates, 0 skipped" in out and "nothing changed" in out
    assert {p.name: p.read_bytes() for p in (store / "mine").iterdir()} == before


def test_adding_files_keeps_the_old_ones(tmp_path, store, mnist_digits):
    write_digits(tmp_path / "a", mnist_digits, {0: 3, 5: 2})
    ingest(tmp_path / "a", "mine", datasets_dir=store)
    old = load_dataset("mine", store)
    write_digits(tmp_path / "b", mnist_digits, {0: 3, 6: 4}, start=2)  # 0/2.png repeats a/0/2.png
    result = ingest(tmp_path / "b", "mine", datasets_dir=store)
    assert (result.new, result.duplicates) == (6, 1)
    new = load_dataset("mine", store)
    assert len(new) == 11
    assert torch.equal(new.images[:5], old.images) and torch.equal(new.labels[:5], old.labels)
    manifest = read_manifest("mine", store)
    assert len(manifest["ingests"]) == 2 and manifest["count"] == 11


def test_same_image_with_another_label_is_a_conflict(tmp_path, store, mnist_digits):
    [path] = write_digits(tmp_path / "src", mnist_digits, {4: 1})
    (tmp_path / "src" / "9").mkdir()
    (tmp_path / "src" / "9" / "copy.png").write_bytes(path.read_bytes())
    result = ingest(tmp_path / "src", "mine", datasets_dir=store)
    assert result.new == 1 and [s["why"] for s in result.skipped] == ["label conflict"]
    assert load_dataset("mine", store).labels.tolist() == [4]


def test_interrupted_ingest_leaves_the_previous_dataset(tmp_path, store, mnist_digits):
    write_digits(tmp_path / "src", mnist_digits, {2: 3})
    ingest(tmp_path / "src", "mine", datasets_dir=store)
    before = load_dataset("mine", store)
    folder = store / "mine"
    # a crash after the IDX files were rewritten, before the manifest: extra rows at the end
    extra = np.zeros((2, 28, 28), np.uint8)
    write_idx(folder / IMAGES_FILE, np.concatenate([before.images.numpy(), extra]))
    after = load_dataset("mine", store)
    assert torch.equal(after.images, before.images) and len(after) == 3
    images = before.images.numpy().copy()
    images[0, 0, 0] = 7
    write_idx(folder / IMAGES_FILE, images)
    with pytest.raises(DigitnetError, match="do not match manifest.json"):
        load_dataset("mine", store)


def test_leftover_lock_file_does_not_block(tmp_path, store, mnist_digits):
    # what a killed ingestion used to leave: a lock file that no process holds
    write_digits(tmp_path / "src", mnist_digits, {1: 1})
    store.mkdir()
    (store / ".mine.lock").write_text("12345")
    assert ingest(tmp_path / "src", "mine", datasets_dir=store).new == 1
    assert not (store / ".mine.lock").exists()


def _hold_lock_in_a_subprocess(store: Path, name: str) -> subprocess.Popen:
    """A process that takes the ingestion lock of `name` and sleeps; returns once it holds it."""
    code = ("import sys, time\nfrom pathlib import Path\nfrom digitnet.data.ingest import _lock\n"
            "with _lock(Path(sys.argv[1]), sys.argv[2]):\n"
            "    print('locked', flush=True)\n    time.sleep(120)\n")
    env = dict(os.environ, PYTHONPATH=str(Path(digitnet.__file__).parents[1]))
    proc = subprocess.Popen([sys.executable, "-c", code, str(store), name],
                            stdout=subprocess.PIPE, text=True, env=env)
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    if not ready or proc.stdout.readline().strip() != "locked":
        proc.kill()
        pytest.fail("the lock-holding subprocess did not start")
    return proc


def test_lock_of_a_killed_ingestion_does_not_block(tmp_path, store, mnist_digits):
    write_digits(tmp_path / "src", mnist_digits, {1: 1})
    proc = _hold_lock_in_a_subprocess(store, "mine")
    try:
        lock = store / ".mine.lock"
        assert stat.S_IMODE(lock.stat().st_mode) == 0o666 & ~fileio._UMASK  # 0644, like the data
        with pytest.raises(DigitnetError) as info:
            ingest(tmp_path / "src", "mine", datasets_dir=store)
        message = str(info.value)
        assert message.startswith("dataset mine: another ingestion is running")
        assert f"process {proc.pid} holds {lock}" in message
        assert ingest(tmp_path / "src", "other", datasets_dir=store).new == 1  # per dataset
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert lock.exists()  # killed: nothing removed its file, but the kernel dropped its lock
    assert ingest(tmp_path / "src", "mine", datasets_dir=store).new == 1
    assert not lock.exists()


def test_concurrent_ingests_one_refused_data_intact(tmp_path, store, mnist_digits, monkeypatch):
    write_digits(tmp_path / "a", mnist_digits, {1: 3})
    write_digits(tmp_path / "b", mnist_digits, {2: 4})
    inside, release = threading.Event(), threading.Event()
    real = ingest_module._ingest_locked

    def slow_ingest_locked(*args, **kwargs):  # the first ingestion waits while holding the lock
        inside.set()
        assert release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest_module, "_ingest_locked", slow_ingest_locked)
    first = {}
    thread = threading.Thread(target=lambda: first.setdefault(
        "result", ingest(tmp_path / "a", "mine", datasets_dir=store)))
    thread.start()
    try:
        assert inside.wait(30)
        with pytest.raises(DigitnetError, match="dataset mine: another ingestion is running"):
            ingest(tmp_path / "b", "mine", datasets_dir=store)
    finally:
        release.set()
        thread.join(30)
    assert first["result"].new == 3
    monkeypatch.setattr(ingest_module, "_ingest_locked", real)
    assert ingest(tmp_path / "b", "mine", datasets_dir=store).new == 4  # then it may run
    assert load_dataset("mine", store).labels.tolist() == [1, 1, 1, 2, 2, 2, 2]


def test_lock_released_between_open_and_flock_is_never_held_twice(store, monkeypatch):
    # B opens the lock file; A finishes (removing that file) before B's flock; then C comes.
    # B's flock succeeds on the removed file, so B must notice and lock the new file instead,
    # or B and C would both think they hold the lock.
    holder_a = contextlib.ExitStack()
    holder_a.enter_context(ingest_module._lock(store, "mine"))
    real_flock, calls = fcntl.flock, []

    def flock(fd, operation):
        if not calls:
            calls.append(fd)
            holder_a.close()
        return real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock)  # the lock is fileio.exclusive_lock
    with ingest_module._lock(store, "mine"):  # B
        assert calls  # A released inside B's acquisition
        with pytest.raises(DigitnetError, match="another ingestion is running"):
            with ingest_module._lock(store, "mine"):  # C
                pass
    assert not (store / ".mine.lock").exists()


# ------------------------------------------------------------------ files that never end
def _never_ending(folder: Path) -> tuple[Path, Path]:
    """folder/3/pipe.png, a FIFO no one writes, and folder/3/zero.png, a link to /dev/zero."""
    (folder / "3").mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / "3" / "pipe.png")
    (folder / "3" / "zero.png").symlink_to("/dev/zero")
    return folder / "3" / "pipe.png", folder / "3" / "zero.png"


def _assert_skipped_as_unreadable(result, fifo: Path, zero: Path) -> None:
    skipped = {Path(s["file"]).name: s for s in result.skipped}
    assert skipped["pipe.png"]["why"] == skipped["zero.png"]["why"] == "unreadable"
    assert skipped["pipe.png"]["detail"] == f"{fifo}: expected a regular image file, found a FIFO"
    assert "found a device" in skipped["zero.png"]["detail"]


def test_fifo_and_dev_zero_in_a_folder_are_skipped(tmp_path, store, mnist_digits):
    write_digits(tmp_path / "src", mnist_digits, {3: 2})
    fifo, zero = _never_ending(tmp_path / "src")
    result = run_bounded(lambda: ingest(tmp_path / "src", "mine", datasets_dir=store), fifo=fifo)
    assert not isinstance(result, BaseException), result
    assert result.new == 2
    _assert_skipped_as_unreadable(result, fifo, zero)


def test_fifo_and_dev_zero_in_csv_rows_are_skipped(tmp_path, store, mnist_digits, capsys):
    write_digits(tmp_path / "imgs", mnist_digits, {3: 1})
    fifo, zero = _never_ending(tmp_path / "imgs")
    (tmp_path / "rows.csv").write_text("imgs/3/0.png,3\nimgs/3/pipe.png,3\nimgs/3/zero.png,3\n"
                                       "/dev/zero,5\n")
    result = run_bounded(lambda: ingest(tmp_path / "rows.csv", "mine", datasets_dir=store),
                         fifo=fifo)
    assert not isinstance(result, BaseException), result
    assert result.new == 1
    _assert_skipped_as_unreadable(result, fifo, zero)
    assert {s["file"]: s["why"] for s in result.skipped}["/dev/zero"] == "unreadable"


def test_csv_source_that_never_ends_or_is_too_large(tmp_path, store, monkeypatch):
    os.mkfifo(tmp_path / "pipe.csv")
    error = run_bounded(lambda: ingest(tmp_path / "pipe.csv", "mine", datasets_dir=store),
                        fifo=tmp_path / "pipe.csv")
    assert isinstance(error, DigitnetError)
    assert str(error) == f"{tmp_path / 'pipe.csv'}: expected a regular CSV file, found a FIFO"
    (tmp_path / "big.csv").write_text("a.png,1\n" * 10)
    monkeypatch.setattr(sources_module, "MAX_CSV_BYTES", 79)
    with pytest.raises(DigitnetError, match="big.csv: CSV file larger than the limit of 79 bytes"):
        ingest(tmp_path / "big.csv", "mine", datasets_dir=store)


# ------------------------------------------------------------------------------- balance


# ------------------------------------------------------------------------------ end to end


# ------------------------------------------------------------------- README promises (issue 18)
