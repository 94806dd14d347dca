"""The real-world benchmark's renderings (benchmarks/renderings.py) and its CLI
(benchmarks/real_world.py): deterministic files of the promised kind, and a real run."""

from __future__ import annotations

import csv
import dataclasses
import functools
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from scipy import ndimage

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load_script(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


R = _load_script("renderings")
ALL = [*R.RENDERINGS, R.EURO_ONE.name]
SCANS = {"scan16-grey": 16, "scan16-binary-stretched": 16, "scan32-binary": 32}
# (size or None for photos, modes) of the decoded file
EXPECTED = {
    "scan16-grey": ((16, 16), {"L"}), "scan16-binary-stretched": ((16, 16), {"1", "L"}),
    "scan32-binary": ((32, 32), {"1"}), "scan64-grey": ((64, 64), {"L"}),
    "drawing-dark": ((280, 280), {"RGB"}), "drawing-light": ((280, 280), {"L", "RGB"}),
    "drawing-transparent": ((280, 280), {"RGBA"}), "mnist-png": ((28, 28), {"L"}),
}
LIGHT_ON_DARK = {"drawing-light", "mnist-png"}


@functools.cache
def _digits(mnist_dir: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return R.pick_digits("val", 2, 0, mnist_dir)


@functools.cache
def _rendered(mnist_dir: str, name: str, k: int = 0) -> tuple[bytes, str, dict]:
    images, _, index = _digits(mnist_dir)
    return R.render_one(name, images[k], int(index[k]))


def _decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize("name", ALL)
def test_rendering_is_deterministic_and_seeded(mnist_dir, name):
    images, _, index = _digits(str(mnist_dir))
    first = _rendered(str(mnist_dir), name)
    again = R.render_one(name, images[0], int(index[0]))
    assert first[0] == again[0] and first[2] == again[2]
    other_seed = R.render_one(name, images[0], int(index[0]), seed=1)
    if name != "mnist-png":  # the only rendering without randomness
        assert other_seed[0] != first[0]
    json.dumps(first[2])  # the parameters are JSON, for images.csv and the report


@pytest.mark.parametrize("name", ALL)
def test_rendering_decodes_to_the_promised_size_and_mode(mnist_dir, name):
    data, ext, params = _rendered(str(mnist_dir), name)
    image = _decoded(data)
    assert image.format == {"png": "PNG", "jpg": "JPEG"}[ext]
    if name in EXPECTED:
        size, modes = EXPECTED[name]
        assert image.size == size and image.mode in modes
    else:  # photos: JPEG in colour, as large as the rendering says
        assert R.RENDERINGS.get(name, R.EURO_ONE).kind == "photo"
        assert image.mode == "RGB" and sorted(ImageOps.exif_transpose(image).size) == sorted(
            params["size"])
        low = {"photo-small-in-large": 1600, "photo-jpeg-low": 240}.get(name, 400)
        assert max(image.size) >= low * 0.99


@pytest.mark.parametrize("name", ALL)
def test_ink_is_dark_on_light_paper_unless_named_otherwise(mnist_dir, name):
    image = _decoded(_rendered(str(mnist_dir), name)[0])
    if name == "drawing-transparent":  # alpha is the ink
        alpha = np.asarray(image)[..., 3]
        assert alpha.min() == 0 and alpha.max() == 255 and (alpha > 0).mean() < 0.4
        return
    grey = np.asarray(ImageOps.exif_transpose(image).convert("L"), np.float32)
    ring = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])  # the frame
    if name in LIGHT_ON_DARK:
        assert np.median(grey) < 40 and np.mean(ring < 128) > 0.9 and grey.max() > 200
    else:
        paper = np.percentile(grey, 90)  # the lit paper (a shadow may cover half the photo)
        ink = np.percentile(grey, 0.5)  # the darkest pixels are the digit (or a shadow on it)
        assert paper > 120 and paper - ink > 35, (paper, ink)
        if name in SCANS or name == "scan64-grey":  # the ink fills the frame, but is a minority
            assert np.mean(grey < (paper + ink) / 2) < 0.6
        else:
            assert np.mean(ring > ink + 20) > 0.6


@pytest.mark.parametrize("name", [*SCANS, "scan64-grey"])
@pytest.mark.parametrize("k", range(4))
def test_scans_fill_their_frame(mnist_dir, name, k):
    grey = np.asarray(_decoded(_rendered(str(mnist_dir), name, k)[0]).convert("L"))
    ink = grey < 128
    reach = 0 if name in SCANS else 4  # px from the border: 64x64 scans keep a thin margin
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    side = grey.shape[0] - 1
    touches_rows = rows[0] <= reach and rows[-1] >= side - reach
    touches_cols = cols[0] <= reach and cols[-1] >= side - reach
    assert touches_rows or touches_cols


def test_stretched_scans_lose_the_aspect_ratio(mnist_dir):
    stretch = [_rendered(str(mnist_dir), "scan16-binary-stretched", k)[2]["stretch"]
               for k in range(8)]
    assert max(stretch) > 1.3  # not merely scaled


@pytest.mark.parametrize("k", range(3))
def test_exif_rendering_stores_rotated_pixels_with_an_orientation_tag(mnist_dir, k):
    data, _, params = _rendered(str(mnist_dir), "photo-exif-rotated", k)
    image = _decoded(data)
    orientation = image.getexif().get(R.ORIENTATION)
    assert orientation == params["orientation"] and orientation in (3, 6, 8)
    upright = ImageOps.exif_transpose(image)
    assert list(upright.size) == params["size"]
    if orientation in (6, 8):
        assert image.size == upright.size[::-1]


@pytest.mark.parametrize("name", ["drawing-dark", "drawing-light", "drawing-transparent"])
def test_drawings_keep_a_wide_digit_on_the_canvas_and_filled_loops_filled(name):
    """A wide digit (a flat 0 stretched over MNIST's box) is drawn inside the 280x280 canvas, as
    a person draws, not cut at its edge; a loop filled in (a solid disk under a stem, as in some
    MNIST 8s and 9s) stays filled instead of being redrawn as the skeleton's line."""
    yy, xx = np.mgrid[0:28, 0:28]
    flat = (((yy - 14) / 5.0) ** 2 + ((xx - 14) / 13.0) ** 2)
    ring = ((flat > 0.55) & (flat < 1.0)).astype(np.uint8) * 255
    blob = (((yy - 18) ** 2 + (xx - 14) ** 2) <= 25) | ((abs(xx - 14) <= 1) & (yy >= 4) & (yy < 18))
    for digit, filled in ((ring, False), (blob.astype(np.uint8) * 255, True)):
        for seed in range(3):
            image = _decoded(R.render_one(name, digit, seed)[0])
            alpha = np.asarray(image.getchannel("A") if image.mode == "RGBA" else
                               ImageOps.invert(image.convert("L")) if name == "drawing-dark" else
                               image.convert("L"), np.float32) / 255
            ink = alpha > 0.5
            assert not (ink[:, 0].any() and ink[:, -1].any()), (name, seed)  # not cut at both sides
            if not filled:  # the ring is whole: its hole is not joined to the paper around it
                labels, _ = ndimage.label(~ink)  # (pockets where it touches an edge aside)
                assert np.count_nonzero(np.bincount(labels.ravel())[1:] > 1000) == 2, (name, seed)
            else:  # the disk's centre, 4 px of 28 below the middle, is inked
                rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
                height = rows[-1] - rows[0]
                cy = rows[0] + round(height * (18 - 4 + 0.5) / (23.5 - 4 + 0.5))
                cx = (cols[0] + cols[-1]) // 2
                assert ink[cy - 3:cy + 4, cx - 3:cx + 4].all(), (name, seed)


def test_mnist_png_is_the_digit_itself(mnist_dir):
    images, _, _ = _digits(str(mnist_dir))
    data = _rendered(str(mnist_dir), "mnist-png")[0]
    assert np.array_equal(np.asarray(_decoded(data)), images[0])


def test_plain_step_gives_an_mnist_digit_back_for_mnist_png(mnist_dir):
    real_world = _load_script("real_world")
    images, _, _ = _digits(str(mnist_dir))
    for k in range(6):
        data = _rendered(str(mnist_dir), "mnist-png", k)[0]
        out = real_world.plain_step(data)
        assert out.shape == (28, 28) and out.dtype == np.uint8
        ys, xs = np.mgrid[0:28, 0:28]
        w = out.astype(float)
        assert abs((ys * w).sum() / w.sum() - 14) < 1 and abs((xs * w).sum() / w.sum() - 14) < 1
        corr = np.corrcoef(out.ravel().astype(float), images[k].ravel().astype(float))[0, 1]
        assert corr > 0.85, (k, corr)


def test_plain_step_finds_nothing_on_a_blank_page():
    real_world = _load_script("real_world")
    buf = io.BytesIO()
    Image.new("L", (40, 30), 230).save(buf, "PNG")
    assert real_world.plain_step(buf.getvalue()) is None


def test_pick_digits_takes_validation_or_test_digits(mnist_dir):
    from digitnet.data.datasets import SPLIT_SEED, stratified_indices
    from digitnet.data.mnist import load_mnist

    mnist = load_mnist(mnist_dir)
    val_pool = set(stratified_indices(mnist.train_labels, R.VAL_SIZE, SPLIT_SEED).tolist())
    images, labels, index = R.pick_digits("val", 3, 0, str(mnist_dir))
    assert set(index.tolist()) <= val_pool and len(set(index.tolist())) == 30
    assert np.bincount(labels, minlength=10).tolist() == [3] * 10
    assert np.array_equal(images, mnist.train_images.numpy()[index])
    images, labels, index = R.pick_digits("test", 2, 0, str(mnist_dir))
    assert np.array_equal(images, mnist.test_images.numpy()[index])
    assert np.array_equal(labels, mnist.test_labels.numpy()[index])
    with pytest.raises(ValueError, match="split"):
        R.pick_digits("train", 1, 0, str(mnist_dir))


def test_render_split_renders_the_same_digits_for_every_rendering(mnist_dir, monkeypatch):
    half = dataclasses.replace(R.RENDERINGS["scan16-grey"], share=0.5)  # as the large photos
    monkeypatch.setitem(R.RENDERINGS, "scan16-grey", half)
    names = ["mnist-png", "scan16-binary-stretched", "scan16-grey"]
    rows = list(R.render_split("test", 4, 0, names, str(mnist_dir)))
    by_name = {n: [(label, i) for m, label, i, _, _ in rows if m == n] for n in names}
    assert len(by_name["mnist-png"]) == 40
    assert by_name["mnist-png"] == by_name["scan16-binary-stretched"]
    assert len(by_name["scan16-grey"]) == 10 * R.count_for("scan16-grey", 4) == 20
    assert set(by_name["scan16-grey"]) <= set(by_name["mnist-png"])
    from digitnet.data.mnist import load_mnist

    test_images = load_mnist(mnist_dir).test_images.numpy()
    for name, _, i, data, _ in rows:
        if name == "mnist-png":
            assert np.array_equal(np.asarray(_decoded(data)), test_images[i])


def _run(args: list[str], mnist_dir, script: str | None = None) -> subprocess.CompletedProcess:
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src, "DIGITNET_DATA_DIR": str(mnist_dir),
           "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, script or str(BENCHMARKS / "real_world.py"), *args],
                          env=env, capture_output=True, text=True, timeout=300)


def test_real_world_evaluate_writes_the_report(serve_model, mnist_dir, tmp_path):
    out, sheet = tmp_path / "run.json", tmp_path / "sheet.png"
    names = "scan16-grey,mnist-png,photo-euro-one"
    done = _run(["evaluate", "cnn-v1/tiny", "--models-dir", serve_model["models"], "--split",
                 "val", "--n-per-class", "1", "--names", names, "--json", str(out), "--sheet",
                 str(sheet), "--threads", "1"], mnist_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["split"] == "val" and report["n_per_class"] == 1
    assert report["pipeline"]["preprocess_version"] >= 1 and report["wall_seconds"] > 0
    (model,) = report["models"]
    assert model["model"] == "cnn-v1/tiny" and list(model["renderings"]) == names.split(",")
    for name, row in model["renderings"].items():
        assert row["n"] == 10 and 0 <= row["accuracy"] <= 1 and 0 <= row["no_digit"] <= 1
        assert 0 <= row["clean_accuracy"] <= 1 and 0 <= row["plain_accuracy"] <= 1, name
    png = model["renderings"]["mnist-png"]
    assert isinstance(png["identical_images"], bool) and "max_probability_difference" in png
    assert "read_as_7" in model["renderings"]["photo-euro-one"]
    assert "| scan16-grey | 10 |" in done.stdout
    assert Image.open(sheet).size[1] >= 3 * 56  # a row per rendering
    real_world = _load_script("real_world")
    compared = real_world.to_markdown(report, baseline=report)
    assert "| baseline | change |" in compared and "| +0.00 |" in compared


def test_real_world_cache_scores_what_evaluate_scores(serve_model, mnist_dir, tmp_path):
    """benchmarks/real_world_cache.py: the images preprocessed once, then a model's accuracy per
    rendering equals what `real_world.py evaluate` reports for the same digits (both processes
    of the pool and one process give the same cache)."""
    cache, one, out = tmp_path / "c.npz", tmp_path / "one.npz", tmp_path / "run.json"
    names = "scan16-grey,mnist-png,photo-euro-one"
    script = str(BENCHMARKS / "real_world_cache.py")
    for path, workers in ((cache, "2"), (one, "1")):
        done = _run(["build", str(path), "--split", "val", "--n-per-class", "1", "--names",
                     names, "--workers", workers], mnist_dir, script)
        assert done.returncode == 0 and "30 images" in done.stdout, done.stderr[-2000:]
    a, b = np.load(cache), np.load(one)
    assert all(np.array_equal(a[k], b[k]) for k in ("images", "found", "labels", "names"))
    assert set(a["labels"][a["names"] == "photo-euro-one"]) == {1}
    scored = _run(["score", str(cache), "cnn-v1/tiny", "--models-dir", serve_model["models"]],
                  mnist_dir, script)
    assert scored.returncode == 0, scored.stderr[-2000:]
    (tmp_path / "notes.txt").write_text("not an archive")
    for bad, says in ((tmp_path / "notes.txt", "not a cache written by `build`"),
                      (tmp_path / "missing.npz", "cannot read it")):
        refused = _run(["score", str(bad), "cnn-v1/tiny"], mnist_dir, script)
        assert refused.returncode == 1 and says in refused.stderr, refused.stderr[-2000:]
        assert "Traceback" not in refused.stderr
    done = _run(["evaluate", "cnn-v1/tiny", "--models-dir", serve_model["models"], "--split",
                 "val", "--n-per-class", "1", "--names", names, "--json", str(out),
                 "--threads", "1"], mnist_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["models"][0]["renderings"]
    for name in names.split(","):
        line = next(x for x in scored.stdout.splitlines() if x.startswith(name + " "))
        assert float(line.split()[-1]) == pytest.approx(100 * rows[name]["accuracy"]), name


def test_baseline_change_is_this_run_minus_the_baseline():
    real_world = _load_script("real_world")
    row = dict(n=10, accuracy=0.9, no_digit=0.1, ece=0.05, mean_confidence=0.8,
               clean_accuracy=1.0, plain_accuracy=0.7, paths={"scan": 10})
    report = dict(split="val", pipeline=dict(commit="abc", dirty=False), wall_seconds=1.0,
                  render_seconds=0.5, machine=dict(machine="m"),
                  models=[dict(model="a/b", temperature=1.5, mean_accuracy=0.9,
                               min_accuracy=0.9, renderings={"scan16-grey": row})])
    older = json.loads(json.dumps(report))
    older["models"][0]["model"] = "a/older"  # one model each: compared whatever the names
    older["models"][0]["renderings"]["scan16-grey"]["accuracy"] = 0.925
    table = real_world.to_markdown(report, older)
    assert "| scan16-grey | 10 | 90.00% | 92.50% | -2.50 | 10.00% | 0.0500 |" in table
    assert "scan 10" in table and "(T = 1.500)" in table
    assert "| baseline |" not in real_world.to_markdown(report, None)
    assert "other digits" not in table
    older["split"] = "test"
    assert "other digits**: split test there, val here" in real_world.to_markdown(report, older)


def test_real_world_build_writes_the_files_and_a_list(mnist_dir, tmp_path):
    real_world = _load_script("real_world")
    n = real_world.build(tmp_path / "out", "test", 1, 0, str(mnist_dir),
                         ["scan32-binary", "photo-euro-one"])
    files = sorted(p for p in (tmp_path / "out").rglob("*.*") if p.suffix in (".png", ".jpg"))
    assert n == len(files) == 20
    with open(tmp_path / "out" / "images.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20 and {r["rendering"] for r in rows} == {"scan32-binary",
                                                                   "photo-euro-one"}
    assert all((tmp_path / "out" / r["file"]).is_file() for r in rows)
    assert {r["label"] for r in rows if r["rendering"] == "photo-euro-one"} == {"1"}
    assert (tmp_path / "out" / "scan32-binary" / "7").is_dir()
