"""The `digitnet` command line as the README describes it: --version, `models list`, the model
store from $DIGITNET_MODELS_DIR, JSON recipes, and flags overriding a recipe."""

import importlib.metadata
import json
import re
import tomllib
from pathlib import Path

import pytest

import digitnet
from digitnet.cli import main
from digitnet.models import (
    DEFAULT_ARCH,
    count_flops,
    count_parameters,
    create_model,
    get_spec,
    list_specs,
)
from digitnet.store import load_model

REPO = Path(__file__).resolve().parents[1]
TINY = ["--arch", "linear", "--epochs", "1", "--batch-size", "32", "--val-size", "50",
        "--no-augment", "--no-progress"]


def test_version_is_the_package_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    # written once, in digitnet/version.py, which pyproject.toml reads
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "digitnet.version.__version__"}
    version = importlib.metadata.version("digitnet")
    assert version == digitnet.__version__
    assert capsys.readouterr().out.strip() == f"digitnet {version}"


def test_models_list_shows_every_architecture_its_size_and_flops_and_trained_models(
        tmp_path, synthetic_mnist, capsys):
    models = tmp_path / "models"
    for name in ("done", "unfinished"):
        assert main(["train", *TINY, "--name", name, "--data-dir", str(synthetic_mnist),
                     "--models-dir", str(models)]) == 0
    (models / "linear-v1" / "unfinished" / "summary.json").unlink()
    (models / "linear-v1" / "unfinished" / "model.safetensors").unlink()
    capsys.readouterr()
    assert main(["models", "list", "--models-dir", str(models)]) == 0
    out = capsys.readouterr().out
    line = re.compile(r"^(\S+-v\d+)\s+([\d,]+)\s+([\d.]+)  (.*)$", re.M)
    rows = {m.group(1): m for m in line.finditer(out)}
    assert sorted(rows) == sorted(s.arch_id for s in list_specs())
    for arch, m in rows.items():
        model = create_model(arch)
        assert int(m.group(2).replace(",", "")) == count_parameters(model), arch
        assert float(m.group(3)) == pytest.approx(count_flops(model) / 1e6, abs=0.005), arch
        assert m.group(4).endswith("(default)") == (arch == get_spec(DEFAULT_ARCH).arch_id), arch
    assert f"trained models in {models}: 2" in out
    assert re.search(r"^  linear-v1/done\s+done\s+val acc \d+\.\d\d%$", out, re.M)
    assert re.search(r"^  linear-v1/unfinished\s+1 epochs, unfinished", out, re.M)


def test_models_dir_comes_from_the_environment_unless_given(tmp_path, synthetic_mnist, monkeypatch,
                                                            capsys):
    """--models-dir, else $DIGITNET_MODELS_DIR, else ./models."""
    store, flag = tmp_path / "store", tmp_path / "flag"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIGITNET_MODELS_DIR", str(store))
    assert main(["train", *TINY, "--name", "env", "--data-dir", str(synthetic_mnist)]) == 0
    assert (store / "linear-v1" / "env" / "model.safetensors").is_file()
    assert main(["train", *TINY, "--name", "flag", "--data-dir", str(synthetic_mnist),
                 "--models-dir", str(flag)]) == 0
    assert (flag / "linear-v1" / "flag" / "model.safetensors").is_file()
    assert not (store / "linear-v1" / "flag").exists() and not (tmp_path / "models").exists()
    assert load_model("linear-v1/latest").ref.run_dir == (store / "linear-v1" / "env").resolve()
    capsys.readouterr()
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert f"trained models in {store}: 1" in out and "linear-v1/env" in out
    monkeypatch.delenv("DIGITNET_MODELS_DIR")
    assert main(["train", *TINY, "--name", "cwd", "--data-dir", str(synthetic_mnist)]) == 0
    assert (tmp_path / "models" / "linear-v1" / "cwd" / "config.json").is_file()


def test_json_recipe_works_like_yaml_and_flags_override_it(tmp_path, synthetic_mnist, capsys):
    recipe = dict(arch="linear", epochs=2, lr=0.2, batch_size=32, val_size=50, augment=False,
                  label_smoothing=0.05, data=["mnist"])
    (tmp_path / "r.json").write_text(json.dumps(recipe))
    (tmp_path / "r.yaml").write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in recipe.items()))
    models = tmp_path / "models"
    for suffix in ("json", "yaml"):
        assert main(["train", "--config", str(tmp_path / f"r.{suffix}"), "--epochs", "1",
                     "--name", suffix, "--no-progress", "--data-dir", str(synthetic_mnist),
                     "--models-dir", str(models)]) == 0
    trains = [json.loads((models / "linear-v1" / s / "config.json").read_text())["train"]
              for s in ("json", "yaml")]
    assert {k: v for k, v in trains[0].items() if k != "name"} == {
        k: v for k, v in trains[1].items() if k != "name"}
    assert {k: trains[0][k] for k in recipe} == {**recipe, "epochs": 1}  # the flag wins
    rows = (models / "linear-v1" / "json" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1
    (tmp_path / "bad.json").write_text(json.dumps({"epochs": 1, "learning_rate": 0.1}))
    capsys.readouterr()
    assert main(["train", "--config", str(tmp_path / "bad.json"), "--data-dir",
                 str(synthetic_mnist), "--models-dir", str(models)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"digitnet: error: {tmp_path / 'bad.json'}: unknown config key(s) "
                          "learning_rate") and err.count("\n") == 1


def test_resume_refuses_flags_that_would_change_the_recipe(tmp_path, synthetic_mnist, capsys):
    models = tmp_path / "models"
    assert main(["train", *TINY, "--name", "r", "--data-dir", str(synthetic_mnist),
                 "--models-dir", str(models)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "linear-v1/r", "--lr", "0.1", "--data-dir",
                 str(synthetic_mnist), "--models-dir", str(models)]) == 1
    err = capsys.readouterr().err
    assert "--resume continues a run with its own configuration; drop --lr" in err


def test_every_train_flag_reaches_the_recorded_recipe(tmp_path, synthetic_mnist, capsys):
    """The README's training options each set their field of config.json (and the run)."""
    models, summary = tmp_path / "models", tmp_path / "s.json"
    flags = dict(arch="fast", version=2, epochs=1, batch_size=16, lr=0.03, optimizer="adamw",
                 weight_decay=0.001, label_smoothing=0.05, augment_severity=4, augment_kind="shift",
                 seed=7, val_size=30, subset=100, threads=1, precision="bf16", name="all",
                 max_steps=3)
    flag = {"version": "arch-version"}  # `digitnet --version` is the package's version
    argv = [f"--{flag.get(k, k.replace('_', '-'))}={v}" for k, v in flags.items()]
    assert main(["train", *argv, "--augment", "--class-weighting", "--data", "mnist", "--device",
                 "cpu", "--json", str(summary), "--no-progress", "--data-dir", str(synthetic_mnist),
                 "--models-dir", str(models)]) == 0
    out = capsys.readouterr().out
    run_dir = models / "fast-v2" / "all"
    config = json.loads((run_dir / "config.json").read_text())
    expected = {**flags, "arch": "fast", "augment": True, "class_weighting": True,
                "data": ["mnist"]}
    assert {k: config["train"][k] for k in expected} == expected
    assert config["env"]["threads"] == 1 and config["env"]["device"] == "cpu"
    assert (config["data"]["train_size"], config["data"]["val_size"]) == (100, 30)
    assert json.loads(summary.read_text())["ref"] == "fast-v2/all" == out.strip().splitlines()[-1]
    [row] = [json.loads(r) for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert row["images_per_s"] > 0 and row["lr"] == 0.0  # one-cycle schedule ends at 0
    # the epoch line: train and validation loss and accuracy, learning rate, time
    assert re.search(r"^epoch   1/1  train loss \d+\.\d{4} acc \d+\.\d\d%  val loss \d+\.\d{4} "
                     r"acc \d+\.\d\d%  lr 0  \d+\.\ds  [\d,]+ img/s$", out, re.M)
    assert main(["train", *TINY, "--no-class-weighting", "--name", "plain", "--data-dir",
                 str(synthetic_mnist), "--models-dir", str(models)]) == 0
    train = json.loads((models / "linear-v1" / "plain" / "config.json").read_text())["train"]
    assert (train["augment"], train["class_weighting"]) == (False, False)


def test_train_shows_a_progress_bar_with_loss_accuracy_speed_and_eta(tmp_path, synthetic_mnist,
                                                                     capsys):
    assert main(["train", "--arch", "linear", "--epochs", "1", "--batch-size", "4", "--val-size",
                 "50", "--no-augment", "--name", "bar", "--data-dir", str(synthetic_mnist),
                 "--models-dir", str(tmp_path / "models")]) == 0
    bar = capsys.readouterr().err
    assert "epoch 1/1" in bar and "img/s" in bar
    assert re.search(r"acc=\d+\.\d\d%", bar) and re.search(r"loss=\d+\.\d{4}", bar)
    assert re.search(r"\d\d:\d\d<\d\d:\d\d", bar)  # elapsed<remaining (the ETA)
    assert main(["train", *TINY, "--name", "quiet", "--data-dir", str(synthetic_mnist),
                 "--models-dir", str(tmp_path / "models")]) == 0
    assert "img/s" not in capsys.readouterr().err  # --no-progress: no bar


@pytest.mark.parametrize("argv, defaults", [
    (["compare", "cnn-v1/latest"], dict(out="reports/compare", dataset=None, metric="accuracy")),
    (["evaluate", "cnn-v1/latest"], dict(dataset=None, out=None, json=None)),
    (["data", "explore"], dict(out="reports/explore", val_size=5000, data_dir=None)),
    (["data", "ingest", "photos", "--name", "mine"], dict(min_per_class=10, balance=None)),
    (["predict", "latest", "a.png"], dict(top_k=3, json=False)),
    (["serve", "latest"], dict(host="127.0.0.1", port=8000, max_upload_mb=10.0)),
    (["export", "latest"], dict(out="huggingface", onnx=False, repo_id=None)),
    (["publish", "latest", "--repo-id", "me/x"], dict(out="huggingface", via="git", dry_run=False)),
    (["train"], dict(device="auto", resume=None, config=None)),
])
def test_defaults_the_readme_states(argv, defaults):
    """compare writes to reports/compare/, explore to reports/explore/, --min-per-class 10,
    --top-k 3, serve on 127.0.0.1:8000 with a 10 MB limit, export into huggingface/; a dataset
    left out (None) means mnist-test."""
    from digitnet.cli import build_parser
    from digitnet.evaluation.datasets import DEFAULT_DATASET

    args = vars(build_parser().parse_args(argv))
    assert {k: args[k] for k in defaults} == defaults
    assert DEFAULT_DATASET == "mnist-test"


def test_train_flags_are_generated_from_the_config_fields(capsys):
    """`digitnet train` has one flag per TrainConfig field that the CLI sets, in field order,
    with the help, range, choices and default of the field's metadata; none given keeps the
    recipe's values (None)."""
    import dataclasses

    from digitnet.cli import build_parser
    from digitnet.config import TrainConfig

    fields = [f for f in dataclasses.fields(TrainConfig) if f.metadata["cli"]]
    assert {f.name for f in dataclasses.fields(TrainConfig)} - {f.name for f in fields} == {
        "warmup_frac", "eval_batch_size"}  # set only by recipe files, as before
    args = vars(build_parser().parse_args(["train"]))
    assert all(args[f.name] is None for f in fields)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    flags = re.findall(r"\[(--[\w-]+)", text.split("options:")[0])
    assert flags[:len(fields)] == [
        "--arch-version" if f.name == "version" else f"--{f.name.replace('_', '-')}"
        for f in fields]
    for phrase in ("--epochs EPOCHS full passes over the training split, 1-10000 (default: 9)",
                   "--optimizer {sgd,adamw}", "--augment-kind {warp,shift,handwriting}",
                   "--augment, --no-augment augment training batches (default: on)",
                   "--lr LR peak learning rate (one-cycle schedule), > 0 and finite (default: 0.3)",
                   "--seed SEED random seed (weights, shuffling, augmentation, dropout), "
                   "0-2**63-1 (default: 0)",
                   "--arch-version ARCH_VERSION architecture version, >= 1 (default: the newest)",
                   "--threads THREADS torch intra-op threads, 1-256 (default: torch's choice)",
                   "(default: a timestamp)", "(default: mnist)", "(default: no limit)"):
        assert phrase in text, phrase


def test_train_arch_version_is_not_the_package_version(tmp_path, capsys):
    """`digitnet --version` is the package's version; train's architecture version is
    --arch-version (the `version` key of a recipe), and the ARCH-vN form must agree with it."""
    from digitnet.cli import build_parser

    assert build_parser().parse_args(["train", "--arch-version", "2"]).version == 2
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["train", "--version", "2"])
    assert info.value.code == 2 and "unrecognized arguments: --version" in capsys.readouterr().err
    models = tmp_path / "models"
    assert main(["train", "--arch", "cnn-v1", "--arch-version", "2", "--models-dir",
                 str(models)]) == 1
    assert ("architecture 'cnn-v1' conflicts with version 2 (--arch-version, or `version` in a "
            "recipe)") in capsys.readouterr().err
    assert not models.exists()


@pytest.fixture
def make_dry_run():
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")

    def run(*args: str, env: dict | None = None) -> str:
        import os

        # under `make test DATA_DIR=...` (CI), MAKEFLAGS would pass that DATA_DIR on to this make
        environ = {k: v for k, v in os.environ.items()
                   if k not in ("DIGITNET_DATA_DIR", "DATA_DIR", "MAKEFLAGS", "MFLAGS",
                                "MAKELEVEL", "MAKEOVERRIDES")}
        return subprocess.run(["make", "-n", "-B", "-C", str(REPO), *args], capture_output=True,
                              text=True, check=True, env={**environ, **(env or {})}).stdout
    return run


def test_make_run_verifies_trains_and_evaluates_on_the_chosen_data(make_dry_run):
    """`make run`: verify the four files, train the default model into models/, evaluate it on
    the clean and augmented test sets into reports/evaluation/; DATA_DIR or $DIGITNET_DATA_DIR
    choose the folder (default ../shared/datasets/mnist)."""
    out = make_dry_run("run", "DATA_DIR=/x/mnist")
    steps = [line for line in out.splitlines() if "/bin/digitnet " in line]
    assert [s.split("/bin/digitnet ")[1].split()[:2] for s in steps] == [
        ["data", "verify"], ["train", "--data-dir"], ["evaluate", "latest"]]
    assert all("--data-dir /x/mnist" in s for s in steps[:2])
    assert "--models-dir" not in out  # the default store: ./models
    evaluate = out.split("/bin/digitnet evaluate")[1]
    assert ("--dataset mnist-test --dataset mnist-test-augmented" in evaluate
            and "--data-dir /x/mnist --out reports/evaluation" in evaluate)
    assert "pip install --quiet -c constraints.txt -e '.[dev]'" in out
    assert "--data-dir /env/mnist" in make_dry_run("run", env={"DIGITNET_DATA_DIR": "/env/mnist"})
    assert "--data-dir ../shared/datasets/mnist" in make_dry_run("run")
    assert "data explore --data-dir ../shared/datasets/mnist --out reports/explore" in make_dry_run(
        "explore")
    test = make_dry_run("test", "PYTEST_ARGS=-m 'not slow'")
    assert ("DIGITNET_DATA_DIR=../shared/datasets/mnist .venv/bin/python -m pytest "
            "-m 'not slow'") in test
