"""Hugging Face Hub: export a model as a Hub-ready folder, publish it, and load it back.

    huggingface/                 the exported folder; as the mirror, a git repository with LFS
        config.json              architecture, hyperparameters, labels, input size, normalisation
        model.safetensors        the weights (the strict state dict)
        README.md                the model card, with the evaluation results as model-index
        confusion_matrix.png     linked from the card
        .gitattributes           the Hub's default LFS patterns, plus *.png
        model.onnx               with `onnx=True`

Publishing commits the folder and pushes it with git LFS (to the Hub or any git remote), or
uploads it through the Hub HTTP API. The token comes from HF_TOKEN or the Hugging Face login and
reaches git only through the environment of its processes: it is never written to a file.
"""

from __future__ import annotations

import base64
import fnmatch
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from digitnet import __version__
from digitnet.calibration import CALIBRATION_SCHEMA, TemperatureScaled, calibration_from_dict
from digitnet.errors import DigitnetError
from digitnet.fileio import (
    atomic_write_json,
    atomic_write_text,
    check_json,
    read_json,
    sha256_file,
)
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
from digitnet.training.checkpoint import WEIGHTS_FILE, load_state_dict, save_state_dict

EXPORT_FORMAT = "digitnet-hub"  # the `format` key that marks an exported config.json
EXPORT_FORMAT_VERSION = 1
DEFAULT_OUT = "huggingface"
HUB_PREFIX = "hf://"
BRANCH = "main"
EXPORT_DATASETS = ("mnist-test", "mnist-test-augmented")  # evaluated for the model card
ONNX_CHECK_IMAGES = 16  # real test images in the ONNX parity batch (plus 4 random ones)
ONNX_LOGITS = "divided by the temperature: their softmax is the calibrated probabilities"
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1"
GIT_TIMEOUT_S = 600  # per git command; pushes of these small models take seconds
# The Hub's default .gitattributes (what a new model repository starts with), plus *.png.
LFS_PATTERNS = (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
    "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
    "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*",
    "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*", "*.png",
)
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


# -------------------------------------------------------------------------------------- export
def gitattributes_text() -> str:
    return "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS)


def _preprocess_version() -> int:
    try:
        from digitnet.data.preprocess import PREPROCESS_VERSION
    except ImportError:
        return 1
    return PREPROCESS_VERSION


def source_ref(loaded: LoadedModel) -> str:
    """The store reference of the model being exported (kept through re-exports)."""
    ref = loaded.config.get("ref") or loaded.ref.label
    return f"{ref}@{loaded.ref.checkpoint}" if loaded.ref.checkpoint else ref


def export_config(loaded: LoadedModel) -> dict:
    """The exported config.json: all that is needed to rebuild, feed and describe the model."""
    arch, data_config = loaded.config["arch"], loaded.data_config
    data = {k: v for k, v in loaded.config.get("data", {}).items() if k != "dir"}  # no local paths
    env = loaded.config.get("env", {})
    return dict(
        format=EXPORT_FORMAT,
        format_version=EXPORT_FORMAT_VERSION,
        architecture=arch["name"],
        version=arch["version"],
        arch_id=arch["id"],
        model_args=arch["model_args"],
        signature=arch.get("signature"),
        num_classes=len(data_config["label_names"]),
        label_names=list(data_config["label_names"]),
        input_size=list(data_config["input_size"]),
        mean=data_config["mean"],
        std=data_config["std"],
        polarity=data_config.get("polarity", "white digit on black, 0-255"),
        preprocess_version=_preprocess_version(),
        digitnet_version=__version__,
        source=dict(ref=source_ref(loaded), epoch=loaded.epoch,
                    created=loaded.config.get("created"), git_commit=env.get("git_commit")),
        calibration=loaded.calibration.to_dict(),  # probabilities are softmax(logits / T)
        train=loaded.config.get("train", {}),
        data=data,
    )


def _check_replaceable(out: Path) -> None:
    """Refuse to replace a folder that is neither empty, an export, nor a fresh Hub clone."""
    if not out.exists():
        return
    if not out.is_dir():
        raise DigitnetError(f"{out} exists and is not a folder; choose another --out")
    names = {p.name for p in out.iterdir()}
    if names <= {".git", ".gitattributes", "README.md"} or is_export_folder(out):
        return
    raise DigitnetError(f"{out} exists and is not an exported model (it holds "
                        f"{sorted(names)[:5]}); choose another --out or remove it")


def _swap_in(new: Path, out: Path) -> None:
    """Replace `out` by the complete folder `new`, keeping the .git folder of an existing mirror."""
    old = None
    if out.exists():
        if (out / ".git").exists():
            os.replace(out / ".git", new / ".git")
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        try:
            os.replace(out, old)
        except OSError:
            if (new / ".git").exists():
                os.replace(new / ".git", out / ".git")
            raise
    try:
        os.replace(new, out)
    except OSError:
        if old is not None:
            os.replace(old, out)
            if (new / ".git").exists():
                os.replace(new / ".git", out / ".git")
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_onnx(loaded: LoadedModel, folder: Path, test_images: torch.Tensor) -> dict:
    from digitnet.data.datasets import to_model_input
    from digitnet.deploy.onnx import ONNX_FILE, ONNX_OPSET, export_onnx

    real = to_model_input(test_images[:ONNX_CHECK_IMAGES], loaded.data_config["mean"],
                          loaded.data_config["std"])
    noise = torch.randn((4, *real.shape[1:]), generator=torch.Generator().manual_seed(0))
    # the graph divides by T, so that the softmax of its output is the calibrated probabilities
    scaled = TemperatureScaled(loaded.model, loaded.temperature)
    metadata = {"temperature": repr(loaded.temperature), "logits": ONNX_LOGITS}
    diff = export_onnx(scaled, folder / ONNX_FILE, torch.cat([real, noise]), metadata)
    return dict(file=ONNX_FILE, opset=ONNX_OPSET, input="images", output="logits",
                logits=ONNX_LOGITS, temperature=loaded.temperature,
                dynamic_axes=["batch"], parity_images=len(real) + len(noise), max_abs_diff=diff)


def _write_export(loaded: LoadedModel, folder: Path, results: list[dict], test_images: torch.Tensor,
                  repo_id: str, onnx: bool) -> dict:
    from digitnet.deploy.card import CONFUSION_MATRIX_FILE, render_model_card
    from digitnet.evaluation.plots import plot_confusion_matrix, save_figure
    from digitnet.models import count_parameters

    config = export_config(loaded)
    save_state_dict(loaded.model.state_dict(), folder / WEIGHTS_FILE)
    os.chmod(folder / WEIGHTS_FILE, 0o644)  # written through mkstemp (0600); it is public
    if onnx:
        config["onnx"] = _write_onnx(loaded, folder, test_images)
    clean = next(r for r in results if r["dataset"] == EXPORT_DATASETS[0])
    title = (f"{config['arch_id']} on {clean['dataset']} (n={clean['n']:,}, "
             f"accuracy {clean['accuracy']:.4f})")
    figure = plot_confusion_matrix(clean["confusion_matrix"], config["label_names"], title=title)
    save_figure(figure, folder / CONFUSION_MATRIX_FILE)
    atomic_write_text(folder / ".gitattributes", gitattributes_text())
    card = render_model_card(config, results, repo_id, config["train"], config["data"],
                             count_parameters(loaded.model))
    atomic_write_text(folder / "README.md", card)
    atomic_write_json(folder / CONFIG_FILE, config)  # last: marks the folder as an export
    return config


def export_model(
    ref: str,
    out: str | os.PathLike = DEFAULT_OUT,
    data_dir: str | os.PathLike | None = None,
    models_dir: str | os.PathLike | None = None,
    onnx: bool = False,
    repo_id: str | None = None,
) -> dict:
    """Write a Hub-ready folder for a model: weights, config, model card, plots, LFS patterns.

    The folder is built next to `out` and swapped in when complete, so a failure leaves `out` as
    it was; the .git folder of an existing mirror is kept.

    Args:
        ref: any model reference `digitnet.load` accepts.
        out: the folder to (re)write.
        data_dir: MNIST folder for the evaluation that fills the model card.
        models_dir: the model store.
        onnx: also write `model.onnx`, checked against the PyTorch logits.
        repo_id: USER/NAME for the card's loading example (default: the placeholder
            USER/digitnet-ARCH-vN).

    Returns:
        out (Path), files ({name: bytes}), results (evaluation rows), config (config.json),
        message (a commit message naming the model).

    Raises:
        DigitnetError: unknown model or data, `out` is some other folder, ONNX parity fails.
    """
    from digitnet.evaluation.datasets import load_eval_dataset
    from digitnet.evaluation.evaluate import evaluate_on, model_val_size
    from digitnet.store import load_model

    if repo_id is not None:
        check_repo_id(repo_id, f"--repo-id {repo_id!r}")
    out = Path(out).expanduser()
    _check_replaceable(out)
    loaded = load_model(ref, models_dir)
    results, test_images = [], None
    for name in EXPORT_DATASETS:
        dataset = load_eval_dataset(name, data_dir, model_val_size(loaded))
        result, _ = evaluate_on(loaded, dataset)
        results.append(result)
        test_images = dataset.images if test_images is None else test_images
    repo_id = repo_id or f"USER/digitnet-{loaded.config['arch']['id']}"  # a placeholder
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        os.chmod(work, 0o755)
        config = _write_export(loaded, work, results, test_images, repo_id, onnx)
        _swap_in(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    arch = loaded.config["arch"]
    files = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
    message = f"Publish {config['source']['ref']} ({arch['name']} v{arch['version']})"
    return dict(out=out, files=files, results=results, config=config, message=message)


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


# ------------------------------------------------------------------------------------- publish
def resolve_token() -> str | None:
    """$HF_TOKEN, else the token of `hf auth login` (None if neither)."""
    from huggingface_hub import get_token

    return get_token()


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


def format_size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _is_lfs(name: str) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in LFS_PATTERNS)


def plan_files(new: Path, mirror: Path) -> list[dict]:
    """What publishing `new` changes in `mirror`: name, size, status, lfs, for every file."""
    rows = []
    old = {p.name: p for p in mirror.iterdir() if p.is_file()} if mirror.is_dir() else {}
    for path in sorted(p for p in new.iterdir() if p.is_file()):
        if path.name not in old:
            status = "added"
        elif sha256_file(path) != sha256_file(old[path.name]):
            status = "changed"
        else:
            status = "unchanged"
        rows.append(dict(name=path.name, size=path.stat().st_size, status=status,
                         lfs=_is_lfs(path.name)))
    for name in sorted(set(old) - {r["name"] for r in rows}):
        rows.append(dict(name=name, size=old[name].stat().st_size, status="removed",
                         lfs=_is_lfs(name)))
    return rows


def format_plan(rows: list[dict]) -> str:
    width = max((len(r["name"]) for r in rows), default=4)
    return "\n".join(f"  {r['status']:<10}{r['name']:<{width + 2}}{format_size(r['size']):>10}"
                     f"{'  (git LFS)' if r['lfs'] else ''}" for r in rows)


def _hub_error(error: BaseException, what: str, token: str | None) -> DigitnetError:
    """A DigitnetError for a failed Hub API call, always saying that nothing was published."""
    from huggingface_hub.errors import HfHubHTTPError

    detail = _scrub(_first_line(error), token)
    if isinstance(error, HfHubHTTPError):
        return DigitnetError(f"{what}: the Hub refused ({detail}); check the token's write "
                             f"access; nothing was published")
    return DigitnetError(f"{what}: cannot reach the Hub at {hub_endpoint()} ({detail}); are you "
                         f"offline? Nothing was published")


def _hub_api(token: str):
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub_endpoint(), token=token, library_name="digitnet",
                 library_version=__version__)


def _create_repo(repo_id: str, token: str) -> None:
    from huggingface_hub.errors import HfHubHTTPError

    try:
        _hub_api(token).create_repo(repo_id, repo_type="model", exist_ok=True)
    except (HfHubHTTPError, *_network_errors()) as e:
        raise _hub_error(e, f"creating {repo_id} on the Hub", token) from None


def _require_token() -> str:
    token = resolve_token()
    if not token:
        raise DigitnetError("no Hugging Face token: set HF_TOKEN or log in with `hf auth login` "
                            "(the token needs write access); nothing was published")
    return token


def publish(
    ref: str,
    repo_id: str,
    out: str | os.PathLike = DEFAULT_OUT,
    via: str = "git",
    remote: str | None = None,
    dry_run: bool = False,
    onnx: bool = False,
    data_dir: str | os.PathLike | None = None,
    models_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> dict:
    """Refresh the mirror folder `out` from a model and publish it.

    Args:
        ref: the model reference.
        repo_id: USER/NAME of the Hub repository (created if missing).
        out: the mirror folder (a git repository with LFS for `via="git"`).
        via: "git" (commit and push with git LFS) or "api" (`HfApi.upload_folder`).
        remote: with `via="git"`, push to this git URL instead of the Hub.
        dry_run: export into a temporary folder and report the files that would change;
            nothing local or remote is changed.
        onnx: also export `model.onnx`.
        data_dir, models_dir: as for `export_model`.
        log: receives progress messages.

    Returns:
        url, dry_run, plan (file rows, see `plan_files`), and when published: commit, pushed.

    Raises:
        DigitnetError: no token, Hub or remote unreachable, git or git LFS missing or failing;
            the message says that nothing was published.
    """
    check_repo_id(repo_id, f"--repo-id {repo_id!r}")
    if via not in ("git", "api"):
        raise DigitnetError(f"unknown publishing route {via!r}: expected git or api")
    if remote and via != "git":
        raise DigitnetError("--remote is a git URL; it cannot be used with --via api")
    out = Path(out).expanduser()
    url = remote or f"{hub_endpoint()}/{repo_id}"
    if via == "git":
        _require_git_lfs()
    if dry_run:
        with tempfile.TemporaryDirectory() as tmp:
            info = export_model(ref, Path(tmp) / "export", data_dir, models_dir, onnx, repo_id)
            plan = plan_files(info["out"], out)
        log(f"dry run: would {'commit and push' if via == 'git' else 'upload'} to {url}; "
            f"nothing was changed")
        return dict(url=url, dry_run=True, plan=plan, message=info["message"],
                    results=info["results"])
    if via == "api":
        return _publish_api(ref, repo_id, out, onnx, data_dir, models_dir, log)
    return _publish_git(ref, repo_id, out, url, remote is None, onnx, data_dir, models_dir, log)


def _export_with_plan(ref, out: Path, data_dir, models_dir, onnx, repo_id) -> tuple[dict, list]:
    """Export into `out` and list what changed there (compared with a copy taken before)."""
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        if out.is_dir():
            shutil.copytree(out, before, ignore=shutil.ignore_patterns(".git"))
        info = export_model(ref, out, data_dir, models_dir, onnx, repo_id)
        return info, plan_files(out, before)


def _publish_api(ref, repo_id, out, onnx, data_dir, models_dir, log) -> dict:
    from huggingface_hub.errors import HfHubHTTPError

    token = _require_token()
    _check_replaceable(out)
    _create_repo(repo_id, token)
    info, plan = _export_with_plan(ref, out, data_dir, models_dir, onnx, repo_id)
    log(f"uploading {out} to {hub_endpoint()}/{repo_id}")
    try:
        commit = _hub_api(token).upload_folder(
            repo_id=repo_id, folder_path=str(out), repo_type="model",
            commit_message=info["message"], delete_patterns="*",  # the repository mirrors `out`
        )
    except (HfHubHTTPError, *_network_errors()) as e:
        raise _hub_error(e, f"uploading {out} to {repo_id}", token) from None
    return dict(url=f"{hub_endpoint()}/{repo_id}", dry_run=False, plan=plan,
                message=info["message"], results=info["results"],
                commit=getattr(commit, "oid", None), pushed=True)


# ------------------------------------------------------------------------------ git and git LFS
def _require_git_lfs() -> None:
    if shutil.which("git") is None:
        raise DigitnetError("git is not installed; install git and git LFS (e.g. `apt-get install "
                            "git git-lfs`) or publish with --via api; nothing was published")
    probe = subprocess.run(["git", "lfs", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise DigitnetError(
            "git LFS is not installed, and the model weights must be pushed with it: install it "
            "with `sudo apt-get install git-lfs` (Debian, Ubuntu), `brew install git-lfs` (macOS) "
            "or from https://git-lfs.com, or publish with --via api; nothing was published")


def _git_env(token: str | None) -> dict[str, str]:
    """Environment for git: never prompt; with a token, an auth header for the Hub only.

    The header travels in GIT_CONFIG_* variables, which git and git LFS read as configuration
    without writing it anywhere; credential helpers are switched off so none stores the token.
    """
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GCM_INTERACTIVE="never")
    if token:
        basic = base64.b64encode(f"user:{token}".encode()).decode()
        pairs = [("credential.helper", ""),
                 (f"http.{hub_endpoint()}/.extraHeader", f"Authorization: Basic {basic}")]
        start = int(env.get("GIT_CONFIG_COUNT") or 0)
        for i, (key, value) in enumerate(pairs, start):
            env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
        env["GIT_CONFIG_COUNT"] = str(start + len(pairs))
    return env


def _git(args: list[str], cwd: Path | None, env: dict[str, str], token: str | None = None,
         check: bool = True, what: str | None = None) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                                timeout=GIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise DigitnetError(f"git {args[0]} took over {GIT_TIMEOUT_S} s and was stopped; nothing "
                            f"was published") from None
    if check and result.returncode != 0:
        detail = _scrub((result.stderr or result.stdout).strip(), token)
        raise DigitnetError(f"{what or 'git ' + args[0]} failed: {detail}")
    return result


def _remote_head(url: str, env: dict[str, str], token: str | None) -> str | None:
    """The commit of the remote's main branch (None for an empty repository)."""
    result = _git(["ls-remote", url, f"refs/heads/{BRANCH}"], None, env, token, check=False)
    if result.returncode != 0:
        detail = _scrub(result.stderr.strip(), token)
        if any(hint in detail.lower() for hint in _OFFLINE_HINTS):
            raise DigitnetError(f"cannot reach {url} ({detail.splitlines()[-1] if detail else ''});"
                                f" are you offline? Nothing was published")
        raise DigitnetError(f"git cannot read {url}: {detail}; nothing was published")
    return result.stdout.split()[0] if result.stdout.strip() else None


def _identity_args(mirror: Path, env: dict[str, str]) -> list[str]:
    """The user's git identity if configured, else a neutral one for the mirror's commits."""
    for var in ("GIT_AUTHOR_IDENT", "GIT_COMMITTER_IDENT"):
        if _git(["var", var], mirror, env, check=False).returncode != 0:
            return ["-c", "user.name=digitnet", "-c", "user.email=digitnet@localhost"]
    return []


def _prepare_mirror(mirror: Path, env: dict[str, str]) -> None:
    """Make `mirror` a git repository on branch main with git LFS set up in its own config."""
    if not (mirror / ".git").exists():
        _git(["init", "-q"], mirror, env)
    _git(["symbolic-ref", "HEAD", f"refs/heads/{BRANCH}"], mirror, env)
    _git(["lfs", "install", "--local"], mirror, env, what="git lfs install --local")


def _check_lfs_staged(mirror: Path, env: dict[str, str]) -> None:
    """Every staged file matching the LFS patterns must be an LFS pointer, never raw bytes."""
    staged = _git(["ls-files"], mirror, env).stdout.split()
    for name in (n for n in staged if _is_lfs(n)):
        blob = subprocess.run(["git", "cat-file", "blob", f":{name}"], cwd=mirror, env=env,
                              capture_output=True).stdout
        if not blob.startswith(LFS_POINTER_PREFIX):
            raise DigitnetError(f"{mirror / name} was staged as raw bytes, not through git LFS; "
                                f"check `git lfs install --local` in {mirror}; nothing was "
                                f"published")


def _publish_git(ref, repo_id, out, url, to_hub, onnx, data_dir, models_dir, log) -> dict:
    token = _require_token() if to_hub else None
    env = _git_env(token)
    _check_replaceable(out)
    if to_hub:
        _create_repo(repo_id, token)
    remote_head = _remote_head(url, env, token)
    info, plan = _export_with_plan(ref, out, data_dir, models_dir, onnx, repo_id)
    _prepare_mirror(out, env)
    if remote_head:
        # Commit on top of what the remote has, so the push is a fast-forward even if the remote
        # was changed elsewhere; the new commit's files are exactly the export.
        _git(["fetch", "-q", "--no-tags", url, f"refs/heads/{BRANCH}"], out, env, token,
             what=f"git fetch {url}")
        _git(["reset", "-q", "--soft", "FETCH_HEAD"], out, env)
    _git(["add", "-A"], out, env)
    _check_lfs_staged(out, env)
    has_head = _git(["rev-parse", "-q", "--verify", "HEAD"], out, env, check=False).returncode == 0
    staged = _git(["diff", "--cached", "--quiet"], out, env, check=False).returncode != 0
    changed = staged or not has_head
    if changed:
        _git([*_identity_args(out, env), "commit", "-q", "-m", info["message"]], out, env)
    commit = _git(["rev-parse", "HEAD"], out, env).stdout.strip()
    result = dict(url=url, dry_run=False, plan=plan, message=info["message"],
                  results=info["results"], commit=commit, pushed=False)
    if commit == remote_head:
        log(f"{url} already has this model ({commit[:12]}); nothing to push")
        return result
    log(f"pushing {commit[:12]} to {url} with git LFS")
    not_published = f"the commit is in {out}, but nothing was published"
    _git(["lfs", "push", url, BRANCH], out, env, token,
         what=f"git lfs push to {url} ({not_published})")
    _git(["push", "-q", "--no-verify", url, f"HEAD:refs/heads/{BRANCH}"], out, env, token,
         what=f"git push to {url} ({not_published})")
    result["pushed"] = True
    return result
