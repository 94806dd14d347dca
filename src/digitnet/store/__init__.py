"""The model store: one folder per trained model, references to them, and loading any of them.

    models/cnn-v1/20261125-120000/      a run folder (`run.py` writes and reads it)
        config.json  metrics.jsonl  model.safetensors  summary.json  checkpoints/  train.lock

A reference is `ARCH-vN/RUN`, `ARCH-vN/latest`, `latest` (the newest model of any architecture),
any of them with `@last`, `@best` or `@epoch-N`, a path to a model, checkpoint or export folder,
or `hf://USER/NAME[@REVISION]`; commands that take several models also accept a glob for the run
name (`wide-v1/ens-*`) and `REF@all`. One process at a time trains into a run folder (its lock).

    refs.py        the reference grammar: text -> a typed reference (the one parser)
    catalog.py     the store's root, its runs, and which folder a reference names
    run.py         a run folder: `Run` (create, metrics, checkpoints, finish, reopen), readers
    checkpoint.py  checkpoint folders: written atomically, verified, loaded without pickle
    weights.py     safetensors weights, checked against the model
    records.py     the architecture record and data config that rebuild a model
    loaded.py      LoadedModel and the one batched forward pass
    hub.py         export folders and `hf://` models
    load.py        load_model (any reference) and save_calibration
"""

from digitnet.store.catalog import (
    ENV_MODELS_DIR,
    expand_checkpoints,
    expand_refs,
    list_runs,
    models_root,
    resolve_ref,
)
from digitnet.store.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    META_FILE,
    Checkpoint,
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
)
from digitnet.store.hub import (
    EXPORT_FORMAT,
    EXPORT_FORMAT_VERSION,
    HubModelRef,
    is_export_folder,
    is_hub_ref,
    load_exported,
    load_from_hub,
)
from digitnet.store.load import load_model, save_calibration
from digitnet.store.loaded import LoadedModel, ModelRef, batched_logits
from digitnet.store.records import (
    ARCH_SCHEMA,
    DATA_CONFIG_SCHEMA,
    arch_record,
    architecture_signature,
    build_frozen_model,
    check_label_names,
    default_data_config,
)
from digitnet.store.refs import (
    ARCH_ID_PATTERN,
    HUB_PREFIX,
    check_repo_id,
    is_explicit_path,
    parse_hub_ref,
    parse_ref,
)
from digitnet.store.run import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    METRICS_FILE,
    METRICS_ROW_SCHEMA,
    RUN_CONFIG_SCHEMA,
    RUN_FORMAT_VERSION,
    SUMMARY_FILE,
    SUMMARY_SCHEMA,
    Run,
    check_name_free,
    lock_run,
    read_metrics,
    read_run_config,
    training_done,
)
from digitnet.store.weights import (
    WEIGHTS_FILE,
    CheckpointError,
    check_weights,
    load_state_dict,
    load_weights,
    save_state_dict,
)

__all__ = [
    "ARCH_ID_PATTERN", "ARCH_SCHEMA", "CHECKPOINTS_DIR", "CHECKPOINT_FORMAT_VERSION",
    "CONFIG_FILE", "DATA_CONFIG_SCHEMA", "ENV_MODELS_DIR", "EXPORT_FORMAT",
    "EXPORT_FORMAT_VERSION", "HUB_PREFIX", "METRICS_FILE", "METRICS_ROW_SCHEMA", "META_FILE",
    "RUN_CONFIG_SCHEMA", "RUN_FORMAT_VERSION", "SUMMARY_FILE", "SUMMARY_SCHEMA", "WEIGHTS_FILE",
    "Checkpoint", "CheckpointError", "HubModelRef", "LoadedModel", "ModelRef", "Run",
    "arch_record", "architecture_signature", "batched_logits", "build_frozen_model",
    "check_label_names", "check_name_free", "check_repo_id", "check_weights", "default_data_config",
    "expand_checkpoints", "expand_refs", "is_explicit_path", "is_export_folder", "is_hub_ref",
    "list_checkpoints", "list_runs", "load_checkpoint", "load_exported", "load_from_hub",
    "load_model", "load_state_dict", "load_weights", "lock_run", "models_root", "parse_hub_ref",
    "parse_ref", "read_metrics", "read_run_config", "resolve_checkpoint", "resolve_ref",
    "save_calibration", "save_state_dict", "training_done",
]
