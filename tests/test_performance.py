"""Speed features: shift augmentation, bf16 training, inference optimisation, ensembles, and the
helpers of the benchmark scripts (the measurements themselves live in benchmarks/, never here)."""

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from digitnet.config import TrainConfig
from digitnet.data.augment import shift_batch
from digitnet.deploy.fast import fold_batch_norm, optimize_for_inference
from digitnet.errors import DigitnetError
from digitnet.evaluation.ensemble import average_probs, evaluate_ensemble
from digitnet.models import create_model, list_specs
from digitnet.training.loop import fit

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# the recipe these tests were written for (cnn-v1, fp32, warp; the default before issue 14)
FAST = dict(epochs=3, batch_size=32, val_size=50, threads=1, arch="cnn", lr=0.05,
            weight_decay=5e-4, augment_kind="warp", precision="fp32")


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _weights(run_dir) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(run_dir) / "model.safetensors"))


# ---------------------------------------------------------------------------- shift augmentation
@pytest.mark.parametrize("shape", [(6, 28, 28), (6, 1, 28, 28)])
def test_shift_batch_moves_whole_images_by_at_most_max_shift(shape):
    images = torch.randint(1, 256, shape, dtype=torch.uint8)  # no zero pixels: shifts are visible
    out = shift_batch(images, 2, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == images.dtype
    flat_in, flat_out = images.reshape(6, 28, 28), out.reshape(6, 28, 28)
    for x, y in zip(flat_in, flat_out):
        padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
        crops = [padded[dy:dy + 28, dx:dx + 28] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(y, c) for c in crops)
    again = shift_batch(images, 2, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_shift_batch_moves_the_centre_of_mass_by_whole_pixels():
    images = torch.zeros(200, 28, 28, dtype=torch.uint8)
    images[:, 10:18, 11:16] = torch.randint(1, 256, (200, 8, 5), dtype=torch.uint8,
                                            generator=torch.Generator().manual_seed(1))
    out = shift_batch(images, 2, torch.Generator().manual_seed(0))

    def centre(x):  # (n, 2) row and column of the ink's centroid
        w = x.double()
        grid = torch.arange(28, dtype=torch.float64)
        mass = w.sum((1, 2))
        return torch.stack([(w.sum(2) * grid).sum(1) / mass, (w.sum(1) * grid).sum(1) / mass], 1)

    offset = centre(out) - centre(images)  # the blob is far from the border: nothing is lost
    assert torch.equal(out.double().sum((1, 2)), images.double().sum((1, 2)))
    whole = offset.round()
    assert torch.allclose(offset, whole, atol=1e-9) and whole.abs().max() == 2
    seen = {tuple(v) for v in whole.int().tolist()}
    assert seen == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}  # all 25 offsets
    assert (whole == 0).all(1).sum() < 20  # about 1 in 25 left in place, not most


def test_shift_batch_zero_is_a_copy_and_negative_raises():
    images = torch.rand(3, 28, 28)
    out = shift_batch(images, 0, torch.Generator())
    assert torch.equal(out, images) and out.data_ptr() != images.data_ptr()
    with pytest.raises(DigitnetError, match="max_shift"):
        shift_batch(images, -1, torch.Generator())


@pytest.mark.parametrize("field, value", [("augment_kind", "rotate"), ("precision", "fp16")])
def test_new_config_fields_are_validated(field, value):
    with pytest.raises(DigitnetError, match=field):
        TrainConfig(**{field: value})


def test_recipe_defaults_unchanged():
    cfg = TrainConfig()
    # issue 14: bf16 is slow on AVX2
    assert (cfg.augment_kind, cfg.precision) == ("handwriting", "fp32")


def test_bf16_shift_training_resumes_bit_identically(tmp_path, synthetic_mnist):
    """The fast recipe's options keep the guarantee: resumed = uninterrupted, bit for bit."""
    cfg = TrainConfig(**{**FAST, "arch": "fast", "augment_kind": "shift", "precision": "bf16",
                         "name": "a"})
    models = tmp_path / "models"
    a = fit(cfg, data_dir=synthetic_mnist, models_dir=models, progress=False)
    assert a["ref"] == "fast-v2/a"  # the newest fast version, as configs/fast.yaml uses
    b = fit(dataclasses.replace(cfg, name="b"), data_dir=synthetic_mnist, models_dir=models,
            progress=False)
    # b resumed from its first epoch (epochs 2-3 retrained) against a, never interrupted
    resumed = fit(models_dir=models, data_dir=synthetic_mnist, resume="fast-v2/b@epoch-1",
                  progress=False)
    assert Path(resumed["path"]) == Path(b["path"]) != Path(a["path"])
    wa, wr = _weights(a["path"]), _weights(resumed["path"])
    assert wa.keys() == wr.keys() and all(torch.equal(wa[k], wr[k]) for k in wa)


# ------------------------------------------------------------------------------------ inference
def _trained_like(arch: str) -> torch.nn.Module:
    """A model with non-trivial batch-norm statistics, as after training."""
    torch.manual_seed(0)
    model = create_model(arch)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 1, 28, 28) * 2 + 0.5)
    return model.eval()


@pytest.mark.parametrize("arch", [s.arch_id for s in list_specs()])
@pytest.mark.parametrize("script", [False, True])
def test_optimize_for_inference_gives_the_same_predictions(arch, script):
    model = _trained_like(arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = optimize_for_inference(model, script=script)
    for batch in (1, 7):
        x = torch.randn(batch, 1, 28, 28)
        with torch.no_grad():
            expected, got = model(x), fast(x)
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
        assert torch.equal(got.argmax(1), expected.argmax(1))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched


def test_onnxruntime_backend_gives_the_same_predictions():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = _trained_like("cnn")
    fast = optimize_for_inference(model, backend="onnxruntime")
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        expected, got = model(x), fast(x)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(got.argmax(1), expected.argmax(1))
    with pytest.raises(ValueError, match="backend"):
        optimize_for_inference(model, backend="tvm")


def test_fold_batch_norm_removes_every_batch_norm():
    folded = fold_batch_norm(_trained_like("cnn"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())


# ------------------------------------------------------------------------------------- ensemble
def test_average_probs_is_the_elementwise_mean():
    a = torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=torch.float64)
    b = torch.tensor([[0.5, 0.5], [0.6, 0.4]], dtype=torch.float64)
    expected = torch.tensor([[0.7, 0.3], [0.4, 0.6]], dtype=torch.float64)
    assert torch.allclose(average_probs([a, b]), expected)
    with pytest.raises(DigitnetError):
        average_probs([])
    with pytest.raises(DigitnetError, match="different shapes"):
        average_probs([a, b[:1]])


def test_ensemble_command_averages_members(tmp_path, synthetic_mnist, capsys):
    from digitnet.cli import main
    from digitnet.evaluation.evaluate import predict_probs
    from digitnet.evaluation.metrics import compute_metrics
    from digitnet.store import expand_refs, load_model

    models = tmp_path / "models"
    for seed in (0, 1):
        cfg = TrainConfig(**FAST, augment=False, seed=seed, name=f"s{seed}")
        fit(cfg, data_dir=synthetic_mnist, models_dir=models, progress=False)
    refs = ["cnn-v1/s0", "cnn-v1/s1"]
    [result] = evaluate_ensemble(refs, ["mnist-test"], synthetic_mnist, models)
    loaded = [load_model(r, models) for r in refs]
    from digitnet.evaluation.datasets import load_eval_dataset

    test = load_eval_dataset("mnist-test", synthetic_mnist, 50)
    mean = (predict_probs(loaded[0], test.images) + predict_probs(loaded[1], test.images)) / 2
    assert result["accuracy"] == compute_metrics(test.labels.numpy(), mean.numpy())["accuracy"]
    assert [m["model"] for m in result["members"]] == refs
    out = tmp_path / "ens.json"
    assert main(["ensemble", *refs, "--data-dir", str(synthetic_mnist), "--models-dir", str(models),
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())[0]["models"] == refs
    assert "ensemble of 2" in capsys.readouterr().out
    # a glob for the run names expands to every matching run, oldest first
    assert expand_refs(["cnn-v1/s*@best", "cnn-v1/s1"], models) == [
        "cnn-v1/s0@best", "cnn-v1/s1@best", "cnn-v1/s1"]
    assert main(["ensemble", "cnn-v1/s?", "--data-dir", str(synthetic_mnist),
                 "--models-dir", str(models), "--json", str(out)]) == 0
    assert json.loads(out.read_text())[0]["models"] == refs
    with pytest.raises(DigitnetError, match="no cnn-v1 run in .* matches 'x\\*'"):
        expand_refs(["cnn-v1/x*"], models)
    assert main(["ensemble", "cnn-v1/x*", "--data-dir", str(synthetic_mnist),
                 "--models-dir", str(models)]) != 0


# ------------------------------------------------------------------------- benchmark helpers
def test_baseline_net_matches_the_pytorch_example():
    baseline = _load_script("baseline_mnist_example")
    net = baseline.Net()
    assert sum(p.numel() for p in net.parameters()) == 1_199_882  # the example's Net
    out = net.eval()(torch.randn(3, 1, 28, 28))
    assert torch.allclose(out.exp().sum(1), torch.ones(3), atol=1e-5)  # log-probabilities


def test_time_to_accuracy_summary():
    tta = _load_script("time_to_accuracy")
    curve = [dict(seconds=10.0, test_acc=0.98), dict(seconds=20.0, test_acc=0.992),
             dict(seconds=30.0, test_acc=0.996)]
    assert tta.time_to(curve, 0.99) == 20.0 and tta.time_to(curve, 0.999) is None
    runs = [dict(recipe="fast", final_test_acc=0.996, wall_seconds=31.0, peak_rss_mib=300.0,
                 curve=curve),
            dict(recipe="pytorch-example", final_test_acc=0.992, wall_seconds=700.0,
                 peak_rss_mib=400.0, curve=[dict(seconds=100.0, test_acc=0.99),
                                            dict(seconds=600.0, test_acc=0.992)])]
    summary = tta.summarise(runs)
    assert summary["baseline_final_acc"] == 0.992
    assert summary["fast"]["time_to_baseline_final"]["median"] == 20.0
    assert summary["fast"]["speedup_vs_baseline"] == {"time_to_0.99": 5.0,
                                                      "time_to_baseline_final": 30.0}


def test_predict_uses_the_fast_path_with_the_same_labels(tmp_path, synthetic_mnist, mnist_dir):
    from digitnet.data.idx import read_idx
    from digitnet.deploy.predict import predict_images
    from digitnet.store import load_model

    fit(TrainConfig(**FAST, augment=False, name="p"), data_dir=synthetic_mnist,
        models_dir=tmp_path / "models", progress=False)
    loaded = load_model("cnn-v1/p", tmp_path / "models")
    digits = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")[:20]
    entries = predict_images(loaded, list(digits), with_images=True)
    seen = torch.stack([torch.from_numpy(e["image"]) for e in entries])
    eager = torch.softmax(loaded.logits(seen).double() / loaded.temperature, dim=1)  # calibrated
    assert [e["label"] for e in entries] == eager.argmax(1).tolist()
    got = torch.tensor([e["probabilities"] for e in entries], dtype=torch.float64)
    assert torch.allclose(got, eager, atol=1e-5)


def test_ensemble_growth_and_error_overlap():
    growth = _load_script("ensemble_growth")
    labels = torch.tensor([0, 1, 1])
    a = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])  # wrong on image 1
    b = torch.tensor([[0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])  # right on all
    c = torch.tensor([[0.4, 0.6], [0.9, 0.1], [0.7, 0.3]])  # wrong on all
    assert growth.growth([a, b, c], labels) == pytest.approx([2 / 3, 1.0, 2 / 3])
    result = growth.overlap([a, b, c], labels)
    assert result["wrong_in_all"] == 0 and result["wrong_in_any"] == 3
    [error] = result["ensemble_errors"]  # mean of image 1: [0.6, 0.4]
    assert error["index"] == 1 and error["predicted"] == 0 and error["members_wrong"] == 2
    assert error["p_label"] == pytest.approx(0.4)
