"""Export: build the Hub-ready folder of a model, complete, then swap it in place of the old one.

    huggingface/                 the exported folder (as the mirror, also a git repository)
        config.json              architecture, hyperparameters, labels, input size, normalisation
        model.safetensors        the weights (the strict state dict)
        README.md                the model card, with the evaluation results as model-index
        confusion_matrix.png     linked from the card
        .gitattributes           the Hub's default LFS patterns, plus *.png
        model.onnx               with `onnx=True`

Sending the folder is the job of hub_api.py (Hub HTTP API) and mirror.py (git + LFS).
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import torch

from digitnet.calibration import TemperatureScaled
from digitnet.errors import DigitnetError
from digitnet.fileio import atomic_write_json, atomic_write_text
from digitnet.store import CONFIG_FILE, LoadedModel
from digitnet.store.hub import (
    EXPORT_FORMAT,
    EXPORT_FORMAT_VERSION,
    check_repo_id,
    is_export_folder,
)
from digitnet.store.weights import WEIGHTS_FILE, save_state_dict
from digitnet.version import __version__

DEFAULT_OUT = "huggingface"
EXPORT_DATASETS = ("mnist-test", "mnist-test-augmented")  # evaluated for the model card
ONNX_CHECK_IMAGES = 16  # real test images in the ONNX parity batch (plus 4 random ones)
ONNX_LOGITS = "divided by the temperature: their softmax is the calibrated probabilities"
# The Hub's default .gitattributes (what a new model repository starts with), plus *.png.
LFS_PATTERNS = (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
    "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
    "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*",
    "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*", "*.png",
)


def gitattributes_text() -> str:
    return "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS)


def is_lfs(name: str) -> bool:
    """True if the export's .gitattributes sends a file of this name through git LFS."""
    return any(fnmatch.fnmatch(name, p) for p in LFS_PATTERNS)


def format_size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


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


def check_replaceable(out: Path) -> None:
    """Refuse to replace a folder that is neither empty, an export, nor a fresh Hub clone.

    Raises:
        DigitnetError: `out` is a file, or a folder holding something else.
    """
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


def _write_export(loaded: LoadedModel, folder: Path, *, results: list[dict],
                  test_images: torch.Tensor, repo_id: str, onnx: bool) -> dict:
    from digitnet.deploy.card import CONFUSION_MATRIX_FILE, render_model_card
    from digitnet.evaluation.plots import plot_confusion_matrix
    from digitnet.figures import save_figure
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
    check_replaceable(out)
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
        config = _write_export(loaded, work, results=results, test_images=test_images,
                               repo_id=repo_id, onnx=onnx)
        _swap_in(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    arch = loaded.config["arch"]
    files = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
    message = f"Publish {config['source']['ref']} ({arch['name']} v{arch['version']})"
    return dict(out=out, files=files, results=results, config=config, message=message)
