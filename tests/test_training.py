"""Training runs, checkpoints, exact resume, corrupt and unsafe checkpoints, loading; option
ranges, full disks, one writer per run, runs killed in their first epoch."""

import dataclasses
import errno
import inspect
import json
import os
import re
import shutil
import signal
import stat
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
from digitnet.store.checkpoint import CheckpointError, load_checkpoint, load_latest_good
from digitnet.training.loop import fit, resolve_device

# the recipe these tests were written for (cnn-v1, fp32; the default before issue 14), kept so
# their refs and numbers stay what they check
OLD_DEFAULT = dict(arch="cnn", lr=0.05, weight_decay=5e-4, augment_kind="warp", precision="fp32")
FAST = dict(epochs=3, batch_size=32, val_size=50, threads=1, augment=False, **OLD_DEFAULT)


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


@pytest.mark.slow  # 15 s: four runs on real MNIST; the fast suite keeps the synthetic resume tests
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
    changed = _registry.ModelSpec(
        "cnn", 1, lambda **kw: SmallCNN(stages=[[16], [32], [64]], dropout=0.1, **kw),
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
    code = main(["train", "--arch", "cnn", "--epochs", "1", "--batch-size", "32", "--val-size",
                 "50", "--no-augment", "--data-dir", str(synthetic_mnist), "--models-dir",
                 str(tmp_path / "m"),
                 "--name", "cli", "--json", str(out), "--no-progress"])
    assert code == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "cnn-v1/cli"
    assert json.loads(out.read_text())["ref"] == "cnn-v1/cli"
    code = main(["train", "--arch", "cnn", "--epochs", "1", "--batch-size", "32", "--val-size",
                 "50", "--no-augment", "--data-dir", str(synthetic_mnist), "--models-dir",
                 str(tmp_path / "m"),
                 "--name", "cli2", "--json", str(tmp_path), "--no-progress"])  # a folder
    assert code == 1 and capsys.readouterr().err.startswith(
        f"digitnet: error: {tmp_path}: cannot write the summary (")
    code = main(["train", "--arch", "nope", "--data-dir", str(synthetic_mnist),
                 "--models-dir", str(tmp_path / "m")])
    assert code == 1 and "unknown architecture" in capsys.readouterr().err


@pytest.mark.slow
def test_sigkill_mid_training_resumes(tmp_path, mnist_dir):
    """A run killed with SIGKILL resumes from its last finished epoch and ends like an
    uninterrupted one."""
    models = tmp_path / "models"
    args = ["--arch", "cnn", "--precision", "fp32", "--lr", "0.05", "--weight-decay", "0.0005",
            "--augment-kind", "warp",
            "--subset", "3000", "--epochs", "4", "--batch-size", "64", "--val-size", "500",
            "--threads", "1", "--data-dir", str(mnist_dir), "--models-dir", str(models),
            "--no-progress"]
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
    resumed = fit(models_dir=tmp_path / "models", data_dir=synthetic_mnist,
                  resume="cnn-v1/noval@epoch-1",
                  progress=False)
    assert resumed["epochs_done"] == 3
    # the resumed run (epochs 2-3 retrained from epoch 1) against a separate uninterrupted run
    assert Path(resumed["path"]) != Path(straight["path"])
    ws, wr = weights(straight["path"]), weights(resumed["path"])
    assert ws.keys() == wr.keys() and all(torch.equal(ws[k], wr[k]) for k in ws)


# ------------------------------------------------------------------- README promises (issue 18)
def _tensors_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _loaded_is(loaded, weights_file: Path) -> bool:
    """The loaded model holds exactly the tensors of `weights_file`."""
    from safetensors.torch import load_file

    return _tensors_equal(loaded.model.state_dict(), load_file(str(weights_file)))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """cnn-v1/old and cnn-v1/new (3 epochs each, made in that order), then linear-v1/newest."""
    from conftest import make_synthetic_mnist

    root = tmp_path_factory.mktemp("refs")
    data = make_synthetic_mnist(root / "mnist")
    models = root / "models"
    for arch, name, epochs in (("cnn", "old", 3), ("cnn", "new", 3), ("linear", "newest", 2)):
        fit(TrainConfig(**{**FAST, "arch": arch, "name": name, "epochs": epochs}), data, models,
            progress=False)
    return dict(data=data, models=models)


def test_every_model_reference_loads_exactly_the_checkpoint_it_names(store):
    """README "Model references": each form resolves to the weights file it names, not merely to
    something that loads."""
    import json as _json

    models = store["models"]
    new, old = models / "cnn-v1" / "new", models / "cnn-v1" / "old"
    ckpt = new / "checkpoints"
    epoch = {n: ckpt / f"epoch-00{n}" / "model.safetensors" for n in (1, 2, 3)}
    assert not _tensors_equal(load_model(str(ckpt / "epoch-001")).model.state_dict(),
                              load_model(str(ckpt / "epoch-003")).model.state_dict())
    # @best follows the pointer, which names the first epoch with the highest validation accuracy
    rows = [_json.loads(r) for r in (new / "metrics.jsonl").read_text().splitlines()]
    best = max(range(3), key=lambda i: (rows[i]["val_acc"], -i)) + 1
    pointers = _json.loads((ckpt / "pointers.json").read_text())
    assert pointers == {"last": "epoch-003", "best": f"epoch-00{best}"}
    pointers["best"] = "epoch-002"  # make best differ from last, so that @best is told apart
    (ckpt / "pointers.json").write_text(_json.dumps(pointers))
    linear = models / "linear-v1" / "newest"
    cases = {
        "cnn-v1/new": new / "model.safetensors",
        "cnn-v1/old": old / "model.safetensors",
        "cnn-v1/latest": new / "model.safetensors",
        "latest": linear / "model.safetensors",  # the newest model of any architecture
        "latest@epoch-1": linear / "checkpoints" / "epoch-001" / "model.safetensors",
        "cnn-v1/new@last": epoch[3],
        "cnn-v1/new@best": epoch[2],
        "cnn-v1/latest@best": epoch[2],
        "cnn-v1/new@epoch-1": epoch[1],
        "cnn-v1/old@epoch-2": old / "checkpoints" / "epoch-002" / "model.safetensors",
        str(new): new / "model.safetensors",
        f"{new}@epoch-1": epoch[1],
        str(ckpt / "epoch-002"): epoch[2],
    }
    for ref, expected in cases.items():
        loaded = load_model(ref, models)
        assert _loaded_is(loaded, expected), ref
        assert not loaded.model.training and next(loaded.model.parameters()).device.type == "cpu"
    assert load_model("cnn-v1/new@best", models).ref.label == "cnn-v1/new@epoch-002"
    assert load_model("latest", models).config["arch"]["id"] == "linear-v1"
    assert _loaded_is(load_model("cnn-v1/new", models), epoch[3])  # final = the last epoch


def test_globs_name_every_matching_run_oldest_first_and_all_every_epoch(store):
    """A quoted glob expands in creation order (old before new, though "new" sorts first), and
    compare's REF@all names each epoch checkpoint, each loading that checkpoint's weights."""
    from digitnet.store import expand_checkpoints as expand_all
    from digitnet.store import expand_refs

    models = store["models"]
    assert expand_refs(["cnn-v1/*"], models) == ["cnn-v1/old", "cnn-v1/new"]
    assert expand_refs(["cnn-v1/*@epoch-1", "linear-v1/n*"], models) == [
        "cnn-v1/old@epoch-1", "cnn-v1/new@epoch-1", "linear-v1/newest"]
    refs = expand_all(["cnn-v1/new@all"], models)
    assert len(refs) == 3
    for n, ref in enumerate(refs, 1):
        loaded = load_model(ref, models)
        path = models / "cnn-v1" / "new" / "checkpoints" / f"epoch-00{n}" / "model.safetensors"
        assert loaded.epoch == n and _loaded_is(loaded, path), ref


def test_resume_refuses_changed_mnist_files(tmp_path, synthetic_mnist):
    from conftest import make_synthetic_mnist

    run(tmp_path, synthetic_mnist, name="d", epochs=2)
    run_dir = tmp_path / "models" / "cnn-v1" / "d"
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    make_synthetic_mnist(synthetic_mnist, seed=1)  # same layout and sizes, other pixels
    with pytest.raises(DigitnetError,
                       match="cannot resume cnn-v1/d@epoch-1: the MNIST files differ"):
        fit(models_dir=tmp_path / "models", data_dir=synthetic_mnist, resume="cnn-v1/d@epoch-1",
            progress=False)
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def _imbalanced_mnist(folder: Path, counts: list[int]) -> Path:
    """Synthetic MNIST whose training labels have the given count per class."""
    import numpy as np

    from conftest import make_synthetic_mnist
    from digitnet.data.idx import write_idx

    make_synthetic_mnist(folder)
    labels = np.repeat(np.arange(10), counts).astype(np.uint8)
    images = np.zeros((len(labels), 28, 28), np.uint8)
    for i, label in enumerate(labels):
        r, c = divmod(int(label), 5)
        images[i, 4 + 10 * r : 12 + 10 * r, 2 + 5 * c : 6 + 5 * c] = 255
    write_idx(folder / "train-images-idx3-ubyte.gz", images)
    write_idx(folder / "train-labels-idx1-ubyte.gz", labels)
    return folder


def test_class_weighting_uses_inverse_class_frequency(tmp_path, monkeypatch):
    """--class-weighting: the loss weight of class c is N / (10 * count_c) for the training
    split's counts (mean 1), and the loss of a step equals F.cross_entropy with those weights."""
    from digitnet.training import loop

    counts = [40, 20, 10, 10, 10, 10, 10, 10, 10, 10]
    data = _imbalanced_mnist(tmp_path / "mnist", counts)
    seen = {}
    real = loop.train_one_epoch

    def spy(*args, **kwargs):
        call = inspect.signature(real).bind(*args, **kwargs).arguments
        seen["weights"] = call.get("class_weights")
        seen["counts"] = call["train"].class_counts().tolist()
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "train_one_epoch", spy)
    fit(TrainConfig(**{**FAST, "epochs": 1, "val_size": 0, "class_weighting": True}), data,
        tmp_path / "models", progress=False)
    assert seen["counts"] == counts
    expected = torch.tensor([sum(counts) / (10 * c) for c in counts])
    assert torch.allclose(seen["weights"], expected)  # 0.35, 0.7, 1.4, ...
    fit(TrainConfig(**{**FAST, "epochs": 1, "val_size": 0}), data, tmp_path / "models",
        progress=False)
    assert seen["weights"] is None  # off by default
    # the weights reach the loss: one full-batch step of a linear model (no dropout, no BN)
    monkeypatch.setattr(loop, "train_one_epoch", real)
    loss, reference = _first_step_loss(data, class_weighting=True, weight=expected)
    assert loss == pytest.approx(reference, rel=1e-5)
    unweighted, _ = _first_step_loss(data)
    assert unweighted != pytest.approx(loss, rel=1e-3)


def _first_step_loss(data: Path, weight=None, class_weighting=False, label_smoothing=0.0):
    """The training loss of one full-batch step of linear-v1 (as train_one_epoch reports it) and
    F.cross_entropy(weight, label_smoothing) of the same model on the same images."""
    import copy

    import torch.nn.functional as F

    from digitnet.data.datasets import load_splits, to_model_input
    from digitnet.models import create_model
    from digitnet.store import default_data_config
    from digitnet.training import loop

    cfg = TrainConfig(arch="linear", epochs=1, batch_size=10_000, val_size=0, augment=False,
                      max_steps=1, label_smoothing=label_smoothing, precision="fp32",
                      class_weighting=class_weighting)
    train = load_splits(data, val_size=0)["train"]
    torch.manual_seed(0)
    model = create_model("linear")
    before = copy.deepcopy(model)
    optimizer = loop.build_optimizer(model, cfg)
    scheduler = loop.build_scheduler(optimizer, cfg, 1)
    weights = loop.class_weights_for(train) if class_weighting else None
    data_config = default_data_config()
    row = loop.train_one_epoch(model, train, optimizer, scheduler, cfg, data_config,
                               torch.Generator().manual_seed(0), weights)
    with torch.no_grad():
        logits = before(to_model_input(train.images, data_config["mean"], data_config["std"]))
    reference = F.cross_entropy(logits, train.labels, weight=weight,
                                label_smoothing=label_smoothing).item()
    return row["train_loss"], reference


def test_label_smoothing_is_the_cross_entropy_smoothing(synthetic_mnist):
    """--label-smoothing S: the training loss is F.cross_entropy(..., label_smoothing=S)."""
    loss, reference = _first_step_loss(synthetic_mnist, label_smoothing=0.3)
    assert loss == pytest.approx(reference, rel=1e-5)
    plain, plain_reference = _first_step_loss(synthetic_mnist, label_smoothing=0.0)
    assert plain == pytest.approx(plain_reference, rel=1e-5)
    assert plain != pytest.approx(loss, rel=1e-3)  # the two settings give different losses


@pytest.mark.parametrize("arch", ["cnn-v1", "fast-v2", "lenet5-v1"])
def test_weight_decay_only_on_conv_and_linear_weights(arch):
    """--weight-decay applies to conv and linear weights; norms and biases get none."""
    from digitnet.models import create_model
    from digitnet.training.loop import build_optimizer

    model = create_model(arch)
    layers = (torch.nn.Conv2d, torch.nn.Linear)
    decayed = {n for n, m in model.named_modules() if isinstance(m, layers)}
    expected = {f"{n}.weight" for n in decayed}
    names = {id(p): n for n, p in model.named_parameters()}
    optimizer = build_optimizer(model, TrainConfig(weight_decay=0.03))
    by_decay = {}
    for group in optimizer.param_groups:
        group_names = {names[id(p)] for p in group["params"]}
        by_decay.setdefault(group["weight_decay"], set()).update(group_names)
    assert by_decay[0.03] == expected
    assert by_decay[0.0] == set(names.values()) - expected
    assert any(".bias" in n for n in by_decay[0.0])
    if arch != "lenet5-v1":  # LeNet-5 has no batch norm
        norms = {f"{n}.weight" for n, m in model.named_modules()
                 if isinstance(m, torch.nn.BatchNorm2d)}
        assert norms and norms <= by_decay[0.0]


@pytest.mark.parametrize("name, cls, state_key", [("sgd", torch.optim.SGD, "momentum_buffer"),
                                                 ("adamw", torch.optim.AdamW, "exp_avg")])
def test_optimizer_flag_builds_that_optimizer(tmp_path, synthetic_mnist, name, cls, state_key):
    """--optimizer NAME builds that class (SGD with Nesterov momentum 0.9) and its state is what
    the checkpoint holds."""
    from digitnet.models import create_model
    from digitnet.store.checkpoint import load_training_state
    from digitnet.training.loop import build_optimizer

    optimizer = build_optimizer(create_model("linear"), TrainConfig(optimizer=name, lr=0.02))
    assert type(optimizer) is cls and optimizer.defaults["lr"] == 0.02
    if name == "sgd":
        assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["nesterov"]
    assert main(["train", "--arch", "linear", "--optimizer", name, "--epochs", "1", "--batch-size",
                 "32", "--val-size", "50", "--no-augment", "--name", name, "--no-progress",
                 "--data-dir", str(synthetic_mnist), "--models-dir", str(tmp_path / "m")]) == 0
    run_dir = tmp_path / "m" / "linear-v1" / name
    assert json.loads((run_dir / "config.json").read_text())["train"]["optimizer"] == name
    state = load_training_state(run_dir / "checkpoints" / "epoch-001" / "state.pt")
    assert all(state_key in s for s in state["optimizer"]["state"].values())


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_bf16_precision_autocasts_the_forward_pass(synthetic_mnist, precision, dtype):
    """--precision bf16: convolutions run in bfloat16 during training; the weights stay float32."""
    from digitnet.data.datasets import load_splits
    from digitnet.models import create_model
    from digitnet.store import default_data_config
    from digitnet.training import loop

    cfg = TrainConfig(arch="fast", epochs=1, batch_size=16, max_steps=2, augment=False,
                      precision=precision)
    model = create_model("fast").to(memory_format=torch.channels_last)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    dtypes = []
    conv.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    optimizer = loop.build_optimizer(model, cfg)
    loop.train_one_epoch(model, load_splits(synthetic_mnist, val_size=0)["train"], optimizer,
                         loop.build_scheduler(optimizer, cfg, 2), cfg, default_data_config(),
                         torch.Generator().manual_seed(0))
    assert dtypes == [dtype, dtype]
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_shift_augmentation_in_training_shifts_by_whole_pixels():
    """--augment-kind shift: each training image is the original moved by whole pixels (at most
    --augment-severity, the vacated border zero), and most images are actually moved."""
    from digitnet.training.loop import batch_augmentation

    images = torch.randint(1, 256, (64, 28, 28), dtype=torch.uint8)
    augment = batch_augmentation(TrainConfig(augment_kind="shift", augment_severity=2))
    out = augment(images, None, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    shifts = []
    for i in range(len(images)):
        found = [(dy - 2, dx - 2) for dy in range(5) for dx in range(5)
                 if torch.equal(out[i], padded[i, dy:dy + 28, dx:dx + 28])]
        assert len(found) == 1, i
        shifts.append(found[0])
    assert sum(s != (0, 0) for s in shifts) >= 48  # 24 of the 25 shifts move the image
    assert len(set(shifts)) >= 10
    warp = batch_augmentation(TrainConfig(augment_kind="warp"))(
        images, None, torch.Generator().manual_seed(0))
    assert not torch.equal(warp, out)
    assert batch_augmentation(TrainConfig(augment=False)) is None


def test_every_file_of_a_checkpoint_is_integrity_checked(tmp_path, synthetic_mnist):
    """Changing any file a checkpoint holds (weights, training state, or meta.json: its
    checksums, or its epoch, which says where a resume starts) is detected on load."""
    import shutil

    from digitnet.store.checkpoint import verify_checkpoint

    summary = run(tmp_path, synthetic_mnist, name="t", epochs=2)
    ckpt = Path(summary["path"]) / "checkpoints" / "epoch-002"
    pristine = tmp_path / "pristine"
    shutil.copytree(ckpt, pristine)
    names = sorted(p.name for p in ckpt.iterdir())
    assert names == ["meta.json", "model.safetensors", "state.pt"]
    meta = json.loads((ckpt / "meta.json").read_text())
    assert set(meta["sha256"]) == {"model.safetensors", "state.pt"}

    def flip_byte(path: Path) -> None:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))

    def swap_hash(path: Path) -> None:
        meta = json.loads(path.read_text())
        meta["sha256"]["state.pt"] = "0" * 64
        path.write_text(json.dumps(meta))

    def edit_meta(**changes):
        def tamper(path: Path) -> None:
            meta = json.loads(path.read_text())
            meta.update(changes)
            path.write_text(json.dumps({k: v for k, v in meta.items() if v is not None}))
        return tamper

    for name, tamper in (("model.safetensors", flip_byte), ("state.pt", flip_byte),
                         ("meta.json", swap_hash), ("meta.json", lambda p: p.write_text("{")),
                         ("meta.json", edit_meta(sha256=None)),  # no hashes: nothing to check
                         ("meta.json", edit_meta(sha256={"model.safetensors": meta["sha256"][
                             "model.safetensors"]})),  # the state's hash dropped
                         ("meta.json", edit_meta(epoch=1)),  # would resume at the wrong epoch
                         ("meta.json", lambda p: p.write_text("[]"))):
        tamper(ckpt / name)
        with pytest.raises(CheckpointError, match="corrupt or tampered|unreadable"):
            load_checkpoint(ckpt)
        shutil.rmtree(ckpt)
        shutil.copytree(pristine, ckpt)
        verify_checkpoint(ckpt)  # restored: good again
    (ckpt / "state.pt").unlink()
    with pytest.raises(CheckpointError, match="state.pt: missing from checkpoint"):
        load_checkpoint(ckpt)


def test_config_records_the_git_commit(tmp_path, synthetic_mnist, monkeypatch):
    """config.json's env.git_commit is `git rev-parse HEAD` of the source tree (with "-dirty" when
    tracked files changed); outside a git repository the field is left out and training works."""
    import shutil

    from digitnet.training import loop

    src = Path(loop.__file__).resolve().parent
    if shutil.which("git") is None or subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"],
                                                     capture_output=True).returncode != 0:
        pytest.skip("the source tree is not a git checkout")
    head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=True).stdout.strip()
    summary = run(tmp_path, synthetic_mnist, name="g", epochs=1, arch="linear")
    env = json.loads((Path(summary["path"]) / "config.json").read_text())["env"]
    assert env["git_commit"] == head + ("-dirty" if dirty else "")
    assert len(head) == 40
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "not-a-repository"))  # git finds no repository
    summary = run(tmp_path, synthetic_mnist, name="nogit", epochs=1, arch="linear")
    env = json.loads((Path(summary["path"]) / "config.json").read_text())["env"]
    assert "git_commit" not in env and env["digitnet"]


def test_recipes_are_what_the_readme_says():
    """Default: fast-v2, float32, 9 epochs, handwriting augmentation level 2, label smoothing
    0.1, a 5,000-image validation split (issue 14); fast.yaml:
    fast-v2 in float32, whole-pixel shifts, batches of 512, 6 epochs; best.yaml: wide-v1;
    ensemble.yaml: best.yaml trained for 20 epochs; fast-v1.yaml: fast-v1."""
    repo = Path(__file__).resolve().parents[1]

    def recipe(name: str) -> TrainConfig:
        return resolve_config(repo / "configs" / f"{name}.yaml")

    def arch_id(cfg: TrainConfig) -> str:
        return get_spec(cfg.arch, cfg.version).arch_id

    default = TrainConfig()
    assert arch_id(default) == "fast-v2"
    assert (default.epochs, default.augment, default.augment_kind, default.augment_severity,
            default.label_smoothing, default.val_size) == (9, True, "handwriting", 2, 0.1, 5000)
    assert (default.precision, default.batch_size, default.lr) == ("fp32", 512, 0.3)
    fast = recipe("fast")
    assert arch_id(fast) == "fast-v2"
    assert (fast.precision, fast.augment_kind, fast.batch_size, fast.epochs) == (
        "fp32", "shift", 512, 6)
    best, ensemble = recipe("best"), recipe("ensemble")
    assert arch_id(best) == arch_id(ensemble) == "wide-v1"
    assert (best.epochs, ensemble.epochs) == (10, 20)
    assert dataclasses.replace(best, epochs=20) == ensemble
    assert arch_id(recipe("fast-v1")) == "fast-v1"


def test_one_cycle_schedule_peaks_at_lr_and_ends_at_zero():
    """--lr is the peak of a one-cycle schedule: a linear warm-up over warmup_frac of the steps,
    then a linear decay to 0 at the last step."""
    from digitnet.models import create_model
    from digitnet.training.loop import build_optimizer, build_scheduler

    cfg = TrainConfig(arch="linear", epochs=2, lr=0.4, warmup_frac=0.2)
    optimizer = build_optimizer(create_model("linear"), cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=25)  # 50 steps, 10 warming up
    lrs = []
    for _ in range(50):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:10] == pytest.approx([0.4 * (s + 1) / 10 for s in range(10)])
    assert lrs[10:] == pytest.approx([0.4 * (50 - s) / 40 for s in range(10, 50)])
    assert max(lrs) == pytest.approx(0.4) and scheduler.get_last_lr()[0] == 0.0
    assert all(g["lr"] == 0.0 for g in optimizer.param_groups)  # both parameter groups


def test_a_failed_checkpoint_write_leaves_the_previous_one(tmp_path, synthetic_mnist, monkeypatch):
    """Checkpoints are written atomically: a crash while writing epoch 2 leaves epoch 1 complete
    and findable, with no partial epoch-002 folder and the pointers untouched."""
    from digitnet.store import checkpoint

    run_dir = tmp_path / "models" / "cnn-v1" / "crash"
    real_write = checkpoint.atomic_write_bytes

    def crash_on_epoch_2(path, content):
        if Path(path).name == checkpoint.STATE_FILE and "epoch-002" in Path(path).parent.name:
            Path(path).write_bytes(b"half a file")
            raise OSError("disk full")
        return real_write(path, content)

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", crash_on_epoch_2)
    with pytest.raises(DigitnetError, match=r"\(disk full\), last good checkpoint is epoch 1"):
        run(tmp_path, synthetic_mnist, name="crash")
    ckpts = run_dir / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch-001", "pointers.json"]
    assert json.loads((ckpts / "pointers.json").read_text())["last"] == "epoch-001"
    load_checkpoint(ckpts / "epoch-001")  # complete and verified
    monkeypatch.setattr(checkpoint, "atomic_write_bytes", real_write)
    resumed = fit(models_dir=tmp_path / "models", data_dir=synthetic_mnist, resume="cnn-v1/crash",
                  progress=False)
    assert resumed["epochs_done"] == 3


def test_summary_json_holds_the_final_metrics(tmp_path, synthetic_mnist):
    """summary.json: the reference, epochs done, the last epoch's metrics and the MNIST test loss
    and accuracy of the final weights."""
    from digitnet.evaluation.datasets import load_eval_dataset

    summary = run(tmp_path, synthetic_mnist, name="s", epochs=2, arch="linear")
    run_dir = Path(summary["path"])
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    rows = [json.loads(r) for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert summary["epochs_done"] == 2 and summary["final"] == rows[-1]
    test = load_eval_dataset("mnist-test", synthetic_mnist)
    loaded = load_model("linear-v1/s", tmp_path / "models")
    logits = loaded.logits(test.images)
    accuracy = (logits.argmax(1) == test.labels).float().mean().item()
    assert summary["test_acc"] == pytest.approx(accuracy)
    assert summary["test_loss"] == pytest.approx(
        torch.nn.functional.cross_entropy(logits, test.labels).item(), rel=1e-5)


def test_changed_parameter_shapes_alone_are_refused(tmp_path, synthetic_mnist, monkeypatch):
    """Every model stores its parameter shapes: a definition whose hyperparameters read the same
    but whose layers differ is refused with the advice to register a new version."""
    run(tmp_path, synthetic_mnist, name="shapes", epochs=1)
    spec = _registry._REGISTRY["cnn", 1]

    def same_args_other_shapes(**kw):
        model = SmallCNN(stages=[[16], [32], [64]], dropout=0.1, **kw)
        model.model_args = spec.builder().model_args  # claims the recorded hyperparameters
        return model

    monkeypatch.setitem(_registry._REGISTRY, ("cnn", 1), _registry.ModelSpec(
        "cnn", 1, same_args_other_shapes, spec.description))
    with pytest.raises(DigitnetError, match=r"register the change under a new version number "
                                            r"\(parameter names or shapes differ\)"):
        load_model("cnn-v1/shapes", models_dir=tmp_path / "models")


def test_compare_takes_globs_oldest_first_and_latest_at_all(store, tmp_path):
    """`digitnet compare 'cnn-v1/*'` compares every matching run, oldest first, and
    `cnn-v1/latest@all` every epoch of the newest run."""
    out = tmp_path / "cmp"
    assert main(["compare", "cnn-v1/*", "cnn-v1/latest@all", "--dataset", "mnist-test",
                 "--out", str(out), "--data-dir", str(store["data"]),
                 "--models-dir", str(store["models"])]) == 0
    rows = json.loads((out / "comparison.json").read_text())
    assert [(r["model"], r["epoch"]) for r in rows] == [
        ("cnn-v1/old", 3), ("cnn-v1/new", 3), ("cnn-v1/new@epoch-001", 1),
        ("cnn-v1/new@epoch-002", 2), ("cnn-v1/new@epoch-003", 3)]


def test_training_augmentation_uses_the_transforms_of_the_augmented_test_set():
    """--augment (warp) applies to a training batch exactly what mnist-test-augmented applies at
    the same severity: one augment_batch call over the whole batch."""
    from digitnet.data.augment import make_augmented_dataset
    from digitnet.training.loop import batch_augmentation

    images = torch.randint(0, 256, (40, 28, 28), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    labels = torch.arange(40) % 10
    for severity in (2, 4):
        train = batch_augmentation(TrainConfig(augment_kind="warp", augment_severity=severity))(
            images, labels, torch.Generator().manual_seed(5))
        fixed, _ = make_augmented_dataset(images, labels, severity, seed=5)
        assert torch.equal(train, fixed) and not torch.equal(train, images)


# ------------------------------------------------------------------ ranges of numeric options
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A 1-epoch run on synthetic data, to be copied by tests that change it."""
    from conftest import make_synthetic_mnist

    root = tmp_path_factory.mktemp("finished")
    data = make_synthetic_mnist(root / "mnist")
    fit(TrainConfig(**{**FAST, "epochs": 1, "name": "done"}), data, root / "models", progress=False)
    return root


def copy_store(finished_run, tmp_path) -> tuple[Path, Path]:
    """A private copy of `finished_run`: (data folder, models folder)."""
    import shutil

    shutil.copytree(finished_run, tmp_path / "copy")
    return tmp_path / "copy" / "mnist", tmp_path / "copy" / "models"


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns,
                                         p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


# (flag, value given, field, message after "must be")
BAD_VALUES = [
    ("threads", "100000", ">= 1 and <= 256, got 100000"),
    ("threads", "0", ">= 1 and <= 256, got 0"),
    ("epochs", "0", ">= 1 and <= 10000, got 0"),
    ("epochs", "10001", ">= 1 and <= 10000, got 10001"),
    ("batch-size", "0", ">= 1 and <= 65536, got 0"),
    ("batch-size", "1000000", ">= 1 and <= 65536, got 1000000"),
    ("lr", "nan", "> 0 and finite, got nan"),
    ("lr", "inf", "> 0 and finite, got inf"),
    ("lr", "0", "> 0 and finite, got 0.0"),
    ("lr", "-0.1", "> 0 and finite, got -0.1"),
    ("weight-decay", "-0.0001", ">= 0 and finite, got -0.0001"),
    ("weight-decay", "inf", ">= 0 and finite, got inf"),
    ("label-smoothing", "1", ">= 0 and < 1, got 1.0"),
    ("label-smoothing", "nan", ">= 0 and < 1, got nan"),
    ("augment-severity", "6", ">= 1 and <= 5, got 6"),
    ("seed", "-1", f">= 0 and <= {2**63 - 1}, got -1"),
    ("seed", str(2**63), f">= 0 and <= {2**63 - 1}, got {2**63}"),
    ("val-size", "-1", ">= 0, got -1"),
    ("subset", "9", ">= 10, got 9"),
    ("max-steps", "0", ">= 1, got 0"),
    ("arch-version", "0", ">= 1, got 0"),
]


def _field(flag: str) -> str:
    """The TrainConfig field a flag sets: --arch-version sets `version`, others their own name."""
    return "version" if flag == "arch-version" else flag.replace("-", "_")


@pytest.mark.parametrize("flag, value, message", BAD_VALUES)
def test_out_of_range_flag_is_one_line_before_any_work(tmp_path, synthetic_mnist, capsys, flag,
                                                       value, message):
    models = tmp_path / "models"
    code = main(["train", f"--{flag}={value}", "--data-dir", str(synthetic_mnist),
                 "--models-dir", str(models), "--no-progress"])
    err = capsys.readouterr().err
    field = _field(flag)
    assert code == 1
    assert err == f"digitnet: error: invalid training configuration: {field} must be {message}\n"
    assert not models.exists()


def _typed(flag: str, value: str):
    return float(value) if flag in ("lr", "weight-decay", "label-smoothing") else int(value)


@pytest.mark.parametrize("flag, value, message", BAD_VALUES)
def test_out_of_range_value_in_a_resumed_config_is_refused(finished_run, tmp_path, capsys, flag,
                                                          value, message):
    """A run's config.json is checked like a flag, before the run is touched."""
    data, models = copy_store(finished_run, tmp_path)
    run_dir = models / "cnn-v1" / "done"
    config = json.loads((run_dir / "config.json").read_text())
    field = _field(flag)
    config["train"][field] = _typed(flag, value)
    (run_dir / "config.json").write_text(json.dumps(config))  # NaN and Infinity as json writes them
    before = snapshot(models)
    code = main(["train", "--resume", "cnn-v1/done", "--data-dir", str(data),
                 "--models-dir", str(models), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert err == (f"digitnet: error: {run_dir / 'config.json'} (train): invalid training "
                   f"configuration: {field} must be {message}\n")
    assert snapshot(models) == before


@pytest.mark.parametrize("line, message", [
    ("threads: 100000", "threads must be >= 1 and <= 256, got 100000"),
    ("lr: .nan", "lr must be > 0 and finite, got nan"),
    ("weight_decay: -.inf", "weight_decay must be >= 0 and finite, got -inf"),
])
def test_out_of_range_value_in_a_recipe_names_the_file(tmp_path, synthetic_mnist, capsys, line,
                                                       message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"epochs: 1\n{line}\n")
    models = tmp_path / "models"
    code = main(["train", "--config", str(recipe), "--data-dir", str(synthetic_mnist),
                 "--models-dir", str(models)])
    assert code == 1
    assert capsys.readouterr().err == (f"digitnet: error: {recipe}: invalid training "
                                       f"configuration: {message}\n")
    assert not models.exists()


def test_validation_split_larger_than_the_data_is_refused_before_a_run(tmp_path, synthetic_mnist,
                                                                        capsys):
    models = tmp_path / "models"
    code = main(["train", "--val-size", "1000000", "--data-dir", str(synthetic_mnist),
                 "--models-dir", str(models)])
    assert code == 1 and "validation size 1000000 must be between 0 and" in capsys.readouterr().err
    assert not models.exists()


def test_largest_seed_trains():
    """epoch_seed is taken modulo 2**64: the largest seed of the range seeds torch."""
    from digitnet.training.loop import epoch_seed

    assert epoch_seed(0, 3) == 3 and epoch_seed(5, 2) == 5 * 1_000_003 + 2  # seeds of old runs
    torch.Generator().manual_seed(epoch_seed(2**63 - 1, 10_000))


def test_python_api_rejects_wrong_types():
    with pytest.raises(DigitnetError, match="epochs must be an integer, got True"):
        TrainConfig(epochs=True)
    with pytest.raises(DigitnetError, match="lr must be a number, got '0.1'"):
        TrainConfig(lr="0.1")
    assert TrainConfig(threads=256, seed=2**63 - 1, lr=1e12).threads == 256  # the bounds hold


# ----------------------------------------------------------- full disk, failed writes, leftovers
def fail_fsync(monkeypatch, pattern: str, err: int = errno.ENOSPC, skip: int = 0) -> list[str]:
    """Make os.fsync raise OSError(err) for the files whose path matches `pattern`, after letting
    `skip` of them through: what a full disk does to a write (ext4 and NFS report it there too).
    Returns the paths it failed."""
    real, seen, failed = os.fsync, [], []

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if re.search(pattern, path):
            seen.append(path)
            if len(seen) > skip:
                failed.append(path)
                raise OSError(err, os.strerror(err))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return failed


def leftovers(run_dir: Path) -> list[str]:
    from digitnet.store.checkpoint import TEMPORARY

    return [str(p) for p in run_dir.rglob("*") if TEMPORARY.match(p.name)]


needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc")

# (what fails, path pattern, errno, matching files let through, message, epoch `last` names)
FAILED_WRITES = [
    ("checkpoint state", r"checkpoints/\.tmp-epoch-002\.[^/]+/\.state\.pt\.", errno.ENOSPC, 0,
     "no space left on {ckpt}, last good checkpoint is epoch 1", 1),
    ("checkpoint weights", r"checkpoints/\.tmp-epoch-002\.[^/]+/\.model\.safetensors\.",
     errno.EDQUOT, 0, "disk quota exceeded on {ckpt}, last good checkpoint is epoch 1", 1),
    ("first checkpoint", r"\.tmp-epoch-001\.[^/]+/\.state\.pt\.", errno.ENOSPC, 0,
     "no space left on {ckpt}, no checkpoint yet", 0),
    ("pointers", r"checkpoints/\.pointers\.json\.", errno.EROFS, 1,
     "{ckpt} is on a read-only file system, last good checkpoint is epoch 1", 1),
    ("metrics line", r"metrics\.jsonl$", errno.ENOSPC, 1,
     "no space left on {run}, last good checkpoint is epoch 1", 1),
    ("final weights", r"/full/\.model\.safetensors\.", errno.ENOSPC, 0,
     "no space left on {run}, last good checkpoint is epoch 2", 2),
    ("summary", r"/full/\.summary\.json\.", errno.ENOSPC, 0,
     "no space left on {run}, last good checkpoint is epoch 2", 2),
]


@needs_proc
@pytest.mark.parametrize("what, pattern, err, skip, message, last", FAILED_WRITES,
                         ids=[w[0] for w in FAILED_WRITES])
def test_failed_write_names_the_last_good_checkpoint_and_resumes(
        tmp_path, synthetic_mnist, monkeypatch, capsys, what, pattern, err, skip, message, last):
    models = tmp_path / "models"
    run_dir, ckpt = models / "cnn-v1" / "full", models / "cnn-v1" / "full" / "checkpoints"
    args = ["train", "--arch", "cnn", "--precision", "fp32", "--lr", "0.05", "--epochs", "2",
            "--batch-size", "32", "--val-size", "50", "--threads", "1", "--no-augment", "--name",
            "full", "--data-dir", str(synthetic_mnist),
            "--models-dir", str(models), "--no-progress"]
    failed = fail_fsync(monkeypatch, pattern, err, skip)
    assert main(args) == 1
    assert failed, f"the {what} write was never attempted"
    err_text = capsys.readouterr().err
    assert err_text == (f"digitnet: error: {message.format(ckpt=ckpt, run=run_dir)}; make room, "
                        f"then continue with `digitnet train --resume cnn-v1/full`\n")
    assert leftovers(run_dir) == []
    pointers = ckpt / "pointers.json"
    assert (json.loads(pointers.read_text())["last"] if pointers.exists() else None) == (
        f"epoch-{last:03d}" if last else None)
    monkeypatch.undo()  # room made
    assert main(["train", "--resume", "cnn-v1/full", *args[-5:]]) == 0
    rows = [json.loads(r)["epoch"] for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows == [1, 2]
    assert json.loads((run_dir / "summary.json").read_text())["epochs_done"] == 2
    assert leftovers(run_dir) == []


@needs_proc
def test_run_resumed_after_a_full_disk_equals_an_uninterrupted_one(tmp_path, synthetic_mnist,
                                                                   monkeypatch):
    straight = run(tmp_path, synthetic_mnist, name="straight")
    fail_fsync(monkeypatch, r"\.tmp-epoch-002\.[^/]+/\.state\.pt\.")
    with pytest.raises(DigitnetError, match="no space left on .*, last good checkpoint is epoch 1"):
        run(tmp_path, synthetic_mnist, name="full")
    monkeypatch.undo()
    resumed = fit(models_dir=tmp_path / "models", data_dir=synthetic_mnist, resume="cnn-v1/full",
                  progress=False)
    ws, wr = weights(straight["path"]), weights(resumed["path"])
    assert all(torch.equal(ws[k], wr[k]) for k in ws)


@needs_proc
def test_full_disk_while_creating_a_run_leaves_nothing(tmp_path, synthetic_mnist, monkeypatch):
    fail_fsync(monkeypatch, r"\.config\.json\.")
    with pytest.raises(DigitnetError,
                       match=r"no space left on .*cnn-v1/new; the run was not created$"):
        run(tmp_path, synthetic_mnist, name="new")
    assert list((tmp_path / "models" / "cnn-v1").iterdir()) == []
    monkeypatch.undo()
    assert run(tmp_path, synthetic_mnist, name="new", epochs=1)["ref"] == "cnn-v1/new"


def test_resume_removes_temporaries_of_a_killed_writer(finished_run, tmp_path, capsys):
    data, models = copy_store(finished_run, tmp_path)
    run_dir = models / "cnn-v1" / "done"
    left = [run_dir / "checkpoints" / ".tmp-epoch-002.k3j4",
            run_dir / "checkpoints" / ".epoch-002.old1",
            run_dir / "checkpoints" / ".tmp-stale-epoch-001.x"]
    for folder in left:
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"half")
    (run_dir / ".model.safetensors.ab12.tmp").write_bytes(b"half")
    (run_dir / "checkpoints" / ".pointers.json.zz.tmp").write_text("{")
    fit(models_dir=models, data_dir=data, resume="cnn-v1/done", progress=False)
    assert leftovers(run_dir) == []
    assert "removed 5 temporary file(s) of an interrupted write" in capsys.readouterr().err
    assert (run_dir / "checkpoints" / "epoch-001" / "meta.json").is_file()  # real ones stay


def test_every_written_file_and_folder_has_the_normal_permissions(finished_run, tmp_path):
    """Weights were 0600 (mkstemp) and checkpoint folders 0700 (mkdtemp), other files 0644."""
    data, models = copy_store(finished_run, tmp_path)
    mask = os.umask(0)
    os.umask(mask)
    run(tmp_path / "x", data, name="modes", epochs=2)
    run_dir = tmp_path / "x" / "models" / "cnn-v1" / "modes"
    fit(models_dir=tmp_path / "x" / "models", data_dir=data, resume="cnn-v1/modes@epoch-1",
        progress=False)
    modes = {str(p.relative_to(run_dir)): stat.S_IMODE(p.stat().st_mode)
             for p in [run_dir, *run_dir.rglob("*")]}
    want = {path: (0o777 if (run_dir / path).is_dir() else 0o666) & ~mask for path in modes}
    assert modes == want
    assert {"model.safetensors", "train.lock", "checkpoints/epoch-002/state.pt",
            "checkpoints/epoch-002"} <= set(modes)


# ------------------------------------------------------------------- one writer per run folder
HOLD_LOCK = """
import sys
from pathlib import Path
from digitnet.store import lock_run
with lock_run(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_second_writer_of_a_run_is_refused_and_a_killed_one_blocks_nothing(finished_run, tmp_path,
                                                                          capsys):
    data, models = copy_store(finished_run, tmp_path)
    run_dir = models / "cnn-v1" / "done"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)],
                              stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline() == "locked\n"
        before = snapshot(models)
        code = main(["train", "--resume", "cnn-v1/done", "--data-dir", str(data),
                     "--models-dir", str(models), "--no-progress"])
        assert code == 1
        assert capsys.readouterr().err == (
            f"digitnet: error: run cnn-v1/done is being trained by another process (process "
            f"{holder.pid} holds {run_dir / 'train.lock'}); wait for it to end or stop it\n")
        assert snapshot(models) == before
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        holder.stdin.close()
        holder.stdout.close()
    assert (run_dir / "train.lock").exists()  # what the killed process left does not block:
    resumed = fit(models_dir=models, data_dir=data, resume="cnn-v1/done", progress=False)
    assert resumed["epochs_done"] == 1


def test_the_lock_is_held_for_the_whole_run(tmp_path, synthetic_mnist, monkeypatch):
    from digitnet.store import lock_run
    from digitnet.training import loop

    tries = []
    real = loop.train_one_epoch

    def train_and_try_the_lock(*args, **kwargs):
        run_dir = tmp_path / "models" / "cnn-v1" / "held"
        with pytest.raises(DigitnetError, match="cnn-v1/held is being trained by another process"):
            with lock_run(run_dir):  # a second open file description conflicts, even in-process
                pass
        tries.append(run_dir)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "train_one_epoch", train_and_try_the_lock)
    run(tmp_path, synthetic_mnist, name="held", epochs=2)
    assert len(tries) == 2
    with lock_run(tries[0]):  # released when the run ended
        pass


# ---------------------------------------------------------- a run killed in its first epoch
@pytest.fixture
def killed_in_first_epoch(tmp_path, synthetic_mnist, monkeypatch) -> Path:
    """The models folder of run cnn-v1/k, stopped during its first epoch: config.json, no
    checkpoint, and a half-written checkpoint folder like SIGKILL leaves."""
    from digitnet.training import loop

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(loop, "train_one_epoch", killed)
        with pytest.raises(KeyboardInterrupt):
            run(tmp_path, synthetic_mnist, name="k", epochs=2)
    run_dir = tmp_path / "models" / "cnn-v1" / "k"
    (run_dir / "checkpoints" / ".tmp-epoch-001.abcd").mkdir(parents=True)
    assert (run_dir / "config.json").is_file()
    return tmp_path / "models"


def test_run_killed_in_its_first_epoch_resumes_from_scratch(killed_in_first_epoch, tmp_path,
                                                            synthetic_mnist, capsys):
    models = killed_in_first_epoch
    resumed = fit(models_dir=models, data_dir=synthetic_mnist, resume="cnn-v1/k", progress=False)
    assert ("cnn-v1/k stopped before it finished an epoch: starting it from scratch with its own "
            "configuration") in capsys.readouterr().err
    assert resumed["epochs_done"] == 2 and leftovers(models / "cnn-v1" / "k") == []
    straight = fit(TrainConfig(**{**FAST, "epochs": 2, "name": "s"}), synthetic_mnist, models,
                   progress=False)
    ws, wr = weights(straight["path"]), weights(resumed["path"])
    assert all(torch.equal(ws[k], wr[k]) for k in ws)


def test_name_of_a_run_killed_in_its_first_epoch_says_what_to_do(killed_in_first_epoch,
                                                                   synthetic_mnist, capsys):
    models = killed_in_first_epoch
    code = main(["train", "--arch", "cnn", "--name", "k", "--epochs", "1", "--data-dir",
                 str(synthetic_mnist),
                 "--models-dir", str(models), "--no-progress"])
    assert code == 1
    assert capsys.readouterr().err == (
        f"digitnet: error: {models / 'cnn-v1' / 'k'} already exists: run cnn-v1/k stopped before "
        f"it finished an epoch; `digitnet train --resume cnn-v1/k` starts it again with its own "
        f"configuration, or choose another --name\n")
    with pytest.raises(DigitnetError, match="cannot resume cnn-v1/k from 'best': it finished no "
                                            "epoch; `digitnet train --resume cnn-v1/k` starts it"):
        fit(models_dir=models, data_dir=synthetic_mnist, resume="cnn-v1/k@best", progress=False)


@pytest.mark.parametrize("state, message", [
    ("finished", "already exists (a finished run cnn-v1/done); choose another --name"),
    ("one epoch", "already exists: run cnn-v1/done stopped after 1 finished epoch(s); continue it "
                  "with `digitnet train --resume cnn-v1/done` or choose another --name"),
    ("no config", "already exists and is not a run (no config.json); remove it or choose another "
                  "--name"),
])
def test_taken_name_says_what_the_folder_holds(finished_run, tmp_path, capsys, state, message):
    data, models = copy_store(finished_run, tmp_path)
    run_dir = models / "cnn-v1" / "done"
    if state == "one epoch":
        (run_dir / "summary.json").unlink()
    elif state == "no config":
        (run_dir / "config.json").unlink()
    code = main(["train", "--arch", "cnn", "--name", "done", "--epochs", "1", "--data-dir",
                 str(data),
                 "--models-dir", str(models), "--no-progress"])
    assert code == 1
    assert capsys.readouterr().err == f"digitnet: error: {run_dir} {message}\n"


def test_finished_run_without_checkpoints_is_not_trained_again(finished_run, tmp_path):
    import shutil

    data, models = copy_store(finished_run, tmp_path)
    run_dir = models / "cnn-v1" / "done"
    shutil.rmtree(run_dir / "checkpoints")  # to save space, say
    before = snapshot(run_dir)
    with pytest.raises(DigitnetError, match="cannot resume cnn-v1/done: it is finished and has no "
                                            "checkpoints left"):
        fit(models_dir=models, data_dir=data, resume="cnn-v1/done", progress=False)
    after = snapshot(run_dir)
    assert after.pop("train.lock")[1] == f"{os.getpid()}\n".encode()  # taken, then decided
    assert after == {k: v for k, v in before.items() if k != "train.lock"}


@pytest.mark.parametrize("pointer", ["../../../escaped", "/etc", 5, ["epoch-001"]])
def test_pointer_outside_the_checkpoints_folder_is_ignored(finished_run, tmp_path, pointer):
    """@last and @best resolve to an epoch folder of the run, whatever pointers.json says."""
    _, models = copy_store(finished_run, tmp_path)
    ckpt_dir = models / "cnn-v1" / "done" / "checkpoints"
    (models / "escaped" / "checkpoints").mkdir(parents=True)  # where ../../../escaped leads
    (ckpt_dir / "pointers.json").write_text(json.dumps({"last": pointer, "best": pointer}))
    assert load_model("cnn-v1/done@last", models).ref.checkpoint == "epoch-001"
    with pytest.raises(CheckpointError, match="no 'best' checkpoint recorded"):
        load_model("cnn-v1/done@best", models)


# ------------------------------------------------ checkpoint metadata, pointers, metrics, recipes
@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """The run folder of a 2-epoch run (copy it before damaging it)."""
    from conftest import make_synthetic_mnist

    root = tmp_path_factory.mktemp("two")
    data = make_synthetic_mnist(root / "mnist")
    summary = fit(TrainConfig(**{**FAST, "epochs": 2, "name": "two"}), data_dir=data,
                  models_dir=root / "models", progress=False)
    return Path(summary["path"])


def _copy_run(two_epochs, tmp_path) -> Path:
    import shutil

    run_dir = tmp_path / "models" / "cnn-v1" / "two"
    shutil.copytree(two_epochs, run_dir)
    return run_dir


@pytest.mark.parametrize("content, message", [
    (b"[]", r"meta.json: expected an object, found a list of 0 item"),
    (b'{"epoch": "1", "sha256": {}}', r'meta.json: field "epoch": expected an integer >= 1'),
    (b'{"epoch": 1}', r'meta.json: field "sha256" is missing'),
    (b'{"epoch": 1, "sha256": {"../../config.json": "0"}}',
     r'field "sha256": expected an object with the sha256 of model.safetensors'),
    (b'{"epoch": 1, "sha256": []}', r'field "sha256": expected an object with the sha256'),
    (b"\x80", r"meta.json: not UTF-8"),
    (b"{" * 5000, r"meta.json: (nested deeper|invalid JSON)"),
])
def test_malformed_checkpoint_meta_is_a_clear_error(two_epochs, tmp_path, capsys, content, message):
    run_dir = _copy_run(two_epochs, tmp_path)
    (run_dir / "checkpoints" / "epoch-001" / "meta.json").write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(run_dir / "checkpoints" / "epoch-001")
    capsys.readouterr()
    assert main(["evaluate", f"{run_dir}@epoch-1", "--data-dir", "/nonexistent"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err) and str(run_dir) in err


@pytest.mark.parametrize("content", [b"[1]", b'{"last": 3, "best": null}', b"\xff\xfe",
                                     b'{"last": "../../../../etc", "best": "epoch-1x"}',
                                     b"[" * 10_000, b'{"last": "epoch-009"}'])
def test_damaged_pointers_fall_back_to_the_epoch_folders(two_epochs, tmp_path, content):
    from digitnet.store.checkpoint import read_pointers, resolve_checkpoint

    checkpoints = _copy_run(two_epochs, tmp_path) / "checkpoints"
    (checkpoints / "pointers.json").write_bytes(content)
    pointers = read_pointers(checkpoints)
    assert all(re.fullmatch(r"epoch-\d+", v) for v in pointers.values())
    if "last" not in pointers:
        assert resolve_checkpoint(checkpoints, "last") == checkpoints / "epoch-002"
        with pytest.raises(CheckpointError, match="no 'best' checkpoint recorded"):
            resolve_checkpoint(checkpoints, "best")
    else:  # a well-formed pointer to a folder that is gone
        with pytest.raises(CheckpointError, match="no 'last' checkpoint recorded"):
            resolve_checkpoint(checkpoints, "last")


def test_metrics_torn_last_line_ignored_other_bad_lines_named(two_epochs, tmp_path):
    from digitnet.store import read_metrics

    run_dir = _copy_run(two_epochs, tmp_path)
    metrics = run_dir / "metrics.jsonl"
    good = metrics.read_bytes()
    metrics.write_bytes(good + b'{"epoch": 3, "train_lo')  # killed while appending
    assert [r["epoch"] for r in read_metrics(run_dir)] == [1, 2]
    for bad, message in [(b"[1, 2]\n", "line 1: expected an object"),
                         (b'{"epoch": "1"}\n', 'line 1: field "epoch": expected an integer >= 1'),
                         (b'{"epoch": 1, "seconds": NaN}\n', 'line 1: field "seconds"'),
                         (b"\xff\n", "line 1: not UTF-8"), (b"{\n", "line 1: invalid JSON")]:
        metrics.write_bytes(bad + good)
        with pytest.raises(DigitnetError, match=re.escape(f"{metrics} {message}")):
            read_metrics(run_dir)


def _alias_bomb(levels: int = 12) -> str:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\ndata: *a{levels - 1}\n"


@pytest.mark.parametrize("content, message", [
    (b"- 1\n- 2\n", r"expected a mapping of training options, found a list of 2 item"),
    (b"epochs: \xff\n", r"r.yaml: not UTF-8 text \(invalid byte at offset 8\)"),
    (b"[" * 20_000 + b"]" * 20_000, r"r.yaml: nested too deeply"),
    (b"data: " + b"[" * 200 + b"]" * 200, r"r.yaml: nested deeper than 64 levels"),
    (_alias_bomb().encode(), r"r.yaml: more than 100,000 values"),
    (b"epochs: 2001-13-01\n", r"r.yaml: cannot parse config file: month must be in 1..12"),
    (b"1: 2\nepochs: 3\n", r"unknown config key\(s\) 1;"),
    (b"epochs: [1]\n", r"config field 'epochs': expected int, found a list of 1 item"),
    (b"data: {a: 1}\n", r"config field 'data': expected a list of dataset names, found an object"),
    (b"epochs: 1\n" + b"#" * (1024 * 1024),
     r"r.yaml: config file larger than the limit of 1,048,576"),
])
def test_malformed_recipe_file_is_one_clear_error(tmp_path, capsys, content, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(content)
    with pytest.raises(DigitnetError, match=message):
        resolve_config(recipe)
    capsys.readouterr()
    assert main(["train", "--config", str(recipe), "--models-dir", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err) and not (tmp_path / "m").exists()


def test_recipe_file_that_is_a_fifo_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "r.yaml")
    with pytest.raises(DigitnetError, match="expected a regular config file, found a FIFO"):
        resolve_config(tmp_path / "r.yaml")


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("train"), r"config\.json \(train\): expected a mapping of training options"),
    (lambda c: c.update(train=[1, 2]), r"config\.json \(train\): expected a mapping of training"),
    (lambda c: c.pop("arch"), r'config\.json: field "arch" is missing'),
    (lambda c: c["arch"].update(version="one"), r'config\.json: field "arch\.version"'),
], ids=["no-train", "train-a-list", "no-arch", "arch-version-a-string"])
def test_resume_of_a_malformed_run_config_is_one_clear_error(finished_run, tmp_path, capsys,
                                                              change, message):
    """--resume reads config.json with the same structure check as loading: a damaged one is a
    one-line error naming the file and the field, and nothing in the run changes."""
    data, models = copy_store(finished_run, tmp_path)
    run_dir = models / "cnn-v1" / "done"
    config = json.loads((run_dir / "config.json").read_text())
    change(config)
    (run_dir / "config.json").write_text(json.dumps(config))
    before = snapshot(run_dir)
    assert main(["train", "--resume", "cnn-v1/done", "--models-dir", str(models), "--data-dir",
                 str(data)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err
    assert snapshot(run_dir) == before
