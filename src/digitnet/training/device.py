"""The device training runs on: `--device auto|cpu|cuda|cuda:N|mps`, checked before any work."""

from __future__ import annotations

import torch

from digitnet.errors import DigitnetError

DEVICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(name: str = "auto") -> torch.device:
    """The device to train on: `name` is one of DEVICES; auto takes CUDA when present, else CPU.

    Raises:
        DigitnetError: an unknown device, or one this machine or this torch build does not have.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DigitnetError(f"device {name!r} is not a device; expected {DEVICES}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else "a CUDA build"
            raise DigitnetError(f"device {name!r}: CUDA is not available here (torch "
                                f"{torch.__version__} is {build}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DigitnetError(f"device {name!r}: this machine has {torch.cuda.device_count()} "
                                f"CUDA device(s), numbered from 0")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise DigitnetError(f"device {name!r}: Apple's MPS is not available here; use "
                                f"--device cpu")
    elif device.type != "cpu":
        raise DigitnetError(f"device {name!r} is not supported; expected {DEVICES}")
    return device
