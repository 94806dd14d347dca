"""Training configuration: one frozen dataclass, loaded from defaults < a YAML/JSON file < CLI flags."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from digitnet.errors import DigitnetError
from digitnet.fileio import check_nesting, describe_value, read_regular_bytes

MAX_RECIPE_BYTES = 1024 * 1024  # a recipe is under 1 kB; PyYAML took 8 s for 1.4 MB (2 CPUs)
AUGMENT_KINDS = ("warp", "shift", "handwriting")  # TrainConfig.augment_kind, see its comment
MAX_RECIPE_VALUES = 100_000  # a recipe holds a few dozen; YAML aliases make small files huge


@dataclass(frozen=True)
class TrainConfig:
    # The defaults are the best recipe we know for at most 2 minutes of training and evaluation
    # on a 2-core CPU, judged on MNIST validation and on real-world renderings of the validation
    # digits (issue 14; see BENCHMARKS.md for the measurement behind them).
    arch: str = "fast"  # architecture family name (or "fast-v2"); `digitnet models list`
    version: int | None = None  # architecture version; None = the newest registered
    epochs: int = 6  # full passes over the training split
    batch_size: int = 512  # images per optimizer step
    lr: float = 0.4  # peak learning rate of the one-cycle schedule
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum 0.9) or "adamw"
    weight_decay: float = 1e-3  # L2 penalty on conv/linear weights (not on BN and biases)
    label_smoothing: float = 0.1  # cross-entropy label smoothing
    warmup_frac: float = 0.2  # fraction of steps spent warming up in the one-cycle schedule
    augment: bool = True  # random rotation/scale/shift/elastic/thickness on training batches
    augment_severity: int = 2  # 1 (mild) to 5 (harsh)
    augment_kind: str = "handwriting"  # "warp" (augment_batch, SEVERITIES), "shift" (random
    # shifts of up to augment_severity whole pixels: ~30-40x cheaper than warp, for fast recipes)
    # or "handwriting" (augment_batch, HANDWRITING: stroke width, aspect, slant, binarisation, low
    # resolution, the ink refitted as the new-image pipeline does)
    seed: int = 0  # seeds weights, shuffling, augmentation and dropout
    val_size: int = 5_000  # stratified validation split held out of the 60,000 training images
    subset: int | None = None  # train on a stratified subset of this many images (quick runs)
    data: tuple[str, ...] = ("mnist",)  # training datasets: "mnist" and ingested dataset names
    class_weighting: bool = False  # weight the loss by inverse class frequency
    threads: int | None = None  # torch intra-op threads; None = torch's default
    precision: str = "fp32"  # or "bf16": autocast convolutions and matrix products to bfloat16
    # in training (weights stay float32): ~1.8x faster on CPUs with AVX512-BF16 or AMX, ~8x
    # slower on CPUs without (AVX2 only, as most laptops and this project's AMD EPYC CI machine)
    name: str | None = None  # run name; None = a timestamp YYYYmmdd-HHMMSS
    max_steps: int | None = None  # stop each epoch after this many steps (smoke tests)
    eval_batch_size: int = 1_000  # images per forward pass in evaluation

    def __post_init__(self):
        for name, (lo, hi, lo_open, hi_open) in NUMERIC_RANGES.items():
            _check_number(name, getattr(self, name), lo, hi, lo_open, hi_open)
        checks = [
            (self.optimizer in ("sgd", "adamw"), "optimizer must be 'sgd' or 'adamw'"),
            (self.augment_kind in AUGMENT_KINDS,
             f"augment_kind must be one of {', '.join(repr(k) for k in AUGMENT_KINDS)}"),
            (self.precision in ("fp32", "bf16"), "precision must be 'fp32' or 'bf16'"),
            (len(self.data) >= 1, "data must name at least one dataset"),
        ]
        for ok, message in checks:
            if not ok:
                raise DigitnetError(f"invalid training configuration: {message}")
        if self.name is not None:
            check_run_name(self.name)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["data"] = list(self.data)
        return d


# The range of every numeric field: (low, high, low excluded, high excluded); None = unbounded.
# Checked by TrainConfig itself, so CLI flags, recipe files and a resumed run's config.json all
# meet the same check before any work starts. val_size and subset are also checked against the
# size of the training data when it is loaded (data/datasets.py).
MAX_THREADS = 256  # fixed, not os.cpu_count(): a recipe or a run stays valid on every machine
# (resumed elsewhere too); torch runs 256 threads fine, while 100000 crashed it without a message
NUMERIC_RANGES: dict[str, tuple] = dict(
    version=(1, None, False, False),
    epochs=(1, 10_000, False, False),
    batch_size=(1, 65_536, False, False),
    lr=(0.0, None, True, False),  # any finite value above 0 (too large a value diverges, with a
    # message saying so)
    weight_decay=(0.0, None, False, False),
    label_smoothing=(0.0, 1.0, False, True),
    warmup_frac=(0.0, 1.0, True, True),
    augment_severity=(1, 5, False, False),
    seed=(0, 2**63 - 1, False, False),
    val_size=(0, None, False, False),
    subset=(10, None, False, False),
    threads=(1, MAX_THREADS, False, False),
    max_steps=(1, None, False, False),
    eval_batch_size=(1, 65_536, False, False),
)

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}

# Run names: one folder name, safe in a shell and on every file system; `latest` is a reference.
RUN_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
RESERVED_RUN_NAMES = ("latest",)


def describe_range(name: str) -> str:
    """The documented range of numeric field `name`, e.g. ">= 1 and <= 256"."""
    lo, hi, lo_open, hi_open = NUMERIC_RANGES[name]
    text = f"{'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        text += f" and {'<' if hi_open else '<='} {hi:g}" if isinstance(hi, float) else f" and <= {hi}"
    return text + (" and finite" if isinstance(lo, float) and hi is None else "")


def _check_number(name: str, value, lo, hi, lo_open: bool, hi_open: bool) -> None:
    if value is None and _FIELDS[name].default is None:
        return
    want_float = isinstance(lo, float)
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if not (is_int or (want_float and isinstance(value, float))):
        raise DigitnetError(f"invalid training configuration: {name} must be "
                            f"{'a number' if want_float else 'an integer'}, got {value!r}")
    ok = (is_int or math.isfinite(value)) and (value > lo if lo_open else value >= lo) and (
        hi is None or (value < hi if hi_open else value <= hi))
    if not ok:
        raise DigitnetError(f"invalid training configuration: {name} must be "
                            f"{describe_range(name)}, got {value!r}")


def check_run_name(name) -> str:
    """`name` if it can name a run folder: one path component matching RUN_NAME_PATTERN, not
    `latest`.

    Raises:
        DigitnetError: naming the value and the rule.
    """
    if (not isinstance(name, str) or not re.fullmatch(RUN_NAME_PATTERN, name)
            or name in RESERVED_RUN_NAMES):
        raise DigitnetError(
            f"invalid training configuration: name must be 1 to 128 letters, digits, '.', '_' "
            f"or '-', starting with a letter or digit (one folder name, not "
            f"{' or '.join(repr(n) for n in RESERVED_RUN_NAMES)}), got {name!r}")
    return name


def _coerce(name: str, value, path: Path | None = None):
    """Check a value from a config file (`path`, named in errors) against the field's type."""
    where = f"{path}: " if path is not None else ""
    f = _FIELDS[name]
    if name == "data":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise DigitnetError(f"{where}config field 'data': expected a list of dataset names, "
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
            raise DigitnetError(f"{where}config field {name!r}: expected {label}, found "
                                f"{describe_value(value)}")
    raise DigitnetError(f"{where}config field {name!r}: unexpected value {describe_value(value)}")


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
    values = {k: _coerce(k, v, path) for k, v in raw.items()}
    try:
        TrainConfig(**values)  # each value in range, before CLI flags are merged in
    except DigitnetError as e:
        raise DigitnetError(f"{path}: {e}") from None
    return values


def resolve_config(config_file: str | os.PathLike | None = None, **overrides) -> TrainConfig:
    """Defaults < config file < explicit overrides (None values in overrides are ignored)."""
    values = load_config_file(config_file) if config_file else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "data" in values:
        values["data"] = tuple(values["data"])
    return TrainConfig(**values)


def config_from_dict(d: dict, source: str | os.PathLike | None = None) -> TrainConfig:
    """Rebuild a TrainConfig saved in a run's config.json (for resuming): the same type and range
    checks as a recipe file; keys of other digitnet versions are ignored.

    Raises:
        DigitnetError: a value of the wrong type or out of range, named with `source`.
    """
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    try:
        if not isinstance(d, dict):
            raise DigitnetError(f"expected a mapping of training options, got {type(d).__name__}")
        values = {k: _coerce(k, v) for k, v in d.items() if k in known}
        return TrainConfig(**values)
    except DigitnetError as e:
        if source is None:
            raise
        raise DigitnetError(f"{source}: {e}") from None
