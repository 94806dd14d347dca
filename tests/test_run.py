"""The run folder's owner (digitnet.store.run.Run) on its own, and what it gives the loaders:
checkpoint folders that rebuild their model by themselves, and one forward pass for training's
evaluation and every loaded model."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from digitnet.calibration import not_calibrated
from digitnet.config import TrainConfig
from digitnet.errors import DigitnetError
from digitnet.models import create_model
from digitnet.store import Run, arch_record, default_data_config, load_model, lock_run
from digitnet.store.checkpoint import load_checkpoint
from digitnet.training.loop import fit

FAST = dict(arch="linear", epochs=2, batch_size=32, val_size=50, threads=1, augment=False)


def new_run(root: Path, stack: contextlib.ExitStack, name: str = "r") -> Run:
    model = create_model("linear", 1)
    return Run.create(root, name, stack, arch=arch_record(model),
                      data_config=default_data_config(), train={"epochs": 2}, data={}, env={})


def test_a_run_writes_its_folder_and_holds_its_lock(tmp_path):
    with contextlib.ExitStack() as stack:
        run = new_run(tmp_path, stack)
        assert run.ref == "linear-v1/r" and run.dir == tmp_path / "linear-v1" / "r"
        config = json.loads((run.dir / "config.json").read_text())
        assert config == run.config and config["ref"] == "linear-v1/r"
        assert list(config)[:2] == ["format_version", "arch"]
        with pytest.raises(DigitnetError, match="is being trained by another process"):
            with lock_run(run.dir):
                pass
        model = create_model("linear", 1)
        calibration = not_calibrated("a test").to_dict()
        for epoch in (1, 2):
            run.append_metrics({"epoch": epoch, "seconds": 1.5})
            run.save_checkpoint(epoch, model.state_dict(), {}, {"epoch": epoch}, calibration,
                                is_best=epoch == 1)
        assert run.checkpoint_epochs() == [1, 2] and not run.is_finished()
        meta = load_checkpoint(run.checkpoints_dir / "epoch-002").meta
        assert meta["config"] == config and meta["metrics"] == {"epoch": 2}
        run.truncate_metrics(1)
        assert [r["epoch"] for r in run.metrics()] == [1]
        run.save_final_weights(model.state_dict())
        summary = run.finish(0.5, 0.75, calibration)
        assert run.is_finished() and summary["best_checkpoint"] == "linear-v1/r@best"
        assert summary["epochs_done"] == 1 and summary["total_seconds"] == 1.5
    with lock_run(run.dir):  # released with the stack
        pass


def test_a_taken_name_and_a_failed_parse_leave_nothing(tmp_path):
    with contextlib.ExitStack() as stack:
        run = new_run(tmp_path, stack)
    with contextlib.ExitStack() as stack, pytest.raises(DigitnetError, match="already exists"):
        new_run(tmp_path, stack)

    def refuse(train, source):
        raise DigitnetError(f"{source}: no")

    with (contextlib.ExitStack() as stack,
          pytest.raises(DigitnetError, match=r"config.json \(train\): no")):
        Run.reopen(run.dir, stack, refuse)
    with lock_run(run.dir):  # not taken by the refused reopen
        pass


@pytest.fixture
def trained(tmp_path, synthetic_mnist) -> dict:
    summary = fit(TrainConfig(**FAST, name="t"), data_dir=synthetic_mnist,
                  models_dir=tmp_path / "models", progress=False)
    return dict(summary=summary, run=Path(summary["path"]), models=tmp_path / "models",
                data=synthetic_mnist)


@pytest.mark.slow
def test_a_checkpoint_folder_rebuilds_its_model_by_itself(trained):
    run = trained["run"]
    ckpt = run / "checkpoints" / "epoch-001"
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["config"] == json.loads((run / "config.json").read_text())
    before = load_model(str(ckpt))
    images = torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8)
    (run / "config.json").unlink()  # the run's config is not needed any more
    shutil.rmtree(run / "checkpoints" / "epoch-002")
    after = load_model(str(ckpt))
    assert after.ref.label == before.ref.label == "linear-v1/t@epoch-001" and after.epoch == 1
    assert after.config == before.config and after.temperature == before.temperature
    assert torch.equal(after.logits(images), before.logits(images))


@pytest.mark.slow
def test_training_and_evaluate_compute_through_one_forward_pass(trained):
    from digitnet.data.datasets import load_splits
    from digitnet.evaluation.datasets import load_eval_dataset
    from digitnet.evaluation.evaluate import evaluate_on
    from digitnet.training.loop import evaluate

    loaded = load_model("linear-v1/t", trained["models"])
    test = load_splits(trained["data"], val_size=50)["test"]
    metrics = evaluate(loaded.model, test, loaded.data_config, keep_logits=True)
    assert torch.equal(metrics["logits"], loaded.logits(test.images))
    assert metrics["acc"] == trained["summary"]["test_acc"]
    result, _ = evaluate_on(loaded, load_eval_dataset("mnist-test", trained["data"], 50))
    assert result["accuracy"] == pytest.approx(trained["summary"]["test_acc"], abs=1e-12)
