"""Loading an exported model: an export folder (or a clone of its mirror) and `hf://` references.

Writing the folder is export.py's job; sending it, hub_api.py's and mirror.py's (see publish.py).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from digitnet import __version__
from digitnet.calibration import CALIBRATION_SCHEMA, calibration_from_dict
from digitnet.errors import DigitnetError
from digitnet.fileio import check_json, read_json
from digitnet.store import (
    ARCH_SCHEMA,
    CONFIG_FILE,
    DATA_CONFIG_SCHEMA,
    LoadedModel,
    ModelRef,
    build_frozen_model,
    check_label_names,
    load_weights,
)
from digitnet.training.checkpoint import WEIGHTS_FILE, load_state_dict

EXPORT_FORMAT = "digitnet-hub"  # the `format` key that marks an exported config.json
EXPORT_FORMAT_VERSION = 1
HUB_PREFIX = "hf://"
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1"
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_REVISION = re.compile(r"[A-Za-z0-9][\w.+/-]*", re.ASCII)
EXPORT_CONFIG_SCHEMA = {  # what loading needs from an exported config.json
    "architecture": ARCH_SCHEMA["name"], "version": ARCH_SCHEMA["version"],
    "arch_id": ARCH_SCHEMA["id"], "model_args": ARCH_SCHEMA["model_args"],
    "signature?": (list, None), **DATA_CONFIG_SCHEMA,
    "source": {"ref": str, "epoch?": (int, None), "created?": (str, None),
               "git_commit?": (str, None)},
    "train?": dict, "data?": dict,
    "calibration?": CALIBRATION_SCHEMA,  # absent in exports written before calibration: T = 1
}
_OFFLINE_HINTS = ("could not resolve", "failed to connect", "couldn't connect",
                  "connection refused", "timed out", "network is unreachable",
                  "could not read from remote", "unable to access")


# ------------------------------------------------------------------------------------- loading
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


def check_repo_id(repo_id: str, what: str) -> None:
    """USER/NAME, by digitnet's rule and by the Hub's own validator (`validate_repo_id`).

    Raises:
        DigitnetError: `what` (the option or reference) and why the Hub would refuse it.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not _REPO_ID.fullmatch(repo_id):
        raise DigitnetError(f"{what}: expected USER/NAME")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        reason = str(e).splitlines()[0].rsplit(": '", 1)[0].rstrip(".:")
        raise DigitnetError(f"{what}: the Hub does not accept {repo_id!r} as USER/NAME "
                            f"({reason})") from None


def check_revision(revision: str, what: str) -> None:
    """A branch, tag or commit as git names them (`git check-ref-format`, simplified): the Hub
    client also uses it as a path in its cache, so `..` and the like must never reach it."""
    parts = revision.split("/")
    if (len(revision) > 255 or not _REVISION.fullmatch(revision)
            or any(not p or p.startswith(".") or p.endswith(".lock") for p in parts)
            or ".." in revision or revision.endswith(".")):
        raise DigitnetError(f"{what}: {revision!r} is not a branch, tag or commit name (letters, "
                            f"digits and - _ . + / only, no '..', no part starting with '.')")


def parse_hub_ref(ref: str) -> tuple[str, str | None]:
    """`hf://USER/NAME[@REVISION]` -> (repo_id, revision)."""
    repo_id, at, revision = ref.removeprefix(HUB_PREFIX).partition("@")
    what = f"model reference {ref!r}"
    if not _REPO_ID.fullmatch(repo_id):
        raise DigitnetError(f"{what}: expected hf://USER/NAME or hf://USER/NAME@REVISION")
    check_repo_id(repo_id, what)
    if at and not revision:
        raise DigitnetError(f"{what}: nothing after '@'; expected hf://USER/NAME@REVISION")
    if revision:
        check_revision(revision, what)
    return repo_id, revision or None


def _network_errors() -> tuple[type[BaseException], ...]:
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
        raise DigitnetError(f"{name}: the Hub answered with an error ({_first_line(e)})") from None
    except _network_errors() as e:
        raise DigitnetError(f"{name}: cannot reach the Hub at {hub_endpoint()} and the model is "
                            f"not in the local cache ({_first_line(e)})") from None
    return Path(folder)


def load_from_hub(ref: str) -> LoadedModel:
    """Load `hf://USER/NAME[@REVISION]` or the path of an exported folder (eval mode).

    Raises:
        DigitnetError: see `download_from_hub` and `load_exported`.
    """
    if ref.startswith(HUB_PREFIX):
        repo_id, revision = parse_hub_ref(ref)
        return load_exported(download_from_hub(repo_id, revision), label=ref)
    base, _, checkpoint = ref.partition("@")
    if checkpoint:
        raise DigitnetError(f"model reference {ref!r}: an exported model has no checkpoints")
    return load_exported(base, label=base)


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
