"""ONNX export: one self-contained `model.onnx` with a dynamic batch axis, checked against PyTorch.

The ONNX graph is the network it is given: it takes normalised float images (B, 1, 28, 28) named
`images` and returns logits (B, 10) named `logits`; the mean and std to normalise with are in the
exported `config.json`. `digitnet export` gives it the network with its logits divided by the
temperature (`calibration.TemperatureScaled`), so that a softmax of the output is calibrated; the
temperature is also in the file's metadata (`metadata_props`) and in config.json.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from digitnet.errors import DigitnetError

ONNX_FILE = "model.onnx"
ONNX_OPSET = 17  # supported by every onnxruntime release since 1.15
PARITY_TOLERANCE = 1e-4  # max |logit difference| allowed between ONNX Runtime and PyTorch
INPUT_NAME = "images"
OUTPUT_NAME = "logits"


def _require_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise DigitnetError(
            f"ONNX export needs the onnx and onnxruntime packages ({e.name} is missing); "
            "install them with: pip install 'digitnet[onnx]'"
        ) from None
    return onnx, onnxruntime


def export_onnx(model: nn.Module, path: str | os.PathLike, images: torch.Tensor,
                metadata: dict[str, str] | None = None) -> float:
    """Export `model` to a single ONNX file and check it against the PyTorch logits.

    Args:
        model: the network; it is put in eval mode.
        path: where to write the `.onnx` file (its folder must exist).
        images: normalised float inputs (N, 1, 28, 28) for the parity check, N >= 2.
        metadata: key-value strings stored in the model's `metadata_props`.

    Returns:
        The largest absolute difference between ONNX Runtime and PyTorch logits on `images`.

    Raises:
        DigitnetError: onnx or onnxruntime is missing, the exporter needs external data files,
            or the logits differ by more than `PARITY_TOLERANCE`.
    """
    onnx, _ = _require_onnx()
    path = Path(path)
    model = model.eval().cpu()
    images = images.detach().float().cpu().contiguous()
    work = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        tmp = work / ONNX_FILE
        with warnings.catch_warnings():
            # The TorchScript-based exporter is deprecated but needs no onnxscript, handles these
            # small convnets exactly, and writes one file.
            warnings.filterwarnings("ignore", message=".*TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
            torch.onnx.export(
                model, (images[:2],), str(tmp), dynamo=False, export_params=True,
                opset_version=ONNX_OPSET, do_constant_folding=True,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
        extra = sorted(p.name for p in work.iterdir() if p.name != ONNX_FILE)
        if extra:
            raise DigitnetError(f"ONNX export wrote external data files {extra}; expected one file")
        if metadata:
            proto = onnx.load(str(tmp))
            onnx.helper.set_model_props(proto, metadata)
            onnx.save(proto, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
        diff = check_onnx_parity(tmp, model, images)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return diff


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The `metadata_props` of an ONNX file (`digitnet export` stores the temperature there)."""
    onnx, _ = _require_onnx()
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def run_onnx(path: str | os.PathLike, images: torch.Tensor) -> np.ndarray:
    """Logits (N, 10) from ONNX Runtime (CPU) for normalised float images (N, 1, 28, 28)."""
    _, ort = _require_onnx()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: images.detach().float().cpu().numpy()})[0]


@torch.no_grad()
def check_onnx_parity(path: str | os.PathLike, model: nn.Module, images: torch.Tensor) -> float:
    """Largest absolute logit difference between ONNX Runtime and PyTorch on `images`.

    Raises:
        DigitnetError: the difference exceeds `PARITY_TOLERANCE`, or the shapes differ.
    """
    expected = model.eval()(images).numpy()
    got = run_onnx(path, images)
    if got.shape != expected.shape:
        raise DigitnetError(f"{path}: ONNX logits have shape {got.shape}, PyTorch {expected.shape}")
    diff = float(np.abs(got - expected).max())
    if not diff <= PARITY_TOLERANCE:
        raise DigitnetError(
            f"{path}: ONNX Runtime logits differ from PyTorch by up to {diff:.3g} "
            f"(allowed {PARITY_TOLERANCE:g}); the export is wrong, not written"
        )
    return diff
