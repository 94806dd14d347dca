"""The model store (digitnet.store) on hand-made run folders: where the store is, what every form
of reference resolves to, globs, loading exactly the weights a reference names (each epoch's
weights are distinct constants, so a wrong one shows); run names that stay one folder, and
references that stay inside the store unless they are explicit paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from digitnet.cli import main
from digitnet.config import TrainConfig
from digitnet.constants import MNIST_MEAN, MNIST_STD
from digitnet.errors import DigitnetError
from digitnet.fileio import read_json
from digitnet.models import create_model
from digitnet.store import (
    ModelRef,
    architecture_signature,
    build_frozen_model,
    default_data_config,
    expand_refs,
    list_runs,
    load_model,
    load_weights,
    models_root,
    read_metrics,
    resolve_ref,
)
from digitnet.store.checkpoint import (
    CheckpointError,
    save_checkpoint,
    save_state_dict,
    write_pointers,
)


def filled(model: nn.Module, value: float) -> dict[str, torch.Tensor]:
    return {k: torch.full_like(v, value) if v.is_floating_point() else v.clone()
            for k, v in model.state_dict().items()}


def make_run(models, name: str, created: str, final: float | None = 9.0, epochs=(),
             arch_id="cnn-v1"):
    """A run folder of cnn-v1 with final weights all `final` (None: none) and a checkpoint per
    epoch whose weights are all equal to the epoch number."""
    model = create_model("cnn", 1)
    run = models / arch_id / name
    run.mkdir(parents=True)
    arch = dict(name="cnn", version=1, id="cnn-v1", model_args=model.model_args,
                signature=architecture_signature(model))
    config = dict(arch=arch, data_config=default_data_config(), created=created)
    (run / "config.json").write_text(json.dumps(config))
    if final is not None:
        save_state_dict(filled(model, final), run / "model.safetensors")
    for epoch in epochs:
        save_checkpoint(run / "checkpoints", epoch, filled(model, float(epoch)), {}, {})
    if epochs:
        write_pointers(run / "checkpoints", last=f"epoch-{max(epochs):03d}",
                       best=f"epoch-{min(epochs):03d}")
    return run


def weight_value(loaded) -> float:
    return float(next(iter(loaded.model.state_dict().values())).flatten()[0])


@pytest.fixture
def store(tmp_path):
    models = tmp_path / "models"
    make_run(models, "old", "2026-01-01T00:00:00", final=1.5, epochs=(1, 2, 3))
    make_run(models, "mid", "2026-01-02T00:00:00", final=None, epochs=(1, 2))
    make_run(models, "new", "2026-01-03T00:00:00", final=None)  # no weights at all yet
    make_run(models, "other", "2026-01-04T00:00:00", final=4.5, arch_id="wide-v1")
    return models


def test_models_root_is_argument_then_environment_then_models(monkeypatch, tmp_path):
    monkeypatch.delenv("DIGITNET_MODELS_DIR", raising=False)
    assert models_root() == models_root("") == models_root(None) == Path("models")
    monkeypatch.setenv("DIGITNET_MODELS_DIR", str(tmp_path / "env"))
    assert models_root() == tmp_path / "env"
    assert models_root(tmp_path / "arg") == tmp_path / "arg"


def test_default_data_config_says_how_images_must_look():
    assert default_data_config() == dict(input_size=[1, 28, 28], mean=MNIST_MEAN, std=MNIST_STD,
                                         label_names=[str(d) for d in range(10)],
                                         polarity="white digit on black, 0-255")


def test_architecture_signature_lists_parameters_and_buffers_with_shapes():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    assert architecture_signature(model) == [
        ["0.weight", [2, 3]], ["0.bias", [2]], ["1.weight", [2]], ["1.bias", [2]],
        ["1.running_mean", [2]], ["1.running_var", [2]], ["1.num_batches_tracked", []]]


def test_read_json_names_the_file(tmp_path):
    path = tmp_path / "x.json"
    with pytest.raises(DigitnetError, match="not found") as info:
        read_json(path)
    assert str(info.value) == f"{path}: JSON file not found"
    path.write_text("{broken")
    with pytest.raises(DigitnetError, match="invalid JSON") as info:
        read_json(path)
    assert str(info.value).startswith(f"{path}: invalid JSON (")
    path.write_text('{"a": 1}')
    assert read_json(path) == {"a": 1}


def test_read_metrics_skips_a_torn_line(tmp_path):
    assert read_metrics(tmp_path) == []
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3, "lo')
    assert read_metrics(tmp_path) == [{"epoch": 1}, {"epoch": 2}]
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\nnot json\n{"epoch": 2}\n')
    with pytest.raises(DigitnetError, match=r"metrics\.jsonl line 2: invalid JSON"):
        read_metrics(tmp_path)  # only a torn last line is a crash's; an earlier one is damage


def test_list_runs_oldest_first_by_recorded_time(store, tmp_path):
    (store / "cnn-v1" / "not-a-run").mkdir()  # no config.json
    (store / "README.txt").write_text("a file among the architecture folders")
    assert list_runs(tmp_path / "absent") == []
    assert [r.name for r in list_runs(store)] == ["old", "mid", "new", "other"]
    assert [r.name for r in list_runs(store, "cnn-v1")] == ["old", "mid", "new"]
    assert [r.name for r in list_runs(store, "wide-v1")] == ["other"]
    assert list_runs(store, "nope-v1") == []
    # the recorded time wins over the folder name; same time: by name; unreadable: oldest
    make_run(store, "a-newest", "2026-02-01T00:00:00")
    make_run(store, "b-tie", "2026-01-03T00:00:00")
    (store / "cnn-v1" / "z-broken").mkdir()
    (store / "cnn-v1" / "z-broken" / "config.json").write_text("{oops")
    assert [r.name for r in list_runs(store, "cnn-v1")] == ["z-broken", "old", "mid", "b-tie",
                                                           "new", "a-newest"]


def test_every_form_of_reference(store, monkeypatch, tmp_path):
    run = (store / "cnn-v1" / "old").resolve()
    assert resolve_ref("cnn-v1/old", store) == ModelRef(run, None)
    assert resolve_ref("cnn-v1/old@best", store) == ModelRef(run, "best")
    assert resolve_ref("cnn-v1/old@epoch-2", store) == ModelRef(run, "epoch-2")
    assert resolve_ref(str(store / "cnn-v1" / "old"), store) == ModelRef(run, None)
    assert resolve_ref(f"{store}/cnn-v1/old@last") == ModelRef(run, "last")
    checkpoint = store / "cnn-v1/old/checkpoints/epoch-002"
    assert resolve_ref(str(checkpoint)) == ModelRef(run, "epoch-002")
    # latest: the newest run that has weights (final or a checkpoint); `new` has neither
    mid = (store / "cnn-v1" / "mid").resolve()
    assert resolve_ref("cnn-v1/latest", store) == ModelRef(mid, None)
    assert resolve_ref("cnn-v1/latest@best", store).checkpoint == "best"
    assert resolve_ref("latest", store) == ModelRef((store / "wide-v1" / "other").resolve(), None)
    assert resolve_ref("latest@epoch-1", store).checkpoint == "epoch-1"
    monkeypatch.setenv("DIGITNET_MODELS_DIR", str(store))
    assert resolve_ref("cnn-v1/old").run_dir == run
    assert ModelRef(run, None).label == "cnn-v1/old"
    assert ModelRef(run, "epoch-002").label == "cnn-v1/old@epoch-002"


@pytest.mark.parametrize("ref", ["old", "cnn/old", "cnn-v/old", "-v1/old", "cnn v1/old",
                                 "cnn-v1x/old"])
def test_malformed_reference_says_what_is_expected(store, ref):
    with pytest.raises(DigitnetError) as info:
        resolve_ref(ref, store)
    assert str(info.value) == (
        f"model reference {ref!r}: expected ARCH-vN/RUN, ARCH-vN/latest (optionally with "
        "@last, @best or @epoch-N) or the path to a model folder")


def test_unknown_run_lists_what_exists(store, tmp_path):
    with pytest.raises(DigitnetError) as info:
        resolve_ref("cnn-v1/gone", store)
    assert str(info.value) == (f"model reference 'cnn-v1/gone': {store / 'cnn-v1' / 'gone'} not "
                               f"found; cnn-v1 models: old, mid, new")
    with pytest.raises(DigitnetError) as info:
        resolve_ref("fast-v2/x", store)
    assert str(info.value).endswith(f"not found; no fast-v2 models in {store}")
    for i in range(12):
        make_run(store, f"r{i:02d}", f"2026-03-{i + 1:02d}T00:00:00")
    with pytest.raises(DigitnetError) as info:
        resolve_ref("cnn-v1/gone", store)
    names = ", ".join(f"r{i:02d}" for i in range(2, 12))
    assert str(info.value).endswith("cnn-v1 models: " + names)


def test_latest_without_any_trained_model_is_a_clear_error(tmp_path):
    make_run(tmp_path, "untrained", "2026-01-01T00:00:00", final=None)
    with pytest.raises(DigitnetError) as info:
        resolve_ref("latest", tmp_path)
    assert str(info.value) == f"model reference 'latest': no trained model in {tmp_path}"
    with pytest.raises(DigitnetError) as info:
        resolve_ref("cnn-v1/latest@best", tmp_path)
    assert str(info.value) == (f"model reference 'cnn-v1/latest@best': no trained cnn-v1 model "
                               f"in {tmp_path}")


def test_folder_that_is_neither_model_nor_checkpoint(store, tmp_path):
    with pytest.raises(DigitnetError, match="not a model folder") as info:
        resolve_ref(str(tmp_path))
    assert str(tmp_path) in str(info.value)
    odd = tmp_path / "elsewhere" / "epoch-001"  # has meta.json but is not inside checkpoints/
    odd.mkdir(parents=True)
    (odd / "meta.json").write_text("{}")
    with pytest.raises(DigitnetError, match="not a model folder"):
        resolve_ref(str(odd))


def test_globs_expand_oldest_first_keeping_the_checkpoint(store):
    assert expand_refs(["cnn-v1/*"], store) == ["cnn-v1/old", "cnn-v1/mid", "cnn-v1/new"]
    assert expand_refs(["cnn-v1/?id@best", "cnn-v1/[no]*"], store) == [
        "cnn-v1/mid@best", "cnn-v1/old", "cnn-v1/new"]
    assert expand_refs(["cnn-v1/old@epoch-1", "latest", "nope"], store) == [
        "cnn-v1/old@epoch-1", "latest", "nope"]
    with pytest.raises(DigitnetError) as info:
        expand_refs(["cnn-v1/OLD*"], store)  # case matters
    assert str(info.value) == (f"model reference 'cnn-v1/OLD*': no cnn-v1 run in {store} "
                               f"matches 'OLD*'")


def test_glob_characters_in_an_existing_path_are_not_a_pattern(store, tmp_path):
    odd = make_run(tmp_path / "m[1]", "r*", "2026-01-01T00:00:00")
    assert expand_refs([str(odd)], store) == [str(odd)]


def test_load_model_loads_exactly_the_named_weights(store):
    final = load_model("cnn-v1/old", store)
    assert weight_value(final) == 1.5 and final.epoch is None and not final.model.training
    assert final.ref.checkpoint is None and final.config["created"] == "2026-01-01T00:00:00"
    assert final.data_config == default_data_config()
    for ref, value in (("cnn-v1/old@epoch-2", 2.0), ("cnn-v1/old@best", 1.0),
                       ("cnn-v1/old@last", 3.0), ("cnn-v1/old@2", 2.0), ("cnn-v1/mid", 2.0),
                       ("cnn-v1/latest", 2.0)):
        loaded = load_model(ref, store)
        assert weight_value(loaded) == value, ref
        assert loaded.epoch == int(value), ref
    assert load_model("cnn-v1/old@best", store).ref.checkpoint == "epoch-001"
    assert load_model("cnn-v1/mid", store).ref.checkpoint == "epoch-002"
    assert load_model(ModelRef((store / "cnn-v1" / "old").resolve(), "epoch-3")).epoch == 3


def test_final_weights_epoch_comes_from_the_summary(store):
    (store / "cnn-v1" / "old" / "summary.json").write_text(json.dumps({"epochs_done": 7}))
    assert load_model("cnn-v1/old", store).epoch == 7
    (store / "cnn-v1" / "old" / "summary.json").write_text(json.dumps({"other": 1}))
    assert load_model("cnn-v1/old", store).epoch is None


def test_run_without_weights_is_a_checkpoint_error(store):
    with pytest.raises(CheckpointError) as info:
        load_model("cnn-v1/new", store)
    assert str(info.value) == (f"{(store / 'cnn-v1' / 'new').resolve()}: no final weights and no "
                               f"checkpoints yet")


def _arch(model, **changes):
    return dict(name="cnn", version=1, id="cnn-v1", model_args={**model.model_args, **changes},
                signature=architecture_signature(model))


def test_changed_hyperparameters_or_shapes_are_refused(tmp_path):
    model = create_model("cnn", 1)
    assert build_frozen_model(_arch(model), tmp_path).model_args == model.model_args
    with pytest.raises(DigitnetError) as info:
        build_frozen_model(_arch(model, dropout=0.5, extra=3), tmp_path)
    message = str(info.value)
    assert message.startswith(f"the definition of cnn-v1 changed after {tmp_path} was trained "
                              f"with it; "
                              "restore it and register the change under a new version number (")
    assert "dropout: trained with 0.5, now 0.1; extra: trained with 3, now None)" in message
    arch = _arch(model)
    arch["signature"] = arch["signature"][:-1]
    with pytest.raises(DigitnetError, match=r"\(parameter names or shapes differ\)"):
        build_frozen_model(arch, tmp_path)
    del arch["signature"]  # configs from before signatures were recorded still load
    assert isinstance(build_frozen_model(arch, tmp_path), nn.Module)


def test_weights_that_do_not_fit_are_a_clear_error(tmp_path):
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    good = {k: torch.ones_like(v) for k, v in model.state_dict().items()}
    load_weights(model, good, tmp_path, "x-v1")
    assert torch.equal(model[0].weight, torch.ones(2, 3))
    bad = dict(good)
    del bad["1.bias"]
    bad["0.weight"] = torch.ones(4, 3)
    bad["2.weight"] = torch.ones(1)
    with pytest.raises(DigitnetError) as info:
        load_weights(model, bad, tmp_path / "w", "x-v1")
    assert str(info.value) == (
        f"{tmp_path / 'w'}: weights do not fit x-v1 (missing ['1.bias'], unexpected ['2.weight'], "
        "shape differs ['0.weight']); if x-v1 was changed, register the change as a new version")


# ------------------------------------------------------------------- found by mutation testing
class _Opaque:
    """Picklable, but not plain data: `torch.load(weights_only=True)` refuses it."""


def test_loading_a_checkpoint_never_reads_its_training_state(tmp_path):
    model = create_model("cnn", 1)
    run = make_run(tmp_path, "r", "2026-01-01T00:00:00", final=None)
    save_checkpoint(run / "checkpoints", 1, filled(model, 1.0), {"opaque": _Opaque()}, {})
    loaded = load_model("cnn-v1/r@epoch-1", tmp_path)  # state.pt would be refused if it were read
    assert weight_value(loaded) == 1.0
    assert loaded.ref == ModelRef(run.resolve(), "epoch-001")


def test_the_recorded_version_is_built_not_the_newest():
    model = create_model("fast", 1)
    arch = dict(name="fast", version=1, id="fast-v1", model_args=model.model_args,
                signature=architecture_signature(model))
    built = build_frozen_model(arch, Path("x"))
    assert (built.arch_name, built.arch_version) == ("fast", 1)


def test_load_model_errors_name_the_run_and_the_file(tmp_path):
    run = make_run(tmp_path, "changed", "2026-01-01T00:00:00")
    config = json.loads((run / "config.json").read_text())
    config["arch"]["model_args"]["dropout"] = 0.7
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(DigitnetError) as info:
        load_model("cnn-v1/changed", tmp_path)
    assert f"changed after {run.resolve()} was trained" in str(info.value)
    run = make_run(tmp_path, "misfit", "2026-01-01T00:00:00")
    save_state_dict({"x": torch.zeros(2)}, run / "model.safetensors")
    with pytest.raises(DigitnetError) as info:
        load_model("cnn-v1/misfit", tmp_path)
    assert str(info.value).startswith(f"{(run / 'model.safetensors').resolve()}: weights do not "
                                      f"fit "
                                      "cnn-v1 (missing [")


def test_misfit_message_lists_at_most_five_names_of_each_kind(tmp_path):
    model = nn.Sequential(*[nn.Linear(1, 1, bias=False) for _ in range(7)])
    state = {f"z{i}.weight": torch.ones(1) for i in range(7)}
    with pytest.raises(DigitnetError) as info:
        load_weights(model, state, tmp_path, "x-v1")
    assert (f"(missing {[f'{i}.weight' for i in range(5)]}, unexpected "
            f"{[f'z{i}.weight' for i in range(5)]}, shape differs [])") in str(info.value)
    wrong = {f"{i}.weight": torch.ones(2, 2) for i in range(7)}
    with pytest.raises(DigitnetError) as info:
        load_weights(model, wrong, tmp_path, "x-v1")
    assert f"shape differs {[f'{i}.weight' for i in range(5)]})" in str(info.value)


def test_hub_references_go_to_the_hub_loader(monkeypatch, tmp_path):
    from digitnet.store import hub

    monkeypatch.setattr(hub, "load_from_hub", lambda ref: ("hub", ref))
    assert load_model("hf://someone/digits@v1", tmp_path) == ("hub", "hf://someone/digits@v1")


def test_a_run_without_a_recorded_time_counts_as_oldest(store):
    run = make_run(store, "undated", "2026-01-01T00:00:00")
    config = json.loads((run / "config.json").read_text())
    del config["created"]
    (run / "config.json").write_text(json.dumps(config))
    assert [r.name for r in list_runs(store, "cnn-v1")] == ["undated", "old", "mid", "new"]


def test_references_that_are_not_globs_pass_unchanged(store):
    refs = ["cnn-v1/gone", "cnn-v1/Xgone", "cnn-v1*", "latest@best"]
    assert expand_refs(refs, store) == refs
    with pytest.raises(DigitnetError) as info:
        expand_refs(["sub/cnn-v1/*"], store)
    assert str(info.value) == ("model reference 'sub/cnn-v1/*': expected ARCH-vN/RUN, "
                               "ARCH-vN/latest (optionally with @last, @best or @epoch-N) or the "
                               "path to a model folder")


def test_a_run_name_with_a_slash_is_refused_not_looked_up(store):
    with pytest.raises(DigitnetError) as info:
        resolve_ref("cnn-v1/a/b", store)
    assert str(info.value) == ("model reference 'cnn-v1/a/b': the run name 'a/b' is not one folder "
                               "name of the store; a path to a folder elsewhere must start with /, "
                               "./, ../ or ~")


# ----------------------------------------------- names and references that stay in the store
def make_marked_run(folder: Path, created: str = "2026-01-01T00:00:00") -> Path:
    """A folder that the store counts as a run: config.json and final weights (contents unused)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"created": created}))
    (folder / "model.safetensors").write_bytes(b"")
    return folder


@pytest.fixture
def layout(tmp_path, monkeypatch) -> Path:
    """tmp/models/cnn-v1/{r1,r2} in the store, tmp/other/x and tmp/escaped outside it; cwd tmp."""
    make_marked_run(tmp_path / "models" / "cnn-v1" / "r1", "2026-01-01T00:00:00")
    make_marked_run(tmp_path / "models" / "cnn-v1" / "r2", "2026-01-02T00:00:00")
    make_marked_run(tmp_path / "other" / "x")
    make_marked_run(tmp_path / "escaped")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ------------------------------------------------------------------------------------ run names
BAD_NAMES = ["../../escaped", "/abs/path", "a/b", ".", "..", "latest", "-rf", ".hidden", "a b",
             "a@b", "r*", "x" * 129, "", "a\\b", "é"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_run_name_is_refused_before_anything_is_written(tmp_path, synthetic_mnist, capsys,
                                                            name):
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
def test_store_reference_never_leaves_the_store(layout, monkeypatch, ref, cwd):
    monkeypatch.chdir(layout / cwd)
    leaves = ("is not one folder name of the store; a path to a folder elsewhere must start with "
              "/, ./, ../ or ~")
    inside = "cnn-v1: not a model folder"  # from models/, `cnn-v1/.` is that existing folder
    with pytest.raises(DigitnetError, match=f"{leaves}|{inside}" if cwd == "models" else leaves):
        resolve_ref(ref, layout / "models")


@pytest.mark.parametrize("ref", ["cnn-v1/../*", "cnn-v1/../../e*", "cnn-v1/r1/../../../*@best",
                                 "cnn-v1/..\\*"])
def test_glob_never_leaves_the_store(layout, ref):
    with pytest.raises(DigitnetError, match="is not one folder name of the store"):
        expand_refs([ref], layout / "models")


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
def test_every_documented_reference_form_resolves(layout, monkeypatch, ref, run_dir, checkpoint):
    monkeypatch.setenv("HOME", str(layout))
    got = resolve_ref(ref, layout / "models")
    assert (got.run_dir, got.checkpoint) == ((layout / run_dir).resolve(), checkpoint)


def test_absolute_and_parent_paths_resolve(layout, monkeypatch):
    escaped = resolve_ref(str(layout / "escaped"), layout / "models")
    assert escaped.run_dir == (layout / "escaped").resolve()
    monkeypatch.chdir(layout / "models")
    assert resolve_ref("../other/x@last").run_dir == (layout / "other" / "x").resolve()


def test_missing_explicit_path_says_so(layout):
    with pytest.raises(DigitnetError,
                       match=r"model reference './nothing': nothing is not a folder"):
        resolve_ref("./nothing", layout / "models")


def test_globs_expand_inside_the_store(layout):
    assert expand_refs(["cnn-v1/r*@best", "cnn-v1/r1"], layout / "models") == [
        "cnn-v1/r1@best", "cnn-v1/r2@best", "cnn-v1/r1"]
    with pytest.raises(DigitnetError, match="no cnn-v1 run in .* matches 'q\\*'"):
        expand_refs(["cnn-v1/q*"], layout / "models")


@pytest.mark.parametrize("content", ["[1, 2]", '{"created": 5}', "\xff\xfe", "[" * 100_000, "{"])
def test_list_runs_survives_any_config_json(layout, content):
    (layout / "models" / "cnn-v1" / "r1" / "config.json").write_bytes(content.encode("latin-1"))
    assert [r.name for r in list_runs(layout / "models")] == ["r1", "r2"]


# --------------------------------------- found by mutation testing of the merged store (second run)
def test_at_least_is_an_integer_check_with_its_bound():
    from digitnet.fileio import check_json
    from digitnet.store.records import _at_least

    check = _at_least(2)  # builds the schemas' version, epochs_done, epoch and val_size checks
    check_json({"n": 2}, {"n": check}, "f.json")
    for value, found in ((1, "1"), ("2", "'2'"), (2.5, "2.5")):
        with pytest.raises(DigitnetError) as info:
            check_json({"n": value}, {"n": check}, "f.json")
        assert str(info.value) == f'f.json: field "n": expected an integer >= 2, found {found}'


def test_label_names_must_match_the_outputs_of_the_model(tmp_path):
    run = make_run(tmp_path, "r", "2026-01-01T00:00:00")
    config = json.loads((run / "config.json").read_text())
    config["data_config"]["label_names"] = [str(i) for i in range(9)]
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(DigitnetError) as info:
        load_model("cnn-v1/r", tmp_path)
    assert str(info.value) == (f'{run.resolve() / "config.json"}: field "label_names": expected 10 '
                               "names (one per output of the model), found 9")


def test_run_config_and_summary_are_checked_and_named(tmp_path):
    run = make_run(tmp_path, "r", "2026-01-01T00:00:00")
    good = (run / "config.json").read_text()
    config = json.loads(good)
    config["arch"]["version"] = 0
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(DigitnetError) as info:
        load_model("cnn-v1/r", tmp_path)
    config_file = run.resolve() / "config.json"
    assert str(info.value) == (f'{config_file}: field "arch.version": expected an integer >= 1, '
                               "found 0")
    with open(run / "config.json", "wb") as f:  # sparse: over the 16 MiB limit of a JSON file
        f.truncate(16 * 1024 * 1024 + 1)
    with pytest.raises(DigitnetError) as info:
        load_model(ModelRef(run.resolve(), None))
    assert str(info.value).endswith(": run config larger than the limit of 16,777,216 bytes")
    (run / "config.json").write_text(good)
    (run / "summary.json").write_text(json.dumps({"epochs_done": "7"}))
    with pytest.raises(DigitnetError) as info:
        load_model("cnn-v1/r", tmp_path)
    summary_file = run.resolve() / "summary.json"
    assert str(info.value) == (f'{summary_file}: field "epochs_done": expected an integer >= 0, '
                               "found '7'")
    with open(run / "summary.json", "wb") as f:
        f.truncate(16 * 1024 * 1024 + 1)
    with pytest.raises(DigitnetError) as info:
        load_model("cnn-v1/r", tmp_path)
    assert str(info.value).endswith(": run summary larger than the limit of 16,777,216 bytes")


def test_a_glob_before_the_last_part_is_refused(store):
    with pytest.raises(DigitnetError) as info:
        expand_refs(["cnn-v1/o*/x"], store)
    assert str(info.value) == ("model reference 'cnn-v1/o*/x': the run name 'o*/x' is not one "
                               "folder name of the store; a path to a folder elsewhere must start "
                               "with /, ./, ../ or ~")


def test_weights_of_the_wrong_kind_or_not_finite_are_refused(tmp_path):
    from digitnet.store import check_weights

    model = nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1))
    good = {k: v.clone() for k, v in model.state_dict().items()}
    half = check_weights(model, dict(good, **{"0.weight": torch.ones(1, 2, dtype=torch.float16)}),
                         tmp_path)
    assert half["0.weight"].dtype == torch.float32
    assert torch.equal(half["0.weight"], torch.ones(1, 2))
    assert half["1.num_batches_tracked"].dtype == torch.int64
    for name, tensor, got, want in (
            ("0.weight", torch.ones(1, 2, dtype=torch.int64), "int64", "float32"),
            ("0.bias", torch.ones(1, dtype=torch.bool), "bool", "float32"),
            ("1.num_batches_tracked", torch.tensor(0, dtype=torch.int32), "int32", "int64"),
            ("1.num_batches_tracked", torch.tensor(0.0), "float32", "int64")):
        with pytest.raises(DigitnetError) as info:
            check_weights(model, dict(good, **{name: tensor}), tmp_path)
        assert str(info.value) == (f"{tmp_path}: tensor {name!r} is {got}, expected {want}; these "
                                   "are not weights digitnet can use")
    for tensor, cast in ((torch.tensor([float("nan")]), ""),
                         (torch.tensor([1e300], dtype=torch.float64), " once cast to float32")):
        with pytest.raises(DigitnetError) as info:
            check_weights(model, dict(good, **{"0.bias": tensor}), tmp_path)
        assert str(info.value) == (f"{tmp_path}: tensor '0.bias' holds 1 NaN or infinite value(s)"
                                   f"{cast}; weights like these cannot predict (did training "
                                   "diverge?)")


def test_unknown_architecture_or_version_names_the_model_that_asked(tmp_path):
    model = create_model("cnn", 1)
    for changes, reason in (({"version": 99}, "architecture 'cnn' has no version 99; registered "
                                              "versions: 1"),
                            ({"name": "nosuch"}, "unknown architecture 'nosuch'; registered: ")):
        with pytest.raises(DigitnetError) as info:
            build_frozen_model({**_arch(model), **changes}, tmp_path / "run")
        assert str(info.value).startswith(f"{tmp_path / 'run'}: {reason}")


def test_read_metrics_checks_every_row_and_skips_blank_lines(tmp_path):
    import os

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n\n{"epoch": 2}\n')
    assert [row["epoch"] for row in read_metrics(tmp_path)] == [1, 2]
    path.write_text('{"epoch": 0}\n{"epoch": 2}\n')
    with pytest.raises(DigitnetError) as info:
        read_metrics(tmp_path)
    assert str(info.value) == f'{path} line 1: field "epoch": expected an integer >= 1, found 0'
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(DigitnetError) as info:
        read_metrics(tmp_path)
    assert str(info.value) == f"{path}: expected a regular metrics file, found a FIFO"


def test_weights_errors_name_their_file(tmp_path):
    model = nn.Linear(2, 1)
    with pytest.raises(DigitnetError) as info:
        load_weights(model, {"weight": torch.ones(1, 2, dtype=torch.int64), "bias": torch.ones(1)},
                     tmp_path / "w.safetensors", "x-v1")
    assert str(info.value).startswith(f"{tmp_path / 'w.safetensors'}: tensor 'weight' is int64")


def test_a_second_writer_of_a_run_folder_is_refused(tmp_path):
    import os

    from digitnet.store import lock_run

    run = tmp_path / "cnn-v1" / "r1"
    run.mkdir(parents=True)
    with lock_run(run):
        with pytest.raises(DigitnetError) as info, lock_run(run):
            pass
    assert str(info.value) == (f"run cnn-v1/r1 is being trained by another process (process "
                               f"{os.getpid()} holds {run / 'train.lock'}); wait for it to end or "
                               "stop it")
    with lock_run(run):  # released when the holder's block ends
        pass


@pytest.mark.parametrize("base, explicit", [
    ("/abs/x", True), (".", True), ("..", True), ("~", True), ("./x", True), ("../x", True),
    ("~/x", True), (".\\x", True), ("..\\x", True),
    ("cnn-v1/r1", False), ("x/.", False), ("~x", False), (".x", False), ("X", False)])
def test_explicit_paths_are_the_documented_forms(base, explicit):
    from digitnet.store import is_explicit_path

    assert is_explicit_path(base) is explicit


def test_a_missing_absolute_path_is_a_path_not_a_store_reference(tmp_path):
    missing = tmp_path / "gone"
    with pytest.raises(DigitnetError) as info:
        resolve_ref(str(missing), tmp_path / "models")
    assert str(info.value) == f"model reference {str(missing)!r}: {missing} is not a folder"


def test_run_names_with_any_other_character_are_looked_up(store):
    run = make_run(store, "Xmas", "2026-02-01T00:00:00")
    assert resolve_ref("cnn-v1/Xmas", store).run_dir == run.resolve()
    for name in ("a\\b", "a\0b"):
        with pytest.raises(DigitnetError, match="is not one folder name of the store"):
            resolve_ref(f"cnn-v1/{name}", store)
