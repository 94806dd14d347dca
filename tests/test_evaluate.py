"""Evaluate and compare: JSON results, reports, datasets by name, models x checkpoints x
datasets."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitnet.cli import main
from digitnet.config import TrainConfig
from digitnet.data.idx import write_idx
from digitnet.errors import DigitnetError
from digitnet.evaluation.compare import compare
from digitnet.evaluation.datasets import load_eval_dataset
from digitnet.evaluation.plots import montage_cell
from digitnet.store import expand_checkpoints
from digitnet.training.loop import fit

REQUIRED_KEYS = {"dataset", "n", "loss", "accuracy", "precision_macro", "recall_macro", "f1_macro",
                 "per_class", "confusion_matrix"}


def _drawn(fig) -> list[dict]:
    """What each axes of a figure drew: image arrays, bar heights, line points."""
    return [dict(images=[np.ma.filled(im.get_array(), 0) for im in ax.images],
                 bars=[b.get_height() for b in ax.patches],
                 texts=[t.get_text() for t in ax.texts],
                 lines={line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
                        for line in ax.lines if not line.get_label().startswith("_")})
            for ax in fig.axes]


def capture_figures(monkeypatch, module) -> dict:
    """Record the data of every figure `module` saves, by file name (the PNG is still written)."""
    from digitnet import figures

    saved, real = {}, figures.save_figure

    def save(fig, path, *args, **kwargs):
        saved[Path(path).as_posix()] = _drawn(fig)
        return real(fig, path, *args, **kwargs)

    monkeypatch.setattr(module, "save_figure", save)
    return saved


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two architectures trained briefly on synthetic MNIST (each class a distinct blob)."""
    from conftest import make_synthetic_mnist

    root = tmp_path_factory.mktemp("eval")
    data = make_synthetic_mnist(root / "mnist")
    models = root / "models"
    common = dict(batch_size=32, val_size=50, threads=1, augment=False, lr=0.05)
    fit(TrainConfig(arch="cnn", epochs=3, name="cnn", **common), data, models, progress=False)
    fit(TrainConfig(arch="linear", epochs=2, name="lin", **common), data, models, progress=False)
    return dict(data=data, models=models)


def test_evaluate_json_and_report(trained, tmp_path, capsys, monkeypatch):
    from digitnet.evaluation import report as report_module

    saved = capture_figures(monkeypatch, report_module)
    out, js = tmp_path / "report", tmp_path / "r.json"
    code = main(["evaluate", "cnn-v1/cnn", "--dataset", "mnist-test", "--dataset", "mnist-val",
                 "--json", str(js), "--out", str(out), "--data-dir", str(trained["data"]),
                 "--models-dir", str(trained["models"])])
    assert code == 0
    results = json.loads(js.read_text())
    assert [r["dataset"] for r in results] == ["mnist-test", "mnist-val"]
    for r in results:
        assert REQUIRED_KEYS <= set(r)
        assert len(r["per_class"]) == 10
        assert {"precision", "recall", "f1", "support"} <= set(r["per_class"][0])
        assert np.array(r["confusion_matrix"]).sum() == r["n"]
        assert r["accuracy"] == pytest.approx(np.trace(np.array(r["confusion_matrix"])) / r["n"])
        for m in r["misclassified"]:
            assert len(m["probabilities"]) == 10 and m["pred"] != m["label"]
    assert results[0]["n"] == 50
    report = (out / "report.md").read_text()
    for png in ["training_curves.png", "mnist-test/confusion_matrix.png",
                "mnist-test/per_class.png", "mnist-test/misclassified.png",
                "mnist-val/reliability.png"]:
        assert (out / png).read_bytes().startswith(b"\x89PNG")
        assert f"]({png})" in report
    # each plot drew the data of results.json (and of the run's metrics.jsonl)
    assert json.loads((out / "results.json").read_text()) == results
    history = [json.loads(line) for line in
               (trained["models"] / "cnn-v1" / "cnn" / "metrics.jsonl").read_text().splitlines()]
    epochs = [row["epoch"] for row in history]
    assert saved[(out / "training_curves.png").as_posix()][0]["lines"] == {
        "train": (epochs, [row["train_loss"] for row in history]),
        "val": (epochs, [row["val_loss"] for row in history])}
    for r in results:
        name = r["dataset"]
        images = load_eval_dataset(name, trained["data"], 50).images.numpy()
        [cm_axes, _colorbar] = saved[(out / name / "confusion_matrix.png").as_posix()]
        np.testing.assert_array_equal(cm_axes["images"][0], r["confusion_matrix"])
        assert saved[(out / name / "per_class.png").as_posix()][0]["bars"] == [
            c["precision"] for c in r["per_class"]] + [c["recall"] for c in r["per_class"]]
        [gallery] = saved[(out / name / "misclassified.png").as_posix()]  # one montage
        shown = r["misclassified"][:32]
        assert len(gallery["texts"]) == len(shown) > 0
        for k, m in enumerate(shown):
            top, left = montage_cell(k, min(8, len(shown)), (28, 28))
            np.testing.assert_array_equal(gallery["images"][0][top : top + 28, left : left + 28],
                                          images[m["index"]])
        _, counts = saved[(out / name / "reliability.png").as_posix()]
        assert sum(counts["bars"]) == r["n"]
        row = (f"| {name} | {r['n']} | {r['loss']:.4f} | {r['accuracy']:.2%} | "
               f"{r['precision_macro']:.4f} | {r['recall_macro']:.4f} | {r['f1_macro']:.4f} | "
               f"{r['ece']:.4f} | {r['ece_uncalibrated']:.4f} |")
        assert row in report.splitlines()
    assert "mnist-test" in capsys.readouterr().out


def test_compare_across_architectures_and_checkpoints(trained, tmp_path, monkeypatch):
    from digitnet import figures  # compare imports save_figure from it when it draws

    saved = capture_figures(monkeypatch, figures)
    refs = expand_checkpoints(["cnn-v1/cnn@all"], trained["models"])
    assert [r.rsplit("@", 1)[1] for r in refs] == ["epoch-001", "epoch-002", "epoch-003"]
    rows = compare(["cnn-v1/cnn@all", "linear-v1/lin"], ["mnist-test", "mnist-test-augmented"],
                   trained["data"], trained["models"])
    assert len(rows) == 4 * 2
    assert {r["arch"] for r in rows} == {"cnn-v1", "linear-v1"}
    assert [r["epoch"] for r in rows if r["dataset"] == "mnist-test"][:3] == [1, 2, 3]
    code = main(["compare", "cnn-v1/cnn@all", "linear-v1/lin", "--dataset", "mnist-test",
                 "--out", str(tmp_path / "cmp"), "--data-dir", str(trained["data"]),
                 "--models-dir", str(trained["models"])])
    assert code == 0
    cmp = tmp_path / "cmp"
    expected = [r for r in rows if r["dataset"] == "mnist-test"]  # the same models, one dataset
    assert json.loads((cmp / "comparison.json").read_text()) == expected
    with open(cmp / "comparison.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["model"] for r in table] == [r["model"] for r in expected]
    for got, want in zip(table, expected):
        assert {k: got[k] for k in ("arch", "epoch", "dataset", "n")} == {
            k: str(want[k]) for k in ("arch", "epoch", "dataset", "n")}
        for key in ("loss", "accuracy", "top2_accuracy", "precision_macro", "recall_macro",
                    "f1_macro", "ece"):
            assert float(got[key]) == want[key]
    md = (cmp / "comparison.md").read_text().splitlines()
    assert md[0] == ("| model | dataset | accuracy | loss | precision_macro | recall_macro | "
                     "f1_macro | ece |")
    assert md[2:] == [f"| {r['model']} | mnist-test | {r['accuracy']:.2%} | {r['loss']:.4f} | "
                      f"{r['precision_macro']:.4f} | {r['recall_macro']:.4f} | "
                      f"{r['f1_macro']:.4f} | {r['ece']:.4f} |" for r in expected]
    [bars] = saved[(cmp / "comparison.png").as_posix()]
    assert bars["bars"] == [r["accuracy"] for r in expected]  # one bar per model, in order
    [by_epoch] = saved[(cmp / "accuracy_by_epoch.png").as_posix()]
    [lin] = [r for r in expected if r["arch"] == "linear-v1"]
    assert by_epoch["lines"] == {  # a line per run: the checkpoints of cnn, lin's final weights
        "cnn-v1/cnn on mnist-test": ([1, 2, 3], [r["accuracy"] for r in expected[:3]]),
        "linear-v1/lin on mnist-test": ([lin["epoch"]], [lin["accuracy"]])}


def test_idx_pair_and_image_folder_datasets(trained, tmp_path):
    images = np.zeros((4, 28, 28), np.uint8)
    images[:, 10:18, 10:18] = 255
    write_idx(tmp_path / "i.idx", images)
    write_idx(tmp_path / "l.idx", np.array([1, 2, 3, 4], np.uint8))
    ds = load_eval_dataset(f"{tmp_path / 'i.idx'},{tmp_path / 'l.idx'}")
    assert len(ds) == 4 and ds.labels.tolist() == [1, 2, 3, 4]
    write_idx(tmp_path / "l3.idx", np.array([1, 2, 3], np.uint8))
    with pytest.raises(DigitnetError, match="4 images but .* 3 labels"):
        load_eval_dataset(f"{tmp_path / 'i.idx'},{tmp_path / 'l3.idx'}")
    folder = tmp_path / "mine"
    for digit in (3, 7):
        (folder / str(digit)).mkdir(parents=True)
        canvas = Image.new("L", (120, 160), 255)
        canvas.paste(0, (50, 30, 62, 130))  # a dark vertical stroke on white paper
        canvas.save(folder / str(digit) / "a.png")
    ds = load_eval_dataset(str(folder))
    assert ds.labels.tolist() == [3, 7] and ds.images.shape == (2, 28, 28)
    # white on black after preprocessing
    assert ds.images[0].max() == 255 and ds.images[0][0, 0] == 0


def test_augmented_test_set_is_fixed(trained):
    a = load_eval_dataset("mnist-test-augmented", trained["data"])
    b = load_eval_dataset("mnist-test-augmented", trained["data"])
    clean = load_eval_dataset("mnist-test", trained["data"])
    assert a.images.numpy().tobytes() == b.images.numpy().tobytes()
    assert not np.array_equal(a.images.numpy(), clean.images.numpy())
    assert a.labels.tolist() == clean.labels.tolist()


# sha256 of the uint8 images of each augmented set built from conftest's synthetic MNIST (50 test
# images), computed with torch 2.13 on CPU: the sets are defined by their bytes, across processes
# and machines, not only within one process. A deliberate change to the augmentation (or a torch
# upgrade that changes its random streams) updates these digests and says so in the commit.
AUGMENTED_SHA256 = {
    "mnist-test-augmented": "e3df8f409fffb0495354506d8305a413ae22a8fb1f9c4ecd878aa6a3719ef0f0",
    "mnist-test-augmented:1": "ab5968f9aa03daa1933f61eda8dcaca58a6348cfcf363c0d54c8bad5fb3d733e",
    "mnist-test-augmented:2": "51401396534aa81327690320e190aef04957cfd8e08393eb1b21cbb5c9cf2d94",
    "mnist-test-augmented:3": "e3df8f409fffb0495354506d8305a413ae22a8fb1f9c4ecd878aa6a3719ef0f0",
    "mnist-test-augmented:4": "feb697b43b68c7a979324a2a9b34e102179d671eb11883fa9b19a0adaa71f5f3",
    "mnist-test-augmented:5": "d7148ef35d7dd7811df1a9cf97012873d4ba9cdb189e2ce0d68128a75fe09180",
}


@pytest.mark.parametrize("name", list(AUGMENTED_SHA256))
def test_augmented_test_sets_have_pinned_bytes(synthetic_mnist, name):
    import hashlib

    ds = load_eval_dataset(name, synthetic_mnist)
    clean = load_eval_dataset("mnist-test", synthetic_mnist)
    assert ds.images.dtype == clean.images.dtype and ds.images.shape == clean.images.shape
    assert hashlib.sha256(ds.images.numpy().tobytes()).hexdigest() == AUGMENTED_SHA256[name]
    assert ds.labels.tolist() == clean.labels.tolist()


def test_unknown_dataset_and_bad_ref_are_clear(trained, capsys):
    with pytest.raises(DigitnetError, match="unknown dataset 'nope'"):
        load_eval_dataset("nope", trained["data"])
    code = main(["evaluate", "cnn-v9/x", "--models-dir", str(trained["models"])])
    assert code == 1 and "not found" in capsys.readouterr().err


# ------------------------------------------------------------------- README promises (issue 18)
# sha256 (first 16 hex digits) of the images of mnist-test-augmented:N built from conftest's
# synthetic test set: the augmented sets are the same in every process, on every machine.
AUGMENTED_DIGESTS = {1: "ab5968f9aa03daa1", 2: "51401396534aa813", 3: "e3df8f409fffb049",
                     4: "feb697b43b68c7a9", 5: "d7148ef35d7dd781"}


def test_augmented_test_set_severity_picks_fixed_different_images(synthetic_mnist):
    """mnist-test-augmented:N is the test set under severity N (1-5) with the fixed seed;
    plain mnist-test-augmented is severity 3."""
    import hashlib

    from digitnet.data.augment import make_augmented_dataset

    clean = load_eval_dataset("mnist-test", synthetic_mnist)
    sets = {n: load_eval_dataset(f"mnist-test-augmented:{n}", synthetic_mnist) for n in range(1, 6)}
    for n, ds in sets.items():
        images, labels = make_augmented_dataset(clean.images, clean.labels, n, 0)
        assert ds.name == f"mnist-test-augmented:{n}"
        assert ds.images.numpy().tobytes() == images.numpy().tobytes(), n
        assert ds.labels.tolist() == labels.tolist() == clean.labels.tolist()
        assert hashlib.sha256(ds.images.numpy().tobytes()).hexdigest()[:16] == AUGMENTED_DIGESTS[n]
    assert len({ds.images.numpy().tobytes() for ds in sets.values()}) == 5
    default = load_eval_dataset("mnist-test-augmented", synthetic_mnist)
    assert default.images.numpy().tobytes() == sets[3].images.numpy().tobytes()

    def change(ds):
        return (ds.images.float() - clean.images.float()).abs().mean().item()

    assert change(sets[1]) < change(sets[3]) < change(sets[5])


@pytest.mark.parametrize("level", ["0", "6", "-1", "x", "", "3.5"])
def test_augmented_severity_out_of_range_is_an_error(synthetic_mnist, level):
    name = f"mnist-test-augmented:{level}"
    with pytest.raises(DigitnetError, match=r"severity must be 1 to 5"):
        load_eval_dataset(name, synthetic_mnist)


def test_mnist_val_is_the_models_own_validation_split(trained, tmp_path):
    """`mnist-val` is the split the model was validated on (its own --val-size), never images it
    was trained on."""
    from digitnet.data.datasets import load_splits
    from digitnet.evaluation.evaluate import evaluate_model
    from digitnet.store import load_model

    models = tmp_path / "models"
    fit(TrainConfig(arch="linear", epochs=1, batch_size=32, val_size=30, threads=1, augment=False,
                    name="v30"), trained["data"], models, progress=False)
    [result] = evaluate_model("linear-v1/v30", ["mnist-val"], trained["data"], models)
    splits = load_splits(trained["data"], val_size=30)
    val, train = splits["val"], splits["train"]
    assert result["n"] == 30 and result["dataset"] == "mnist-val"
    predicted = load_model("linear-v1/v30", models).logits(val.images).argmax(1)
    assert result["accuracy"] == pytest.approx((predicted == val.labels).float().mean().item())
    train_bytes = {bytes(image.numpy()) for image in train.images}
    assert not any(bytes(image.numpy()) in train_bytes for image in val.images)
