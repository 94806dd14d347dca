"""The `digitnet` command line as the README describes it: --version, `models list`, the model
store from $DIGITNET_MODELS_DIR, JSON recipes, and flags overriding a recipe."""

import json
import re
import tomllib
from pathlib import Path

import pytest

import digitnet
from digitnet.cli import main
from digitnet.models import DEFAULT_ARCH, count_flops, count_parameters, create_model, list_specs
from digitnet.store import load_model

REPO = Path(__file__).resolve().parents[1]
TINY = ["--arch", "linear", "--epochs", "1", "--batch-size", "32", "--val-size", "50",
        "--no-augment", "--no-progress"]


def test_version_is_the_package_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert capsys.readouterr().out.strip() == f"digitnet {version}" == f"digitnet {digitnet.__version__}"


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
    rows = {m.group(1): m for m in re.finditer(r"^(\S+-v\d+)\s+([\d,]+)\s+([\d.]+)  (.*)$", out, re.M)}
    assert sorted(rows) == sorted(s.arch_id for s in list_specs())
    for arch, m in rows.items():
        model = create_model(arch)
        assert int(m.group(2).replace(",", "")) == count_parameters(model), arch
        assert float(m.group(3)) == pytest.approx(count_flops(model) / 1e6, abs=0.005), arch
        assert m.group(4).endswith("(default)") == (arch == f"{DEFAULT_ARCH}-v1"), arch
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
    assert main(["train", "--config", str(tmp_path / "bad.json"), "--data-dir", str(synthetic_mnist),
                 "--models-dir", str(models)]) == 1
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
    assert "--resume continues a run with its own configuration; drop --lr" in capsys.readouterr().err
