"""Weights: safetensors files written and read without pickle, and checked against the model.

A state dict is saved as contiguous CPU tensors, atomically; loading refuses a file that is not
safetensors, and `load_weights` refuses weights that do not fit the architecture or cannot predict
(wrong dtypes, NaN or infinite values) with a message naming the file and the tensor.
"""

from __future__ import annotations

from pathlib import Path

import safetensors
import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from digitnet.errors import DigitnetError
from digitnet.fileio import atomic_write_bytes, check_regular_file

WEIGHTS_FILE = "model.safetensors"


class CheckpointError(DigitnetError):
    """A checkpoint or weights file that is missing, corrupt, tampered with, or unsafe to load."""


def save_state_dict(state_dict: dict[str, torch.Tensor], path: Path) -> None:
    """Save weights as safetensors (contiguous CPU tensors), atomically.

    Raises:
        OSError: the file cannot be written (a full disk: errno ENOSPC); no temporary file is left.
    """
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    # serialized in memory and written by fileio: an OSError with its errno (not safetensors' own
    # error type) when the disk is full, an fsync, and normal permissions (mkstemp's are 0600)
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata={"format": "pt"}))


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load safetensors weights; a corrupt or missing file raises CheckpointError.

    Shapes, dtypes and finite values are checked against the model by `check_weights`.
    """
    if not path.exists():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        check_regular_file(path, "weights file")
    except DigitnetError as e:
        raise CheckpointError(str(e)) from None
    try:
        return load_file(str(path))
    except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a valid safetensors weights file ({e})") from None


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_weights(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> dict:
    """The state dict with dtypes the model expects, refusing weights that cannot predict.

    Floating tensors must hold only finite values; float16, bfloat16 and float64 are cast to the
    model's float32 (and checked again: a float64 beyond float32's range would become infinite).
    Integer and boolean tensors in the place of floating ones are refused, and integer buffers
    (BatchNorm's num_batches_tracked) must keep their exact dtype.

    Raises:
        DigitnetError: names the file and the tensor.
    """
    expected = model.state_dict()
    out = {}
    for name, tensor in state.items():
        want = expected[name].dtype
        if want.is_floating_point != tensor.dtype.is_floating_point or (
                not want.is_floating_point and tensor.dtype != want):
            raise DigitnetError(f"{source}: tensor {name!r} is {_dtype_name(tensor.dtype)}, "
                                f"expected {_dtype_name(want)}; these are not weights digitnet "
                                f"can use")
        if want.is_floating_point:
            for t, cast in ((tensor, ""), (tensor.to(want), f" once cast to {_dtype_name(want)}")):
                bad = int((~torch.isfinite(t)).sum())
                if bad:
                    raise DigitnetError(
                        f"{source}: tensor {name!r} holds {bad:,} NaN or infinite value(s){cast}; "
                        f"weights like these cannot predict (did training diverge?)")
            tensor = tensor.to(want)
        out[name] = tensor
    return out


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: Path,
                 arch_id: str) -> None:
    """Strict load with a clear error instead of PyTorch's size-mismatch traceback, after
    `check_weights` (dtypes and finite values)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))[:5]
        extra = sorted(set(got) - set(expected))[:5]
        shape = [k for k in expected if k in got and expected[k] != got[k]][:5]
        raise DigitnetError(
            f"{source}: weights do not fit {arch_id} (missing {missing}, unexpected {extra}, "
            f"shape differs {shape}); if {arch_id} was changed, register the change as a new "
            f"version"
        )
    model.load_state_dict(check_weights(model, state, source), strict=True)
