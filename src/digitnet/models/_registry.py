"""The architecture registry: every model is a (name, version) pair with a frozen definition.

A version is frozen once a model has been trained with it. Changing an architecture means
registering a new version number; old versions stay as they are so old models keep loading.
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from digitnet.errors import DigitnetError


@dataclass(frozen=True)
class ModelSpec:
    name: str  # family name, e.g. "cnn"
    version: int  # positive integer; a new version never changes an old one
    builder: Callable[..., nn.Module]
    description: str  # one line for `digitnet models list`

    @property
    def arch_id(self) -> str:
        return f"{self.name}-v{self.version}"


_REGISTRY: dict[tuple[str, int], ModelSpec] = {}


def register_model(name: str, version: int, description: str):
    """Decorator that registers a builder under (name, version); a duplicate raises.

    The builder takes keyword overrides and returns an instance of a `record_model_args` class,
    whose `model_args` attribute holds every constructor argument as JSON-able primitives.
    """
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"model {name!r}: version must be a positive integer, got {version!r}")

    def decorator(builder: Callable[..., nn.Module]):
        key = (name, version)
        if key in _REGISTRY:
            raise ValueError(f"model {name} version {version} is already registered")
        _REGISTRY[key] = ModelSpec(name, version, builder, description)
        return builder

    return decorator


def record_model_args(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator for a model family: each instance gets `model_args`, the arguments its
    constructor was called with, bound to the signature with the defaults filled in, in the
    signature's order, tuples as lists: `cls(**model_args)` rebuilds the model. They are stored
    with every trained model, and the store compares them with the registered version's.

    Raises:
        TypeError: the constructor takes *args or **kwargs (model_args would not name them).
    """
    init = cls.__init__
    signature = inspect.signature(init)
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    if any(p.kind in variadic for p in signature.parameters.values()):
        raise TypeError(f"{cls.__name__}.__init__ takes *args or **kwargs; model_args needs "
                        f"named arguments")

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        self.model_args = {name: _plain(value) for name, value in bound.arguments.items()
                           if name != "self"}

    cls.__init__ = __init__
    return cls


def _plain(value):
    """Tuples (and lists) of values as new lists, recursively: JSON-able and not shared."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def parse_arch(arch: str, version: int | None = None) -> tuple[str, int | None]:
    """Split "cnn-v2" into ("cnn", 2); a plain "cnn" keeps `version` (None: the newest)."""
    name, sep, tail = arch.rpartition("-v")
    if sep and tail.isdigit():
        if version is not None and version != int(tail):
            raise DigitnetError(f"architecture {arch!r} conflicts with version {version} "
                                f"(--arch-version, or `version` in a recipe)")
        return name, int(tail)
    return arch, version


def get_spec(arch: str, version: int | None = None) -> ModelSpec:
    """The spec for `arch` ("cnn" or "cnn-v2") and `version`; the newest version when None.

    Raises:
        DigitnetError: unknown name or version, listing what exists.
    """
    name, version = parse_arch(arch, version)
    versions = sorted(v for n, v in _REGISTRY if n == name)
    if not versions:
        known = ", ".join(sorted({n for n, _ in _REGISTRY}))
        raise DigitnetError(f"unknown architecture {name!r}; registered: {known}")
    if version is None:
        version = versions[-1]
    if (name, version) not in _REGISTRY:
        raise DigitnetError(
            f"architecture {name!r} has no version {version}; registered versions: "
            + ", ".join(str(v) for v in versions)
        )
    return _REGISTRY[name, version]


def list_specs(pattern: str = "*") -> list[ModelSpec]:
    """Registered specs whose id ("cnn-v1") matches a glob pattern, sorted by name and version."""
    return [s for _, s in sorted(_REGISTRY.items()) if fnmatch.fnmatch(s.arch_id, pattern)]


def create_model(arch: str, version: int | None = None, **overrides) -> nn.Module:
    """Build a fresh model; `overrides` replace the version's hyperparameters."""
    spec = get_spec(arch, version)
    model = spec.builder(**overrides)
    model.arch_name, model.arch_version = spec.name, spec.version
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_size=(1, 1, 28, 28)) -> int:
    """Multiply-accumulates x 2 per image for conv and linear layers (forward pass)."""
    flops = 0

    def hook(module, inputs, output):
        nonlocal flops
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            flops += 2 * output.numel() * k
        elif isinstance(module, nn.Linear):
            flops += 2 * output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(input_size))
    model.train(was_training)
    for h in handles:
        h.remove()
    return flops // input_size[0]
