"""Deployment: Hub export, model card, loading back (folder, clone, hf://), git-LFS mirror, API."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import digitnet
from digitnet.cli import main
from digitnet.config import TrainConfig
from digitnet.data.preprocess import PREPROCESS_VERSION
from digitnet.deploy import mirror as git_mirror
from digitnet.deploy.export import LFS_PATTERNS, export_model
from digitnet.deploy.publish import PublishOptions, publish
from digitnet.errors import DigitnetError
from digitnet.evaluation.evaluate import evaluate_model
from digitnet.store import LoadedModel, hub
from digitnet.store.hub import LFS_POINTER_PREFIX, load_exported
from digitnet.training.loop import fit

HAS_GIT_LFS = shutil.which("git") is not None and subprocess.run(
    ["git", "lfs", "version"], capture_output=True).returncode == 0
needs_git_lfs = pytest.mark.skipif(not HAS_GIT_LFS,
                                   reason="git LFS missing: apt-get install git-lfs")
SENTINEL = "hf_SENTINELtokenNeverPrintMe0123456789"
EXPORT_FILES = {".gitattributes", "README.md", "config.json", "confusion_matrix.png",
                "model.safetensors"}
CARD_DATASETS = ["mnist-test", "mnist-test-augmented"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A cnn trained briefly on synthetic MNIST, and its export (repo id me/tiny)."""
    from conftest import make_synthetic_mnist

    root = tmp_path_factory.mktemp("deploy")
    data = make_synthetic_mnist(root / "mnist")
    models = root / "models"
    fit(TrainConfig(arch="cnn", epochs=2, name="tiny", batch_size=32, val_size=50, threads=1,
                    augment=False, lr=0.05), data, models, progress=False)
    info = export_model("cnn-v1/tiny", root / "export", data, models, repo_id="me/tiny")
    return dict(root=root, data=data, models=models, export=root / "export", info=info)


@pytest.fixture
def images():
    return torch.randint(0, 256, (9, 28, 28), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))


@pytest.fixture
def isolated_git(tmp_path, monkeypatch):
    """git that ignores the user's and the system's configuration (no identity, no LFS filter)."""
    empty = tmp_path / "empty.gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL",
                "GIT_CONFIG_COUNT"):
        monkeypatch.delenv(var, raising=False)


def git(*args, cwd=None) -> str:
    result = subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com",
                             *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def original(trained) -> LoadedModel:
    return digitnet.load("cnn-v1/tiny", models_dir=trained["models"])


# -------------------------------------------------------------------------------------- export
def test_export_writes_a_hub_folder(trained):
    out = trained["export"]
    assert {p.name for p in out.iterdir()} == EXPORT_FILES
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "digitnet-hub" and config["arch_id"] == "cnn-v1"
    assert config["architecture"] == "cnn" and config["version"] == 1
    assert config["model_args"] == original(trained).model.model_args
    assert config["label_names"] == [str(d) for d in range(10)] and config["num_classes"] == 10
    assert config["input_size"] == [1, 28, 28]
    assert (config["mean"], config["std"]) == (0.1307, 0.3081)
    assert config["preprocess_version"] == PREPROCESS_VERSION
    assert config["digitnet_version"] == digitnet.__version__
    assert config["source"]["ref"] == "cnn-v1/tiny" and config["source"]["epoch"] == 2
    assert "dir" not in config["data"]  # no local paths in a public file
    weights = load_file(str(out / "model.safetensors"))
    assert weights.keys() == original(trained).model.state_dict().keys()
    lines = (out / ".gitattributes").read_text().splitlines()
    for pattern in ("*.safetensors", "*.onnx", "*.bin", "*.png", "saved_model/**/*", "*tfevents*"):
        assert f"{pattern} filter=lfs diff=lfs merge=lfs -text" in lines
    assert len(lines) == len(LFS_PATTERNS)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".export.")]  # no leftovers
    assert trained["info"]["message"] == "Publish cnn-v1/tiny (cnn v1)"


def test_model_card_parses_and_matches_evaluation(trained):
    from huggingface_hub import ModelCard

    card = ModelCard.load(trained["export"] / "README.md")
    assert card.data.license == "apache-2.0" and card.data.library_name == "digitnet"
    assert {"image-classification", "mnist", "pytorch", "digitnet"} <= set(card.data.tags)
    assert card.data.datasets == ["ylecun/mnist"]
    assert set(card.data.metrics) == {"accuracy", "f1", "precision", "recall"}
    assert len(card.data.to_dict()["model-index"][0]["results"]) == 2  # one entry per test set
    expected = {r["dataset"]: r for r in evaluate_model("cnn-v1/tiny", CARD_DATASETS,
                                                        trained["data"], trained["models"])}
    got = {}
    for result in card.data.eval_results:
        dataset = "mnist-test" if result.dataset_config == "mnist" else "mnist-test-augmented"
        got.setdefault(dataset, {})[result.metric_type] = result.metric_value
        assert result.dataset_type == "ylecun/mnist" and result.task_type == "image-classification"
    for dataset in CARD_DATASETS:
        assert got[dataset] == {
            "accuracy": expected[dataset]["accuracy"], "f1": expected[dataset]["f1_macro"],
            "precision": expected[dataset]["precision_macro"],
            "recall": expected[dataset]["recall_macro"],
        }
    text = card.text
    assert 'digitnet.load("hf://me/tiny")' in text and "pip install digitnet" in text
    assert "](confusion_matrix.png)" in text and "CC BY-SA 3.0" in text
    for heading in ("## Intended use", "## How to use", "## Training data", "## Training recipe",
                    "## Evaluation", "## Limitations"):
        assert heading in text
    # the picture is the confusion matrix of mnist-test: the same pixels as drawing it again
    import numpy as np
    from PIL import Image

    from digitnet.evaluation.plots import plot_confusion_matrix
    from digitnet.figures import save_figure

    clean = expected["mnist-test"]
    title = f"cnn-v1 on mnist-test (n={clean['n']:,}, accuracy {clean['accuracy']:.4f})"
    redrawn = save_figure(plot_confusion_matrix(clean["confusion_matrix"], title=title),
                          trained["root"] / "redrawn.png")
    with Image.open(trained["export"] / "confusion_matrix.png") as got, Image.open(redrawn) as want:
        assert got.size == want.size and np.array_equal(np.asarray(got), np.asarray(want))


def test_export_refuses_a_foreign_folder(trained, tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "todo.txt").write_text("keep me")
    with pytest.raises(DigitnetError, match="not an exported model"):
        export_model("cnn-v1/tiny", out, trained["data"], trained["models"])
    assert (out / "todo.txt").read_text() == "keep me"


def test_failed_export_leaves_the_mirror_as_it_was(trained, tmp_path, monkeypatch):
    out = tmp_path / "huggingface"
    export_model("cnn-v1/tiny", out, trained["data"], trained["models"], repo_id="me/tiny")
    git("init", "-q", str(out))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("digitnet.deploy.card.render_model_card", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export_model("cnn-v1/tiny", out, trained["data"], trained["models"], repo_id="other/x")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert (out / ".git" / "HEAD").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["huggingface"]  # no half-written folders
    monkeypatch.undo()
    export_model("cnn-v1/tiny", out, trained["data"], trained["models"], repo_id="other/x")
    assert (out / ".git" / "HEAD").is_file()  # a re-export keeps the mirror's history
    assert 'hf://other/x' in (out / "README.md").read_text()


# ------------------------------------------------------------------------------------- loading
def test_exported_folder_loads_with_identical_logits(trained, images):
    loaded = digitnet.load(str(trained["export"]))
    assert isinstance(loaded, LoadedModel) and not loaded.model.training
    assert loaded.epoch == 2 and loaded.data_config["mean"] == 0.1307
    assert loaded.ref.run_dir == trained["export"].resolve() and loaded.ref.checkpoint is None
    assert torch.equal(loaded.logits(images), original(trained).logits(images))


def test_evaluate_accepts_an_exported_folder(trained, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["evaluate", str(trained["export"]), "--data-dir", str(trained["data"]),
                 "--out", str(out), "--json", str(tmp_path / "r.json")])
    assert code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "r.json").read_text())[0]
    assert result["model"] == str(trained["export"]) and result["epoch"] == 2
    [run] = evaluate_model("cnn-v1/tiny", ["mnist-test"], trained["data"], trained["models"])
    same = ("n", "loss", "accuracy", "ece", "confusion_matrix", "per_class", "misclassified")
    assert {k: result[k] for k in same} == {k: run[k] for k in same}  # the run's own weights
    assert f"| mnist-test | 50 | {run['loss']:.4f} | {run['accuracy']:.2%} |" in (
        out / "report.md").read_text()


def _fake_snapshot(monkeypatch, folder: Path) -> list[dict]:
    calls = []

    def snapshot_download(repo_id, **kwargs):
        calls.append(dict(repo_id=repo_id, **kwargs))
        return str(folder)

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    return calls


def test_hf_reference_loads_through_snapshot_download(trained, images, monkeypatch):
    calls = _fake_snapshot(monkeypatch, trained["export"])
    loaded = digitnet.load("hf://me/tiny@v1.0")
    assert calls[0]["repo_id"] == "me/tiny" and calls[0]["revision"] == "v1.0"
    assert sorted(calls[0]["allow_patterns"]) == ["config.json", "model.safetensors"]
    assert loaded.ref.label == "hf://me/tiny@v1.0"
    assert torch.equal(loaded.logits(images), original(trained).logits(images))


@pytest.mark.parametrize("change, message", [
    ("extra", r"unexpected \['extra.weight'\]"),
    ("missing", r"missing \['head.3.bias'\]"),
    ("reshaped", r"shape differs \['head.3.weight'\]"),
])
def test_weights_must_match_exactly(trained, tmp_path, monkeypatch, change, message):
    folder = tmp_path / "copy"
    shutil.copytree(trained["export"], folder)
    state = load_file(str(folder / "model.safetensors"))
    if change == "extra":
        state["extra.weight"] = torch.zeros(3)
    elif change == "missing":
        del state["head.3.bias"]
    else:
        state["head.3.weight"] = torch.zeros(10, 7)
    save_file(state, str(folder / "model.safetensors"))
    _fake_snapshot(monkeypatch, folder)
    for ref in ("hf://me/tiny", str(folder)):
        with pytest.raises(DigitnetError, match=message):
            digitnet.load(ref)


def test_lfs_pointer_instead_of_weights_is_explained(trained, tmp_path):
    folder = tmp_path / "clone"
    shutil.copytree(trained["export"], folder)
    (folder / "model.safetensors").write_bytes(LFS_POINTER_PREFIX + b"\noid sha256:00\nsize 9\n")
    with pytest.raises(DigitnetError, match="git lfs pull"):
        load_exported(folder)


@pytest.mark.parametrize("ref, message", [
    ("hf://just-a-name", "expected hf://USER/NAME"),
    ("hf://a/b/c", "expected hf://USER/NAME"),
])
def test_bad_hf_reference(ref, message):
    with pytest.raises(DigitnetError, match=message):
        digitnet.load(ref)


def test_hf_reference_offline_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DigitnetError, match="cannot reach the Hub at http://127.0.0.1:9"):
        digitnet.load("hf://me/tiny")


# ------------------------------------------------------------------------------------- publish
@pytest.mark.slow
@needs_git_lfs
def test_publish_with_git_lfs_and_load_from_a_fresh_clone(trained, tmp_path, images, isolated_git):
    bare = tmp_path / "remote.git"
    git("init", "-q", "--bare", "-b", "main", str(bare))
    url, mirror = bare.as_uri(), tmp_path / "huggingface"
    options = PublishOptions("me/tiny", mirror, remote=url, data_dir=trained["data"],
                             models_dir=trained["models"])
    info = publish("cnn-v1/tiny", options)
    assert info["pushed"] and {r["name"] for r in info["plan"]} == EXPORT_FILES
    assert git("log", "-1", "--format=%s", cwd=mirror).strip() == "Publish cnn-v1/tiny (cnn v1)"

    # Someone edits the Hub repository; the next publish still fast-forwards over it.
    editor = tmp_path / "editor"
    git("clone", "-q", "-b", "main", url, str(editor))
    (editor / "NOTES.md").write_text("edited elsewhere\n")
    git("add", "NOTES.md", cwd=editor)
    git("commit", "-q", "-m", "edit", cwd=editor)
    git("push", "-q", "--no-verify", "origin", "main", cwd=editor)
    info = publish("cnn-v1/tiny", options)
    assert info["pushed"]
    again = publish("cnn-v1/tiny", options)
    assert not again["pushed"] and again["commit"] == info["commit"]

    clone = tmp_path / "clone"
    git("clone", "-q", "-b", "main", url, str(clone))
    assert git("rev-parse", "HEAD", cwd=clone).strip() == info["commit"]
    assert not (clone / "NOTES.md").exists()  # the repository holds exactly the export
    pointer = git("show", "HEAD:model.safetensors", cwd=clone)
    assert pointer.startswith("version https://git-lfs.github.com/spec/v1")
    with pytest.raises(DigitnetError, match="git lfs pull"):
        digitnet.load(str(clone))  # cloned without the LFS filter: pointers only
    git("lfs", "install", "--local", cwd=clone)
    git("lfs", "pull", cwd=clone)
    assert "model.safetensors" in git("lfs", "ls-files", "--name-only", cwd=clone).split()
    assert list((clone / ".git" / "lfs" / "objects").rglob("*"))
    loaded = digitnet.load(str(clone))
    assert torch.equal(loaded.logits(images), original(trained).logits(images))


def _bare_remote(path: Path, init_args: list[str]) -> tuple[str, str]:
    """A bare repository made by `git init --bare INIT_ARGS`: (its URL, the branch HEAD names)."""
    git("init", "-q", "--bare", *init_args, str(path))
    return path.as_uri(), git("symbolic-ref", "--short", "HEAD", cwd=path).strip()


# A plain `git init --bare` points HEAD at master (git 2.x, with isolated_git's empty config).
BARE_REMOTES = pytest.mark.parametrize("init_args", [[], ["-b", "main"]], ids=["plain", "main"])


@BARE_REMOTES
def test_mirror_finds_the_branch_the_remote_head_names(tmp_path, isolated_git, init_args):
    url, head = _bare_remote(tmp_path / "remote.git", init_args)
    logs = []
    remote = git_mirror.find_remote(url, log=logs.append)  # empty: HEAD's branch is unborn
    assert (remote.branch, remote.commit, logs) == (head, None, [])
    work = tmp_path / "work"
    git("init", "-q", str(work))
    (work / "a.txt").write_text("a\n")
    git("add", "a.txt", cwd=work)
    git("commit", "-q", "-m", "a", cwd=work)
    commit = git("rev-parse", "HEAD", cwd=work).strip()
    git("push", "-q", url, f"HEAD:refs/heads/{head}", "HEAD:refs/heads/other", cwd=work)
    remote = git_mirror.find_remote(url, log=logs.append)  # named by ls-remote --symref
    assert (remote.branch, remote.commit, logs) == (head, commit, [])


def test_mirror_falls_back_to_main_when_the_remote_does_not_say(tmp_path, monkeypatch,
                                                                  isolated_git):
    url, _ = _bare_remote(tmp_path / "remote.git", [])
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")  # protocol v0 never reports an unborn HEAD
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "protocol.version")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "0")
    logs = []
    remote = git_mirror.find_remote(url, log=logs.append)
    assert (remote.branch, remote.commit) == ("main", None)
    assert logs == [f"{url} does not say which branch its HEAD names; pushing to main"]


@needs_git_lfs
@BARE_REMOTES
def test_publish_pushes_to_the_branch_a_clone_checks_out(trained, tmp_path, images, isolated_git,
                                                         init_args):
    url, head = _bare_remote(tmp_path / "remote.git", init_args)
    logs = []
    info = publish("cnn-v1/tiny", PublishOptions("me/tiny", tmp_path / "huggingface", remote=url,
                                                 data_dir=trained["data"],
                                                 models_dir=trained["models"]), log=logs.append)
    assert info["pushed"] and info["branch"] == head
    assert f"(branch {head})" in logs[-1]
    clone = tmp_path / "clone"
    git("clone", "-q", url, str(clone))  # no -b: the branch the remote's HEAD names
    assert {p.name for p in clone.iterdir() if p.is_file()} == EXPORT_FILES
    assert git("rev-parse", "HEAD", cwd=clone).strip() == info["commit"]
    assert git("show", "HEAD:model.safetensors", cwd=clone).startswith(
        "version https://git-lfs.github.com/spec/v1")
    git("lfs", "install", "--local", cwd=clone)
    git("lfs", "pull", cwd=clone)
    loaded = digitnet.load(str(clone))
    assert torch.equal(loaded.logits(images), original(trained).logits(images))


@needs_git_lfs
def test_publish_dry_run_changes_nothing(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", SENTINEL)
    calls = []
    monkeypatch.setattr("huggingface_hub.HfApi.create_repo", lambda *a, **k: calls.append(a))
    mirror = tmp_path / "huggingface"
    for via in ("git", "api"):
        code = main(["publish", "cnn-v1/tiny", "--repo-id", "me/tiny", "--out", str(mirror),
                     "--via", via, "--dry-run", "--data-dir", str(trained["data"]),
                     "--models-dir", str(trained["models"])])
        assert code == 0
    captured = capsys.readouterr()
    assert "would publish to https://huggingface.co/me/tiny" in captured.out
    assert "model.safetensors" in captured.out and "(git LFS)" in captured.out
    assert SENTINEL not in captured.out + captured.err
    assert not mirror.exists() and not calls


def _fake_hub_api(monkeypatch) -> list[tuple]:
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        calls.append(("upload_folder", kwargs["repo_id"], dict(kwargs, files=files)))
        return type("CommitInfo", (), {"oid": "f" * 40})()

    monkeypatch.setattr("huggingface_hub.HfApi.create_repo", create_repo)
    monkeypatch.setattr("huggingface_hub.HfApi.upload_folder", upload_folder)
    return calls


def _files_contain(folder: Path, text: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def test_publish_via_api_uploads_the_mirror_folder(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", SENTINEL)
    calls = _fake_hub_api(monkeypatch)
    mirror = tmp_path / "huggingface"
    code = main(["publish", "cnn-v1/tiny", "--repo-id", "me/tiny", "--out", str(mirror),
                 "--via", "api", "--onnx", "--data-dir", str(trained["data"]),
                 "--models-dir", str(trained["models"])])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert [c[:2] for c in calls] == [("create_repo", "me/tiny"), ("upload_folder", "me/tiny")]
    assert calls[0][2]["exist_ok"] is True
    upload = calls[1][2]
    assert Path(upload["folder_path"]) == mirror
    assert upload["files"] == EXPORT_FILES | {"model.onnx"}
    assert upload["commit_message"] == "Publish cnn-v1/tiny (cnn v1)"
    assert upload["delete_patterns"] == "*"  # the repository mirrors the folder
    assert "published to https://huggingface.co/me/tiny" in captured.out
    assert SENTINEL not in captured.out + captured.err
    assert not _files_contain(mirror, SENTINEL)


def test_publish_via_api_offline_publishes_nothing(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", SENTINEL)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    mirror = tmp_path / "huggingface"
    code = main(["publish", "cnn-v1/tiny", "--repo-id", "me/tiny", "--out", str(mirror),
                 "--via", "api", "--data-dir", str(trained["data"]),
                 "--models-dir", str(trained["models"])])
    err = capsys.readouterr().err
    assert code == 1
    assert "cannot reach the Hub at http://127.0.0.1:9" in err and "Nothing was published" in err
    assert "Traceback" not in err and SENTINEL not in err
    assert not mirror.exists()


@needs_git_lfs
def test_publish_via_git_offline_keeps_the_token_out_of_git(trained, tmp_path, monkeypatch, capsys,
                                                             isolated_git):
    monkeypatch.setenv("HF_TOKEN", SENTINEL)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    calls = _fake_hub_api(monkeypatch)
    mirror = tmp_path / "huggingface"
    export_model("cnn-v1/tiny", mirror, trained["data"], trained["models"], repo_id="me/tiny")
    git("init", "-q", str(mirror))
    code = main(["publish", "cnn-v1/tiny", "--repo-id", "me/tiny", "--out", str(mirror),
                 "--data-dir", str(trained["data"]), "--models-dir", str(trained["models"])])
    err = capsys.readouterr().err
    assert code == 1 and calls[0][:2] == ("create_repo", "me/tiny")
    assert "cannot reach http://127.0.0.1:9/me/tiny" in err and "Nothing was published" in err
    assert SENTINEL not in err and not _files_contain(mirror, SENTINEL)
    assert SENTINEL not in (mirror / ".git" / "config").read_text()


def test_git_auth_header_lives_in_the_environment_only(monkeypatch, tmp_path, isolated_git):
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example")
    env = git_mirror._git_env(SENTINEL)
    listed = subprocess.run(["git", "config", "--list"], env=env, capture_output=True, text=True,
                            cwd=tmp_path).stdout
    assert "credential.helper=" in listed.splitlines()
    header = [line for line in listed.splitlines() if line.startswith("http.https://hub.example/")]
    assert header and header[0].split("=", 1)[1].startswith("Authorization: Basic ")
    assert SENTINEL not in listed  # base64 inside the header, and only in this process's env
    assert "GIT_CONFIG_COUNT" not in git_mirror._git_env(None)


def test_publish_without_token_says_how_to_log_in(trained, tmp_path, monkeypatch):
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(DigitnetError, match="no Hugging Face token: set HF_TOKEN"):
        publish("cnn-v1/tiny", PublishOptions("me/tiny", tmp_path / "hf", via="api",
                                              data_dir=trained["data"],
                                              models_dir=trained["models"]))


def test_publish_without_git_lfs_says_how_to_install_it(trained, tmp_path, monkeypatch):
    real_git = shutil.which("git")
    if real_git is None:
        pytest.skip("git missing")
    fake = tmp_path / "bin" / "git"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nif [ "$1" = lfs ]; then echo "git: \'lfs\' is not a git command"'
                    f' >&2; exit 1; fi\nexec {real_git} "$@"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    with pytest.raises(DigitnetError, match="apt-get install git-lfs"):
        publish("cnn-v1/tiny", PublishOptions("me/tiny", tmp_path / "hf",
                                              remote="file:///nowhere.git",
                                              data_dir=trained["data"],
                                              models_dir=trained["models"]))
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize("kwargs, message", [
    (dict(repo_id="no-slash"), "expected USER/NAME"),
    (dict(via="ftp"), "unknown publishing route"),
    (dict(via="api", remote="file:///x.git"), "cannot be used with --via api"),
])
def test_publish_rejects_bad_arguments(kwargs, message):
    args = dict(repo_id="me/tiny") | kwargs
    with pytest.raises(DigitnetError, match=message):
        publish("cnn-v1/tiny", PublishOptions(**args))


# ------------------------------------------------------------------- README promises (issue 18)
def test_predict_accepts_an_exported_folder(trained, tmp_path, capsys):
    """`digitnet predict huggingface/ digit.png`: the same labels as the model it came from."""
    from conftest import seven_png

    (tmp_path / "seven.png").write_bytes(seven_png())
    outputs = []
    for ref in (str(trained["export"]), "cnn-v1/tiny"):
        assert main(["predict", ref, str(tmp_path / "seven.png"), "--json", "--models-dir",
                     str(trained["models"])]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[1] and outputs[0][0]["digit_found"]


# ------------------------------------------------------------------ weights that cannot predict
def _copy_sources(trained, tmp_path) -> dict[str, tuple[str, Path]]:
    """A store model, one of its checkpoints and an export, copied: {place: (ref, weights)}."""
    models = tmp_path / "models"
    shutil.copytree(trained["models"], models)
    export = tmp_path / "export"
    shutil.copytree(trained["export"], export)
    run = models / "cnn-v1" / "tiny"
    return dict(store=(str(run), run / "model.safetensors"),
                checkpoint=(f"{run}@epoch-1",
                            run / "checkpoints" / "epoch-001" / "model.safetensors"),
                export=(str(export), export / "model.safetensors"))


def _rewrite_weights(weights: Path, change) -> None:
    """Apply `change` to the weights, keeping a checkpoint's meta.json hashes consistent (a
    careless or hostile writer can update them too)."""
    from digitnet.fileio import sha256_file

    state = load_file(str(weights))
    change(state)
    save_file(state, str(weights))
    meta = weights.parent / "meta.json"
    if meta.is_file():
        content = json.loads(meta.read_text())
        content["sha256"]["model.safetensors"] = sha256_file(weights)
        meta.write_text(json.dumps(content))


def _set(name, fill=None, dtype=None):
    def change(state):
        if dtype is not None:
            state[name] = state[name].to(dtype)
        if fill is not None:
            state[name] = state[name].clone()
            state[name].view(-1)[0] = fill
    return change


@pytest.mark.parametrize("place", ["store", "checkpoint", "export"])
@pytest.mark.parametrize("change, message", [
    (_set("head.3.weight", fill=float("nan")), r"'head.3.weight' holds 1 NaN or infinite"),
    (_set("features.0.weight", fill=float("inf")), r"'features.0.weight' holds 1 NaN or infinite"),
    (_set("features.1.running_var", fill=float("-inf")), r"'features.1.running_var' holds 1 NaN"),
    (_set("head.3.weight", dtype=torch.int32), r"'head.3.weight' is int32, expected float32"),
    (_set("head.3.bias", dtype=torch.bool), r"'head.3.bias' is bool, expected float32"),
    (_set("features.1.num_batches_tracked", dtype=torch.float32),
     r"'features.1.num_batches_tracked' is float32, expected int64"),
    (_set("head.3.weight", fill=1e300, dtype=torch.float64),
     r"'head.3.weight' holds 1 NaN or infinite value\(s\) once cast to float32"),
])
def test_weights_that_cannot_predict_are_refused_at_load(trained, tmp_path, capsys, place, change,
                                                         message):
    from conftest import seven_png

    ref, weights = _copy_sources(trained, tmp_path)[place]
    _rewrite_weights(weights, change)
    with pytest.raises(DigitnetError, match=message) as info:
        digitnet.load(ref)
    assert str(weights) in str(info.value)
    image = tmp_path / "seven.png"
    image.write_bytes(seven_png())
    capsys.readouterr()
    assert main(["predict", ref, str(image), "--json"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert re.search(message, err) and str(weights) in err


@pytest.mark.parametrize("place", ["store", "checkpoint", "export"])
@pytest.mark.parametrize("dtype, tolerance", [(torch.float16, 0.05), (torch.bfloat16, 0.3),
                                              (torch.float64, 1e-6)])
def test_other_float_dtypes_are_cast_to_float32(trained, tmp_path, images, place, dtype, tolerance):
    ref, weights = _copy_sources(trained, tmp_path)[place]
    before = digitnet.load(ref).logits(images)

    def to_dtype(state):
        for name, tensor in state.items():
            if tensor.is_floating_point():
                state[name] = tensor.to(dtype)

    _rewrite_weights(weights, to_dtype)
    loaded = digitnet.load(ref)
    assert all(t.dtype in (torch.float32, torch.int64) for t in loaded.model.state_dict().values())
    after = loaded.logits(images)
    assert after.dtype == torch.float32 and torch.allclose(after, before, atol=tolerance, rtol=0.05)
    assert torch.equal(after.argmax(1), before.argmax(1)) or dtype is torch.bfloat16


def test_predict_json_never_prints_nan(trained, tmp_path, capsys):
    """Finite weights that overflow in the forward pass: an error, not `NaN` in the JSON."""
    from conftest import seven_png

    ref, weights = _copy_sources(trained, tmp_path)["store"]
    _rewrite_weights(weights, lambda state: state["head.3.weight"].fill_(3e38))
    image = tmp_path / "seven.png"
    image.write_bytes(seven_png())
    capsys.readouterr()
    assert main(["predict", ref, str(image), "--json"]) == 1
    out, err = capsys.readouterr()
    assert "NaN" not in out and err.count("\n") == 1
    assert "NaN or infinite probabilities" in err


# ------------------------------------------------------------ config files trusted by their shape
def _edit(mutate):
    """config.json content from the valid one: `mutate(dict)` edits it in place."""
    def content(valid: dict) -> bytes:
        mutate(valid)
        return json.dumps(valid).encode()
    return content


def _raw(data: bytes):
    return lambda valid: data


COMMON_BAD_CONFIGS = [
    ("list", _raw(b"[1, 2]"), r"config.json: expected an object, found a list of 2 item"),
    ("utf8", _raw(b'{"arch": "\xff"}'),
     r"config.json: not UTF-8 text \(invalid byte at offset 10\)"),
    ("json", _raw(b'{"arch": '), r"config.json: invalid JSON"),
    ("deep", _raw(b"[" * 100_000 + b"]" * 100_000), r"config.json: nested deeper than 64 levels"),
    ("deep-ok-json", _raw(b'{"a": ' * 200 + b"1" + b"}" * 200), r"config.json: nested deeper"),
    ("digits", _raw(b'{"a": ' + b"9" * 5000 + b"}"), r"config.json: invalid JSON \(Exceeds"),
    ("surrogate", _raw(b'{"a": "\\ud800"}'), r"config.json: text '\\ud800' is not valid Unicode"),
    ("large", _raw(b" " * (16 * 1024 * 1024 + 1)), r"config.json: .* larger than the limit"),
]
STORE_BAD_CONFIGS = COMMON_BAD_CONFIGS + [
    ("no-arch", _edit(lambda c: c.pop("arch")), r'field "arch" is missing \(expected an object\)'),
    ("arch-list", _edit(lambda c: c.update(arch=[1])), r'field "arch": expected an object'),
    ("name", _edit(lambda c: c["arch"].update(name=3)),
     r'config.json: field "arch.name": expected a string, found 3'),
    ("version", _edit(lambda c: c["arch"].update(version="1")),
     r'field "arch.version": expected an integer >= 1, found \'1\''),
    ("version-bool", _edit(lambda c: c["arch"].update(version=True)),
     r'"arch.version".*found true'),
    ("model-args", _edit(lambda c: c["arch"].update(model_args=None)), r'"arch.model_args".*null'),
    ("mean", _edit(lambda c: c["data_config"].update(mean="x")),
     r'"data_config.mean": expected a num'),
    ("mean-nan", _edit(lambda c: c["data_config"].update(mean=float("nan"))),
     r'"data_config.mean"'),
    ("std", _edit(lambda c: c["data_config"].update(std=0)),
     r'"data_config.std": expected a number > 0'),
    ("labels", _edit(lambda c: c["data_config"].update(label_names=["a", 2])),
     r'"data_config.label_names\[1\]": expected a string, found 2'),
    ("label-count", _edit(lambda c: c["data_config"].update(label_names=["a", "b"])),
     r'"label_names": expected 10 names'),
    ("input-size", _edit(lambda c: c["data_config"].update(input_size=[3, 32, 32])),
     r'"data_config.input_size": expected \[1, 28, 28\]'),
    ("val-size", _edit(lambda c: c["train"].update(val_size=-1)),
     r'"train.val_size": expected an int'),
    ("unknown-arch", _edit(lambda c: c["arch"].update(name="nosuch")), r"nosuch"),
]
EXPORT_BAD_CONFIGS = COMMON_BAD_CONFIGS + [
    ("no-source", _edit(lambda c: c.pop("source")), r'field "source" is missing'),
    ("architecture", _edit(lambda c: c.update(architecture=3)),
     r'"architecture": expected a string'),
    ("version", _edit(lambda c: c.update(version=[1])), r'"version": expected an integer >= 1'),
    ("format-version", _edit(lambda c: c.update(format_version="2")),
     r'"format_version": expected an'),
    ("newer", _edit(lambda c: c.update(format_version=99)), r"written by a newer digitnet"),
    ("source-ref", _edit(lambda c: c["source"].update(ref=1)), r'"source.ref": expected a string'),
    ("epoch", _edit(lambda c: c["source"].update(epoch="2")),
     r'"source.epoch": expected an integer or'),
    ("std", _edit(lambda c: c.update(std=-0.3)), r'"std": expected a number > 0, found -0.3'),
    ("labels", _edit(lambda c: c.update(label_names="0123456789")),
     r'"label_names": expected a non-emp'),
    ("label-count", _edit(lambda c: c.update(label_names=list("012"))),
     r'"label_names": expected 10'),
    ("signature", _edit(lambda c: c.update(signature=5)), r'"signature": expected a list or null'),
    ("train", _edit(lambda c: c.update(train=[])), r'"train": expected an object'),
]


def _bad_config_folder(trained, tmp_path, kind: str, content) -> Path:
    if kind == "store":
        folder = tmp_path / "models" / "cnn-v1" / "tiny"
        shutil.copytree(trained["models"] / "cnn-v1" / "tiny", folder)
    else:
        folder = tmp_path / "export"
        shutil.copytree(trained["export"], folder)
    config = folder / "config.json"
    config.write_bytes(content(json.loads(config.read_text())))
    return folder


@pytest.mark.parametrize("case, content, message", STORE_BAD_CONFIGS,
                         ids=[c[0] for c in STORE_BAD_CONFIGS])
def test_malformed_run_config_is_one_clear_error(trained, tmp_path, capsys, case, content, message):
    folder = _bad_config_folder(trained, tmp_path, "store", content)
    capsys.readouterr()
    assert main(["evaluate", str(folder), "--data-dir", str(trained["data"])]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert re.search(message, err), err
    assert str(folder) in err


@pytest.mark.parametrize("case, content, message", EXPORT_BAD_CONFIGS,
                         ids=[c[0] for c in EXPORT_BAD_CONFIGS])
def test_malformed_export_config_is_one_clear_error(trained, tmp_path, capsys, case, content,
                                                    message):
    folder = _bad_config_folder(trained, tmp_path, "export", content)
    capsys.readouterr()
    assert main(["evaluate", str(folder), "--data-dir", str(trained["data"])]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert re.search(message, err), err
    assert str(folder) in err


def test_config_or_metrics_that_is_a_fifo_does_not_hang(trained, tmp_path):
    from digitnet.store import read_metrics

    folder = _bad_config_folder(trained, tmp_path, "store",
                                lambda valid: json.dumps(valid).encode())
    (folder / "metrics.jsonl").unlink()
    os.mkfifo(folder / "metrics.jsonl")
    with pytest.raises(DigitnetError, match="expected a regular metrics file, found a FIFO"):
        read_metrics(folder)
    (folder / "config.json").unlink()
    os.mkfifo(folder / "config.json")
    with pytest.raises(DigitnetError, match=re.escape(str(folder))):
        digitnet.load(str(folder))


@pytest.mark.parametrize("content, message", [
    (b'{"epochs_done": "2"}', r'summary.json: field "epochs_done": expected an integer >= 0'),
    (b"[]", r"summary.json: expected an object"),
    (b"\xfe", r"summary.json: not UTF-8"),
])
def test_malformed_summary_is_one_clear_error(trained, tmp_path, content, message):
    folder = _bad_config_folder(trained, tmp_path, "store",
                                lambda valid: json.dumps(valid).encode())
    (folder / "summary.json").write_bytes(content)
    with pytest.raises(DigitnetError, match=message):
        digitnet.load(str(folder))


# ---------------------------------------------------------------------- names the Hub rejects
BAD_REPO_IDS = ["a/..", "a/.", "a/-b", "a/b-", "a/.b", "a/b--c", "a/b..c", "a/b.git",
                "a/" + "x" * 97, "a/caf\u00e9"]


@pytest.mark.parametrize("repo_id", BAD_REPO_IDS)
def test_hf_reference_the_hub_rejects_is_refused_offline(repo_id, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the Hub was called")

    monkeypatch.setattr("huggingface_hub.snapshot_download", no_network)
    with pytest.raises(DigitnetError, match=r"model reference 'hf://.*': (the Hub does not accept|"
                                            r"expected hf://USER/NAME)"):
        digitnet.load(f"hf://{repo_id}")


@pytest.mark.parametrize("revision", ["../../../etc", "a/../b", ".hidden", "-x", "v1 0", "x.lock",
                                      "a//b", "caf\u00e9", ""])
def test_hf_revision_that_is_not_a_git_name_is_refused(revision, monkeypatch):
    monkeypatch.setattr("huggingface_hub.snapshot_download",
                        lambda *a, **k: pytest.fail("the Hub was called"))
    with pytest.raises(DigitnetError, match=r"model reference 'hf://me/tiny@.*': "):
        digitnet.load(f"hf://me/tiny@{revision}")


@pytest.mark.parametrize("repo_id", BAD_REPO_IDS)
def test_repo_id_the_hub_rejects_is_refused_before_any_work(repo_id, trained, tmp_path, capsys):
    capsys.readouterr()
    for command in (["export", "cnn-v1/tiny", "--out", str(tmp_path / "out")],
                    ["publish", "cnn-v1/tiny"]):
        code = main([*command, "--repo-id", repo_id, "--models-dir", str(trained["models"]),
                     "--data-dir", str(trained["data"])])
        err = capsys.readouterr().err
        assert code == 1 and err.count("\n") == 1, err
        assert f"--repo-id {repo_id!r}: " in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("ref, expected", [
    ("hf://me/tiny", ("me/tiny", None)),
    ("hf://Org_1/model.v2@v1.0", ("Org_1/model.v2", "v1.0")),
    ("hf://me/tiny@refs/pr/1", ("me/tiny", "refs/pr/1")),
    ("hf://me/tiny@release/2024-01", ("me/tiny", "release/2024-01")),
    ("hf://me/tiny@" + "0123abcd" * 5, ("me/tiny", "0123abcd" * 5)),
])
def test_hf_references_the_hub_accepts_still_parse(ref, expected):
    assert hub.parse_hub_ref(ref) == expected
