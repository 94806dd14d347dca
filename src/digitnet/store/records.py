"""What a saved model records about itself, and rebuilding the model from that record.

The architecture record (name, version, id, model_args, parameter signature) rebuilds the model
and refuses one whose registered definition changed since; the data config (input size, mean,
std, label names, polarity) says how images must look before they enter it. Both are saved with
every run, checkpoint and export.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from digitnet.constants import IMAGE_SIZE, LABEL_NAMES, MNIST_MEAN, MNIST_STD
from digitnet.errors import DigitnetError
from digitnet.fileio import Check


def _at_least(minimum: int) -> Check:
    return Check(int, lambda v: v >= minimum, f"an integer >= {minimum}")


DATA_CONFIG_SCHEMA = {
    "input_size": Check([int], lambda v: v == [1, IMAGE_SIZE, IMAGE_SIZE],
                        f"[1, {IMAGE_SIZE}, {IMAGE_SIZE}]"),
    "mean": float,
    "std": Check(float, lambda v: v > 0, "a number > 0"),
    "label_names": Check([str], lambda v: len(v) >= 1, "a non-empty list of strings"),
    "polarity?": (str, None),
}
ARCH_SCHEMA = {"name": str, "version": _at_least(1), "id": str, "model_args": dict,
               "signature?": list}


def default_data_config() -> dict:
    """How images must look before they enter a model (saved with every model)."""
    return dict(input_size=[1, IMAGE_SIZE, IMAGE_SIZE], mean=MNIST_MEAN, std=MNIST_STD,
                label_names=list(LABEL_NAMES), polarity="white digit on black, 0-255")


def architecture_signature(model: nn.Module) -> list[list]:
    """Parameter and buffer names with shapes: what a frozen version must keep."""
    return [[k, list(v.shape)] for k, v in model.state_dict().items()]


def arch_record(model: nn.Module) -> dict:
    """The architecture record of a model made by `create_model` (what `build_frozen_model`
    takes)."""
    return dict(name=model.arch_name, version=model.arch_version,
                id=f"{model.arch_name}-v{model.arch_version}", model_args=model.model_args,
                signature=architecture_signature(model))


def build_frozen_model(arch: dict, source: Path) -> nn.Module:
    """Rebuild the architecture recorded in a config, refusing one whose definition changed.

    Raises:
        DigitnetError: the version is unknown, or its hyperparameters or parameter shapes are no
            longer those the model was trained with.
    """
    from digitnet.models import create_model

    try:
        model = create_model(arch["name"], arch["version"])
    except DigitnetError as e:  # unknown name or version: say which model asked for it
        raise DigitnetError(f"{source}: {e}") from None
    arch_id = f"{arch['name']}-v{arch['version']}"
    advice = (f"the definition of {arch_id} changed after {source} was trained with it; restore it "
              f"and register the change under a new version number")
    if model.model_args != arch["model_args"]:
        changed = sorted(k for k in set(model.model_args) | set(arch["model_args"])
                         if model.model_args.get(k) != arch["model_args"].get(k))
        details = "; ".join(f"{k}: trained with {arch['model_args'].get(k)!r}, now "
                            f"{model.model_args.get(k)!r}" for k in changed)
        raise DigitnetError(f"{advice} ({details})")
    if "signature" in arch and architecture_signature(model) != arch["signature"]:
        raise DigitnetError(f"{advice} (parameter names or shapes differ)")
    return model


def check_label_names(model: nn.Module, label_names: list[str], source: Path) -> None:
    """One label name per output of the model."""
    outputs = model.model_args.get("num_classes")
    if outputs is not None and len(label_names) != outputs:
        raise DigitnetError(f'{source}: field "label_names": expected {outputs} names (one per '
                            f"output of the model), found {len(label_names)}")
