"""Training runs, checkpoints, exact resume, corrupt and unsafe checkpoints, loading."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from digitnet.cli import main
from digitnet.config import TrainConfig, resolve_config
from digitnet.errors import DigitnetError
from digitnet.models import _registry, get_spec
from digitnet.models.cnn import SmallCNN
from digitnet.store import load_model, resolve_ref
from digitnet.training.checkpoint import CheckpointError, load_checkpoint, load_latest_good
from digitnet.training.loop import fit, resolve_device

FAST = dict(epochs=3, batch_size=32, val_size=50, threads=1, augment=False)


def run(tmp_path, data_dir, **overrides):
    cfg = TrainConfig(**{**FAST, **overrides})
    return fit(cfg, data_dir=data_dir, models_dir=tmp_path / "models", progress=False)


def weights(run_dir) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(run_dir) / "model.safetensors"))


def test_run_folder_holds_everything(tmp_path, synthetic_mnist):
    from digitnet.data.idx import read_idx, write_idx

    # mislabel 20 of the 50 test images, so that test accuracy is not val's (nor 1.0)
    test_labels = synthetic_mnist / "t10k-labels-idx1-ubyte.gz"
    mislabelled = read_idx(test_labels).copy()
    mislabelled[:20] = (mislabelled[:20] + 1) % 10
    write_idx(test_labels, mislabelled)
    summary = run(tmp_path, synthetic_mnist, name="r1")
    run_dir = Path(summary["path"])
    assert summary["ref"] == "cnn-v1/r1" and run_dir == tmp_path / "models" / "cnn-v1" / "r1"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["arch"]["model_args"]["stages"] == [[32], [64], [128]]
    assert config["train"]["seed"] == 0 and config["train"]["epochs"] == 3
    assert set(config["data"]["sha256"]) == {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}
    assert {"torch", "python", "numpy", "digitnet"} <= set(config["env"])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"} <= set(rows[0])
    pointers = json.loads((run_dir / "checkpoints" / "pointers.json").read_text())
    assert pointers["last"] == "epoch-003" and pointers["best"].startswith("epoch-")
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.is_dir()) == [
        "epoch-001", "epoch-002", "epoch-003"]
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    # test_acc is the final weights' accuracy on the test images
    images = torch.from_numpy(read_idx(synthetic_mnist / "t10k-images-idx3-ubyte.gz").copy())
    labels = torch.from_numpy(read_idx(synthetic_mnist / "t10k-labels-idx1-ubyte.gz").astype(int))
    predicted = load_model("cnn-v1/r1", tmp_path / "models").logits(images).argmax(1)
    assert summary["test_acc"] == (predicted == labels).double().mean().item()
    assert summary["epochs_done"] == 3 and summary["final"] == rows[-1]


def test_run_records_the_device_it_trained_on(tmp_path, synthetic_mnist):
    cfg = TrainConfig(**{**FAST, "epochs": 1, "name": "on-cpu"})
    summary = fit(cfg, synthetic_mnist, tmp_path / "models", progress=False, device="cpu")
    run_dir = Path(summary["path"])
    assert json.loads((run_dir / "config.json").read_text())["env"]["device"] == "cpu"
    row = json.loads((run_dir / "metrics.jsonl").read_text())
    assert row["device"] == "cpu" and summary["final"]["device"] == "cpu"


def test_divergence_is_a_clear_error_and_keeps_no_bad_epoch(tmp_path, synthetic_mnist):
    with pytest.raises(DigitnetError, match=r"training diverged \(loss .*\); lower --lr"):
        run(tmp_path, synthetic_mnist, lr=1e12, name="boom")
    assert not (tmp_path / "models" / "cnn-v1" / "boom" / "checkpoints").exists()


def test_auto_device_is_cuda_when_present_else_cpu():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name, message", [
    ("gpu", "is not a device; expected auto, cpu, cuda, cuda:N or mps"),
    ("cuda:x", "is not a device"),
    ("", "is not a device"),
    ("meta", "is not supported; expected auto, cpu"),
    ("xla", "is not supported"),
])
def test_unknown_device_is_a_clear_error(name, message):
    with pytest.raises(DigitnetError, match=message):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_missing_cuda_is_a_clear_error(name):
    with pytest.raises(DigitnetError, match="CUDA is not available here .*use --device cpu"):
        resolve_device(name)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_missing_mps_is_a_clear_error():
    with pytest.raises(DigitnetError, match="MPS is not available here"):
        resolve_device("mps")


def test_cli_bad_device_fails_before_creating_a_run(tmp_path, synthetic_mnist, capsys):
    models = tmp_path / "models"
    code = main(["train", "--device", "gpu", "--epochs", "1", "--data-dir", str(synthetic_mnist),
                 "--models-dir", str(models), "--no-progress"])
    assert code == 1
    assert "digitnet: error: device 'gpu' is not a device" in capsys.readouterr().err
    assert not models.exists()


def test_training_learns_synthetic_classes(tmp_path, synthetic_mnist):
    summary = run(tmp_path, synthetic_mnist, epochs=6, lr=0.05)
    assert summary["test_acc"] >= 0.9  # each class is an obvious blob


def test_same_seed_same_weights_and_resume_is_bit_identical(tmp_path, mnist_dir):
    """Resuming from any epoch ends with exactly the weights of an uninterrupted run."""
    common = dict(subset=600, val_size=200, augment=True, seed=3)
    a = run(tmp_path, mnist_dir, name="a", **common)
    b = run(tmp_path, mnist_dir, name="b", **common)
    assert all(torch.equal(weights(a["path"])[k], v) for k, v in weights(b["path"]).items())
    # Resume b from its first epoch: epochs 2 and 3 are trained again from the checkpoint.
    resumed = fit(models_dir=tmp_path / "models", data_dir=mnist_dir, resume="cnn-v1/b@epoch-1",
                  progress=False)
    wa, wr = weights(a["path"]), weights(resumed["path"])
    assert wa.keys() == wr.keys()
    assert all(torch.equal(wa[k], wr[k]) for k in wa)
    rows = (Path(resumed["path"]) / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3]


def test_corrupt_last_checkpoint_detected_and_resume_falls_back(tmp_path, synthetic_mnist, capsys):
    straight = run(tmp_path, synthetic_mnist, name="c-straight")
    summary = run(tmp_path, synthetic_mnist, name="c")
    checkpoints = Path(summary["path"]) / "checkpoints"
    good = load_checkpoint(checkpoints / "epoch-002").model_state
    last = checkpoints / "epoch-003" / "model.safetensors"
    data = bytearray(last.read_bytes())
    data[-10] ^= 0xFF
    last.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt or tampered"):
        load_model("cnn-v1/c@last", models_dir=tmp_path / "models")
    # the fallback loads exactly the older good checkpoint's weights
    fallback, warnings = load_latest_good(checkpoints, "last")
    assert fallback.path.name == "epoch-002" and fallback.epoch == 2 and len(warnings) == 1
    assert fallback.model_state.keys() == good.keys()
    assert all(torch.equal(fallback.model_state[k], good[k]) for k in good)
    resumed = fit(models_dir=tmp_path / "models", data_dir=synthetic_mnist, resume="cnn-v1/c",
                  progress=False)
    err = capsys.readouterr().err
    assert "skipping bad checkpoint" in err and "epoch-002" in err
    assert resumed["epochs_done"] == 3
    rewritten = load_checkpoint(checkpoints / "epoch-003")  # rewritten, good again
    # ...and the run resumed from the fallback ends bit-identical to an uninterrupted run
    ws, wr = weights(straight["path"]), weights(resumed["path"])
    assert ws.keys() == wr.keys() and all(torch.equal(ws[k], wr[k]) for k in ws)
    assert all(torch.equal(rewritten.model_state[k], ws[k]) for k in ws)


def test_unreadable_pointers_fall_back_to_the_newest_epoch(tmp_path, synthetic_mnist):
    """A run killed during epoch 3 whose pointers.json is garbage resumes from epoch 2."""
    straight = run(tmp_path, synthetic_mnist, name="p-straight")
    summary = run(tmp_path, synthetic_mnist, name="p-crashed")
    run_dir = Path(summary["path"])
    checkpoints = run_dir / "checkpoints"
    shutil.rmtree(checkpoints / "epoch-003")  # as if killed before epoch 3 was saved
    (run_dir / "model.safetensors").unlink()
    (run_dir / "summary.json").unlink()
    rows = (run_dir / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "metrics.jsonl").write_text("".join(rows[:2]))
    (checkpoints / "pointers.json").write_text("{not json")
    epoch2 = load_checkpoint(checkpoints / "epoch-002").model_state
    last = load_model("cnn-v1/p-crashed@last", tmp_path / "models")  # the newest epoch
    assert last.epoch == 2
    assert all(torch.equal(last.model.state_dict()[k], v) for k, v in epoch2.items())
    resumed = fit(models_dir=tmp_path / "models", data_dir=synthetic_mnist,
                  resume="cnn-v1/p-crashed", progress=False)
    assert resumed["epochs_done"] == 3
    rows = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3]
    ws, wr = weights(straight["path"]), weights(resumed["path"])
    assert ws.keys() == wr.keys() and all(torch.equal(ws[k], wr[k]) for k in ws)


def test_pickle_payload_is_refused_without_running(tmp_path, synthetic_mnist):
    summary = run(tmp_path, synthetic_mnist, name="p", epochs=1)
    ckpt = Path(summary["path"]) / "checkpoints" / "epoch-001"
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"optimizer": Payload()}, ckpt / "state.pt")
    meta = json.loads((ckpt / "meta.json").read_text())  # an attacker can update the hashes too
    from digitnet.fileio import sha256_file

    meta["sha256"]["state.pt"] = sha256_file(ckpt / "state.pt")
    (ckpt / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(ckpt)
    assert not marker.exists()


def test_changed_architecture_gives_clear_error(tmp_path, synthetic_mnist, monkeypatch):
    run(tmp_path, synthetic_mnist, name="frozen", epochs=1)
    spec = _registry._REGISTRY["cnn", 1]
    changed = _registry.ModelSpec("cnn", 1, lambda **kw: SmallCNN(stages=[[16], [32], [64]], dropout=0.1, **kw),
                                  spec.description)
    monkeypatch.setitem(_registry._REGISTRY, ("cnn", 1), changed)
    with pytest.raises(DigitnetError, match="register the change under a new version number"):
        load_model("cnn-v1/frozen", models_dir=tmp_path / "models")


def test_load_any_checkpoint_and_latest(tmp_path, synthetic_mnist):
    run(tmp_path, synthetic_mnist, name="old", epochs=2)
    run(tmp_path, synthetic_mnist, name="new", epochs=2)
    models = tmp_path / "models"
    assert resolve_ref("cnn-v1/latest", models).run_dir.name == "new"
    final = load_model("cnn-v1/new", models_dir=models)
    assert not final.model.training
    epoch1 = load_model("cnn-v1/new@epoch-1", models_dir=models)
    assert epoch1.epoch == 1 and epoch1.ref.checkpoint == "epoch-001"
    by_path = load_model(str(models / "cnn-v1" / "new" / "checkpoints" / "epoch-002"))
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    assert torch.equal(by_path.logits(images), final.logits(images))  # final = last epoch
    with pytest.raises(DigitnetError, match="no checkpoint 'epoch-9'"):
        load_model("cnn-v1/new@epoch-9", models_dir=models)
    with pytest.raises(DigitnetError, match="not found"):
        load_model("cnn-v1/missing", models_dir=models)
    with pytest.raises(DigitnetError, match="expected ARCH-vN/RUN"):
        load_model("nonsense", models_dir=models)


def test_public_load_api(tmp_path, synthetic_mnist):
    import digitnet

    summary = run(tmp_path, synthetic_mnist, epochs=1)
    loaded = digitnet.load(summary["path"])
    assert loaded.data_config["input_size"] == [1, 28, 28]
    images = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    logits = loaded.logits(images)
    assert logits.shape == (3, 10)
    # the run's final weights, normalised with the data config: the same logits by hand
    model = SmallCNN(**loaded.config["arch"]["model_args"])
    model.load_state_dict(weights(summary["path"]))
    model.eval()
    mean, std = loaded.data_config["mean"], loaded.data_config["std"]
    x = ((images.float() / 255 - torch.tensor(mean)) / torch.tensor(std)).unsqueeze(1)
    with torch.no_grad():
        assert torch.allclose(logits, model(x), atol=1e-5)


def test_config_file_precedence_and_unknown_keys(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("epochs: 7\nlr: 0.2\n")
    cfg = resolve_config(recipe, lr=0.3, epochs=None)
    assert (cfg.epochs, cfg.lr, cfg.batch_size) == (7, 0.3, TrainConfig().batch_size)
    recipe.write_text("epochs: 7\nlearning_rate: 0.2\n")
    with pytest.raises(DigitnetError, match="unknown config key.*learning_rate"):
        resolve_config(recipe)
    recipe.write_text("epochs: seven\n")
    with pytest.raises(DigitnetError, match="'epochs': expected int"):
        resolve_config(recipe)
    with pytest.raises(DigitnetError, match="epochs must be >= 1"):
        TrainConfig(epochs=0)


def test_cli_train_prints_ref_last_and_writes_json(tmp_path, synthetic_mnist, capsys):
    out = tmp_path / "summary.json"
    code = main(["train", "--epochs", "1", "--batch-size", "32", "--val-size", "50", "--no-augment",
                 "--data-dir", str(synthetic_mnist), "--models-dir", str(tmp_path / "m"),
                 "--name", "cli", "--json", str(out), "--no-progress"])
    assert code == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "cnn-v1/cli"
    assert json.loads(out.read_text())["ref"] == "cnn-v1/cli"
    code = main(["train", "--arch", "nope", "--data-dir", str(synthetic_mnist),
                 "--models-dir", str(tmp_path / "m")])
    assert code == 1 and "unknown architecture" in capsys.readouterr().err


@pytest.mark.slow
def test_sigkill_mid_training_resumes(tmp_path, mnist_dir):
    """A run killed with SIGKILL resumes from its last finished epoch and ends like an uninterrupted one."""
    models = tmp_path / "models"
    args = ["--subset", "3000", "--epochs", "4", "--batch-size", "64", "--val-size", "500",
            "--threads", "1", "--data-dir", str(mnist_dir), "--models-dir", str(models), "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "digitnet", "train", "--name", "killed", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pointers = models / "cnn-v1" / "killed" / "checkpoints" / "pointers.json"
    deadline = time.time() + 120
    while time.time() < deadline and not pointers.exists():
        time.sleep(0.05)
    time.sleep(0.3)  # well inside epoch 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run_dir = models / "cnn-v1" / "killed"
    assert not (run_dir / "model.safetensors").exists(), "the run finished before it was killed"
    done = json.loads(pointers.read_text())["last"]
    resumed = fit(models_dir=models, data_dir=mnist_dir, resume="cnn-v1/killed", progress=False)
    assert resumed["epochs_done"] == 4
    rows = [json.loads(r)["epoch"] for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows == [1, 2, 3, 4], (done, rows)
    assert main(["train", "--name", "straight", *args]) == 0
    wk, ws = weights(run_dir), weights(models / "cnn-v1" / "straight")
    assert all(torch.equal(wk[k], ws[k]) for k in wk)


def test_recipe_files_are_valid_and_default_matches_code():
    repo = Path(__file__).resolve().parents[1]
    assert resolve_config(repo / "configs" / "default.yaml") == TrainConfig()
    for recipe in sorted((repo / "configs").glob("*.yaml")):
        cfg = resolve_config(recipe)
        get_spec(cfg.arch, cfg.version)  # every recipe names a registered architecture version


def test_resume_without_validation_split(tmp_path, synthetic_mnist):
    """With val_size 0 the newest epoch is the best, and resuming still works."""
    straight = run(tmp_path, synthetic_mnist, name="noval-straight", val_size=0)
    summary = run(tmp_path, synthetic_mnist, name="noval", val_size=0)
    pointers = json.loads((Path(summary["path"]) / "checkpoints" / "pointers.json").read_text())
    assert pointers["best"] == "epoch-003"
    resumed = fit(models_dir=tmp_path / "models", data_dir=synthetic_mnist, resume="cnn-v1/noval@epoch-1",
                  progress=False)
    assert resumed["epochs_done"] == 3
    # the resumed run (epochs 2-3 retrained from epoch 1) against a separate uninterrupted run
    assert Path(resumed["path"]) != Path(straight["path"])
    ws, wr = weights(straight["path"]), weights(resumed["path"])
    assert ws.keys() == wr.keys() and all(torch.equal(ws[k], wr[k]) for k in ws)
