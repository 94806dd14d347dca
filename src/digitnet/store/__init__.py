"""The model store: one folder per trained model, references to them, and loading any of them.

    models/cnn-v1/20261125-120000/
        config.json          architecture, hyperparameters, data checksums, library versions
        metrics.jsonl        one line per finished epoch
        model.safetensors    final weights (written when training finishes)
        summary.json         final metrics
        checkpoints/         one folder per epoch, plus pointers to the best and the last

A reference is `ARCH-vN/RUN`, `ARCH-vN/latest`, `latest` (the newest model of any architecture),
any of them with `@last`, `@best` or `@epoch-N`, or a path to a model or checkpoint folder.
Commands that take several models also accept a glob for the run name (`wide-v1/ens-*`).

A store reference always names a folder inside the store: RUN is one folder name (never `..`, never
with a `/`). A path is explicit when it is absolute or starts with `./`, `../` or `~`; any other
text is a path only when it is an existing folder with no `..` in it, else a store reference.
One process at a time trains into a run folder: it holds the folder's lock (`lock_run`).
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from digitnet.calibration import (
    CALIBRATION_SCHEMA,
    Calibration,
    calibrated_probs,
    calibration_from_dict,
)
from digitnet.constants import IMAGE_SIZE, LABEL_NAMES, MNIST_MEAN, MNIST_STD
from digitnet.errors import DigitnetError
from digitnet.fileio import (
    MAX_JSON_BYTES,
    Check,
    exclusive_lock,
    parse_json,
    read_json,
    read_regular_bytes,
)
from digitnet.training.checkpoint import (
    META_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    list_checkpoints,
    write_checkpoint_calibration,
    load_checkpoint,
    load_state_dict,
    resolve_checkpoint,
)

ENV_MODELS_DIR = "DIGITNET_MODELS_DIR"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINTS_DIR = "checkpoints"
LOCK_FILE = "train.lock"  # held by the process that trains into the run folder
FORMAT_VERSION = 1
ARCH_ID_PATTERN = r"[A-Za-z0-9][\w.-]*-v\d+"


def models_root(models_dir: str | os.PathLike | None = None) -> Path:
    """`models_dir`, else $DIGITNET_MODELS_DIR, else ./models."""
    return Path(models_dir or os.environ.get(ENV_MODELS_DIR) or "models")


def default_data_config() -> dict:
    """How images must look before they enter a model (saved with every model)."""
    return dict(input_size=[1, IMAGE_SIZE, IMAGE_SIZE], mean=MNIST_MEAN, std=MNIST_STD,
                label_names=list(LABEL_NAMES), polarity="white digit on black, 0-255")


def architecture_signature(model: nn.Module) -> list[list]:
    """Parameter and buffer names with shapes: what a frozen version must keep."""
    return [[k, list(v.shape)] for k, v in model.state_dict().items()]


def _at_least(minimum: int) -> Check:
    return Check(int, lambda v: v >= minimum, f"an integer >= {minimum}")


# What loading needs from a run's files (other keys are kept but not relied on).
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
RUN_CONFIG_SCHEMA = {"format_version?": int, "arch": ARCH_SCHEMA,
                     "data_config": DATA_CONFIG_SCHEMA, "train?": {"val_size?": _at_least(0)},
                     "data?": dict, "env?": dict, "created?": (str, None), "ref?": (str, None)}
SUMMARY_SCHEMA = {"epochs_done?": _at_least(0), "test_acc?": (float, None),
                  "calibration?": CALIBRATION_SCHEMA}
METRICS_ROW_SCHEMA = {"epoch": _at_least(1), "seconds?": float, "val_acc?": (float, None)}


def read_run_config(run_dir: Path) -> dict:
    """A run's config.json, checked to hold what loading and resuming need.

    Raises:
        DigitnetError: unreadable, not JSON, or a field missing or of the wrong type (named).
    """
    return read_json(run_dir / CONFIG_FILE, "run config", RUN_CONFIG_SCHEMA)


def read_metrics(run_dir: Path) -> list[dict]:
    """Per-epoch metrics of a run (a torn last line from a crash is ignored).

    Raises:
        DigitnetError: an earlier line is not a metrics row (the file and line are named).
    """
    path = run_dir / METRICS_FILE
    if not path.exists():
        return []
    lines = read_regular_bytes(path, MAX_JSON_BYTES, "metrics file").split(b"\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(parse_json(line, f"{path} line {number}", METRICS_ROW_SCHEMA))
        except DigitnetError:
            if number == len(lines):  # no newline after it: a write cut short
                break
            raise
    return rows


# ---------------------------------------------------------------------------------- references
@dataclass(frozen=True)
class ModelRef:
    run_dir: Path
    checkpoint: str | None  # None: the final weights (or the last checkpoint while training)

    @property
    def label(self) -> str:
        base = f"{self.run_dir.parent.name}/{self.run_dir.name}"
        return base if self.checkpoint is None else f"{base}@{self.checkpoint}"


def list_runs(models_dir: str | os.PathLike | None = None, arch_id: str | None = None) -> list[Path]:
    """Model folders in the store, oldest first (by the time recorded in config.json)."""
    root = models_root(models_dir)
    if not root.is_dir():
        return []
    runs = []
    for arch_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if arch_id and arch_dir.name != arch_id:
            continue
        for run in arch_dir.iterdir():
            if (run / CONFIG_FILE).is_file():
                runs.append(run)

    def created(run: Path) -> str:
        try:
            config = read_json(run / CONFIG_FILE, "run config")
        except DigitnetError:  # listed anyway; loading it says what is wrong
            return ""
        created = config.get("created") if isinstance(config, dict) else None
        return created if isinstance(created, str) else ""

    return sorted(runs, key=lambda r: (created(r), r.name))


def _newest_run(root: Path, arch_id: str | None, ref: str) -> Path:
    """The most recent run (of `arch_id`, or of any architecture) that has weights."""
    runs = [r for r in list_runs(root, arch_id)
            if (r / WEIGHTS_FILE).is_file() or list_checkpoints(r / CHECKPOINTS_DIR)]
    if not runs:
        what = f"{arch_id} model" if arch_id else "model"
        raise DigitnetError(f"model reference {ref!r}: no trained {what} in {root}")
    return runs[-1]


def lock_run(run_dir: Path):
    """A context manager that holds `run_dir`'s lock: one training process per run folder.

    Raises:
        DigitnetError: another live process trains into the folder (a killed one does not count).
    """
    return exclusive_lock(run_dir / LOCK_FILE,
                          f"run {run_dir.parent.name}/{run_dir.name} is being trained by another "
                          f"process", "wait for it to end or stop it")


def is_explicit_path(base: str) -> bool:
    """A reference that is a path, whatever else exists: absolute, or `./`, `../`, `~`."""
    return (Path(base).is_absolute() or base in (".", "..", "~")
            or base.startswith(("./", "../", "~/", ".\\", "..\\")))


def _is_path(base: str) -> bool:
    """Explicit, or an existing folder named without `..` (so `cnn-v1/../..` never counts)."""
    if is_explicit_path(base):
        return True
    return ".." not in Path(base).parts and Path(base).is_dir()


def _parse_store_ref(ref: str, base: str) -> tuple[str, str]:
    """`ARCH-vN/RUN` -> (arch id, run name or glob), RUN one folder name inside the store."""
    arch_id, sep, run = base.partition("/")
    if not sep or not re.fullmatch(ARCH_ID_PATTERN, arch_id):
        raise DigitnetError(
            f"model reference {ref!r}: expected ARCH-vN/RUN, ARCH-vN/latest (optionally with "
            f"@last, @best or @epoch-N) or the path to a model folder"
        )
    if not run or run in (".", "..") or any(c in run for c in "/\\\0"):
        raise DigitnetError(
            f"model reference {ref!r}: the run name {run!r} is not one folder name of the store; "
            f"a path to a folder elsewhere must start with /, ./, ../ or ~"
        )
    return arch_id, run


def resolve_ref(ref: str, models_dir: str | os.PathLike | None = None) -> ModelRef:
    """Turn a reference into a model folder and a checkpoint name.

    Raises:
        DigitnetError: nothing matches (says what exists), or a store reference that would leave
            the store.
    """
    base, _, checkpoint = ref.partition("@")
    checkpoint = checkpoint or None
    if _is_path(base):
        path = Path(base).expanduser()
        if not path.is_dir():
            raise DigitnetError(f"model reference {ref!r}: {path} is not a folder")
        if (path / CONFIG_FILE).is_file():
            return ModelRef(path.resolve(), checkpoint)
        if (path / META_FILE).is_file() and path.parent.name == CHECKPOINTS_DIR:
            return ModelRef(path.parent.parent.resolve(), path.name)
        raise DigitnetError(f"{path}: not a model folder (no {CONFIG_FILE}) or checkpoint folder")
    root = models_root(models_dir)
    if base == "latest":
        base = "/".join(_newest_run(root, None, ref).parts[-2:])
    arch_id, run = _parse_store_ref(ref, base)
    if run == "latest":
        return ModelRef(_newest_run(root, arch_id, ref).resolve(), checkpoint)
    run_dir = root / arch_id / run
    if not (run_dir / CONFIG_FILE).is_file():
        known = [r.name for r in list_runs(root, arch_id)]
        hint = f"; {arch_id} models: {', '.join(known[-10:])}" if known else f"; no {arch_id} models in {root}"
        raise DigitnetError(f"model reference {ref!r}: {run_dir} not found{hint}")
    return ModelRef(run_dir.resolve(), checkpoint)


def expand_refs(refs: list[str], models_dir: str | os.PathLike | None = None) -> list[str]:
    """Expand references whose run name is a glob (`wide-v1/ens-*`, `cnn-v1/*@best`) into one
    `ARCH-vN/RUN` reference per matching run, oldest first; other references pass unchanged.

    Raises:
        DigitnetError: a pattern matches no run, or is not one folder name of the store.
    """
    root = models_root(models_dir)
    out = []
    for ref in refs:
        base, at, checkpoint = ref.partition("@")
        _, sep, pattern = base.partition("/")
        if not sep or not any(c in pattern for c in "*?[") or _is_path(base):
            out.append(ref)
            continue
        arch_id, pattern = _parse_store_ref(ref, base)
        runs = [r.name for r in list_runs(root, arch_id) if fnmatch.fnmatchcase(r.name, pattern)]
        if not runs:
            raise DigitnetError(f"model reference {ref!r}: no {arch_id} run in {root} matches "
                                f"{pattern!r}")
        out += [f"{arch_id}/{run}{at}{checkpoint}" for run in runs]
    return out


# ------------------------------------------------------------------------------------- loading
@dataclass
class LoadedModel:
    """An eval-mode model with everything needed to feed it and to describe it."""

    model: nn.Module
    data_config: dict  # input_size, mean, std, label_names
    config: dict  # the run's config.json
    ref: ModelRef
    epoch: int | None  # finished epochs of the weights; None for final weights without metadata
    calibration: Calibration = Calibration()  # T = 1 for weights saved before calibration

    @property
    def temperature(self) -> float:
        return self.calibration.temperature

    @torch.no_grad()
    def logits(self, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """uint8 images (N, 28, 28), white on black -> raw float logits (N, 10)."""
        from digitnet.data.datasets import to_model_input

        mean, std = self.data_config["mean"], self.data_config["std"]
        out = [self.model(to_model_input(images[i : i + batch_size], mean, std))
               for i in range(0, len(images), batch_size)]
        return torch.cat(out) if out else torch.empty(0, len(self.data_config["label_names"]))

    def probs(self, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """uint8 images (N, 28, 28) -> calibrated probabilities softmax(logits / T), float64."""
        return calibrated_probs(self.logits(images, batch_size), self.temperature)


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


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: Path, arch_id: str) -> None:
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
            f"shape differs {shape}); if {arch_id} was changed, register the change as a new version"
        )
    model.load_state_dict(check_weights(model, state, source), strict=True)


def load_model(ref: str | ModelRef, models_dir: str | os.PathLike | None = None) -> LoadedModel:
    """Load any trained model or checkpoint for evaluation, prediction or export (eval mode).

    Raises:
        DigitnetError: unknown reference, changed architecture, corrupt or unsafe files.
    """
    if isinstance(ref, str):
        from digitnet.deploy.hub import is_hub_ref, load_from_hub

        if is_hub_ref(ref):  # hf://USER/NAME[@REV], or an exported folder or a clone of its mirror
            return load_from_hub(ref)
    mref = resolve_ref(ref, models_dir) if isinstance(ref, str) else ref
    config = read_run_config(mref.run_dir)
    arch = config["arch"]
    model = build_frozen_model(arch, mref.run_dir)
    check_label_names(model, config["data_config"]["label_names"], mref.run_dir / CONFIG_FILE)
    final = mref.run_dir / WEIGHTS_FILE
    calibration = Calibration()  # weights saved before calibration: T = 1
    if mref.checkpoint is None and final.is_file():
        state, epoch, source = load_state_dict(final), None, final
        summary = mref.run_dir / SUMMARY_FILE
        if summary.is_file():
            values = read_json(summary, "run summary", SUMMARY_SCHEMA)
            epoch = values.get("epochs_done", epoch)
            calibration = calibration_from_dict(values.get("calibration"), summary)
    else:
        ckpt_dir = mref.run_dir / CHECKPOINTS_DIR
        if not list_checkpoints(ckpt_dir):
            raise CheckpointError(f"{mref.run_dir}: no final weights and no checkpoints yet")
        path = resolve_checkpoint(ckpt_dir, mref.checkpoint or "last")
        ckpt = load_checkpoint(path, with_training_state=False)
        state, epoch, source = ckpt.model_state, ckpt.epoch, path / WEIGHTS_FILE
        calibration = calibration_from_dict(ckpt.meta.get("calibration"), path / META_FILE)
        mref = ModelRef(mref.run_dir, path.name)
    load_weights(model, state, source, arch["id"])
    model.eval()
    return LoadedModel(model, config["data_config"], config, mref, epoch, calibration)


def save_calibration(loaded: LoadedModel, calibration: Calibration) -> LoadedModel:
    """Store `calibration` with the weights `loaded` came from, atomically, weights untouched:
    in the run's summary.json for final weights, in meta.json for a checkpoint.

    Returns:
        `loaded` with the new calibration.

    Raises:
        DigitnetError: an exported model (its calibration comes from its source run), final
            weights without a summary.json, or another process training into the run.
    """
    from digitnet.fileio import atomic_write_json

    mref = loaded.ref
    if loaded.config.get("export") is not None:
        raise DigitnetError(f"{mref.label}: an exported model; calibrate its source run "
                            f"{loaded.config.get('ref')} and export it again")
    with lock_run(mref.run_dir):
        if mref.checkpoint is None:
            path = mref.run_dir / SUMMARY_FILE
            if not path.is_file():
                raise DigitnetError(f"{path}: not found; only a finished run (or one of its "
                                    f"checkpoints, REF@last) can be calibrated")
            summary = read_json(path, "run summary", SUMMARY_SCHEMA)
            atomic_write_json(path, {**summary, "calibration": calibration.to_dict()})
        else:
            path = resolve_checkpoint(mref.run_dir / CHECKPOINTS_DIR, mref.checkpoint)
            write_checkpoint_calibration(path, calibration.to_dict())
    return replace(loaded, calibration=calibration)
