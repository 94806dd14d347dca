"""Training configuration: one frozen dataclass, loaded from defaults < a YAML/JSON file < CLI flags."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from digitnet.errors import DigitnetError
from digitnet.fileio import check_nesting, describe_value, read_regular_bytes

MAX_RECIPE_BYTES = 1024 * 1024  # a recipe is under 1 kB; PyYAML took 8 s for 1.4 MB (2 CPUs)
MAX_RECIPE_VALUES = 100_000  # a recipe holds a few dozen; YAML aliases make small files huge


@dataclass(frozen=True)
class TrainConfig:
    # The defaults are the best recipe we know for a few minutes on a 2-core laptop CPU
    # (see BENCHMARKS.md for the measurement behind them).
    arch: str = "cnn"  # architecture family name (or "cnn-v1"); `digitnet models list`
    version: int | None = None  # architecture version; None = the newest registered
    epochs: int = 12  # full passes over the training split
    batch_size: int = 128  # images per optimizer step
    lr: float = 0.05  # peak learning rate of the one-cycle schedule
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum 0.9) or "adamw"
    weight_decay: float = 5e-4  # L2 penalty on conv/linear weights (not on BN and biases)
    label_smoothing: float = 0.1  # cross-entropy label smoothing
    warmup_frac: float = 0.2  # fraction of steps spent warming up in the one-cycle schedule
    augment: bool = True  # random rotation/scale/shift/elastic/thickness on training batches
    augment_severity: int = 2  # 1 (mild) to 5 (harsh)
    augment_kind: str = "warp"  # "warp" (augment_batch) or "shift" (random shifts of up to
    # augment_severity whole pixels: ~7x cheaper, for fast recipes)
    seed: int = 0  # seeds weights, shuffling, augmentation and dropout
    val_size: int = 5_000  # stratified validation split held out of the 60,000 training images
    subset: int | None = None  # train on a stratified subset of this many images (quick runs)
    data: tuple[str, ...] = ("mnist",)  # training datasets: "mnist" and ingested dataset names
    class_weighting: bool = False  # weight the loss by inverse class frequency
    threads: int | None = None  # torch intra-op threads; None = torch's default
    precision: str = "fp32"  # "fp32", or "bf16": autocast convolutions and matrix products to
    # bfloat16 in training (~1.8x faster on CPUs with AVX512-BF16 or AMX); weights stay float32
    name: str | None = None  # run name; None = a timestamp YYYYmmdd-HHMMSS
    max_steps: int | None = None  # stop each epoch after this many steps (smoke tests)
    eval_batch_size: int = 1_000  # images per forward pass in evaluation

    def __post_init__(self):
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.optimizer in ("sgd", "adamw"), "optimizer must be 'sgd' or 'adamw'"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (0 < self.warmup_frac < 1, "warmup_frac must be in (0, 1)"),
            (1 <= self.augment_severity <= 5, "augment_severity must be 1 to 5"),
            (self.augment_kind in ("warp", "shift"), "augment_kind must be 'warp' or 'shift'"),
            (self.precision in ("fp32", "bf16"), "precision must be 'fp32' or 'bf16'"),
            (self.val_size >= 0, "val_size must be >= 0"),
            (self.subset is None or self.subset >= 10, "subset must be >= 10"),
            (self.threads is None or self.threads >= 1, "threads must be >= 1"),
            (self.max_steps is None or self.max_steps >= 1, "max_steps must be >= 1"),
            (len(self.data) >= 1, "data must name at least one dataset"),
        ]
        for ok, message in checks:
            if not ok:
                raise DigitnetError(f"invalid training configuration: {message}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["data"] = list(self.data)
        return d


def _coerce(name: str, value, path: Path):
    """Check a value from a config file against the field's default type."""
    f = {f.name: f for f in dataclasses.fields(TrainConfig)}[name]
    if name == "data":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise DigitnetError(f"{path}: config field 'data': expected a list of dataset names, "
                                f"found {describe_value(value)}")
        return tuple(value)
    kind = f.type if isinstance(f.type, str) else str(f.type)
    if value is None and "None" in kind:
        return None
    for typ, label in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str")):
        if kind.startswith(label):
            if typ is float and isinstance(value, int) and not isinstance(value, bool):
                return float(value)
            if typ is int and isinstance(value, bool):
                break
            if isinstance(value, typ):
                return value
            raise DigitnetError(f"{path}: config field {name!r}: expected {label}, found "
                                f"{describe_value(value)}")
    raise DigitnetError(f"{path}: config field {name!r}: unexpected value {describe_value(value)}")


def load_config_file(path: str | os.PathLike) -> dict:
    """Read a YAML or JSON recipe into a dict of TrainConfig fields; unknown keys are errors.

    Raises:
        DigitnetError: not a regular file, over MAX_RECIPE_BYTES, not UTF-8, not YAML, too deep or
            too many values (YAML aliases), not a mapping, an unknown key or a wrong type.
    """
    path = Path(path)
    content = read_regular_bytes(path, MAX_RECIPE_BYTES, "config file")
    try:
        raw = yaml.safe_load(content.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DigitnetError(f"{path}: not UTF-8 text (invalid byte at offset {e.start})") from None
    except RecursionError:
        raise DigitnetError(f"{path}: nested too deeply") from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as e:  # the latter from
        # constructors, e.g. a date with month 13
        raise DigitnetError(f"{path}: cannot parse config file: {str(e).splitlines()[0]}") from None
    if raw is None:
        return {}
    check_nesting(raw, path, max_values=MAX_RECIPE_VALUES)
    if not isinstance(raw, dict):
        raise DigitnetError(f"{path}: expected a mapping of training options, found "
                            f"{describe_value(raw)}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(k if isinstance(k, str) else describe_value(k) for k in raw if k not in known)
    if unknown:
        raise DigitnetError(
            f"{path}: unknown config key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}"
        )
    return {k: _coerce(k, v, path) for k, v in raw.items()}


def resolve_config(config_file: str | os.PathLike | None = None, **overrides) -> TrainConfig:
    """Defaults < config file < explicit overrides (None values in overrides are ignored)."""
    values = load_config_file(config_file) if config_file else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "data" in values:
        values["data"] = tuple(values["data"])
    return TrainConfig(**values)


def config_from_dict(d: dict) -> TrainConfig:
    """Rebuild a TrainConfig saved in a run's config.json (for resuming)."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in d.items() if k in known}
    if "data" in values:
        values["data"] = tuple(values["data"])
    return TrainConfig(**values)
