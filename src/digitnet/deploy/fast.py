"""Faster inference for a trained model: batch norm folded into convolutions, channels-last
weights, and a frozen TorchScript graph. Predictions are those of the eager model (same argmax,
logits within float rounding); `benchmarks/inference.py` measures each step.
"""

from __future__ import annotations

import copy
import importlib.util
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from digitnet.constants import IMAGE_SIZE


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` with every BatchNorm2d that directly follows a Conv2d inside
    an `nn.Sequential` folded into that convolution (the batch norm becomes `nn.Identity`).

    Batch norm with running statistics is an affine map per channel in eval mode, so it folds
    into the convolution's weight and bias exactly, up to float rounding.
    """
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = module._modules[first], module._modules[second]
            if (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
                    and bn.track_running_stats and bn.running_mean is not None):
                module._modules[first] = fuse_conv_bn_eval(conv, bn)
                module._modules[second] = nn.Identity()
    return model


class OnnxRuntimeModule(nn.Module):
    """An ONNX Runtime CPU session behind the `nn.Module` interface (inference only)."""

    def __init__(self, model: nn.Module, threads: int | None = None):
        super().__init__()
        import onnxruntime as ort

        from digitnet.deploy.onnx import INPUT_NAME, export_onnx

        self.input_name = INPUT_NAME
        example = torch.randn(8, 1, IMAGE_SIZE, IMAGE_SIZE)
        with tempfile.TemporaryDirectory() as work:
            path = Path(work) / "model.onnx"
            export_onnx(model, path, example)  # checks parity with the PyTorch logits
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads or torch.get_num_threads()
            self.session = ort.InferenceSession(path.read_bytes(), options,
                                                providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 28, 28) -> (B, 10) logits
        images = x.detach().float().contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: images})[0])


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None and \
        importlib.util.find_spec("onnx") is not None


def optimize_for_inference(model: nn.Module, script: bool = True,
                           backend: str = "torchscript") -> nn.Module:
    """The fastest CPU form of `model` that gives the same predictions, for `predict`.

    Folds batch norm into the convolutions, stores weights channels-last, then (with `script`)
    traces the model with TorchScript and freezes it (weights become constants, dropout and
    identity layers disappear). With `backend="onnxruntime"` the model runs in ONNX Runtime
    instead (about 2x the TorchScript throughput on a 2-core AVX-512 CPU, see BENCHMARKS.md, but
    ~1 s to export). The original model is not changed.

    Args:
        model: an image classifier taking (B, 1, 28, 28) float input; eval mode is forced.
        script: also trace and freeze; False returns the folded eager module.
        backend: "torchscript", or "onnxruntime" (needs the onnx and onnxruntime packages).

    Returns:
        A module mapping (B, 1, 28, 28) to the same logits as `model` (within ~1e-5), for any B.
    """
    if backend == "onnxruntime":
        return OnnxRuntimeModule(fold_batch_norm(model))
    if backend != "torchscript":
        raise ValueError(f"backend must be 'torchscript' or 'onnxruntime', got {backend!r}")
    folded = fold_batch_norm(model).to(memory_format=torch.channels_last)
    for p in folded.parameters():
        p.requires_grad_(False)
    if not script:
        return folded
    example = torch.zeros(2, 1, IMAGE_SIZE, IMAGE_SIZE)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit still works in torch 2.x
        traced = torch.jit.trace(folded, example)
        return torch.jit.freeze(traced)


__all__ = ["OnnxRuntimeModule", "fold_batch_norm", "onnxruntime_available",
           "optimize_for_inference"]
