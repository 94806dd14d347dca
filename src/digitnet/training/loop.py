"""Training: `evaluate` returns metrics; `fit` runs a whole training run into the model store.

Every epoch draws its randomness (shuffling, augmentation, dropout) from generators seeded by
(seed, epoch), and a checkpoint is written after every epoch, so a resumed run ends with weights
bit-identical to an uninterrupted one (same seed and thread count). Everything written goes
through a `digitnet.store.Run`, which holds the run folder's lock and turns a failed write (a full
disk) into a message that names the last good checkpoint, leaving the run resumable.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from digitnet.calibration import (
    NO_VALIDATION,
    Calibration,
    fit_temperature,
    not_calibrated,
)
from digitnet.config import DIST_TIMEOUT_S, TrainConfig, config_from_dict
from digitnet.constants import NUM_CLASSES
from digitnet.data.datasets import TensorDataset
from digitnet.errors import DigitnetError
from digitnet.models import create_model, get_spec
from digitnet.store import (
    Run,
    arch_record,
    batched_logits,
    build_frozen_model,
    check_name_free,
    default_data_config,
    load_weights,
    models_root,
    resolve_ref,
    training_done,
)
from digitnet.training import distributed
from digitnet.training.device import DEVICES, resolve_device
from digitnet.training.distributed import Processes
from digitnet.training.env import environment_info
from digitnet.training.epoch import epoch_seed, train_one_epoch
from digitnet.training.inputs import batch_augmentation, class_weights_for, load_training_data
from digitnet.training.optim import build_optimizer, build_scheduler, steps_per_epoch


# ----------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model: nn.Module, dataset: TensorDataset, data_config: dict, batch_size: int = 1000,
             keep_logits: bool = False) -> dict:
    """Mean cross-entropy loss and accuracy of `model` on `dataset` (eval mode, model's device),
    through the store's one forward pass (`batched_logits`); with `keep_logits`, also the raw
    logits (N, 10) on the CPU under "logits"."""
    model.eval()
    total_loss = 0.0
    correct = 0
    kept = []
    batches = batched_logits(model, dataset.images, data_config, batch_size)
    for start, logits in zip(range(0, len(dataset), batch_size), batches):
        labels = dataset.labels[start : start + batch_size].to(logits.device)
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


def capture_rng() -> dict:
    return dict(torch=torch.get_rng_state())  # all randomness in training comes from torch


def restore_rng(state: dict) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])


# ------------------------------------------------------------------------------------ the run
@dataclass
class RunState:
    run: Run | None  # None on the ranks of a distributed run that do not write (not rank 0)
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
              procs: Processes, stack: contextlib.ExitStack) -> RunState:
    device = procs.device
    model = create_model(cfg.arch, cfg.version).to(device, memory_format=torch.channels_last)
    data_config = default_data_config()
    env = dict(environment_info(device),
               distributed=dict(procs.record(cfg.batch_size), **distributed.elastic_record()))
    run = Run.create(models_root(models_dir), cfg.name, stack, arch=arch_record(model),
                     data_config=data_config, train=cfg.to_dict(), data=data_info, env=env)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch(len(splits["train"]), cfg))
    return RunState(run, cfg, model, optimizer, scheduler, 1, -1.0, data_config, device)


def _parse_train(train, source: str) -> TrainConfig:
    return config_from_dict(train, source=source)


def _resume_run(ref: str, splits_for, models_dir, which: str | None,
                device: torch.device, stack: contextlib.ExitStack) -> tuple[RunState, dict]:
    mref = resolve_ref(ref, models_dir)
    # the training options first (their ranges live in TrainConfig), then what loading needs
    run, cfg = Run.reopen(mref.run_dir, stack, _parse_train)
    config = run.config
    which = which or mref.checkpoint or "last"
    from_scratch = not run.checkpoint_epochs()
    if from_scratch and run.is_finished():  # its checkpoints deleted: keep the weights
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
        raise DigitnetError(f"cannot resume {mref.label}: the MNIST files differ from those it "
                            f"was trained on")
    if config["data"].get("ingested"):
        from digitnet.data.training_data import dataset_fingerprint

        for recorded in config["data"]["ingested"]:
            now = dataset_fingerprint(recorded["name"])
            if any(now[k] != recorded[k] for k in ("count", "balance", "content_sha256")):
                raise DigitnetError(f"cannot resume {mref.label}: ingested dataset "
                                    f"{recorded['name']!r} changed since the run started")
    model = build_frozen_model(config["arch"], run.dir).to(device,
                                                           memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch(len(splits["train"]), cfg))
    removed = run.remove_temporaries()  # what a killed or failed writer left
    if removed:
        print(f"removed {len(removed)} temporary file(s) of an interrupted write", file=sys.stderr)
    if from_scratch:
        print(f"{config['ref']} stopped before it finished an epoch: starting it from scratch with "
              f"its own configuration", file=sys.stderr)
        run.truncate_metrics(0)
        state = RunState(run, cfg, model, optimizer, scheduler, 1, -1.0,
                         config["data_config"], device)
        return state, splits
    ckpt, warnings = run.load_checkpoint(which)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if warnings:
        print(f"resuming from the last good checkpoint instead: {ckpt.path.name}", file=sys.stderr)
    load_weights(model, ckpt.model_state, ckpt.path, config["arch"]["id"])
    try:
        optimizer.load_state_dict(ckpt.training_state["optimizer"])
        scheduler.load_state_dict(ckpt.training_state["scheduler"])
    except (KeyError, ValueError, RuntimeError) as e:
        raise DigitnetError(f"{ckpt.path}: optimizer or scheduler state does not fit this run "
                            f"({e})") from None
    restore_rng(ckpt.training_state.get("rng", {}))
    # forget metrics of epochs after the checkpoint (a killed run may have logged one more)
    run.truncate_metrics(ckpt.epoch)
    best_val = ckpt.training_state.get("best_val", -1.0)
    print(f"resuming {config['ref']} after epoch {ckpt.epoch} of {cfg.epochs}")
    state = RunState(run, cfg, model, optimizer, scheduler, ckpt.epoch + 1, best_val,
                     config["data_config"], device, ckpt.calibration)
    return state, splits


def fit(
    cfg: TrainConfig | None = None,
    data_dir=None,
    models_dir=None,
    resume: str | None = None,
    resume_checkpoint: str | None = None,
    progress: bool = True,
    device: str = "auto",
    dist_timeout: float = DIST_TIMEOUT_S,
) -> dict:
    """Train a model (or resume one) and return its summary (ref, paths, final metrics).

    Under torchrun ($WORLD_SIZE > 1) every process calls `fit` with the same arguments: rank 0
    creates or resumes the run and writes it, the others train their shard
    (training/distributed.py); every rank returns the summary.

    Args:
        cfg: the recipe; ignored when resuming (the run's own configuration is used).
        data_dir: MNIST folder (None: $DIGITNET_DATA_DIR, then the user cache).
        models_dir: the model store (None: $DIGITNET_MODELS_DIR, then ./models).
        resume: a model reference to continue from its last checkpoint.
        resume_checkpoint: "last", "best" or "epoch-N" to resume from instead.
        device: where to train, one of DEVICES (a run may be resumed on another device).
        dist_timeout: seconds a process of a distributed run waits for the others before the
            run fails with an error.
    """
    with distributed.processes(device, dist_timeout) as procs:
        if not procs.writes:
            return _follow_run(procs, data_dir)
        try:
            state, splits, stack = _lead_run(cfg, data_dir, models_dir, resume, resume_checkpoint,
                                             procs)
        except DigitnetError as e:  # tell the other ranks, which wait for the plan
            distributed.share(procs, dict(error=str(e)))
            raise
        with stack:  # holds the run folder's lock until the run ends
            if procs.world_size > 1:
                distributed.share(procs, _plan(state, splits))
            summary = _run_epochs(state, splits, progress, procs)
        return distributed.share(procs, summary)


def _lead_run(cfg, data_dir, models_dir, resume, resume_checkpoint,
              procs: Processes) -> tuple[RunState, dict, contextlib.ExitStack]:
    """Rank 0 (or the one process): create or resume the run; the stack holds its lock."""

    def splits_for(c: TrainConfig) -> dict:
        distributed.check_batch(c.batch_size, procs.world_size)  # before any write
        return load_training_data(c, data_dir)

    with contextlib.ExitStack() as stack:
        if not resume:
            cfg = cfg or TrainConfig()
            spec = get_spec(cfg.arch, cfg.version)  # unknown architecture: fails before the data
            resume = distributed.restarted_run(models_dir, cfg, spec.arch_id)
        if resume:
            state, splits = _resume_run(resume, splits_for, models_dir, resume_checkpoint,
                                        procs.device, stack)
        else:
            if cfg.threads:
                torch.set_num_threads(cfg.threads)
            check_name_free(models_root(models_dir), spec.arch_id, cfg.name)  # a taken name too
            torch.manual_seed(cfg.seed)  # weight initialisation
            splits = splits_for(cfg)
            mnist = splits["mnist"]
            data_info = dict(dir=str(mnist.data_dir), sha256=mnist.sha256, datasets=list(cfg.data),
                             train_size=len(splits["train"]), val_size=len(splits["val"]),
                             train_class_counts=splits["train"].class_counts().tolist())
            if any(name != "mnist" for name in cfg.data):
                from digitnet.data.training_data import dataset_fingerprint

                data_info["ingested"] = [dataset_fingerprint(n) for n in cfg.data if n != "mnist"]
            state = _init_run(cfg, splits, models_dir, data_info, procs, stack)
        return state, splits, stack.pop_all()


def _plan(state: RunState, splits: dict) -> dict:
    """What the other ranks need from rank 0 to train the same run (weights: DDP sends them)."""
    return dict(cfg=state.cfg.to_dict(), arch=state.run.config["arch"], source=str(state.run.dir),
                start_epoch=state.start_epoch, data_config=state.data_config,
                optimizer=state.optimizer.state_dict(), scheduler=state.scheduler.state_dict(),
                data_sha256=splits["mnist"].sha256)


def _follow_run(procs: Processes, data_dir) -> dict:
    """A rank other than 0: train the run rank 0 leads, on this rank's shard; write nothing."""
    plan = distributed.share(procs)
    if "error" in plan:
        raise DigitnetError(f"rank {procs.rank}: rank 0 could not start the run ({plan['error']})")
    cfg = config_from_dict(plan["cfg"], source="the training options from rank 0")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    splits = load_training_data(cfg, data_dir)
    if splits["mnist"].sha256 != plan["data_sha256"]:
        raise DigitnetError(f"rank {procs.rank}: the MNIST files in {splits['mnist'].data_dir} "
                            f"differ from those of rank 0")
    model = build_frozen_model(plan["arch"], Path(plan["source"])).to(procs.device,
                                                                memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch(len(splits["train"]), cfg))
    optimizer.load_state_dict(plan["optimizer"])
    scheduler.load_state_dict(plan["scheduler"])
    state = RunState(None, cfg, model, optimizer, scheduler, plan["start_epoch"], -1.0,
                     plan["data_config"], procs.device)
    _run_epochs(state, splits, False, procs)
    return distributed.share(procs)


def _run_epochs(state: RunState, splits: dict, progress: bool, procs: Processes) -> dict | None:
    cfg, model, run = state.cfg, state.model, state.run
    train, val = splits["train"], splits["val"]
    weights = class_weights_for(train).to(state.device) if cfg.class_weighting else None
    trained = distributed.wrap_model(model, cfg, procs)  # `model` itself for one process
    shard = distributed.shard_size(len(train), procs)  # images per rank and epoch
    per_rank = procs.per_rank_batch(cfg.batch_size)
    where = (f"{torch.get_num_threads()} threads" if state.device.type == "cpu"
             else f"on {state.device}")
    if procs.world_size > 1:
        where += f" x {procs.world_size} processes ({procs.backend}, {per_rank} images each)"
    if run is not None:
        print(f"training {run.ref}: {len(train):,} train / {len(val):,} val images, "
              f"{cfg.epochs} epochs, batch {cfg.batch_size}, {where}")
    best_val = state.best_val
    for epoch in range(state.start_epoch, cfg.epochs + 1):
        start = time.perf_counter()
        generator, batches = distributed.epoch_inputs(train, cfg, procs, epoch)
        n_images = min(shard, (cfg.max_steps or 10**12) * per_rank)
        with tqdm(total=n_images, unit="img", desc=f"epoch {epoch}/{cfg.epochs}", leave=False,
                  disable=not progress, dynamic_ncols=True) as bar:
            row = train_one_epoch(trained, train, state.optimizer, state.scheduler, cfg,
                                  state.data_config, generator, weights, bar, batches)
        row = distributed.reduce_epoch(row, procs)
        train_seconds = time.perf_counter() - start
        if run is None:  # not the writer: rank 0 validates, writes and prints
            continue
        val_metrics, state.calibration = calibrate_on_validation(model, val, state.data_config,
                                                                 cfg.eval_batch_size)
        row = dict(epoch=epoch, train_loss=row["train_loss"], train_acc=row["train_acc"],
                   val_loss=val_metrics.get("loss"), val_acc=val_metrics.get("acc"),
                   lr=state.scheduler.get_last_lr()[0], seconds=time.perf_counter() - start,
                   images_per_s=row["images"] / train_seconds, device=str(state.device),
                   **procs.record(cfg.batch_size))
        score = row["val_acc"] if row["val_acc"] is not None else epoch  # no val split: newest wins
        is_best = score > best_val
        best_val = max(best_val, score)
        run.append_metrics(row)  # first: see Run.save_checkpoint
        run.save_checkpoint(
            epoch, model.state_dict(),
            dict(optimizer=state.optimizer.state_dict(), scheduler=state.scheduler.state_dict(),
                 rng=capture_rng(), best_val=best_val),
            row, state.calibration.to_dict(), is_best)
        val_text = (f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%}  " if val_metrics
                    else "")
        print(f"epoch {epoch:>3}/{cfg.epochs}  train loss {row['train_loss']:.4f} acc "
              f"{row['train_acc']:.2%}  {val_text}lr {row['lr']:.4g}  {row['seconds']:.1f}s  "
              f"{row['images_per_s']:,.0f} img/s", flush=True)
    return finish_run(state, splits) if run is not None else None


def finish_run(state: RunState, splits: dict) -> dict:
    """Write the final weights and summary (test metrics on MNIST test)."""
    state.run.save_final_weights(state.model.state_dict())
    calibration = state.calibration  # the last epoch's: the final weights are its weights
    if calibration is None:  # resumed from a checkpoint written before calibration
        calibration = calibrate_on_validation(state.model, splits["val"], state.data_config,
                                              state.cfg.eval_batch_size)[1]
    test = evaluate(state.model, splits["test"], state.data_config, state.cfg.eval_batch_size)
    summary = state.run.finish(test["loss"], test["acc"], calibration.to_dict())
    print(f"probabilities: {calibration.describe()}")
    print(f"test (MNIST test, {len(splits['test']):,} images): loss {test['loss']:.4f}  "
          f"accuracy {test['acc']:.2%}")
    return summary


# the names of the training API, wherever they are defined (tests and tools import them here)
__all__ = ["DEVICES", "batch_augmentation", "build_optimizer", "build_scheduler",
           "class_weights_for", "epoch_seed", "evaluate", "fit", "load_training_data",
           "resolve_device", "train_one_epoch", "training_done"]
