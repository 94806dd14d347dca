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
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import torch

from digitnet import __version__
from digitnet.calibration import TemperatureScaled
from digitnet.errors import DigitnetError
from digitnet.fileio import (
    atomic_write_json,
    atomic_write_text,
    sha256_file,
)
from digitnet.store import CONFIG_FILE, WEIGHTS_FILE, LoadedModel, save_state_dict
from digitnet.store.hub import (  # Hub and export-folder loading lives in the store (issue 15)
    _OFFLINE_HINTS,
    EXPORT_CONFIG_SCHEMA,  # noqa: F401 (re-exported)
    EXPORT_FORMAT,
    EXPORT_FORMAT_VERSION,
    HUB_PREFIX,  # noqa: F401 (re-exported)
    LFS_POINTER_PREFIX,
    HubModelRef,  # noqa: F401 (re-exported)
    _check_export_config,  # noqa: F401 (re-exported)
    _check_not_lfs_pointer,  # noqa: F401 (re-exported)
    _network_errors,
    check_repo_id,
    check_revision,  # noqa: F401 (re-exported)
    download_from_hub,  # noqa: F401 (re-exported)
    hub_endpoint,
    is_export_folder,
    is_hub_ref,  # noqa: F401 (re-exported)
    load_exported,  # noqa: F401 (re-exported)
    load_from_hub,  # noqa: F401 (re-exported)
    parse_hub_ref,  # noqa: F401 (re-exported)
)

DEFAULT_OUT = "huggingface"
BRANCH = "main"
EXPORT_DATASETS = ("mnist-test", "mnist-test-augmented")  # evaluated for the model card
ONNX_CHECK_IMAGES = 16  # real test images in the ONNX parity batch (plus 4 random ones)
ONNX_LOGITS = "divided by the temperature: their softmax is the calibrated probabilities"
GIT_TIMEOUT_S = 600  # per git command; pushes of these small models take seconds
# The Hub's default .gitattributes (what a new model repository starts with), plus *.png.
LFS_PATTERNS = (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
    "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
    "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*",
    "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*", "*.png",
)


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
