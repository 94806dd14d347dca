"""ONNX export: one self-contained file, dynamic batch, logits equal to PyTorch's within 1e-4."""

import json

import numpy as np
import pytest
import torch

from digitnet.data.datasets import to_model_input
from digitnet.errors import DigitnetError
from digitnet.models import create_model, list_specs

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from digitnet.deploy.onnx import (  # noqa: E402  (after the skips)
    PARITY_TOLERANCE,
    check_onnx_parity,
    export_onnx,
    run_onnx,
)


def random_inputs(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn((n, 1, 28, 28), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch_id", [s.arch_id for s in list_specs()])
def test_every_architecture_exports_with_a_dynamic_batch(arch_id, tmp_path):
    torch.manual_seed(0)
    model = create_model(arch_id).eval()
    diff = export_onnx(model, tmp_path / "model.onnx", random_inputs(4))
    assert diff < PARITY_TOLERANCE
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no external data file
    for n in (1, 7):
        images = random_inputs(n, seed=n)
        got = run_onnx(tmp_path / "model.onnx", images)
        with torch.no_grad():
            expected = model(images).numpy()
        assert got.shape == (n, 10)
        assert np.abs(got - expected).max() < PARITY_TOLERANCE
        assert (got.argmax(1) == expected.argmax(1)).all()


def test_parity_check_catches_a_wrong_graph(tmp_path):
    torch.manual_seed(0)
    export_onnx(create_model("cnn").eval(), tmp_path / "model.onnx", random_inputs(2))
    other = create_model("cnn").eval()  # different random weights
    with pytest.raises(DigitnetError, match="differ from PyTorch"):
        check_onnx_parity(tmp_path / "model.onnx", other, random_inputs(3))


@pytest.mark.slow
def test_exported_model_onnx_matches_the_trained_model(tmp_path):
    import digitnet
    from conftest import make_synthetic_mnist
    from digitnet.config import TrainConfig
    from digitnet.data.idx import read_idx
    from digitnet.deploy.export import export_model
    from digitnet.training.loop import fit

    data = make_synthetic_mnist(tmp_path / "mnist")
    fit(TrainConfig(arch="cnn", epochs=1, name="tiny", batch_size=32, val_size=50, threads=1,
                    augment=False), data, tmp_path / "models", progress=False)
    out = tmp_path / "hf"
    info = export_model("cnn-v1/tiny", out, data, tmp_path / "models", onnx=True)
    config = json.loads((out / "config.json").read_text())
    assert config["onnx"]["max_abs_diff"] < PARITY_TOLERANCE == 1e-4
    assert info["files"]["model.onnx"] > 10_000
    loaded = digitnet.load(str(out))
    images = torch.from_numpy(read_idx(data / "t10k-images-idx3-ubyte.gz")[:7].copy())
    logits = run_onnx(out / "model.onnx", to_model_input(images, config["mean"], config["std"]))
    expected = loaded.logits(images).numpy() / loaded.temperature  # the graph divides by T
    assert loaded.calibration.calibrated
    assert np.abs(logits - expected).max() < PARITY_TOLERANCE
    assert (logits.argmax(1) == expected.argmax(1)).all()
