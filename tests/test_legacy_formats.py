"""Files written by digitnet before the architecture change (issue 15) still load.

tests/data/legacy-v1 was written by the code at 2c0543b (`digitnet train --arch fast-v2 --epochs 2
--subset 300 --val-size 100 --batch-size 64 --name legacy`, `digitnet export`, `digitnet data
ingest` of 20 MNIST test digits drawn dark on white at 84x84). EXPECTED holds that code's logits
for the first MNIST test images; the code of today must give the same numbers from the same files,
and resuming the old epoch-1 checkpoint must reproduce the old epoch-2 weights bit for bit.
The export's .gitattributes (LFS patterns for the Hub mirror, not read by loading) is left out: in
this repository it would turn the fixture's weights into LFS files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from digitnet.cli import main
from digitnet.store import load_model

LEGACY = Path(__file__).parent / "data" / "legacy-v1"
EXPECTED = LEGACY / "expected.json"  # logits of the old code on the first N_IMAGES test images
RUN = "fast-v2/legacy"
N_IMAGES = 32


@pytest.fixture
def legacy(tmp_path) -> Path:
    """A writable copy (loading may take the run's lock; resuming writes)."""
    out = tmp_path / "legacy"
    shutil.copytree(LEGACY, out)
    return out


def first_test_images(mnist_dir: Path) -> torch.Tensor:
    from digitnet.data.mnist import load_mnist

    return load_mnist(mnist_dir).test_images[:N_IMAGES]


@pytest.mark.parametrize("ref", [RUN, f"{RUN}@best", f"{RUN}@epoch-1", "checkpoint-folder",
                                 "export-folder"])
def test_old_store_checkpoints_and_export_load_with_the_same_logits(legacy, mnist_dir, ref):
    expected = json.loads(EXPECTED.read_text())
    key = {f"{RUN}@best": RUN, "checkpoint-folder": f"{RUN}@epoch-1",  # best is epoch 2 (final)
           "export-folder": RUN}.get(ref, ref)
    if ref == "checkpoint-folder":
        ref = str(legacy / "models" / RUN / "checkpoints" / "epoch-001")
    elif ref == "export-folder":
        ref = str(legacy / "export")
    loaded = load_model(ref, models_dir=legacy / "models")
    logits = loaded.logits(first_test_images(mnist_dir))
    torch.testing.assert_close(logits, torch.tensor(expected["logits"][key]), rtol=0, atol=1e-5)
    assert loaded.temperature == pytest.approx(expected["temperature"][key], rel=1e-12)


def test_resuming_an_old_checkpoint_reproduces_its_next_epoch_bit_for_bit(legacy, mnist_dir):
    run = legacy / "models" / RUN
    old_final = load_file(run / "checkpoints" / "epoch-002" / "model.safetensors")
    shutil.rmtree(run / "checkpoints" / "epoch-002")
    (run / "model.safetensors").unlink()
    (run / "summary.json").unlink()
    (run / "checkpoints" / "pointers.json").write_text('{"last": "epoch-001", "best": "epoch-001"}')
    assert main(["train", "--resume", RUN, "--models-dir", str(legacy / "models"),
                 "--data-dir", str(mnist_dir), "--no-progress"]) == 0
    new_final = load_file(run / "model.safetensors")
    assert set(new_final) == set(old_final)
    for name, tensor in old_final.items():
        assert torch.equal(new_final[name], tensor), name


def test_old_ingested_dataset_evaluates_and_trains(legacy, mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITNET_DATASETS_DIR", str(legacy / "datasets"))
    out = tmp_path / "results.json"
    assert main(["evaluate", RUN, "--dataset", "legacy", "--json", str(out),
                 "--models-dir", str(legacy / "models"), "--data-dir", str(mnist_dir)]) == 0
    (result,) = json.loads(out.read_text())
    assert result["n"] == 20
    expected = json.loads(EXPECTED.read_text())["legacy_dataset_acc"]
    assert result["accuracy"] == pytest.approx(expected)
    assert main(["train", "--arch", "linear", "--epochs", "1", "--subset", "100", "--val-size",
                 "20", "--data", "mnist", "--data", "legacy", "--name", "mixed", "--no-progress",
                 "--models-dir", str(tmp_path / "models"), "--data-dir", str(mnist_dir)]) == 0
    config = json.loads((tmp_path / "models" / "linear-v1" / "mixed" / "config.json").read_text())
    assert [d["name"] for d in config["data"]["ingested"]] == ["legacy"]
