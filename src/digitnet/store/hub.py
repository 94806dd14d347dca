"""Loading exported models: an export folder (or a clone of its git mirror) and `hf://` models
from the Hugging Face Hub, which are downloaded into the Hub's cache and loaded as export folders.

    huggingface/                 an exported folder (written by digitnet.deploy)
        config.json              format "digitnet-hub": architecture, labels, normalisation, source
        model.safetensors        the weights (the strict state dict)

Below the deployment code, so that `digitnet.store.load_model` reads every kind of model source
without importing upwards.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from digitnet.calibration import CALIBRATION_SCHEMA, calibration_from_dict
from digitnet.errors import DigitnetError, first_line
from digitnet.fileio import check_json, read_json
from digitnet.store.loaded import LoadedModel, ModelRef
from digitnet.store.records import (
    ARCH_SCHEMA,
    DATA_CONFIG_SCHEMA,
    build_frozen_model,
    check_label_names,
)
from digitnet.store.refs import (
    HUB_PREFIX,
    HubRef,
    check_repo_id,
    check_revision,
    parse_hub_ref,
    parse_ref,
)
from digitnet.store.run import CONFIG_FILE
from digitnet.store.weights import WEIGHTS_FILE, load_state_dict, load_weights
from digitnet.version import __version__

EXPORT_FORMAT = "digitnet-hub"  # the `format` key that marks an exported config.json
EXPORT_FORMAT_VERSION = 1  # of an exported config.json
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1"
EXPORT_CONFIG_SCHEMA = {  # what loading needs from an exported config.json
    "architecture": ARCH_SCHEMA["name"], "version": ARCH_SCHEMA["version"],
    "arch_id": ARCH_SCHEMA["id"], "model_args": ARCH_SCHEMA["model_args"],
    "signature?": (list, None), **DATA_CONFIG_SCHEMA,
    "source": {"ref": str, "epoch?": (int, None), "created?": (str, None),
               "git_commit?": (str, None)},
    "train?": dict, "data?": dict,
    "calibration?": CALIBRATION_SCHEMA,  # absent in exports written before calibration: T = 1
}
OFFLINE_HINTS = ("could not resolve", "failed to connect", "couldn't connect",
                  "connection refused", "timed out", "network is unreachable",
                  "could not read from remote", "unable to access")
__all__ = ["EXPORT_CONFIG_SCHEMA", "EXPORT_FORMAT", "EXPORT_FORMAT_VERSION", "HUB_PREFIX",
           "LFS_POINTER_PREFIX", "HubModelRef", "check_repo_id", "check_revision",
           "OFFLINE_HINTS", "download_from_hub", "hub_endpoint", "is_export_folder",
           "is_hub_ref", "load_exported", "load_from_hub", "network_errors", "parse_hub_ref"]


@dataclass(frozen=True)
class HubModelRef(ModelRef):
    """A ModelRef for an exported folder or Hub snapshot, labelled by what the user typed."""

    name: str = ""

    @property
    def label(self) -> str:
        return self.name or super().label


def is_export_folder(path: str | os.PathLike) -> bool:
    """True if `path` is a folder whose config.json was written by `export_model`."""
    config = Path(path).expanduser() / CONFIG_FILE
    if not config.is_file():
        return False
    try:
        value = read_json(config, "exported config")
    except DigitnetError:  # loading it as a store folder then says what is wrong with it
        return False
    return isinstance(value, dict) and value.get("format") == EXPORT_FORMAT


def is_hub_ref(ref: str) -> bool:
    """An `hf://` reference or the path of an exported folder (what `load_from_hub` takes)."""
    return ref.startswith(HUB_PREFIX) or is_export_folder(ref.partition("@")[0])


def _check_export_config(config, path: Path) -> None:
    if not isinstance(config, dict) or config.get("format") != EXPORT_FORMAT:
        raise DigitnetError(f"{path}: not a digitnet model (config.json lacks format "
                            f"{EXPORT_FORMAT!r}); was it exported with `digitnet export`?")
    check_json(config, {"format_version?": int}, path)
    if config.get("format_version", 0) > EXPORT_FORMAT_VERSION:
        raise DigitnetError(f"{path}: written by a newer digitnet (format version "
                            f"{config['format_version']}); upgrade digitnet to load it")
    check_json(config, EXPORT_CONFIG_SCHEMA, path)


def _check_not_lfs_pointer(path: Path) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(len(LFS_POINTER_PREFIX))
    except FileNotFoundError:
        raise DigitnetError(f"{path}: not found (an exported model has its weights in "
                            f"{WEIGHTS_FILE}; other formats are not loaded)") from None
    if head == LFS_POINTER_PREFIX:
        raise DigitnetError(f"{path} is a git LFS pointer, not the weights: run `git lfs install "
                            f"--local && git lfs pull` in {path.parent}")


def load_exported(folder: str | os.PathLike, label: str | None = None) -> LoadedModel:
    """Load an exported folder (or a clone of its mirror, or a Hub snapshot) in eval mode.

    The weights must match the architecture exactly (no missing, extra or reshaped tensors).

    Args:
        folder: the folder holding config.json and model.safetensors.
        label: how the model is named in results (default: the folder path).

    Raises:
        DigitnetError: not an export, LFS pointer instead of weights, changed architecture,
            weights that do not fit.
    """
    folder = Path(folder).expanduser()
    config_path = folder / CONFIG_FILE
    cfg = read_json(config_path, "exported config")
    _check_export_config(cfg, config_path)
    arch = dict(name=cfg["architecture"], version=cfg["version"], id=cfg["arch_id"],
                model_args=cfg["model_args"])
    if cfg.get("signature") is not None:
        arch["signature"] = cfg["signature"]
    model = build_frozen_model(arch, folder)
    check_label_names(model, cfg["label_names"], config_path)
    weights = folder / WEIGHTS_FILE
    _check_not_lfs_pointer(weights)
    load_weights(model, load_state_dict(weights), weights, arch["id"])
    model.eval()
    data_config = dict(input_size=cfg["input_size"], mean=cfg["mean"], std=cfg["std"],
                       label_names=cfg["label_names"], polarity=cfg.get("polarity"))
    source = cfg["source"]
    config = dict(arch=arch, data_config=data_config, train=cfg.get("train", {}),
                  data=cfg.get("data", {}), ref=source["ref"], created=source.get("created"),
                  env=dict(git_commit=source.get("git_commit")), export=cfg)
    ref = HubModelRef(folder.resolve(), None, label or str(folder))
    calibration = calibration_from_dict(cfg.get("calibration"), config_path)
    return LoadedModel(model, data_config, config, ref, source.get("epoch"), calibration)


def hub_endpoint() -> str:
    """The Hub's address: $HF_ENDPOINT (read now, not at import), else huggingface.co."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def network_errors() -> tuple[type[BaseException], ...]:
    """Exceptions meaning the Hub could not be reached (the HTTP client differs by version)."""
    errors: list[type[BaseException]] = [OSError, TimeoutError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(__import__(module).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def download_from_hub(repo_id: str, revision: str | None = None) -> Path:
    """Fetch config.json and model.safetensors of a Hub repository (cached); returns the folder.

    Raises:
        DigitnetError: unknown or private repository, unknown revision, Hub unreachable.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    name = f"hf://{repo_id}" + (f"@{revision}" if revision else "")
    try:
        folder = snapshot_download(repo_id, revision=revision, endpoint=hub_endpoint(),
                                   allow_patterns=[CONFIG_FILE, WEIGHTS_FILE],
                                   library_name="digitnet", library_version=__version__)
    except RevisionNotFoundError:
        raise DigitnetError(f"{name}: the repository has no revision {revision!r}") from None
    except (RepositoryNotFoundError, GatedRepoError):
        raise DigitnetError(f"{name}: no such model on {hub_endpoint()}, or it is private or gated "
                            f"(log in with `hf auth login` or set HF_TOKEN)") from None
    except HfHubHTTPError as e:
        raise DigitnetError(f"{name}: the Hub answered with an error ({first_line(e)})") from None
    except network_errors() as e:
        raise DigitnetError(f"{name}: cannot reach the Hub at {hub_endpoint()} and the model is "
                            f"not in the local cache ({first_line(e)})") from None
    return Path(folder)


def load_from_hub(ref: str) -> LoadedModel:
    """Load `hf://USER/NAME[@REVISION]` or the path of an exported folder (eval mode).

    Raises:
        DigitnetError: see `download_from_hub` and `load_exported`.
    """
    parsed = parse_ref(ref)
    if isinstance(parsed, HubRef):
        return load_exported(download_from_hub(parsed.repo_id, parsed.revision), label=ref)
    base, _, checkpoint = ref.partition("@")
    if checkpoint:
        raise DigitnetError(f"model reference {ref!r}: an exported model has no checkpoints")
    return load_exported(base, label=base)
