"""Training configuration: one frozen dataclass, loaded from defaults < a YAML/JSON file < CLI
flags.

Each TrainConfig field declares, in one place, its type, default, help text, and its range or
choices (`option`): TrainConfig checks them, and `digitnet train` builds its flags from them
(cli/train.py). Recipe files and a resumed run's config.json pass the same checks
(`config_values`), with one rule for unknown keys.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml

from digitnet.errors import DigitnetError
from digitnet.fileio import check_nesting, describe_value, read_regular_bytes

MAX_RECIPE_BYTES = 1024 * 1024  # a recipe is under 1 kB; PyYAML took 8 s for 1.4 MB (2 CPUs)
MAX_RECIPE_VALUES = 100_000  # a recipe holds a few dozen; YAML aliases make small files huge
AUGMENT_KINDS = ("warp", "shift", "handwriting")  # TrainConfig.augment_kind, see its comment
DIST_TIMEOUT_S = 120.0  # how long a process of a distributed run waits for the others (a rank
# that died or hangs) before the run fails; rank 0 validates and writes (seconds on MNIST) meanwhile
MAX_THREADS = 256  # fixed, not os.cpu_count(): a recipe or a run stays valid on every machine
# (resumed elsewhere too); torch runs 256 threads fine, while 100000 crashed it without a message

# Keys that older versions of TrainConfig had and this one no longer has: key -> why it is
# ignored. A recipe file or a resumed run's config.json may hold them (ignored with a warning);
# any other unknown key is an error. None so far: every field ever added is still a field
# (`git log -p src/digitnet/config.py`). A field removed or renamed later is added here.
RETIRED_KEYS: dict[str, str] = {}


@dataclass(frozen=True)
class Range:
    """The values a numeric field accepts: from `lo` to `hi` (None: unbounded), each bound
    excluded when `lo_open` / `hi_open`. A float range also excludes NaN and the infinities."""

    lo: int | float
    hi: int | float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def describe(self) -> str:
        """The rule in words, e.g. ">= 1 and <= 256", "> 0 and finite"."""
        text = f"{'>' if self.lo_open else '>='} {self.lo:g}"
        if self.hi is not None:
            text += (f" and {'<' if self.hi_open else '<='} {self.hi:g}"
                     if isinstance(self.hi, float) else f" and <= {self.hi}")
        return text + (" and finite" if isinstance(self.lo, float) and self.hi is None else "")

    def brief(self) -> str:
        """The rule for a help text: "1-256" for an integer interval, else as `describe`."""
        if isinstance(self.hi, int) and not (self.lo_open or self.hi_open):
            return f"{self.lo}-{_power_of_two_text(self.hi)}"
        return self.describe()


def _power_of_two_text(n: int) -> str:
    """2**63 - 1 as "2**63-1"; other numbers as they are."""
    bits = (n + 1).bit_length() - 1
    return f"2**{bits}-1" if n > 2**20 and n + 1 == 2**bits else str(n)


def option(default, help: str, *, flag: str | None = None, cli: bool = True,
           choices: tuple[str, ...] | None = None, range: Range | None = None,
           default_help: str | None = None, items: str | None = None):
    """A TrainConfig field with everything the CLI and the checks need, in one place.

    Args:
        default: the field's default.
        help: what it means, for `digitnet train --help` (the range and default are appended).
        flag: the CLI flag without "--" (default: the field name in kebab-case).
        cli: False for a field that only recipe files set.
        choices: the allowed values of a string field.
        range: the allowed values of a numeric field.
        default_help: the default in words, where the value alone does not say it.
        items: what a list field holds, for error messages ("dataset names").
    """
    metadata = {"help": help, "flag": flag, "cli": cli, "choices": choices, "range": range,
                "default_help": default_help, "items": items}
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class TrainConfig:
    # The defaults are the best recipe we know for at most 2 minutes of training and evaluation
    # on a 2-core CPU, judged on MNIST validation and on real-world renderings of the validation
    # digits (issue 14; see BENCHMARKS.md for the measurement behind them).
    arch: str = option("fast", "architecture name, e.g. cnn or cnn-v1; see `digitnet models "
                       "list`")  # a family name (the newest version) or an id such as "fast-v2"
    # The key stays `version` (recipes and stored runs use it); its flag is --arch-version, since
    # `digitnet --version` is the package's version.
    version: int | None = option(None, "architecture version", flag="arch-version",
                                 range=Range(1), default_help="the newest")
    epochs: int = option(9, "full passes over the training split", range=Range(1, 10_000))
    batch_size: int = option(512, "images per optimizer step", range=Range(1, 65_536))
    lr: float = option(0.3, "peak learning rate (one-cycle schedule)",  # too large a value
                       range=Range(0.0, lo_open=True))  # diverges, with a message saying so
    optimizer: str = option("sgd", "optimizer: sgd (Nesterov momentum 0.9) or adamw",
                            choices=("sgd", "adamw"))
    weight_decay: float = option(1e-3, "weight decay of conv and linear weights (not of batch "
                                 "norm or biases)", range=Range(0.0))
    label_smoothing: float = option(0.1, "cross-entropy label smoothing",
                                    range=Range(0.0, 1.0, hi_open=True))
    warmup_frac: float = option(0.2, "fraction of steps spent warming up in the one-cycle "
                                "schedule", cli=False, range=Range(0.0, 1.0, True, True))
    augment: bool = option(True, "augment training batches")
    augment_severity: int = option(2, "augmentation strength, mild to harsh",
                                   range=Range(1, 5))
    augment_kind: str = option(
        "handwriting", "warp: rotation, scale, shear, elastic, stroke, noise; shift: random "
        "whole-pixel shifts of up to SEVERITY pixels, cheaper; handwriting: stroke width (thin "
        "to very thick), aspect ratio, slant, binarisation, low resolution, the ink refitted "
        "into the 20x20 box as new images are", choices=AUGMENT_KINDS)
    # warp: augment_batch, SEVERITIES; shift: ~40x cheaper than warp (benchmarks/augment_speed.py),
    # for fast recipes;
    # handwriting: augment_batch, HANDWRITING, the ink refitted as the new-image pipeline does
    seed: int = option(0, "random seed (weights, shuffling, augmentation, dropout)",
                       range=Range(0, 2**63 - 1))
    val_size: int = option(5_000, "validation images (a stratified split), fewer than the "
                           "training images", range=Range(0))
    subset: int | None = option(None, "train on a stratified subset of this many images",
                                range=Range(10), default_help="all")
    data: tuple[str, ...] = option(("mnist",), "training dataset, repeatable: mnist or an "
                                   "ingested dataset name", items="dataset names")
    class_weighting: bool = option(False, "weight the loss by inverse class frequency")
    threads: int | None = option(None, "torch intra-op threads", range=Range(1, MAX_THREADS),
                                 default_help="torch's choice")
    precision: str = option("fp32", "bf16: autocast training to bfloat16, faster on CPUs with "
                            "AVX512-BF16", choices=("fp32", "bf16"))
    # bf16 autocasts convolutions and matrix products to bfloat16 in training (weights stay
    # float32): ~1.8x faster on CPUs with AVX512-BF16 or AMX, ~8x slower on CPUs without (AVX2
    # only, as most laptops and this project's AMD EPYC CI machine)
    name: str | None = option(None, "run name: 1-128 letters, digits, '.', '_' or '-', starting "
                              "with a letter or digit, not 'latest'",
                              default_help="a timestamp")  # YYYYmmdd-HHMMSS
    max_steps: int | None = option(None, "stop each epoch after this many steps (smoke tests)",
                                   range=Range(1), default_help="no limit")
    sync_bn: bool | None = option(None, "batch norm over the global batch when training on "
                                  "several CUDA processes (SyncBatchNorm; GPUs only)",
                                  default_help="on for several CUDA processes")
    eval_batch_size: int = option(1_000, "images per forward pass in evaluation", cli=False,
                                  range=Range(1, 65_536))

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if f.metadata["range"] is not None:
                _check_number(f, getattr(self, f.name))
        for f in dataclasses.fields(self):
            choices = f.metadata["choices"]
            if choices is not None and getattr(self, f.name) not in choices:
                raise DigitnetError(f"invalid training configuration: {f.name} must be "
                                    f"{_one_of(choices)}")
        if len(self.data) < 1:
            raise DigitnetError("invalid training configuration: data must name at least one "
                                "dataset")
        if self.name is not None:
            check_run_name(self.name)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["data"] = list(self.data)
        return d


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_TYPES = typing.get_type_hints(TrainConfig)

# The range of every numeric field, checked by TrainConfig itself, so CLI flags, recipe files and a
# resumed run's config.json all meet the same check before any work starts. val_size and subset
# are also checked against the size of the training data when it is loaded (data/datasets.py).
NUMERIC_RANGES: dict[str, Range] = {
    name: f.metadata["range"] for name, f in _FIELDS.items() if f.metadata["range"] is not None}


def cli_fields() -> list[dataclasses.Field]:
    """The TrainConfig fields that `digitnet train` sets with a flag, in their order."""
    return [f for f in _FIELDS.values() if f.metadata["cli"]]


def field_type(name: str) -> tuple[type, bool]:
    """The type of field `name` without Optional (bool, int, float, str or tuple), and whether
    None is allowed."""
    hint = _TYPES[name]
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"TrainConfig.{name}: only Optional[X] unions are supported")
        return _base(rest[0]), len(rest) < len(args)
    return _base(hint), False


def _base(hint) -> type:
    return typing.get_origin(hint) or hint  # tuple[str, ...] -> tuple


def _one_of(choices) -> str:
    names = [repr(c) for c in choices]
    return " or ".join(names) if len(names) == 2 else "one of " + ", ".join(names)


def describe_range(name: str) -> str:
    """The documented range of numeric field `name`, e.g. ">= 1 and <= 256"."""
    return NUMERIC_RANGES[name].describe()


def _check_number(f: dataclasses.Field, value) -> None:
    rng: Range = f.metadata["range"]
    if value is None and f.default is None:
        return
    want_float = isinstance(rng.lo, float)
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if not (is_int or (want_float and isinstance(value, float))):
        raise DigitnetError(f"invalid training configuration: {f.name} must be "
                            f"{'a number' if want_float else 'an integer'}, got {value!r}")
    lo, hi = rng.lo, rng.hi
    ok = (is_int or math.isfinite(value)) and (value > lo if rng.lo_open else value >= lo) and (
        hi is None or (value < hi if rng.hi_open else value <= hi))
    if not ok:
        raise DigitnetError(f"invalid training configuration: {f.name} must be "
                            f"{rng.describe()}, got {value!r}")


# Run names: one folder name, safe in a shell and on every file system; `latest` is a reference.
RUN_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
RESERVED_RUN_NAMES = ("latest",)


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


def _coerce(name: str, value):
    """Check a value from a recipe file or a run's config.json against the field's type hint.

    Raises:
        DigitnetError: naming the field, the type expected and the value found.
    """
    typ, optional = field_type(name)
    if value is None and optional:
        return None
    if typ is tuple:  # tuple[str, ...]; one name alone stands for a list of one
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise DigitnetError(f"config field {name!r}: expected a list of "
                                f"{_FIELDS[name].metadata['items']}, found {describe_value(value)}")
        return tuple(value)
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # JSON and YAML write 1.0 as 1
    if isinstance(value, typ) and not (typ is int and isinstance(value, bool)):
        return value
    raise DigitnetError(f"config field {name!r}: expected {typ.__name__}, found "
                        f"{describe_value(value)}")


def check_config_keys(raw: dict) -> dict:
    """The entries of `raw` (a recipe file or a run's config.json "train") that are TrainConfig
    fields. A retired key (RETIRED_KEYS) is left out with a warning; any other unknown key is an
    error. The one rule for every file that holds training options.

    Raises:
        DigitnetError: naming the unknown keys and listing the known ones.
    """
    known = _FIELDS.keys()
    unknown = sorted(k if isinstance(k, str) else describe_value(k)
                     for k in raw if k not in known and k not in RETIRED_KEYS)
    if unknown:
        raise DigitnetError(f"unknown config key(s) {', '.join(unknown)}; known keys: "
                            f"{', '.join(sorted(known))}")
    for key in raw.keys() & RETIRED_KEYS.keys():
        warnings.warn(f"config key {key!r} ignored: {RETIRED_KEYS[key]}", stacklevel=3)
    return {k: v for k, v in raw.items() if k in known}


def config_values(raw, source: str | os.PathLike | None = None) -> dict:
    """Check a mapping of training options read from `source` (named in errors): keys, types
    and ranges; the values to build a TrainConfig from.

    Raises:
        DigitnetError: not a mapping, an unknown key, a wrong type or a value out of range.
    """
    try:
        if not isinstance(raw, dict):
            raise DigitnetError(f"expected a mapping of training options, found "
                                f"{describe_value(raw)}")
        values = {k: _coerce(k, v) for k, v in check_config_keys(raw).items()}
        TrainConfig(**values)  # each value in range, before CLI flags are merged in
    except DigitnetError as e:
        if source is None:
            raise
        raise DigitnetError(f"{source}: {e}") from None
    return values


def load_config_file(path: str | os.PathLike) -> dict:
    """Read a YAML or JSON recipe into a dict of TrainConfig fields, checked by config_values.

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
    return config_values(raw, path)


def resolve_config(config_file: str | os.PathLike | None = None, **overrides) -> TrainConfig:
    """Defaults < config file < explicit overrides (None values in overrides are ignored)."""
    values = load_config_file(config_file) if config_file else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "data" in values:
        values["data"] = tuple(values["data"])
    return TrainConfig(**values)


def config_from_dict(d: dict, source: str | os.PathLike | None = None) -> TrainConfig:
    """Rebuild a TrainConfig saved in a run's config.json (for resuming): the same key, type and
    range checks as a recipe file (config_values), so a run of an older digitnet resumes and an
    unknown key is an error.

    Raises:
        DigitnetError: not a mapping, an unknown key, a wrong type or a value out of range, named
            with `source`.
    """
    return TrainConfig(**config_values(d, source))
