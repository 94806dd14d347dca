"""The reference grammar (digitnet.store.refs): one parser from text to a typed reference, used by
resolve_ref, glob expansion and `@all`; a table of (text, expected) and of refused texts."""

from __future__ import annotations

from pathlib import Path

import pytest

from digitnet.errors import DigitnetError
from digitnet.store.refs import (
    HubRef,
    LatestRef,
    PathRef,
    StoreRef,
    checkpoint_epoch,
    is_explicit_path,
    may_be_glob,
    parse_ref,
)


@pytest.mark.parametrize("text, expected", [
    ("cnn-v1/r1", StoreRef("cnn-v1/r1", "cnn-v1", "r1", None)),
    ("cnn-v1/r1@best", StoreRef("cnn-v1/r1@best", "cnn-v1", "r1", "best")),
    ("cnn-v1/latest@epoch-2", StoreRef("cnn-v1/latest@epoch-2", "cnn-v1", "latest", "epoch-2")),
    ("wide-v1/ens-*@all", StoreRef("wide-v1/ens-*@all", "wide-v1", "ens-*", "all")),
    ("latest", LatestRef("latest", None)),
    ("latest@last", LatestRef("latest@last", "last")),
    ("./runs/x@epoch-1", PathRef("./runs/x@epoch-1", Path("runs/x"), "epoch-1")),
    ("/abs/run", PathRef("/abs/run", Path("/abs/run"), None)),
    ("hf://someone/digits", HubRef("hf://someone/digits", "someone/digits", None)),
    ("hf://someone/digits@v1.0", HubRef("hf://someone/digits@v1.0", "someone/digits", "v1.0")),
])
def test_each_form_parses_to_its_type(text, expected):
    assert parse_ref(text) == expected


def test_a_tilde_path_is_expanded_and_an_existing_folder_is_a_path(tmp_path, monkeypatch):
    assert parse_ref("~/x").path == Path("~/x").expanduser()
    (tmp_path / "cnn-v1" / "r1").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert isinstance(parse_ref("cnn-v1/r1"), PathRef)  # an existing folder wins
    assert isinstance(parse_ref("cnn-v1/r2"), StoreRef)
    with pytest.raises(DigitnetError, match="is not one folder name"):  # `..`: never a path
        parse_ref("cnn-v1/../cnn-v1/r1")


@pytest.mark.parametrize("text, message", [
    ("cnn/r1", "expected ARCH-vN/RUN"),
    ("cnn-v1", "expected ARCH-vN/RUN"),
    ("cnn-v1/..", "the run name '..' is not one folder name of the store"),
    ("cnn-v1/a/b", "the run name 'a/b' is not one folder name"),
    ("hf://someone", "expected hf://USER/NAME"),
    ("hf://someone/digits@", "nothing after '@'"),
    ("hf://someone/digits@../x", "is not a branch, tag or commit name"),
])
def test_malformed_references_are_refused_with_the_reference_named(text, message):
    with pytest.raises(DigitnetError) as info:
        parse_ref(text)
    assert f"model reference {text!r}" in str(info.value) and message in str(info.value)


@pytest.mark.parametrize("text, epoch", [("epoch-3", 3), ("epoch3", 3), ("12", 12),
                                         ("last", None), ("best", None), ("epoch-", None)])
def test_checkpoint_names_give_their_epoch(text, epoch):
    assert checkpoint_epoch(text) == epoch


@pytest.mark.parametrize("text, expected", [("cnn-v1/*", True), ("cnn-v1/r?@best", True),
                                            ("cnn-v1*", False), ("latest", False),
                                            ("cnn-v1/r1@*", False)])
def test_only_a_run_part_with_a_glob_may_name_several_runs(text, expected):
    assert may_be_glob(text) is expected


@pytest.mark.parametrize("text, expected", [("/x", True), ("./x", True), ("../x", True),
                                            ("~", True), ("~/x", True), ("x/y", False)])
def test_explicit_paths(text, expected):
    assert is_explicit_path(text) is expected
