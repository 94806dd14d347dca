"""Training runs, checkpoints, exact resume, corrupt and unsafe checkpoints, loading."""

import json
import os
import re
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
from digitnet.training.checkpoint import CheckpointError, load_checkpoint
from digitnet.training.loop import fit, resolve_device

FAST = dict(epochs=3, batch_size=32, val_size=50, threads=1, augment=False)


def run(tmp_path, data_dir, **overrides):
    cfg = TrainConfig(**{**FAST, **overrides})
    return fit(cfg, data_dir=data_dir, models_dir=tmp_path / "models", progress=False)


def weights(run_dir) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(run_dir) / "model.safetensors"))


def test_run_folder_holds_everything(tmp_path, synthetic_mnist):
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
    assert 0.0 <= summary["test_acc"] <= 1.0


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
    summary = run(tmp_path, synthetic_mnist, name="c")
    last = Path(summary["path"]) / "checkpoints" / "epoch-003" / "model.safetensors"
    data = bytearray(last.read_bytes())
    data[-10] ^= 0xFF
    last.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt or tampered"):
        load_model("cnn-v1/c@last", models_dir=tmp_path / "models")
    resumed = fit(models_dir=tmp_path / "models", data_dir=synthetic_mnist, resume="cnn-v1/c",
                  progress=False)
    err = capsys.readouterr().err
    assert "skipping bad checkpoint" in err and "epoch-002" in err
    assert resumed["epochs_done"] == 3
    load_checkpoint(Path(summary["path"]) / "checkpoints" / "epoch-003")  # rewritten, good again


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
    assert loaded.logits(torch.zeros(3, 28, 28, dtype=torch.uint8)).shape == (3, 10)


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
    summary = run(tmp_path, synthetic_mnist, name="noval", val_size=0)
    pointers = json.loads((Path(summary["path"]) / "checkpoints" / "pointers.json").read_text())
    assert pointers["best"] == "epoch-003"
    resumed = fit(models_dir=tmp_path / "models", data_dir=synthetic_mnist, resume="cnn-v1/noval@epoch-1",
                  progress=False)
    assert resumed["epochs_done"] == 3
    assert all(torch.equal(weights(summary["path"])[k], v) for k, v in weights(resumed["path"]).items())


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
    (b'{"epoch": 1, "sha256": {"../../config.json": "0"}}', r'field "sha256": expected an object '
                                                              r"with the sha256 of model.safetensors"),
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
    from digitnet.training.checkpoint import read_pointers, resolve_checkpoint

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
    (b"epochs: 1\n" + b"#" * (1024 * 1024), r"r.yaml: config file larger than the limit of 1,048,576"),
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
