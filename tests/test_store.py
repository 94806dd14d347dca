"""The model store: run names that stay one folder, references that stay inside the store unless
they are explicit paths, and globs."""

import json
from pathlib import Path

import pytest

from digitnet.cli import main
from digitnet.config import TrainConfig
from digitnet.errors import DigitnetError
from digitnet.store import expand_refs, list_runs, resolve_ref


def make_run(folder: Path, created: str = "2026-01-01T00:00:00") -> Path:
    """A folder that the store counts as a run: config.json and final weights (contents unused)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"created": created}))
    (folder / "model.safetensors").write_bytes(b"")
    return folder


@pytest.fixture
def store(tmp_path, monkeypatch) -> Path:
    """tmp/models/cnn-v1/{r1,r2} in the store, tmp/other/x and tmp/escaped outside it; cwd tmp."""
    make_run(tmp_path / "models" / "cnn-v1" / "r1", "2026-01-01T00:00:00")
    make_run(tmp_path / "models" / "cnn-v1" / "r2", "2026-01-02T00:00:00")
    make_run(tmp_path / "other" / "x")
    make_run(tmp_path / "escaped")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ------------------------------------------------------------------------------------ run names
BAD_NAMES = ["../../escaped", "/abs/path", "a/b", ".", "..", "latest", "-rf", ".hidden", "a b",
             "a@b", "r*", "x" * 129, "", "a\\b", "é"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_run_name_is_refused_before_anything_is_written(tmp_path, synthetic_mnist, capsys, name):
    models = tmp_path / "store" / "models"
    if name == "/abs/path":
        name = str(tmp_path / "abs")
    code = main(["train", f"--name={name}", "--epochs", "1", "--data-dir", str(synthetic_mnist),
                 "--models-dir", str(models), "--no-progress"])
    assert code == 1
    assert capsys.readouterr().err == (
        "digitnet: error: invalid training configuration: name must be 1 to 128 letters, digits, "
        "'.', '_' or '-', starting with a letter or digit (one folder name, not 'latest'), got "
        f"{name!r}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist"]  # nothing, anywhere


@pytest.mark.parametrize("name", ["r1", "20261125-120000", "ens-s0", "lenet.quick_2", "A" * 128])
def test_good_run_names(name):
    assert TrainConfig(name=name).name == name


# ----------------------------------------------------------------------------------- references
ESCAPING_REFS = [
    "cnn-v1/../../escaped",
    "cnn-v1/../../escaped@epoch-1",
    "cnn-v1/../../other/x@best",
    "cnn-v1/r1/../../../escaped",
    "cnn-v1/..",
    "cnn-v1/.",
    "cnn-v1/",
    "cnn-v1/r1/checkpoints",
    "cnn-v1/..\\..\\escaped",
]


@pytest.mark.parametrize("ref", ESCAPING_REFS)
@pytest.mark.parametrize("cwd", [".", "models"])  # from models/, cnn-v1/../../escaped exists
def test_store_reference_never_leaves_the_store(store, monkeypatch, ref, cwd):
    monkeypatch.chdir(store / cwd)
    leaves = ("is not one folder name of the store; a path to a folder elsewhere must start with "
              "/, ./, ../ or ~")
    inside = "cnn-v1: not a model folder"  # from models/, `cnn-v1/.` is that existing folder
    with pytest.raises(DigitnetError, match=f"{leaves}|{inside}" if cwd == "models" else leaves):
        resolve_ref(ref, store / "models")


@pytest.mark.parametrize("ref", ["cnn-v1/../*", "cnn-v1/../../e*", "cnn-v1/r1/../../../*@best",
                                 "cnn-v1/..\\*"])
def test_glob_never_leaves_the_store(store, ref):
    with pytest.raises(DigitnetError, match="is not one folder name of the store"):
        expand_refs([ref], store / "models")


@pytest.mark.parametrize("ref, run_dir, checkpoint", [
    ("cnn-v1/r1", "models/cnn-v1/r1", None),
    ("cnn-v1/r1@epoch-2", "models/cnn-v1/r1", "epoch-2"),
    ("cnn-v1/latest@best", "models/cnn-v1/r2", "best"),
    ("latest", "models/cnn-v1/r2", None),
    ("./other/x", "other/x", None),
    ("./other/x@epoch-1", "other/x", "epoch-1"),
    ("other/x", "other/x", None),  # an existing folder without `..`
    ("models/cnn-v1/r1@best", "models/cnn-v1/r1", "best"),
    ("./models/../escaped", "escaped", None),  # explicit: `..` allowed
    ("~/escaped", "escaped", None),
])
def test_every_documented_reference_form_resolves(store, monkeypatch, ref, run_dir, checkpoint):
    monkeypatch.setenv("HOME", str(store))
    got = resolve_ref(ref, store / "models")
    assert (got.run_dir, got.checkpoint) == ((store / run_dir).resolve(), checkpoint)


def test_absolute_and_parent_paths_resolve(store, monkeypatch):
    assert resolve_ref(str(store / "escaped"), store / "models").run_dir == (store / "escaped").resolve()
    monkeypatch.chdir(store / "models")
    assert resolve_ref("../other/x@last").run_dir == (store / "other" / "x").resolve()


def test_missing_explicit_path_says_so(store):
    with pytest.raises(DigitnetError, match=r"model reference './nothing': nothing is not a folder"):
        resolve_ref("./nothing", store / "models")


def test_globs_expand_inside_the_store(store):
    assert expand_refs(["cnn-v1/r*@best", "cnn-v1/r1"], store / "models") == [
        "cnn-v1/r1@best", "cnn-v1/r2@best", "cnn-v1/r1"]
    with pytest.raises(DigitnetError, match="no cnn-v1 run in .* matches 'q\\*'"):
        expand_refs(["cnn-v1/q*"], store / "models")


@pytest.mark.parametrize("content", ["[1, 2]", '{"created": 5}', "\xff\xfe", "[" * 100_000, "{"])
def test_list_runs_survives_any_config_json(store, content):
    (store / "models" / "cnn-v1" / "r1" / "config.json").write_bytes(content.encode("latin-1"))
    assert [r.name for r in list_runs(store / "models")] == ["r1", "r2"]
