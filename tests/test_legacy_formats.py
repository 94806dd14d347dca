"""Files in the format digitnet wrote before the architecture change (issue 15) still load.

Issue 15 added keys to what a run writes: each checkpoint's meta.json holds its run's config,
and issue 17 added the processes (world size, backend, per-rank batch) to config.json, the
metrics rows and the summary, and `sync_bn` to the recipe. The test trains a small run and
exports it (no weights live in git), writes an old-format copy by removing exactly those keys,
checks that the copy's files have the keys the code of 2c0543b wrote
(tests/data/legacy-v1-keys.json, recorded from files it wrote), and then that today's code reads
the old copy as it reads the new one: the same logits and temperature from the final weights,
@best, @epoch-1, a checkpoint folder and the export folder, and a resume of the old epoch-1
checkpoint that reproduces epoch 2 bit for bit. tests/data/legacy-v1/datasets holds a dataset
ingested by that code (20 MNIST test digits drawn dark on white at 84x84; images, no weights).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from digitnet.cli import main
from digitnet.config import TrainConfig
from digitnet.store import load_model

LEGACY = Path(__file__).parent / "data" / "legacy-v1"
OLD_KEYS = json.loads((Path(__file__).parent / "data" / "legacy-v1-keys.json").read_text())["keys"]
RUN = "fast-v2/legacy"
N_IMAGES = 32
PROCESS_KEYS = ("world_size", "backend", "per_rank_batch")  # issue 17, in every metrics row


def keys(record: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in record.items():
        out.append(prefix + key)
        if isinstance(value, dict):
            out += keys(value, f"{prefix}{key}.")
    return sorted(out)


def _edit_json(path: Path, edit) -> None:
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record, indent=2) + "\n")


def _drop_processes(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in PROCESS_KEYS}


def to_legacy_v1(root: Path) -> None:
    """Rewrite a run (root/models/RUN) and its export (root/export) in the format before issue 15
    (only JSON changes: meta.json's sha256 covers the weights and training state, not itself)."""
    run = root / "models" / RUN

    def config(record):
        record["env"].pop("distributed")
        record["train"].pop("sync_bn")

    _edit_json(run / "config.json", config)
    _edit_json(run / "summary.json", lambda s: s.update(final=_drop_processes(s["final"])))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (run / "metrics.jsonl").write_text("".join(json.dumps(_drop_processes(r)) + "\n"
                                               for r in rows))
    for meta in sorted(run.glob("checkpoints/epoch-*/meta.json")):
        _edit_json(meta, lambda m: (m.pop("config"), m.update(metrics=_drop_processes(
            m["metrics"]))))
    _edit_json(root / "export" / "config.json", lambda c: c["train"].pop("sync_bn"))


@pytest.fixture(scope="module")
def stores(tmp_path_factory, mnist_dir) -> dict[str, Path]:
    """{"new": a run and its export as today's code writes them, "old": the same files in the
    format before issue 15}; tests copy them before writing."""
    from digitnet.deploy.export import export_model
    from digitnet.training.loop import fit

    new = tmp_path_factory.mktemp("legacy") / "new"
    fit(TrainConfig(arch="fast", version=2, epochs=2, subset=300, val_size=100, batch_size=64,
                    threads=2, name="legacy"),
        data_dir=mnist_dir, models_dir=new / "models", progress=False)
    export_model(RUN, new / "export", mnist_dir, new / "models")
    old = new.parent / "old"
    shutil.copytree(new, old)
    to_legacy_v1(old)
    return dict(new=new, old=old)


def test_the_old_copy_has_exactly_the_keys_the_old_code_wrote(stores):
    run = stores["old"] / "models" / RUN
    files = {"config.json": run / "config.json", "summary.json": run / "summary.json",
             "checkpoints/epoch-NNN/meta.json": run / "checkpoints" / "epoch-001" / "meta.json",
             "checkpoints/pointers.json": run / "checkpoints" / "pointers.json",
             "export/config.json": stores["old"] / "export" / "config.json"}
    for name, path in files.items():
        assert keys(json.loads(path.read_text())) == OLD_KEYS[name], name
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert sorted(row) == OLD_KEYS["metrics.jsonl row"]
    # and the new code writes more: the copy really is in the other format
    assert "config" in json.loads((stores["new"] / "models" / RUN / "checkpoints" / "epoch-001" /
                                   "meta.json").read_text())


def first_test_images(mnist_dir: Path) -> torch.Tensor:
    from digitnet.data.mnist import load_mnist

    return load_mnist(mnist_dir).test_images[:N_IMAGES]


@pytest.mark.parametrize("ref", [RUN, f"{RUN}@best", f"{RUN}@epoch-1", "checkpoint-folder",
                                 "export-folder"])
def test_old_store_checkpoints_and_export_load_with_the_same_logits(stores, mnist_dir, tmp_path,
                                                                    ref):
    loaded = {}
    for version, source in stores.items():
        root = tmp_path / version
        shutil.copytree(source, root)  # loading may take the run's lock
        text = {"checkpoint-folder": str(root / "models" / RUN / "checkpoints" / "epoch-001"),
                "export-folder": str(root / "export")}.get(ref, ref)
        loaded[version] = load_model(text, models_dir=root / "models")
    images = first_test_images(mnist_dir)
    assert torch.equal(loaded["old"].logits(images), loaded["new"].logits(images))
    assert loaded["old"].temperature == loaded["new"].temperature
    assert loaded["old"].epoch == loaded["new"].epoch


def test_resuming_an_old_checkpoint_reproduces_its_next_epoch_bit_for_bit(stores, mnist_dir,
                                                                          tmp_path):
    shutil.copytree(stores["old"], tmp_path / "old")
    run = tmp_path / "old" / "models" / RUN
    old_final = load_file(run / "checkpoints" / "epoch-002" / "model.safetensors")
    shutil.rmtree(run / "checkpoints" / "epoch-002")
    (run / "model.safetensors").unlink()
    (run / "summary.json").unlink()
    (run / "checkpoints" / "pointers.json").write_text('{"last": "epoch-001", "best": "epoch-001"}')
    assert main(["train", "--resume", RUN, "--models-dir", str(tmp_path / "old" / "models"),
                 "--data-dir", str(mnist_dir), "--no-progress"]) == 0
    new_final = load_file(run / "model.safetensors")
    assert set(new_final) == set(old_final)
    for name, tensor in old_final.items():
        assert torch.equal(new_final[name], tensor), name


def test_old_ingested_dataset_evaluates_and_trains(stores, mnist_dir, tmp_path, monkeypatch):
    from digitnet.data.dataset_store import load_dataset

    monkeypatch.setenv("DIGITNET_DATASETS_DIR", str(LEGACY / "datasets"))
    shutil.copytree(stores["old"], tmp_path / "old")
    models = tmp_path / "old" / "models"
    out = tmp_path / "results.json"
    assert main(["evaluate", RUN, "--dataset", "legacy", "--json", str(out),
                 "--models-dir", str(models), "--data-dir", str(mnist_dir)]) == 0
    (result,) = json.loads(out.read_text())
    dataset = load_dataset("legacy", LEGACY / "datasets")
    assert result["n"] == len(dataset) == 20
    preds = load_model(RUN, models_dir=models).logits(dataset.images).argmax(1)
    assert result["accuracy"] == pytest.approx(float((preds == dataset.labels).float().mean()))
    assert main(["train", "--arch", "linear", "--epochs", "1", "--subset", "100", "--val-size",
                 "20", "--data", "mnist", "--data", "legacy", "--name", "mixed", "--no-progress",
                 "--models-dir", str(tmp_path / "models"), "--data-dir", str(mnist_dir)]) == 0
    config = json.loads((tmp_path / "models" / "linear-v1" / "mixed" / "config.json").read_text())
    assert [d["name"] for d in config["data"]["ingested"]] == ["legacy"]
