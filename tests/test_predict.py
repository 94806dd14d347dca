"""Predictions on new images: files, folders and globs, JSON output, blank and broken files, and
agreement between a rendered photo-like digit and the raw MNIST digit."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bounded import run_bounded
from digitnet.cli import main
from digitnet.config import TrainConfig
from digitnet.data.idx import read_idx
from digitnet.deploy.predict import (
    expand_inputs,
    predict_files,
    predict_images,
    prepare_for_prediction,
)
from digitnet.errors import DigitnetError
from digitnet.store import load_model
from digitnet.training.loop import fit

JSON_KEYS = {"file", "label", "probabilities", "top_k", "digit_found", "reason", "error"}


def render(digit: np.ndarray, size: int = 200) -> Image.Image:
    """An MNIST digit as dark ink on white paper, scaled up like a scan."""
    big = Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC)
    return Image.fromarray(255 - np.asarray(big))


@pytest.fixture(scope="module")
def digits(mnist_dir) -> tuple[np.ndarray, np.ndarray]:
    """The first 60 MNIST test digits and their labels."""
    return (read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")[:60],
            read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")[:60])


@pytest.fixture(scope="module")
def model(tmp_path_factory, mnist_dir) -> dict:
    """An MLP trained for a few seconds on 3,000 real MNIST digits (about 90% test accuracy)."""
    models = tmp_path_factory.mktemp("predict") / "models"
    cfg = TrainConfig(arch="mlp", epochs=2, subset=3000, val_size=500, augment=False,
                      batch_size=64, threads=1, name="quick", lr=0.05, weight_decay=5e-4,
                      precision="fp32")  # the recipe before issue 14 (lr 0.4 diverges here)
    fit(cfg, mnist_dir, models, progress=False)
    return dict(ref="mlp-v1/quick", models=str(models), loaded=load_model("mlp-v1/quick", models))


@pytest.fixture
def images(tmp_path, digits) -> Path:
    """A folder: 3 digits (two in a subfolder, one JPEG), a hidden file and a text file."""
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    render(digits[0][0], 120).save(folder / "a.png")
    render(digits[0][1], 150).save(folder / "sub" / "b.jpg", quality=90)
    render(digits[0][2], 100).save(folder / "sub" / "c.PNG")
    render(digits[0][3], 100).save(folder / ".hidden.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def run_json(model, capsys, *args) -> tuple[int, list[dict]]:
    code = main(["predict", model["ref"], *map(str, args), "--json", "--models-dir",
                 model["models"]])
    return code, json.loads(capsys.readouterr().out)


# -------------------------------------------------------------------------------------- inputs
def test_folders_are_recursive_sorted_and_skip_hidden_and_non_images(images):
    files = [p for p, error in expand_inputs([images])]
    assert files == [str(images / "a.png"), str(images / "sub" / "b.jpg"),
                     str(images / "sub" / "c.PNG")]


def test_globs_expanded_and_duplicates_kept_once(images, monkeypatch):
    monkeypatch.chdir(images)
    expanded = expand_inputs(["sub/*", "a.png", "**/*.jpg", "notes.txt"])
    assert expanded == [("sub/b.jpg", None), ("sub/c.PNG", None), ("a.png", None),
                        ("notes.txt", None)]


@pytest.mark.parametrize("item, message", [("nothing-*.png", "no files match"),
                                           ("empty", "no image files in this folder")])
def test_inputs_that_give_no_file_are_errors(tmp_path, item, message):
    (tmp_path / "empty").mkdir()
    [(path, error)] = expand_inputs([str(tmp_path / item)])
    assert path == str(tmp_path / item) and message in error


# ---------------------------------------------------------------------------------- prediction
def test_cli_json_files_folders_and_globs(model, images, digits, capsys):
    code, entries = run_json(model, capsys, images / "sub", f"{images}/*.png", "--top-k", "5")
    assert code == 0
    assert [Path(e["file"]).name for e in entries] == ["b.jpg", "c.PNG", "a.png"]
    for entry in entries:
        assert JSON_KEYS <= set(entry)
        assert entry["digit_found"] and entry["error"] is None and entry["reason"] is None
        assert len(entry["probabilities"]) == 10
        assert sum(entry["probabilities"]) == pytest.approx(1, abs=1e-4)
        probs = [p for _, p in entry["top_k"]]
        assert len(entry["top_k"]) == 5 and probs == sorted(probs, reverse=True)
        assert entry["top_k"][0][0] == entry["label"] == int(np.argmax(entry["probabilities"]))
        assert entry["top_k"][0][1] == max(entry["probabilities"])


def test_blank_image_has_no_label(model, tmp_path, capsys):
    Image.new("RGB", (300, 200), (245, 240, 230)).save(tmp_path / "blank.png")
    code, [entry] = run_json(model, capsys, tmp_path / "blank.png")
    assert code == 0
    assert entry["digit_found"] is False and entry["label"] is None
    assert entry["probabilities"] is None and entry["top_k"] == [] and entry["error"] is None
    assert "blank" in entry["reason"]
    code = main(["predict", model["ref"], str(tmp_path / "blank.png"), "--models-dir",
                 model["models"]])
    assert code == 0
    assert "no digit found" in capsys.readouterr().out


def test_unreadable_file_reported_others_predicted(model, images, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    data = (images / "a.png").read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    code, entries = run_json(model, capsys, broken, images / "a.png", tmp_path / "missing.png")
    assert code == 1
    assert [e["error"] is None for e in entries] == [False, True, False]
    assert "truncated or corrupt" in entries[0]["error"] and "file not found" in entries[2]["error"]
    assert entries[0]["label"] is None and entries[0]["digit_found"] is False
    assert entries[1]["label"] is not None
    code = main(["predict", model["ref"], str(broken), str(images / "a.png"), "--models-dir",
                 model["models"]])
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert code == 1 and len(lines) == 2
    assert lines[0].startswith(f"{broken}  error: ")
    assert lines[1].startswith(f"{images / 'a.png'}  {entries[1]['label']}  {entries[1]['label']}:")
    assert "2 files: 1 digit, 0 without a digit, 1 error" in captured.err


def test_rendered_digits_agree_with_raw_digits(model, digits):
    """A 28x28 MNIST digit and the same digit as a 200 px dark-on-light scan get the same label."""
    loaded = model["loaded"]
    raw = loaded.logits(torch.from_numpy(digits[0].copy())).argmax(1).tolist()
    entries = predict_images(loaded, [np.asarray(render(d)) for d in digits[0]])
    agree = np.mean([e["label"] == r for e, r in zip(entries, raw, strict=True)])
    assert agree >= 0.85  # measured 0.95 on the first 100 test digits
    assert np.mean([e["label"] == y for e, y in zip(entries, digits[1], strict=True)]) >= 0.8


def test_predict_images_takes_arrays_and_pil_and_returns_what_the_model_saw(model, digits):
    inputs = [render(digits[0][0]), np.asarray(render(digits[0][1])), np.zeros((50, 50), np.uint8)]
    entries = predict_images(model["loaded"], inputs, top_k=1, names=["pil", "array", "black"],
                             with_images=True)
    assert [e["file"] for e in entries] == ["pil", "array", "black"]
    assert entries[0]["image"].shape == (28, 28) and entries[0]["image"].dtype == np.uint8
    assert entries[2]["image"] is None and entries[2]["label"] is None
    assert len(entries[0]["top_k"]) == 1
    from digitnet.data.preprocess import preprocess

    for entry, given in zip(entries[:2], inputs[:2]):  # the image is the one preprocessing gives
        assert np.array_equal(entry["image"], preprocess(given).image)
        logits = model["loaded"].logits(torch.from_numpy(entry["image"][None]))
        temperature = model["loaded"].temperature  # fitted on its 500 validation images
        assert model["loaded"].calibration.calibrated and temperature != 1.0
        probs = torch.softmax(logits.double() / temperature, 1)
        assert entry["probabilities"] == pytest.approx(probs[0].tolist(), abs=1e-5)
        assert entry["label"] == entry["top_k"][0][0] == int(probs.argmax())


def test_predict_files_matches_predict_images(model, images):
    by_file = predict_files(model["loaded"], [images])
    by_image = predict_images(model["loaded"], [e["file"] for e in by_file])
    assert by_file == by_image


def test_prepared_model_is_made_once_and_predicts_the_same(model, digits):
    """A server prepares the model once; predictions equal those of the model as loaded."""
    import dataclasses

    from torch import nn

    from digitnet.models import create_model

    torch.manual_seed(0)
    cnn = create_model("cnn").eval()
    for bn in (m for m in cnn.modules() if isinstance(m, nn.BatchNorm2d)):  # non-trivial stats
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    loaded = dataclasses.replace(model["loaded"], model=cnn)
    prepared = prepare_for_prediction(loaded)
    assert prepared is not loaded and prepared_is_folded(prepared.model)
    assert prepare_for_prediction(prepared) is prepared
    assert not prepared_is_folded(loaded.model)  # the loaded model is left as it was
    images = torch.from_numpy(digits[0][:20].copy())
    torch.testing.assert_close(prepared.logits(images), loaded.logits(images), atol=1e-4, rtol=1e-4)
    inputs = [render(d) for d in digits[0][:5]]
    assert predict_images(prepared, inputs) == predict_images(loaded, inputs)


def prepared_is_folded(module) -> bool:
    from torch import nn

    return not any(isinstance(m, nn.BatchNorm2d) for m in module.modules())


@pytest.mark.parametrize("top_k", [0, 11])
def test_top_k_out_of_range(model, images, top_k, capsys):
    with pytest.raises(DigitnetError, match="top_k must be 1 to 10"):
        predict_files(model["loaded"], [images], top_k)
    assert main(["predict", model["ref"], str(images), "--top-k", str(top_k), "--models-dir",
                 model["models"]]) == 1
    assert "top_k must be 1 to 10" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["named", "in-a-folder", "by-glob"])
def test_fifo_and_device_are_errors_never_read(images, monkeypatch, how):
    fifo, zero = images / "pipe.png", images / "zero.png"
    os.mkfifo(fifo)
    zero.symlink_to("/dev/zero")
    monkeypatch.chdir(images)
    inputs = {"named": [fifo, zero, "/dev/zero"], "in-a-folder": [images],
              "by-glob": ["*.png"]}[how]
    expanded = run_bounded(lambda: expand_inputs(inputs), fifo=fifo)
    errors = {Path(p).name: e for p, e in expanded if e is not None}
    assert errors["pipe.png"].endswith("pipe.png: expected a regular image file, found a FIFO")
    assert errors["zero.png"].endswith("zero.png: expected a regular image file, found a device")
    if how == "named":
        assert errors["zero"] == "/dev/zero: expected a regular image file, found a device"
    else:  # the regular images are still there to predict
        assert "a.png" in {Path(p).name for p, e in expanded if e is None}


def test_predict_reports_a_fifo_and_predicts_the_rest(model, images, capsys):
    os.mkfifo(images / "pipe.png")
    code, entries = run_bounded(lambda: run_json(model, capsys, images), fifo=images / "pipe.png")
    assert code == 1
    by_name = {Path(e["file"]).name: e for e in entries}
    assert "found a FIFO" in by_name["pipe.png"]["error"] and by_name["pipe.png"]["label"] is None
    assert by_name["a.png"]["label"] is not None and len(entries) == 4


# ------------------------------------------------------------------- README promises (issue 18)
def test_text_mode_prints_file_label_and_the_top_3_by_default(model, images, capsys):
    """Text mode: one line per file with the label and the top-k (default 3) with probabilities."""
    code = main(["predict", model["ref"], str(images / "a.png"), "--models-dir", model["models"]])
    assert code == 0
    [line] = capsys.readouterr().out.splitlines()
    m = re.fullmatch(rf"{re.escape(str(images / 'a.png'))}  (\d)  ((?:\d:\d+\.\d%\s*)+)", line)
    assert m, line
    ranked = m.group(2).split()
    assert len(ranked) == 3 and ranked[0].split(":")[0] == m.group(1)
    code, [entry] = run_json(model, capsys, images / "a.png")
    assert len(entry["top_k"]) == 3 and [str(c) for c, _ in entry["top_k"]] == [
        r.split(":")[0] for r in ranked]
