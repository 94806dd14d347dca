"""Training: `train_one_epoch` and `evaluate` return metrics; `fit` runs a whole training run.

Every epoch draws its randomness (shuffling, augmentation, dropout) from generators seeded by
(seed, epoch), and a checkpoint is written after every epoch, so a resumed run ends with weights
bit-identical to an uninterrupted one (same seed and thread count). One process at a time trains
into a run folder (its lock), and a write that fails (a full disk) stops the run with a message
that names the last good checkpoint, leaving the run resumable.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from digitnet import __version__
from digitnet.calibration import (
    NO_VALIDATION,
    Calibration,
    calibration_from_dict,
    fit_temperature,
    not_calibrated,
)
from digitnet.config import TrainConfig, config_from_dict
from digitnet.constants import NUM_CLASSES
from digitnet.data.datasets import TensorDataset, iterate_batches, load_splits, to_model_input
from digitnet.errors import DigitnetError
from digitnet.fileio import atomic_write_json, atomic_write_text, check_json, read_json
from digitnet.models import create_model, get_spec
from digitnet.store import (
    CHECKPOINTS_DIR,
    RUN_CONFIG_SCHEMA,
    CONFIG_FILE,
    FORMAT_VERSION,
    METRICS_FILE,
    SUMMARY_FILE,
    WEIGHTS_FILE,
    ModelRef,
    architecture_signature,
    build_frozen_model,
    default_data_config,
    load_weights,
    lock_run,
    models_root,
    read_metrics,
    resolve_ref,
)
from digitnet.training.checkpoint import (
    epoch_dir_name,
    last_checkpoint_epoch,
    list_checkpoints,
    META_FILE,
    load_latest_good,
    remove_temporaries,
    save_checkpoint,
    save_state_dict,
    write_pointers,
)


# -------------------------------------------------------------------------------- one epoch
def batch_augmentation(cfg: TrainConfig):
    """The training augmentation as `f(uint8 images, generator) -> images`, or None when off."""
    if not cfg.augment:
        return None
    from digitnet.data.augment import AugmentConfig, augment_batch, shift_batch

    if cfg.augment_kind == "shift":  # whole-pixel shifts of up to `augment_severity` pixels
        return lambda images, generator: shift_batch(images, cfg.augment_severity, generator)
    if cfg.augment_kind == "handwriting":
        warp = AugmentConfig.for_handwriting(cfg.augment_severity)
    else:
        warp = AugmentConfig.for_severity(cfg.augment_severity)
    return lambda images, generator: augment_batch(images, warp, generator)


def epoch_seed(seed: int, epoch: int) -> int:
    # modulo 2**64, what torch's generators take: the same seeds as before for every seed that
    # fitted, and any seed of TrainConfig's range (up to 2**63 - 1) now works too
    return (seed * 1_000_003 + epoch) % 2**64


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
            raise DigitnetError(f"device {name!r}: Apple's MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        raise DigitnetError(f"device {name!r} is not supported; expected {DEVICES}")
    return device


def train_one_epoch(
    model: nn.Module,
    train: TensorDataset,
    optimizer: torch.optim.Optimizer,
    scheduler,
    cfg: TrainConfig,
    data_config: dict,
    generator: torch.Generator,
    class_weights: torch.Tensor | None = None,
    progress: tqdm | None = None,
) -> dict:
    """One pass over `train` on the model's device; returns train_loss, train_acc, images, steps.

    Batches are drawn and augmented on the CPU (with `generator`, so runs are reproducible and
    resumable), then moved to the model's device.
    """
    augment = batch_augmentation(cfg)
    device = next(model.parameters()).device
    model.train()
    # running sums stay on the device: no host sync per step (MPS has no float64)
    total_loss = torch.zeros((), dtype=torch.float32 if device.type == "mps" else torch.float64,
                             device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    check_every = 1 if device.type == "cpu" else 20  # reading the loss waits for the device
    seen = steps = 0
    for images, labels in iterate_batches(train, cfg.batch_size, shuffle=True, generator=generator):
        if augment is not None:
            images = augment(images, generator)
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        x = to_model_input(images, data_config["mean"], data_config["std"])
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            logits = model(x).float()  # (B, 10)
        loss = F.cross_entropy(logits, labels, weight=class_weights, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total_loss += loss.detach().to(total_loss.dtype) * len(labels)
        correct += (logits.argmax(1) == labels).sum()
        seen += len(labels)
        steps += 1
        if steps % check_every == 0 and not math.isfinite(loss.item()):
            _diverged(loss, cfg)
        if progress is not None:
            progress.update(len(labels))
            if steps % 20 == 0:
                progress.set_postfix(loss=f"{total_loss.item() / seen:.4f}",
                                     acc=f"{correct.item() / seen:.2%}")
        if cfg.max_steps and steps >= cfg.max_steps:
            break
    if not math.isfinite(total_loss.item()):
        _diverged(loss, cfg)
    return dict(train_loss=total_loss.item() / max(seen, 1), train_acc=correct.item() / max(seen, 1),
                images=seen, steps=steps)


def _diverged(loss: torch.Tensor, cfg: TrainConfig) -> NoReturn:
    raise DigitnetError(f"training diverged (loss {loss.item()}); lower --lr (now {cfg.lr})")


@torch.no_grad()
def evaluate(model: nn.Module, dataset: TensorDataset, data_config: dict, batch_size: int = 1000,
             keep_logits: bool = False) -> dict:
    """Mean cross-entropy loss and accuracy of `model` on `dataset` (eval mode, model's device);
    with `keep_logits`, also the raw logits (N, 10) on the CPU under "logits"."""
    device = next(model.parameters()).device
    model.eval()
    total_loss = 0.0
    correct = 0
    kept = []
    for images, labels in iterate_batches(dataset, batch_size):
        images, labels = images.to(device), labels.to(device)
        x = to_model_input(images, data_config["mean"], data_config["std"])
        logits = model(x.contiguous(memory_format=torch.channels_last))
        total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += int((logits.argmax(1) == labels).sum())
        if keep_logits:
            kept.append(logits.float().cpu())
    n = max(len(dataset), 1)
    out = dict(loss=total_loss / n, acc=correct / n)
    if keep_logits:
        out["logits"] = torch.cat(kept) if kept else torch.empty(0, NUM_CLASSES)
    return out


def calibrate_on_validation(model: nn.Module, val: TensorDataset, data_config: dict,
                            batch_size: int = 1000) -> tuple[dict, Calibration]:
    """Validation loss and accuracy, and the temperature fitted on the validation logits (the
    fit takes milliseconds: every checkpoint gets its own). No validation split: ({}, T = 1)."""
    if not len(val):
        return {}, not_calibrated(NO_VALIDATION)
    metrics = evaluate(model, val, data_config, batch_size, keep_logits=True)
    return metrics, fit_temperature(metrics.pop("logits"), val.labels)


# ------------------------------------------------------------------------------- set-up helpers
def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Weight decay on conv and linear weights only (not on batch norm and biases)."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [dict(params=decay, weight_decay=cfg.weight_decay), dict(params=no_decay, weight_decay=0.0)]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """One cycle: linear warm-up to `lr` over `warmup_frac` of the steps, then linear decay to 0."""
    total = cfg.epochs * steps_per_epoch
    warmup = max(1, round(cfg.warmup_frac * total))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def steps_per_epoch(n_train: int, cfg: TrainConfig) -> int:
    steps = math.ceil(n_train / cfg.batch_size)
    return min(steps, cfg.max_steps) if cfg.max_steps else steps


def load_training_data(cfg: TrainConfig, data_dir) -> dict:
    """Train/val/test splits of MNIST plus any ingested datasets named in `cfg.data`."""
    splits = load_splits(data_dir, val_size=cfg.val_size, subset=cfg.subset)
    extra = [name for name in cfg.data if name != "mnist"]
    if "mnist" not in cfg.data or extra:
        from digitnet.data.ingest import combine_training_data  # type: ignore[import-not-found]

        splits["train"] = combine_training_data(splits["train"], cfg.data)
    return splits


def environment_info(device: torch.device) -> dict:
    info = dict(digitnet=__version__, torch=torch.__version__, numpy=np.__version__,
                python=sys.version.split()[0], platform=platform.platform(),
                threads=torch.get_num_threads(), device=str(device))
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    src = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def class_weights_for(train: TensorDataset) -> torch.Tensor:
    """Inverse class frequency, normalised to mean 1 (absent classes get weight 0)."""
    counts = train.class_counts().double()
    weights = torch.where(counts > 0, counts.sum() / (NUM_CLASSES * counts.clamp(min=1)), 0.0)
    return weights.float()


def new_run_dir(root: Path, arch_id: str, name: str | None) -> Path:
    """A fresh folder for a run; a timestamp name gets a suffix if taken.

    Raises:
        DigitnetError: `name` is taken; says what the folder holds and what to do.
    """
    if name:
        run_dir = root / arch_id / name
        try:
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            run_dir.mkdir()
        except FileExistsError:
            raise DigitnetError(_taken(run_dir)) from None
        return run_dir
    base = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir, i = root / arch_id / base, 2
    root.joinpath(arch_id).mkdir(parents=True, exist_ok=True)
    while True:
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            run_dir, i = root / arch_id / f"{base}-{i}", i + 1


def _taken(run_dir: Path) -> str:
    ref = f"{run_dir.parent.name}/{run_dir.name}"
    if not (run_dir / CONFIG_FILE).is_file():
        return (f"{run_dir} already exists and is not a run (no {CONFIG_FILE}); remove it or "
                f"choose another --name")
    if training_done(run_dir):
        return f"{run_dir} already exists (a finished run {ref}); choose another --name"
    done = len(list_checkpoints(run_dir / CHECKPOINTS_DIR))
    if not done:
        return (f"{run_dir} already exists: run {ref} stopped before it finished an epoch; "
                f"`digitnet train --resume {ref}` starts it again with its own configuration, or "
                f"choose another --name")
    return (f"{run_dir} already exists: run {ref} stopped after {done} finished epoch(s); continue "
            f"it with `digitnet train --resume {ref}` or choose another --name")


_FAILED_WRITE = {errno.ENOSPC: "no space left on {}", errno.EDQUOT: "disk quota exceeded on {}",
                 errno.EROFS: "{} is on a read-only file system"}


@contextlib.contextmanager
def _writing(folder: Path, run_dir: Path | None):
    """Turn an OSError of the writes in the block (into `folder`) into one DigitnetError that
    names the folder and the last good checkpoint of `run_dir` (None: a run not created yet)."""
    try:
        yield
    except OSError as e:
        what = _FAILED_WRITE.get(e.errno, "cannot write in {}" + f" ({e.strerror or e})")
        if run_dir is None:
            raise DigitnetError(f"{what.format(folder)}; the run was not created") from e
        ref = f"{run_dir.parent.name}/{run_dir.name}"
        epoch = last_checkpoint_epoch(run_dir / CHECKPOINTS_DIR)
        last = f"last good checkpoint is epoch {epoch}" if epoch else "no checkpoint yet"
        raise DigitnetError(f"{what.format(folder)}, {last}; make room, then continue with "
                            f"`digitnet train --resume {ref}`") from e


def _append_metrics(run_dir: Path, row: dict) -> None:
    with open(run_dir / METRICS_FILE, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def capture_rng() -> dict:
    return dict(torch=torch.get_rng_state())  # all randomness in training comes from torch


def restore_rng(state: dict) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])


# ------------------------------------------------------------------------------------ the run
@dataclass
class RunState:
    run_dir: Path
    cfg: TrainConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    start_epoch: int  # first epoch to run, 1-based
    best_val: float  # best validation accuracy so far
    data_config: dict
    device: torch.device
    calibration: Calibration | None = None  # of the weights now in `model`; None: not fitted yet


def _init_run(cfg: TrainConfig, splits: dict, models_dir, data_info: dict,
              device: torch.device, stack: contextlib.ExitStack) -> RunState:
    model = create_model(cfg.arch, cfg.version).to(device, memory_format=torch.channels_last)
    arch = dict(name=model.arch_name, version=model.arch_version,
                id=f"{model.arch_name}-v{model.arch_version}", model_args=model.model_args,
                signature=architecture_signature(model))
    root = models_root(models_dir)
    with _writing(root / arch["id"], None):
        run_dir = new_run_dir(root, arch["id"], cfg.name)
    data_config = default_data_config()
    config = dict(format_version=FORMAT_VERSION, arch=arch, data_config=data_config,
                  train=cfg.to_dict(), data=data_info, env=environment_info(device),
                  created=dt.datetime.now().astimezone().isoformat(timespec="microseconds"),
                  ref=f"{arch['id']}/{run_dir.name}")
    try:
        with _writing(run_dir, None):
            stack.enter_context(lock_run(run_dir))
            atomic_write_json(run_dir / CONFIG_FILE, config)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)  # nothing of the run exists yet: no leftover
        raise
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch(len(splits["train"]), cfg))
    return RunState(run_dir, cfg, model, optimizer, scheduler, 1, -1.0, data_config, device)


def _resume_run(ref: str, splits_for, models_dir, which: str | None,
                device: torch.device, stack: contextlib.ExitStack) -> tuple[RunState, dict]:
    mref = resolve_ref(ref, models_dir)
    path = mref.run_dir / CONFIG_FILE  # written once, atomically: no lock needed
    config = read_json(path, "run config")
    # the training options first (their ranges live in TrainConfig), then what loading needs
    cfg = config_from_dict(config.get("train") if isinstance(config, dict) else config,
                           source=f"{path} (train)")
    check_json(config, RUN_CONFIG_SCHEMA, path)
    with _writing(mref.run_dir, mref.run_dir):
        stack.enter_context(lock_run(mref.run_dir))
    which = which or mref.checkpoint or "last"
    ckpt_dir = mref.run_dir / CHECKPOINTS_DIR
    from_scratch = not list_checkpoints(ckpt_dir)
    if from_scratch and training_done(mref.run_dir):  # its checkpoints deleted: keep the weights
        raise DigitnetError(f"cannot resume {mref.label}: it is finished and has no "
                            f"checkpoints left")
    if from_scratch and which != "last":
        raise DigitnetError(f"cannot resume {config['ref']} from {which!r}: it finished no epoch; "
                            f"`digitnet train --resume {config['ref']}` starts it from scratch")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)  # weight initialisation of a run started from scratch, as in fit
    splits = splits_for(cfg)
    if splits["mnist"].sha256 != config["data"].get("sha256"):
        raise DigitnetError(f"cannot resume {mref.label}: the MNIST files differ from those it was trained on")
    if config["data"].get("ingested"):
        from digitnet.data.ingest import dataset_fingerprint

        for recorded in config["data"]["ingested"]:
            now = dataset_fingerprint(recorded["name"])
            if any(now[k] != recorded[k] for k in ("count", "balance", "content_sha256")):
                raise DigitnetError(f"cannot resume {mref.label}: ingested dataset {recorded['name']!r} "
                                    f"changed since the run started")
    model = build_frozen_model(config["arch"], mref.run_dir).to(device, memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch(len(splits["train"]), cfg))
    removed = remove_temporaries(mref.run_dir, ckpt_dir)  # what a killed or failed writer left
    if removed:
        print(f"removed {len(removed)} temporary file(s) of an interrupted write", file=sys.stderr)
    if from_scratch:
        print(f"{config['ref']} stopped before it finished an epoch: starting it from scratch with "
              f"its own configuration", file=sys.stderr)
        with _writing(mref.run_dir, mref.run_dir):
            atomic_write_text(mref.run_dir / METRICS_FILE, "")
        state = RunState(mref.run_dir, cfg, model, optimizer, scheduler, 1, -1.0,
                         config["data_config"], device)
        return state, splits
    ckpt, warnings = load_latest_good(ckpt_dir, which)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if warnings:
        print(f"resuming from the last good checkpoint instead: {ckpt.path.name}", file=sys.stderr)
    load_weights(model, ckpt.model_state, ckpt.path, config["arch"]["id"])
    try:
        optimizer.load_state_dict(ckpt.training_state["optimizer"])
        scheduler.load_state_dict(ckpt.training_state["scheduler"])
    except (KeyError, ValueError, RuntimeError) as e:
        raise DigitnetError(f"{ckpt.path}: optimizer or scheduler state does not fit this run ({e})") from None
    restore_rng(ckpt.training_state.get("rng", {}))
    # forget metrics of epochs after the checkpoint (a killed run may have logged one more)
    rows = [r for r in read_metrics(mref.run_dir) if r["epoch"] <= ckpt.epoch]
    with _writing(mref.run_dir, mref.run_dir):
        atomic_write_text(mref.run_dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in rows))
    best_val = ckpt.training_state.get("best_val", -1.0)
    print(f"resuming {config['ref']} after epoch {ckpt.epoch} of {cfg.epochs}")
    recorded = ckpt.meta.get("calibration")  # None in checkpoints written before calibration
    calibration = calibration_from_dict(recorded, ckpt.path / META_FILE) if recorded else None
    state = RunState(mref.run_dir, cfg, model, optimizer, scheduler, ckpt.epoch + 1, best_val,
                     config["data_config"], device, calibration)
    return state, splits


def fit(
    cfg: TrainConfig | None = None,
    data_dir=None,
    models_dir=None,
    resume: str | None = None,
    resume_checkpoint: str | None = None,
    progress: bool = True,
    device: str = "auto",
) -> dict:
    """Train a model (or resume one) and return its summary (ref, paths, final metrics).

    Args:
        cfg: the recipe; ignored when resuming (the run's own configuration is used).
        data_dir: MNIST folder (None: $DIGITNET_DATA_DIR, then the user cache).
        models_dir: the model store (None: $DIGITNET_MODELS_DIR, then ./models).
        resume: a model reference to continue from its last checkpoint.
        resume_checkpoint: "last", "best" or "epoch-N" to resume from instead.
        device: where to train, one of DEVICES (a run may be resumed on another device).
    """
    torch_device = resolve_device(device)
    def splits_for(c: TrainConfig) -> dict:
        return load_training_data(c, data_dir)

    with contextlib.ExitStack() as stack:  # holds the run folder's lock until the run ends
        if resume:
            state, splits = _resume_run(resume, splits_for, models_dir, resume_checkpoint,
                                        torch_device, stack)
        else:
            cfg = cfg or TrainConfig()
            if cfg.threads:
                torch.set_num_threads(cfg.threads)
            spec = get_spec(cfg.arch, cfg.version)  # unknown architecture: fails before data loading
            taken = models_root(models_dir) / spec.arch_id / (cfg.name or "")
            if cfg.name and taken.exists():  # a taken name too
                raise DigitnetError(_taken(taken))
            torch.manual_seed(cfg.seed)  # weight initialisation
            splits = splits_for(cfg)
            mnist = splits["mnist"]
            data_info = dict(dir=str(mnist.data_dir), sha256=mnist.sha256, datasets=list(cfg.data),
                             train_size=len(splits["train"]), val_size=len(splits["val"]),
                             train_class_counts=splits["train"].class_counts().tolist())
            if any(name != "mnist" for name in cfg.data):
                from digitnet.data.ingest import dataset_fingerprint

                data_info["ingested"] = [dataset_fingerprint(n) for n in cfg.data if n != "mnist"]
            state = _init_run(cfg, splits, models_dir, data_info, torch_device, stack)
        return _run_epochs(state, splits, progress)


def _run_epochs(state: RunState, splits: dict, progress: bool) -> dict:
    cfg, model, run_dir = state.cfg, state.model, state.run_dir
    train, val = splits["train"], splits["val"]
    weights = class_weights_for(train).to(state.device) if cfg.class_weighting else None
    ref = f"{run_dir.parent.name}/{run_dir.name}"
    where = (f"{torch.get_num_threads()} threads" if state.device.type == "cpu"
             else f"on {state.device}")
    print(f"training {ref}: {len(train):,} train / {len(val):,} val images, {cfg.epochs} epochs, "
          f"batch {cfg.batch_size}, {where}")
    best_val = state.best_val
    for epoch in range(state.start_epoch, cfg.epochs + 1):
        start = time.perf_counter()
        generator = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
        torch.manual_seed(epoch_seed(cfg.seed, epoch))  # dropout
        n_images = min(len(train), (cfg.max_steps or 10**12) * cfg.batch_size)
        with tqdm(total=n_images, unit="img", desc=f"epoch {epoch}/{cfg.epochs}", leave=False,
                  disable=not progress, dynamic_ncols=True) as bar:
            row = train_one_epoch(model, train, state.optimizer, state.scheduler, cfg,
                                  state.data_config, generator, weights, bar)
        train_seconds = time.perf_counter() - start
        val_metrics, state.calibration = calibrate_on_validation(model, val, state.data_config,
                                                                 cfg.eval_batch_size)
        row = dict(epoch=epoch, train_loss=row["train_loss"], train_acc=row["train_acc"],
                   val_loss=val_metrics.get("loss"), val_acc=val_metrics.get("acc"),
                   lr=state.scheduler.get_last_lr()[0], seconds=time.perf_counter() - start,
                   images_per_s=row["images"] / train_seconds, device=str(state.device))
        score = row["val_acc"] if row["val_acc"] is not None else epoch  # no val split: newest wins
        is_best = score > best_val
        best_val = max(best_val, score)
        ckpt_dir = run_dir / CHECKPOINTS_DIR
        # metrics first: an epoch counts once `last` names it, and a resume forgets the rows of
        # later epochs, so a crash or a full disk between any two writes leaves a consistent run
        with _writing(run_dir, run_dir):
            _append_metrics(run_dir, row)
        with _writing(ckpt_dir, run_dir):
            save_checkpoint(
                ckpt_dir, epoch, model.state_dict(),
                dict(optimizer=state.optimizer.state_dict(), scheduler=state.scheduler.state_dict(),
                     rng=capture_rng(), best_val=best_val),
                dict(metrics=row, calibration=state.calibration.to_dict()),
            )
            write_pointers(ckpt_dir, last=epoch_dir_name(epoch),
                           **({"best": epoch_dir_name(epoch)} if is_best else {}))
        val_text = f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%}  " if val_metrics else ""
        print(f"epoch {epoch:>3}/{cfg.epochs}  train loss {row['train_loss']:.4f} acc "
              f"{row['train_acc']:.2%}  {val_text}lr {row['lr']:.4g}  {row['seconds']:.1f}s  "
              f"{row['images_per_s']:,.0f} img/s", flush=True)
    return finish_run(state, splits)


def finish_run(state: RunState, splits: dict) -> dict:
    """Write the final weights and summary (test metrics on MNIST test)."""
    run_dir = state.run_dir
    with _writing(run_dir, run_dir):
        save_state_dict(state.model.state_dict(), run_dir / WEIGHTS_FILE)
    calibration = state.calibration  # the last epoch's: the final weights are its weights
    if calibration is None:  # resumed from a checkpoint written before calibration
        calibration = calibrate_on_validation(state.model, splits["val"], state.data_config,
                                              state.cfg.eval_batch_size)[1]
    test = evaluate(state.model, splits["test"], state.data_config, state.cfg.eval_batch_size)
    rows = read_metrics(run_dir)
    ref = f"{run_dir.parent.name}/{run_dir.name}"
    summary = dict(ref=ref, path=str(run_dir), epochs_done=rows[-1]["epoch"] if rows else 0,
                   final=rows[-1] if rows else {}, test_loss=test["loss"], test_acc=test["acc"],
                   best_checkpoint=ModelRef(run_dir, "best").label,
                   total_seconds=sum(r["seconds"] for r in rows),
                   calibration=calibration.to_dict())
    with _writing(run_dir, run_dir):
        atomic_write_json(run_dir / SUMMARY_FILE, summary)
    print(f"probabilities: {calibration.describe()}")
    print(f"test (MNIST test, {len(splits['test']):,} images): loss {test['loss']:.4f}  accuracy {test['acc']:.2%}")
    return summary


def training_done(run_dir: Path) -> bool:
    return (run_dir / WEIGHTS_FILE).is_file() and (run_dir / SUMMARY_FILE).is_file()


__all__ = ["evaluate", "fit", "resolve_device", "train_one_epoch", "training_done"]
