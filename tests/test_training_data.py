"""Training on ingested datasets (data/training_data.py): the balance policy applies to training
only, MNIST and ingested datasets combine, a run records what it trained on and refuses to resume
on changed data; all through the CLI as well."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from digit_folders import idx_bytes, mnist_test_digits, write_digits
from digitnet.cli import main
from digitnet.data.dataset_store import REPORT_FILE, load_dataset, read_manifest
from digitnet.data.datasets import TensorDataset
from digitnet.data.ingest import ingest
from digitnet.data.training_data import combine_training_data
from digitnet.errors import DigitnetError


@pytest.fixture(scope="module")
def mnist_digits(mnist_dir) -> dict[int, np.ndarray]:
    return mnist_test_digits(mnist_dir)


@pytest.fixture
def store(tmp_path) -> Path:
    return tmp_path / "datasets"


def test_balance_policy_recorded_and_applied_for_training_only(
        tmp_path, store, mnist_digits, capsys):
    write_digits(tmp_path / "src", mnist_digits, {1: 4, 2: 2, 3: 1})
    code = main(["data", "ingest", str(tmp_path / "src"), "--name", "mine", "--balance",
                 "oversample", "--min-per-class", "3", "--datasets-dir", str(store)])
    out = capsys.readouterr().out
    assert code == 0
    assert "imbalance ratio (max/min): inf (classes missing)" in out
    assert "warning: classes 0, 4, 5, 6, 7, 8, 9 missing" in out
    assert "warning: fewer than 3 examples of classes 2 (2), 3 (1)" in out
    assert "balance policy oversample (applied when training): per class 0:0 1:4 2:4 3:4" in out
    report = json.loads((store / "mine" / REPORT_FILE).read_text())
    assert report["imbalance_ratio"] is None and report["missing_classes"][0] == 0
    assert read_manifest("mine", store)["balance"] == "oversample"
    assert load_dataset("mine", store).class_counts().tolist()[1:4] == [4, 2, 1]  # evaluation: all
    mnist = TensorDataset("mnist-train", torch.zeros(5, 28, 28, dtype=torch.uint8), torch.arange(5))
    combined = combine_training_data(mnist, ("mnist", "mine"), store)
    assert len(combined) == 5 + 12 and combined.name == "mnist-train+mine"
    assert combine_training_data(mnist, ("mine",), store).class_counts().tolist()[1:4] == [4, 4, 4]
    # changing only the policy rewrites the manifest, not the images
    images = idx_bytes(store / "mine")
    assert ingest(tmp_path / "src", "mine", "undersample", datasets_dir=store).changed
    assert idx_bytes(store / "mine") == images
    assert combine_training_data(mnist, ("mine",), store).class_counts().tolist()[1:4] == [1, 1, 1]


def test_unknown_dataset_lists_known(tmp_path, store, mnist_digits):
    write_digits(tmp_path / "src", mnist_digits, {1: 1})
    ingest(tmp_path / "src", "mine", datasets_dir=store)
    with pytest.raises(DigitnetError, match=r"unknown dataset 'nope': ingested datasets .*: mine"):
        load_dataset("nope", store)
    mnist = TensorDataset("mnist-train", torch.zeros(1, 28, 28, dtype=torch.uint8),
                          torch.zeros(1, dtype=torch.int64))
    with pytest.raises(DigitnetError, match="training dataset 'nope': expected 'mnist' or an"):
        combine_training_data(mnist, ("mnist", "nope"), store)


def test_ingest_train_evaluate_end_to_end(
        tmp_path, mnist_digits, synthetic_mnist, monkeypatch, capsys):
    """Ingest a labelled folder, train on MNIST + it, evaluate on it: all through the CLI."""
    store = tmp_path / "store"
    monkeypatch.setenv("DIGITNET_DATASETS_DIR", str(store))
    write_digits(tmp_path / "photos", mnist_digits, {c: 2 for c in range(10)})
    assert main(["data", "ingest", str(tmp_path / "photos"), "--name", "mine"]) == 0
    assert "20 new, 0 duplicates, 0 skipped" in capsys.readouterr().out
    models = tmp_path / "models"
    common = ["--data-dir", str(synthetic_mnist), "--models-dir", str(models), "--epochs", "1",
              "--batch-size", "32", "--val-size", "50", "--no-augment", "--threads", "1",
              "--no-progress", "--arch", "cnn"]
    assert main(["train", "--data", "mnist", "--data", "mine", "--name", "both", *common]) == 0
    out = capsys.readouterr().out
    assert "training cnn-v1/both: 170 train / 50 val images" in out
    config = json.loads((models / "cnn-v1" / "both" / "config.json").read_text())
    assert config["data"]["datasets"] == ["mnist", "mine"]
    [info] = config["data"]["ingested"]
    assert info["name"] == "mine" and info["count"] == 20 and len(info["manifest_sha256"]) == 64
    assert main(["train", "--data", "mine", "--name", "only", *common]) == 0
    assert "training cnn-v1/only: 20 train / 50 val images" in capsys.readouterr().out
    results = tmp_path / "results.json"
    assert main(["evaluate", "cnn-v1/both", "--dataset", "mine", "--dataset", "mnist-test",
                 "--data-dir", str(synthetic_mnist), "--models-dir", str(models),
                 "--json", str(results)]) == 0
    assert "mine" in capsys.readouterr().out
    rows = json.loads(results.read_text())
    assert [(r["dataset"], r["n"]) for r in rows] == [("mine", 20), ("mnist-test", 50)]
    assert main(["train", "--data", "mnist", "--data", "nope", *common]) == 1
    assert "training dataset 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("change", ["more images", "balance policy"])
def test_resume_refuses_changed_ingested_data(tmp_path, mnist_digits, synthetic_mnist, monkeypatch,
                                              change):
    """A run records each ingested dataset's count, policy and content hash; `--resume` continues
    on the same data and refuses once the dataset changed."""
    from digitnet.training.loop import fit

    store, models = tmp_path / "store", tmp_path / "models"
    monkeypatch.setenv("DIGITNET_DATASETS_DIR", str(store))
    write_digits(tmp_path / "photos", mnist_digits, {c: 1 for c in range(10)})
    ingest(tmp_path / "photos", "mine")
    common = ["--data-dir", str(synthetic_mnist), "--models-dir", str(models), "--arch", "linear",
              "--epochs", "2", "--batch-size", "32", "--val-size", "50", "--no-augment",
              "--no-progress", "--data", "mnist", "--data", "mine", "--name", "r"]
    assert main(["train", *common]) == 0
    run_dir = models / "linear-v1" / "r"
    [info] = json.loads((run_dir / "config.json").read_text())["data"]["ingested"]
    manifest = read_manifest("mine", store)
    assert (info["count"], info["balance"], info["content_sha256"]) == (
        10, manifest["balance"], manifest["content_sha256"])
    resume = ["--data-dir", str(synthetic_mnist), "--models-dir", str(models), "--no-progress",
              "--resume", "linear-v1/r@epoch-1"]
    assert main(["train", *resume]) == 0  # unchanged data: resumes
    if change == "more images":
        write_digits(tmp_path / "photos", mnist_digits, {3: 1}, start=1)
        assert ingest(tmp_path / "photos", "mine").changed
    else:
        assert ingest(tmp_path / "photos", "mine", "oversample").changed
    with pytest.raises(DigitnetError, match="cannot resume linear-v1/r@epoch-1: ingested dataset "
                                            "'mine' changed since the run started"):
        fit(None, synthetic_mnist, models, resume="linear-v1/r@epoch-1", progress=False)
