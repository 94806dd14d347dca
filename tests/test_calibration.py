"""Temperature scaling: the fit, where T is stored, that every consumer of probabilities uses it,
that models saved without it load as before, and `digitnet calibrate`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from conftest import make_synthetic_mnist, seven_png
from digitnet.calibration import (
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    NO_VALIDATION,
    Calibration,
    calibration_from_dict,
    fit_temperature,
)
from digitnet.cli import main
from digitnet.config import TrainConfig
from digitnet.errors import DigitnetError
from digitnet.fileio import sha256_file
from digitnet.store import load_model, save_calibration
from digitnet.store.checkpoint import verify_checkpoint
from digitnet.training.loop import fit

REF = "cnn-v1/cal"


def synthetic_logits(n: int, temperature: float, seed: int = 0):
    """Labels drawn from softmax(z), returned with logits z * T: dividing by T recovers z."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 10, generator=g, dtype=torch.float64) * 3
    labels = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)
    return z * temperature, labels


def softmax_t(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.softmax(logits.double() / temperature, dim=1)


# ------------------------------------------------------------------------------------- the fit
@pytest.mark.parametrize("true_t", [0.4, 1.0, 2.5])
def test_fit_recovers_a_known_temperature(true_t):
    logits, labels = synthetic_logits(20_000, true_t)
    calibration = fit_temperature(logits, labels)
    assert calibration.calibrated and calibration.images == 20_000
    assert calibration.temperature == pytest.approx(true_t, rel=0.03)
    assert calibration.nll_after <= calibration.nll_before
    if true_t != 1.0:
        assert calibration.nll_after < calibration.nll_before - 0.01


def test_fit_stays_in_range_and_no_images_is_not_calibrated():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0]])  # every answer right: T wants to reach 0
    calibration = fit_temperature(logits, torch.tensor([0, 1]))
    assert MIN_TEMPERATURE <= calibration.temperature < 0.2  # the NLL is 0 to float precision
    assert calibration.nll_after <= calibration.nll_before
    empty = fit_temperature(torch.empty(0, 10), torch.empty(0, dtype=torch.int64))
    assert empty == Calibration(1.0, False, NO_VALIDATION)


def test_temperature_never_changes_the_argmax():
    logits, _ = synthetic_logits(2_000, 1.0)
    for t in (MIN_TEMPERATURE, 0.5, 1.7, MAX_TEMPERATURE):
        assert torch.equal(softmax_t(logits, t).argmax(1), logits.argmax(1))


@pytest.mark.parametrize("record, expected", [
    ({"temperature": 0, "calibrated": True}, "expected a number from"),
    ({"temperature": -1.5, "calibrated": True}, "expected a number from"),
    ({"temperature": "1.5", "calibrated": True}, "expected a number from"),
    ({"temperature": float("nan"), "calibrated": True}, "expected a number from"),
    ({"temperature": 1e9, "calibrated": True}, "expected a number from"),
    ({"temperature": True, "calibrated": True}, "expected a number from"),
    ({"calibrated": True}, '"temperature" is missing'),
    ({"temperature": 1.5}, '"calibrated" is missing'),
    ({"temperature": 1.5, "calibrated": False}, "temperature 1 when not calibrated"),
    ("1.5", "expected a calibration record"),
])
def test_a_bad_calibration_record_is_refused_naming_the_source(record, expected):
    with pytest.raises(DigitnetError, match=r"^some/meta\.json: .*" + expected.replace(".", r"\.")):
        calibration_from_dict(record, "some/meta.json")


# ---------------------------------------------------------------------------------- the store
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A cnn trained for 2 epochs on synthetic MNIST with a 50-image validation split, and a
    linear model trained without one (val_size 0)."""
    root = tmp_path_factory.mktemp("calibration")
    data = make_synthetic_mnist(root / "mnist")
    models = root / "models"
    common = dict(epochs=2, batch_size=32, threads=1, augment=False, lr=0.05)
    fit(TrainConfig(arch="cnn", name="cal", val_size=50, **common), data, models, progress=False)
    fit(TrainConfig(arch="linear", name="noval", val_size=0, **common), data, models,
        progress=False)
    return dict(data=data, models=models, run=models / "cnn-v1" / "cal")


@pytest.fixture
def store(trained, tmp_path) -> dict:
    """A private copy of the trained store, for tests that change its files."""
    models = tmp_path / "models"
    shutil.copytree(trained["models"], models)
    return dict(data=trained["data"], models=models, run=models / "cnn-v1" / "cal")


def images_of(trained) -> torch.Tensor:
    from digitnet.evaluation.datasets import load_eval_dataset

    return load_eval_dataset("mnist-test", trained["data"]).images


def strip_calibration(run: Path) -> None:
    """Make `run` look like one written before calibration existed."""
    for path in [run / "summary.json", *sorted(run.glob("checkpoints/epoch-*/meta.json"))]:
        record = json.loads(path.read_text())
        del record["calibration"]
        path.write_text(json.dumps(record))


def test_every_checkpoint_and_the_final_weights_carry_their_own_temperature(trained):
    run = trained["run"]
    metas = [json.loads(p.read_text()) for p in sorted(run.glob("checkpoints/epoch-*/meta.json"))]
    summary = json.loads((run / "summary.json").read_text())
    assert len(metas) == 2 and all(m["calibration"]["calibrated"] for m in metas)
    assert all(m["calibration"]["images"] == 50 for m in metas)
    assert metas[0]["calibration"]["temperature"] != metas[1]["calibration"]["temperature"]
    assert summary["calibration"] == metas[1]["calibration"]  # the final weights are epoch 2's
    final, first = load_model(REF, trained["models"]), load_model(f"{REF}@epoch-1",
                                                                  trained["models"])
    assert final.calibration == calibration_from_dict(summary["calibration"], "summary")
    assert first.calibration == calibration_from_dict(metas[0]["calibration"], "meta")


def test_the_training_fit_is_the_nll_minimum_on_the_validation_logits(trained):
    from digitnet.evaluation.datasets import load_eval_dataset

    loaded = load_model(REF, trained["models"])
    val = load_eval_dataset("mnist-val", trained["data"], 50)
    refit = fit_temperature(loaded.logits(val.images), val.labels)
    assert loaded.temperature == pytest.approx(refit.temperature, rel=1e-4)


def test_probs_are_softmax_of_logits_over_t_and_keep_the_argmax(trained):
    loaded = load_model(REF, trained["models"])
    images = images_of(trained)
    logits = loaded.logits(images)
    assert loaded.temperature != 1.0
    torch.testing.assert_close(loaded.probs(images), softmax_t(logits, loaded.temperature),
                               rtol=0, atol=1e-12)
    assert torch.equal(loaded.probs(images).argmax(1), logits.argmax(1))


def test_no_validation_split_is_not_calibrated_and_train_says_so(trained, tmp_path, capsys):
    loaded = load_model("linear-v1/noval", trained["models"])
    assert loaded.calibration == Calibration(1.0, False, NO_VALIDATION)
    fit(TrainConfig(arch="linear", name="noval2", val_size=0, epochs=1, batch_size=32, threads=1,
                    augment=False), trained["data"], tmp_path / "m", progress=False)
    assert f"probabilities: not calibrated (temperature 1): {NO_VALIDATION}" in \
        capsys.readouterr().out


def test_a_run_written_before_calibration_loads_with_t_1_unchanged(store):
    strip_calibration(store["run"])
    for ref in (REF, f"{REF}@epoch-1", f"{REF}@last"):
        loaded = load_model(ref, store["models"])
        assert loaded.calibration == Calibration() and loaded.temperature == 1.0
        images = images_of(store)
        assert torch.equal(loaded.probs(images), torch.softmax(loaded.logits(images).double(), 1))


@pytest.mark.parametrize("bad", ["0", "-1.0", "NaN", "Infinity", '"1.2"', "null"])
@pytest.mark.parametrize("which", ["summary.json", "checkpoints/epoch-002/meta.json"])
def test_a_bad_temperature_on_disk_is_refused_naming_the_file(store, which, bad):
    path = store["run"] / which
    text = json.dumps(json.loads(path.read_text()))
    record = json.loads(text)["calibration"]
    old = f'"temperature": {json.dumps(record["temperature"])}'
    assert old in text
    path.write_text(text.replace(old, f'"temperature": {bad}'))
    ref = REF if which == "summary.json" else f"{REF}@epoch-2"
    with pytest.raises(DigitnetError, match=rf"{path}.*calibration\.temperature.*expected a "
                                            rf"number from {MIN_TEMPERATURE}"):
        load_model(ref, store["models"])


def test_a_run_resumed_from_an_old_checkpoint_calibrates_the_epochs_it_trains(store):
    # a run stopped after epoch 1 by a version without calibration: resuming fits T from then on
    run = store["run"]
    shutil.rmtree(run / "checkpoints" / "epoch-002")
    for name in ("summary.json", "model.safetensors"):
        os.remove(run / name)
    (run / "checkpoints" / "pointers.json").write_text(json.dumps(
        {"last": "epoch-001", "best": "epoch-001"}))
    rows = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(rows[0] + "\n")
    meta_path = run / "checkpoints" / "epoch-001" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["calibration"]
    meta_path.write_text(json.dumps(meta))
    fit(resume=REF, data_dir=store["data"], models_dir=store["models"], progress=False)
    assert load_model(f"{REF}@epoch-1", store["models"]).calibration == Calibration()
    second = load_model(f"{REF}@epoch-2", store["models"]).calibration
    assert second.calibrated and second.images == 50
    assert load_model(REF, store["models"]).calibration == second


# ------------------------------------------------------------------------------ calibrate
def test_calibrate_fits_and_stores_t_without_touching_the_weights(store, capsys):
    trained_final = load_model(REF, store["models"]).calibration
    trained_first = load_model(f"{REF}@epoch-1", store["models"]).calibration
    strip_calibration(store["run"])
    run = store["run"]
    weights = {p: sha256_file(p) for p in run.rglob("*") if p.suffix in (".safetensors", ".pt")}
    args = ["--data-dir", str(store["data"]), "--models-dir", str(store["models"])]
    assert main(["calibrate", REF, *args]) == 0
    out = capsys.readouterr().out
    assert "before: not calibrated (temperature 1)" in out and "now:    calibrated with" in out
    assert main(["calibrate", f"{REF}@epoch-1", *args]) == 0
    assert {p: sha256_file(p) for p in weights} == weights
    for checkpoint in run.glob("checkpoints/epoch-*"):
        verify_checkpoint(checkpoint)  # the sha256 of weights and state still hold
    final, first = load_model(REF, store["models"]), load_model(f"{REF}@epoch-1", store["models"])
    assert final.temperature == pytest.approx(trained_final.temperature, rel=1e-4)
    assert first.temperature == pytest.approx(trained_first.temperature, rel=1e-4)
    assert load_model(f"{REF}@epoch-2", store["models"]).calibration == Calibration()


def test_calibrate_refuses_a_model_without_validation_split_and_an_export(store, tmp_path,
                                                                           capsys):
    from digitnet.deploy.export import export_model

    args = ["--data-dir", str(store["data"]), "--models-dir", str(store["models"])]
    assert main(["calibrate", "linear-v1/noval", *args]) == 1
    assert "val_size 0" in capsys.readouterr().err
    export_model(REF, tmp_path / "export", store["data"], store["models"])
    assert main(["calibrate", str(tmp_path / "export"), *args]) == 1
    assert "an exported model; calibrate its source run cnn-v1/cal" in capsys.readouterr().err


def test_calibrate_refuses_a_run_being_trained(store):
    from digitnet.store import lock_run

    loaded = load_model(REF, store["models"])
    with lock_run(store["run"]), pytest.raises(DigitnetError, match="being trained"):
        save_calibration(loaded, Calibration(2.0, True, None, 5))


# -------------------------------------------------------------- every consumer of probabilities
def test_predict_and_serve_report_softmax_of_logits_over_t(trained):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from digitnet.data.preprocess import preprocess
    from digitnet.deploy import serve
    from digitnet.deploy.predict import predict_images

    loaded = load_model(REF, trained["models"])
    png = seven_png()
    expected = softmax_t(loaded.logits(torch.from_numpy(preprocess(png).image[None])),
                         loaded.temperature)[0].tolist()
    [entry] = predict_images(loaded, [png])
    assert entry["probabilities"] == pytest.approx(expected, abs=1e-6)
    client = TestClient(serve.create_app(loaded))
    body = client.post("/predict", files={"file": ("d.png", png, "image/png")}).json()
    assert body["probabilities"] == pytest.approx(expected, abs=1e-6)
    info = client.get("/info").json()
    assert info["temperature"] == loaded.temperature and info["calibrated"] is True


def test_evaluate_uses_calibrated_probabilities_and_reports_the_raw_ece(trained):
    from digitnet.evaluation.datasets import load_eval_dataset
    from digitnet.evaluation.evaluate import evaluate_on
    from digitnet.evaluation.metrics import compute_metrics, expected_calibration_error

    loaded = load_model(REF, trained["models"])
    dataset = load_eval_dataset("mnist-test", trained["data"])
    result, probs = evaluate_on(loaded, dataset)
    logits, labels = loaded.logits(dataset.images), dataset.labels.numpy()
    torch.testing.assert_close(probs, softmax_t(logits, loaded.temperature), rtol=0, atol=1e-12)
    expected = compute_metrics(labels, softmax_t(logits, loaded.temperature).numpy())
    assert result["ece"] == pytest.approx(expected["ece"])
    assert result["loss"] == pytest.approx(expected["loss"])
    assert result["ece_uncalibrated"] == pytest.approx(
        expected_calibration_error(labels, softmax_t(logits, 1.0).numpy()))
    assert result["ece_uncalibrated"] != pytest.approx(result["ece"])
    assert result["calibration"]["temperature"] == loaded.temperature


def test_an_ensemble_averages_each_members_calibrated_probabilities(trained):
    from digitnet.evaluation.datasets import load_eval_dataset
    from digitnet.evaluation.ensemble import evaluate_ensemble
    from digitnet.evaluation.metrics import compute_metrics

    refs = [REF, f"{REF}@epoch-1"]
    [result] = evaluate_ensemble(refs, ["mnist-test"], trained["data"], trained["models"])
    dataset = load_eval_dataset("mnist-test", trained["data"])
    members = [load_model(r, trained["models"]) for r in refs]
    assert members[0].temperature != members[1].temperature
    mean = sum(softmax_t(m.logits(dataset.images), m.temperature) for m in members) / 2
    expected = compute_metrics(dataset.labels.numpy(), mean.numpy())
    assert result["ece"] == pytest.approx(expected["ece"])
    assert result["loss"] == pytest.approx(expected["loss"])
    assert [m["temperature"] for m in result["members"]] == [m.temperature for m in members]


# -------------------------------------------------------------------------------- exports
def test_export_round_trip_and_onnx_give_the_calibrated_probabilities(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    from digitnet.data.datasets import to_model_input
    from digitnet.deploy.export import export_model
    from digitnet.deploy.onnx import read_onnx_metadata, run_onnx
    from digitnet.store.hub import load_exported

    loaded = load_model(REF, trained["models"])
    out = tmp_path / "export"
    info = export_model(REF, out, trained["data"], trained["models"], onnx=True)
    config = json.loads((out / "config.json").read_text())
    assert config["calibration"] == loaded.calibration.to_dict()
    assert info["config"]["onnx"]["temperature"] == loaded.temperature
    card = (out / "README.md").read_text()
    assert f"divided by T = {loaded.temperature:.4f}" in card
    back = load_exported(out)
    images = images_of(trained)[:64]
    assert back.calibration == loaded.calibration
    torch.testing.assert_close(back.probs(images), loaded.probs(images), rtol=0, atol=1e-12)
    x = to_model_input(images, loaded.data_config["mean"], loaded.data_config["std"])
    onnx_logits = torch.from_numpy(run_onnx(out / "model.onnx", x))
    torch.testing.assert_close(torch.softmax(onnx_logits.double(), 1), loaded.probs(images),
                               rtol=0, atol=1e-5)
    assert torch.equal(onnx_logits.argmax(1), loaded.logits(images).argmax(1))
    metadata = read_onnx_metadata(out / "model.onnx")
    assert float(metadata["temperature"]) == loaded.temperature


def test_an_export_written_before_calibration_loads_with_t_1(trained, tmp_path):
    from digitnet.deploy.export import export_model
    from digitnet.store.hub import load_exported

    out = tmp_path / "export"
    export_model(REF, out, trained["data"], trained["models"])
    config = json.loads((out / "config.json").read_text())
    del config["calibration"]
    (out / "config.json").write_text(json.dumps(config))
    back = load_exported(out)
    assert back.calibration == Calibration()
    config["calibration"] = {"temperature": -2, "calibrated": True}
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(DigitnetError, match=rf"{out / 'config.json'}.*calibration\.temperature"):
        load_exported(out)


def test_not_calibrated_models_say_so_in_the_card(trained, tmp_path):
    from digitnet.deploy.export import export_model

    out = tmp_path / "export"
    export_model("linear-v1/noval", out, trained["data"], trained["models"])
    card = (out / "README.md").read_text()
    assert "not calibrated" in card and NO_VALIDATION in card
    assert json.loads((out / "config.json").read_text())["calibration"]["temperature"] == 1.0
