"""Checkpoint folders (digitnet.store.checkpoint) at the file level: what each file holds, how
"last"/"best"/"epoch-N" resolve, and how a corrupt or tampered checkpoint is refused or skipped.
Tiny tensors, no training (the end-to-end paths are in test_training.py)."""

from __future__ import annotations

import json
import pickle
import tempfile
from pathlib import Path

import pytest
import torch

from digitnet.errors import DigitnetError
from digitnet.fileio import sha256_file
from digitnet.store.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    META_FILE,
    POINTERS_FILE,
    STATE_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    epoch_dir_name,
    list_checkpoints,
    load_checkpoint,
    load_latest_good,
    load_state_dict,
    load_training_state,
    read_pointers,
    resolve_checkpoint,
    save_checkpoint,
    save_state_dict,
    verify_checkpoint,
    write_pointers,
)


def weights(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((2, 3), value), "b": torch.arange(3.0)}


def write(folder, epoch: int, value: float | None = None, **meta):
    """A checkpoint of epoch `epoch` whose weights are all `value` (default: the epoch)."""
    value = float(epoch) if value is None else value
    training = {"optimizer": {"step": torch.tensor(epoch)}, "counter": epoch * 10}
    return save_checkpoint(folder, epoch, weights(value), training,
                           {"val_loss": 1.0 / epoch, **meta})


def test_epoch_folder_names_are_zero_padded():
    assert epoch_dir_name(3) == "epoch-003"
    assert epoch_dir_name(1234) == "epoch-1234"


def test_state_dict_round_trip_is_exact_and_leaves_no_temp_file(tmp_path):
    t = torch.arange(12.0).reshape(3, 4)
    state = {"a": t.t(), "b": torch.tensor([1, 2], dtype=torch.int64)}  # a non-contiguous view
    save_state_dict(state, tmp_path / "m.safetensors")
    back = load_state_dict(tmp_path / "m.safetensors")
    assert set(back) == {"a", "b"}
    assert torch.equal(back["a"], t.t()) and back["b"].dtype == torch.int64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_state_dict_is_written_with_pytorch_format_metadata(tmp_path):
    from safetensors import safe_open

    save_state_dict(weights(1.0), tmp_path / "m.safetensors")
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}


def test_failed_weights_write_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "m.safetensors"
    save_state_dict(weights(1.0), path)
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 (whatever fails: what matters is what is left)
        save_state_dict({"bad": "not a tensor"}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


@pytest.mark.parametrize("content", [None, b"", b"garbage, not safetensors"],
                         ids=["missing", "empty", "garbage"])
def test_bad_weights_file_is_a_checkpoint_error_naming_it(tmp_path, content):
    path = tmp_path / "m.safetensors"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_state_dict(path)
    assert str(path) in str(info.value)
    assert ("not found" if content is None else "not a valid safetensors") in str(info.value)
    assert info.value.__cause__ is None  # no safetensors traceback chained behind it


def test_saved_checkpoint_holds_weights_state_and_verified_meta(tmp_path):
    folder = write(tmp_path / "ck", 2, extra="x")
    assert folder == tmp_path / "ck" / "epoch-002"
    assert sorted(p.name for p in folder.iterdir()) == sorted([WEIGHTS_FILE, STATE_FILE, META_FILE])
    meta = json.loads((folder / META_FILE).read_text())
    assert meta["format_version"] == CHECKPOINT_FORMAT_VERSION == 1
    assert meta["epoch"] == 2 and meta["extra"] == "x" and meta["val_loss"] == 0.5
    assert meta["sha256"] == {WEIGHTS_FILE: sha256_file(folder / WEIGHTS_FILE),
                              STATE_FILE: sha256_file(folder / STATE_FILE)}
    state = torch.load(folder / STATE_FILE, weights_only=True)
    assert state["format_version"] == 1 and state["epoch"] == 2 and state["counter"] == 20
    assert torch.equal(state["optimizer"]["step"], torch.tensor(2))
    assert torch.equal(load_state_dict(folder / WEIGHTS_FILE)["w"], torch.full((2, 3), 2.0))
    # no temporary folder left
    assert [p.name for p in (tmp_path / "ck").iterdir()] == ["epoch-002"]

    ck = load_checkpoint(folder)
    assert ck.path == folder and ck.epoch == 2 and ck.meta == meta
    assert ck.training_state["counter"] == 20
    assert load_checkpoint(folder, with_training_state=False).training_state == {}


def test_rewriting_an_epoch_replaces_the_stale_folder(tmp_path):
    write(tmp_path, 1, value=5.0)
    folder = write(tmp_path, 1, value=7.0)
    assert torch.equal(load_checkpoint(folder).model_state["w"], torch.full((2, 3), 7.0))
    assert [p.name for p in tmp_path.iterdir()] == ["epoch-001"]


def test_failed_checkpoint_write_leaves_nothing_behind(tmp_path):
    write(tmp_path, 1)
    with pytest.raises(Exception):  # noqa: B017 (state.pt cannot hold it; what is left matters)
        save_checkpoint(tmp_path, 2, weights(2.0), {"x": lambda: 0}, {})
    assert [p.name for p in tmp_path.iterdir()] == ["epoch-001"]
    assert list_checkpoints(tmp_path) == [1]


def test_pointers_merge_and_survive_corruption(tmp_path):
    assert read_pointers(tmp_path) == {}
    write_pointers(tmp_path, last="epoch-002")
    write_pointers(tmp_path, best="epoch-001")
    assert read_pointers(tmp_path) == {"last": "epoch-002", "best": "epoch-001"}
    write_pointers(tmp_path, last="epoch-003")
    assert read_pointers(tmp_path) == {"last": "epoch-003", "best": "epoch-001"}
    (tmp_path / POINTERS_FILE).write_text("{not json")
    assert read_pointers(tmp_path) == {}
    (tmp_path / POINTERS_FILE).unlink()
    (tmp_path / POINTERS_FILE).mkdir()  # unreadable as a file
    assert read_pointers(tmp_path) == {}


def test_list_checkpoints_only_complete_epoch_folders_in_numeric_order(tmp_path):
    assert list_checkpoints(tmp_path / "absent") == []
    for epoch in (10, 2, 9):
        write(tmp_path, epoch)
    (tmp_path / "epoch-005").mkdir()  # incomplete: no meta.json
    (tmp_path / "epoch-007").write_text("a file, not a folder")
    (tmp_path / "epoch-x").mkdir()
    (tmp_path / "epoch-x" / META_FILE).write_text("{}")
    (tmp_path / "old-epoch-003").mkdir()
    (tmp_path / "old-epoch-003" / META_FILE).write_text("{}")
    (tmp_path / "epoch-004.bak").mkdir()
    (tmp_path / "epoch-004.bak" / META_FILE).write_text("{}")
    assert list_checkpoints(tmp_path) == [2, 9, 10]


def test_resolve_last_best_and_epoch_numbers(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoints"):
        resolve_checkpoint(tmp_path)
    for epoch in (1, 2, 3):
        write(tmp_path, epoch)
    assert resolve_checkpoint(tmp_path) == tmp_path / "epoch-003"  # no pointers: newest is last
    with pytest.raises(CheckpointError, match="no 'best' checkpoint recorded"):
        resolve_checkpoint(tmp_path, "best")
    write_pointers(tmp_path, last="epoch-002", best="epoch-001")
    assert resolve_checkpoint(tmp_path, "last") == tmp_path / "epoch-002"
    assert resolve_checkpoint(tmp_path, "best") == tmp_path / "epoch-001"
    for which in ("epoch-3", "epoch-003", "epoch3", "3", "003"):
        assert resolve_checkpoint(tmp_path, which) == tmp_path / "epoch-003", which
    write_pointers(tmp_path, best="epoch-009")  # points at a folder that is gone
    with pytest.raises(CheckpointError, match="no 'best' checkpoint recorded"):
        resolve_checkpoint(tmp_path, "best")


@pytest.mark.parametrize("which", ["4", "epoch-0", "first", "epoch-1x", "-1"])
def test_unknown_checkpoint_lists_what_exists(tmp_path, which):
    for epoch in (1, 2):
        write(tmp_path, epoch)
    with pytest.raises(CheckpointError) as info:
        resolve_checkpoint(tmp_path, which)
    assert str(info.value) == (f"{tmp_path}: no checkpoint {which!r}; available: last, best, "
                               "epoch-001, epoch-002")


def test_verify_refuses_missing_unreadable_and_tampered_files(tmp_path):
    folder = write(tmp_path, 1)
    assert verify_checkpoint(folder)["epoch"] == 1

    (folder / STATE_FILE).write_bytes((folder / STATE_FILE).read_bytes() + b"\x00")
    with pytest.raises(CheckpointError) as info:
        verify_checkpoint(folder)
    assert str(folder / STATE_FILE) in str(info.value) and "corrupt or tampered" in str(info.value)

    folder = write(tmp_path, 2)
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match="missing from checkpoint") as info:
        load_checkpoint(folder)
    assert str(folder / WEIGHTS_FILE) in str(info.value)

    folder = write(tmp_path, 3)
    (folder / META_FILE).write_text("{truncated")
    with pytest.raises(CheckpointError, match=r"invalid JSON .*\(corrupt or tampered\)") as info:
        verify_checkpoint(folder)
    assert str(folder / META_FILE) in str(info.value)
    (folder / META_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"incomplete checkpoint, {META_FILE} missing"):
        verify_checkpoint(folder)


class _Payload:
    def __reduce__(self):
        return (print, ("payload ran",))


def test_training_state_with_code_is_refused_and_corrupt_state_named(tmp_path, capsys):
    path = tmp_path / STATE_FILE
    path.write_bytes(pickle.dumps({"x": _Payload()}))
    with pytest.raises(CheckpointError, match="refused to load") as info:
        load_training_state(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)  # only the first line of torch's explanation
    assert "payload ran" not in capsys.readouterr().out
    good = tmp_path / "good.pt"
    torch.save({"a": torch.zeros(3)}, good)
    for content in (good.read_bytes()[:-30], b""):  # truncated zip, empty file
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match="corrupt training state") as corrupt:
            load_training_state(path)
        assert str(path) in str(corrupt.value)
    assert load_training_state(good)["a"].shape == (3,)
    assert isinstance(info.value, DigitnetError)


def test_latest_good_falls_back_to_the_newest_earlier_good_checkpoint(tmp_path):
    for epoch in (1, 2, 3, 4):
        write(tmp_path, epoch)
    ck, warnings = load_latest_good(tmp_path)
    assert ck.epoch == 4 and warnings == []
    for epoch in (4, 3):
        (tmp_path / epoch_dir_name(epoch) / WEIGHTS_FILE).write_bytes(b"bad")
    ck, warnings = load_latest_good(tmp_path)
    assert ck.epoch == 2 and ck.path == tmp_path / "epoch-002"
    assert torch.equal(ck.model_state["w"], torch.full((2, 3), 2.0))
    assert len(warnings) == 2
    assert warnings[0].startswith("skipping bad checkpoint: ") and "epoch-004" in warnings[0]
    assert "epoch-003" in warnings[1]

    # from an explicit epoch, only earlier ones
    ck, warnings = load_latest_good(tmp_path, "epoch-3")
    assert ck.epoch == 2 and len(warnings) == 1 and "epoch-003" in warnings[0]

    for epoch in (1, 2):
        (tmp_path / epoch_dir_name(epoch) / META_FILE).unlink()
        (tmp_path / epoch_dir_name(epoch)).rename(tmp_path / f"gone-{epoch}")
    write_pointers(tmp_path, last="epoch-004")
    with pytest.raises(CheckpointError) as info:
        load_latest_good(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path}: no loadable checkpoint:\n  skipping bad checkpoint: ")
    assert "epoch-004" in message and "epoch-003" in message and "\n  skipping" in message


def test_best_pointer_falls_back_to_earlier_epochs_not_later_ones(tmp_path):
    for epoch in (1, 2, 3):
        write(tmp_path, epoch)
    write_pointers(tmp_path, best="epoch-002")
    (tmp_path / "epoch-002" / WEIGHTS_FILE).write_bytes(b"bad")
    ck, warnings = load_latest_good(tmp_path, "best")
    assert ck.epoch == 1 and len(warnings) == 1


# ------------------------------------------------------------------- found by mutation testing
def test_code_is_refused_even_when_the_environment_asks_torch_to_allow_it(tmp_path, monkeypatch,
                                                                          capsys):
    """weights_only=True is passed explicitly: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD (which changes
    only torch.load's default) cannot turn the check off."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path = tmp_path / STATE_FILE
    path.write_bytes(pickle.dumps({"x": _Payload()}))
    with pytest.raises(CheckpointError, match="refused to load"):
        load_training_state(path)
    assert "payload ran" not in capsys.readouterr().out


def test_refusal_quotes_the_first_line_of_torchs_reason(tmp_path):
    path = tmp_path / STATE_FILE
    path.write_bytes(pickle.dumps({"x": _Payload()}))
    with pytest.raises(pickle.UnpicklingError) as torch_error:
        torch.load(path, weights_only=True)
    first_line = str(torch_error.value).splitlines()[0]
    with pytest.raises(CheckpointError) as info:
        load_training_state(path)
    assert str(info.value) == (
        f"{path}: refused to load: the file holds objects other than tensors and plain data "
        f"(possible code execution payload): {first_line}")


def test_checkpoint_into_a_folder_that_does_not_exist_yet(tmp_path):
    folder = write(tmp_path / "models" / "cnn-v1" / "run" / "checkpoints", 1)
    assert load_checkpoint(folder).epoch == 1


def test_meta_without_checksums_is_no_traceback(tmp_path):
    folder = write(tmp_path, 1)
    meta = json.loads((folder / META_FILE).read_text())
    del meta["sha256"]
    (folder / META_FILE).write_text(json.dumps(meta))
    try:
        verify_checkpoint(folder)  # nothing recorded to compare with
    except CheckpointError:
        pass  # refusing it is also a fine answer; an AttributeError is not


def test_every_skipped_checkpoint_gets_its_own_line(tmp_path):
    for epoch in (1, 2):
        write(tmp_path, epoch)
        (tmp_path / epoch_dir_name(epoch) / WEIGHTS_FILE).write_bytes(b"bad")
    with pytest.raises(CheckpointError) as info:
        load_latest_good(tmp_path)
    head, *lines = str(info.value).split("\n  ")
    assert head == f"{tmp_path}: no loadable checkpoint:"
    assert len(lines) == 2 and all(line.startswith("skipping bad checkpoint: ") for line in lines)
    assert "epoch-002" in lines[0] and "epoch-001" in lines[1]


def test_temporary_files_are_hidden_beside_their_target(tmp_path, monkeypatch):
    """The weights are written to a hidden `.NAME.*.tmp` file in the target's folder (same file
    system, so the final rename is atomic), and the epoch under a hidden `.tmp-epoch-NNN.*`
    folder; a stale epoch folder is moved aside under `.tmp-stale-epoch-NNN.*` first."""
    written, made = [], []
    real_mkstemp, real_mkdtemp = tempfile.mkstemp, tempfile.mkdtemp

    def mkstemp(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        written.append(Path(name))
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(tempfile, "mkdtemp",
                        lambda *a, **kw: made.append(real_mkdtemp(*a, **kw)) or made[-1])
    save_state_dict(weights(1.0), tmp_path / "m.safetensors")
    assert written[0].parent == tmp_path
    assert written[0].name.startswith(".m.safetensors.") and written[0].name.endswith(".tmp")
    write(tmp_path / "ck", 2)
    write(tmp_path / "ck", 2)  # again: the stale folder is moved aside first
    assert len(made) == 3 and all(Path(p).parent == tmp_path / "ck" for p in made)
    assert all(Path(p).name.startswith(".tmp-epoch-002.") for p in made[:2])
    assert Path(made[2]).name.startswith(".tmp-stale-epoch-002.")
    assert written[1].parent == Path(made[0])
    assert [p.name for p in (tmp_path / "ck").iterdir()] == ["epoch-002"]


def test_failed_weights_write_removes_its_temporary_file(tmp_path, monkeypatch):
    import errno
    import os

    def full_disk(fd):  # the temporary file is written when the disk fills up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left") as info:
        save_state_dict(weights(1.0), tmp_path / "m.safetensors")
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC  # with its errno, for the caller's message
    assert list(tmp_path.iterdir()) == []


# --------------------------------------- found by mutation testing of the merged checkpoint.py
def test_remove_temporaries_removes_only_what_a_killed_writer_left(tmp_path):
    from digitnet.store.checkpoint import remove_temporaries

    folder = tmp_path / "checkpoints"
    write(folder, 1)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    left = [".tmp-epoch-002.ab12", ".epoch-003.xy", ".stale-epoch-001.q"]  # folders
    for name in left:
        (folder / name).mkdir()
        (folder / name / WEIGHTS_FILE).write_bytes(b"partial")
    (folder / ".pointers.json.k3j.tmp").write_text("{")
    (folder / ".tmp-link").symlink_to(outside, target_is_directory=True)
    kept = ["epoch-001", POINTERS_FILE, ".tmp", ".hidden", "tmp-x", ".epoch-004", "x.tmp"]
    for name in kept[1:]:
        (folder / name).write_text("{}")
    removed = remove_temporaries(tmp_path / "not-there", folder)  # a missing folder is skipped
    assert sorted(p.name for p in removed) == sorted(left + [".pointers.json.k3j.tmp", ".tmp-link"])
    assert sorted(p.name for p in folder.iterdir()) == sorted(kept)
    assert (outside / "keep").read_text() == "x"  # a link is removed, never what it points to
    assert list_checkpoints(folder) == [1]


def test_last_checkpoint_epoch_is_what_a_resume_starts_from(tmp_path):
    from digitnet.store.checkpoint import last_checkpoint_epoch

    assert last_checkpoint_epoch(tmp_path / "none") == 0
    write(tmp_path, 1)
    write(tmp_path, 2)
    assert last_checkpoint_epoch(tmp_path) == 2  # no pointers: the newest folder
    write_pointers(tmp_path, last="epoch-001")
    assert last_checkpoint_epoch(tmp_path) == 1


def test_meta_epoch_must_match_its_folder_and_files_must_be_regular(tmp_path):
    import os

    folder = write(tmp_path, 1)
    meta = json.loads((folder / META_FILE).read_text())
    (folder / META_FILE).write_text(json.dumps({**meta, "epoch": 2}))
    with pytest.raises(CheckpointError) as info:
        verify_checkpoint(folder)
    assert str(info.value) == (f"{folder / META_FILE}: corrupt or tampered (epoch 2 in a "
                               "checkpoint folder named epoch-001)")
    copy = tmp_path / "copied"  # a folder with another name is not checked against its name
    folder.rename(copy)
    assert verify_checkpoint(copy)["epoch"] == 2
    folder = write(tmp_path, 3)
    (folder / STATE_FILE).unlink()
    os.mkfifo(folder / STATE_FILE)
    with pytest.raises(CheckpointError) as info:
        verify_checkpoint(folder)
    assert str(info.value) == (f"{folder / STATE_FILE}: expected a regular checkpoint file, "
                               "found a FIFO")
    with pytest.raises(CheckpointError) as info:
        load_training_state(folder / STATE_FILE)
    assert str(info.value) == (f"{folder / STATE_FILE}: expected a regular training state, "
                               "found a FIFO")


def test_training_state_that_is_not_a_dict_is_corrupt(tmp_path):
    path = tmp_path / STATE_FILE
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError) as info:
        load_training_state(path)
    assert str(info.value) == f"{path}: corrupt training state (expected a dict, found list)"


def test_non_regular_weights_and_metadata_are_named(tmp_path):
    import os

    os.mkfifo(tmp_path / WEIGHTS_FILE)
    with pytest.raises(CheckpointError) as info:
        load_state_dict(tmp_path / WEIGHTS_FILE)
    assert str(info.value) == (f"{tmp_path / WEIGHTS_FILE}: expected a regular weights file, "
                               "found a FIFO")
    folder = write(tmp_path / "c", 1)
    (folder / META_FILE).unlink()
    os.mkfifo(folder / META_FILE)
    with pytest.raises(CheckpointError) as info:
        verify_checkpoint(folder)
    assert str(info.value) == (f"{folder / META_FILE}: expected a regular checkpoint metadata, "
                               "found a FIFO (corrupt or tampered)")


def test_corrupt_training_state_quotes_the_first_line_or_the_error_type(tmp_path, monkeypatch):
    path = tmp_path / STATE_FILE
    path.write_bytes(b"")  # torch.load is replaced: the file only has to be regular

    def fails(*args, **kwargs):
        raise KeyError()  # str() is empty: the type names the problem

    monkeypatch.setattr(torch, "load", fails)
    with pytest.raises(CheckpointError) as info:
        load_training_state(path)
    assert str(info.value) == f"{path}: corrupt training state (KeyError)"

    def fails_with_lines(*args, **kwargs):
        raise ValueError("first line\nsecond line")

    monkeypatch.setattr(torch, "load", fails_with_lines)
    with pytest.raises(CheckpointError) as info:
        load_training_state(path)
    assert str(info.value) == f"{path}: corrupt training state (first line)"


def test_pointers_that_are_not_epoch_folder_names_are_left_out(tmp_path):
    (tmp_path / POINTERS_FILE).write_text(json.dumps(
        {"last": "../evil", "best": "epoch-001", "other": 3, "x": "epoch-2x"}))
    assert read_pointers(tmp_path) == {"best": "epoch-001"}
