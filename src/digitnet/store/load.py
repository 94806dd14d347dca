"""Loading any model for evaluation, prediction or export, and storing its calibration.

`load_model` takes every kind of reference (`digitnet.store.refs`): a run of the store or one of
its checkpoints, a run, checkpoint or export folder given as a path, or `hf://USER/NAME[@REV]`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from torch import nn

import digitnet.store.hub as hub
from digitnet.calibration import Calibration, calibration_from_dict
from digitnet.errors import DigitnetError
from digitnet.store.catalog import resolve_ref
from digitnet.store.checkpoint import (
    META_FILE,
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
    write_checkpoint_calibration,
)
from digitnet.store.loaded import LoadedModel, ModelRef
from digitnet.store.records import build_frozen_model, check_label_names
from digitnet.store.run import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    SUMMARY_FILE,
    checkpoint_config,
    lock_run,
    read_run_config,
    read_summary,
    write_summary_calibration,
)
from digitnet.store.weights import WEIGHTS_FILE, CheckpointError, load_state_dict, load_weights


def load_model(ref: str | ModelRef, models_dir: str | os.PathLike | None = None) -> LoadedModel:
    """Load any trained model or checkpoint for evaluation, prediction or export (eval mode).

    A checkpoint is rebuilt from its own meta.json (checkpoints written before it recorded the
    run's config take that of their run folder).

    Raises:
        DigitnetError: unknown reference, changed architecture, corrupt or unsafe files.
    """
    if isinstance(ref, str) and hub.is_hub_ref(ref):  # hf://USER/NAME[@REV], or an export folder
        return hub.load_from_hub(ref)
    mref = resolve_ref(ref, models_dir) if isinstance(ref, str) else ref
    final = mref.run_dir / WEIGHTS_FILE
    if mref.checkpoint is None and final.is_file():
        config = read_run_config(mref.run_dir)
        model = _build(config, mref.run_dir / CONFIG_FILE)
        state, epoch, source = load_state_dict(final), None, final
        calibration = Calibration()  # weights saved before calibration: T = 1
        summary = read_summary(mref.run_dir)
        if summary is not None:
            epoch = summary.get("epochs_done", epoch)
            calibration = calibration_from_dict(summary.get("calibration"),
                                                mref.run_dir / SUMMARY_FILE)
    else:
        ckpt_dir = mref.run_dir / CHECKPOINTS_DIR
        if not list_checkpoints(ckpt_dir):
            _build(read_run_config(mref.run_dir), mref.run_dir / CONFIG_FILE)  # named first
            raise CheckpointError(f"{mref.run_dir}: no final weights and no checkpoints yet")
        path = resolve_checkpoint(ckpt_dir, mref.checkpoint or "last")
        ckpt = load_checkpoint(path, with_training_state=False)
        config = checkpoint_config(path, ckpt.meta)
        model = _build(config, path / META_FILE if "config" in ckpt.meta
                       else mref.run_dir / CONFIG_FILE)
        state, epoch, source = ckpt.model_state, ckpt.epoch, path / WEIGHTS_FILE
        calibration = ckpt.calibration or Calibration()  # T = 1 before calibration
        mref = ModelRef(mref.run_dir, path.name)
    load_weights(model, state, source, config["arch"]["id"])
    model.eval()
    return LoadedModel(model, config["data_config"], config, mref, epoch, calibration)


def _build(config: dict, source: Path) -> nn.Module:
    """The model a run config records (`source`: the file it came from, named in errors)."""
    model = build_frozen_model(config["arch"], source.parent)
    check_label_names(model, config["data_config"]["label_names"], source)
    return model


def save_calibration(loaded: LoadedModel, calibration: Calibration) -> LoadedModel:
    """Store `calibration` with the weights `loaded` came from, atomically, weights untouched:
    in the run's summary.json for final weights, in meta.json for a checkpoint.

    Returns:
        `loaded` with the new calibration.

    Raises:
        DigitnetError: an exported model (its calibration comes from its source run), final
            weights without a summary.json, or another process training into the run.
    """
    mref = loaded.ref
    if loaded.config.get("export") is not None:
        raise DigitnetError(f"{mref.label}: an exported model; calibrate its source run "
                            f"{loaded.config.get('ref')} and export it again")
    with lock_run(mref.run_dir):
        if mref.checkpoint is None:
            write_summary_calibration(mref.run_dir, calibration.to_dict())
        else:
            path = resolve_checkpoint(mref.run_dir / CHECKPOINTS_DIR, mref.checkpoint)
            write_checkpoint_calibration(path, calibration.to_dict())
    return replace(loaded, calibration=calibration)
