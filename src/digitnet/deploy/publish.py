"""Publish: export a model into the mirror folder, then send the folder by one of the routes.

    git   commit in the mirror and push it with git LFS (mirror.py), to the Hub or any git remote
    api   upload the folder through the Hub HTTP API (hub_api.py)

A new route is a function `(ref, options, log) -> dict` added to ROUTES.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from digitnet.deploy.export import DEFAULT_OUT, check_replaceable, export_model, format_size, is_lfs
from digitnet.deploy.hub_api import create_repo, require_token, upload_folder
from digitnet.deploy.mirror import find_remote, push_folder, require_git_lfs
from digitnet.errors import DigitnetError
from digitnet.fileio import sha256_file
from digitnet.store.hub import check_repo_id, hub_endpoint

Log = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


@dataclass(frozen=True)
class PublishOptions:
    """What to publish where; checked when made, then passed whole to the route.

    Raises:
        DigitnetError: a repo id the Hub would refuse, an unknown route, --remote with api.
    """

    repo_id: str  # USER/NAME of the Hub repository (created if missing)
    out: str | os.PathLike = DEFAULT_OUT  # the mirror folder (a git repository for via="git")
    via: str = "git"  # a key of ROUTES: "git" (commit, push with git LFS) or "api" (upload)
    remote: str | None = None  # with via="git": push to this git URL instead of the Hub
    dry_run: bool = False  # export into a temporary folder and list what would change, only
    onnx: bool = False  # also export model.onnx
    data_dir: str | os.PathLike | None = None  # MNIST folder for the model card's evaluation
    models_dir: str | os.PathLike | None = None  # the model store

    def __post_init__(self) -> None:
        check_repo_id(self.repo_id, f"--repo-id {self.repo_id!r}")
        if self.via not in ROUTES:
            raise DigitnetError(f"unknown publishing route {self.via!r}: expected "
                                f"{' or '.join(ROUTES)}")
        if self.remote and self.via != "git":
            raise DigitnetError("--remote is a git URL; it cannot be used with --via api")
        object.__setattr__(self, "out", Path(self.out).expanduser())

    @property
    def url(self) -> str:
        """Where the model goes: the git remote, else the Hub repository."""
        return self.remote or f"{hub_endpoint()}/{self.repo_id}"


def publish(ref: str, options: PublishOptions, log: Log = _quiet) -> dict:
    """Refresh the mirror folder `options.out` from a model and publish it.

    Args:
        ref: the model reference.
        options: where and how; see PublishOptions.
        log: receives progress messages.

    Returns:
        url, dry_run, plan (file rows, see `plan_files`), message, results, and when published:
        commit and pushed (with via="git" also branch, the remote branch pushed to).

    Raises:
        DigitnetError: no token, Hub or remote unreachable, git or git LFS missing or failing;
            the message says that nothing was published.
    """
    if options.via == "git":
        require_git_lfs()
    if options.dry_run:
        return _dry_run(ref, options, log)
    return ROUTES[options.via](ref, options, log)


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
                         lfs=is_lfs(path.name)))
    for name in sorted(set(old) - {r["name"] for r in rows}):
        rows.append(dict(name=name, size=old[name].stat().st_size, status="removed",
                         lfs=is_lfs(name)))
    return rows


def format_plan(rows: list[dict]) -> str:
    width = max((len(r["name"]) for r in rows), default=4)
    return "\n".join(f"  {r['status']:<10}{r['name']:<{width + 2}}{format_size(r['size']):>10}"
                     f"{'  (git LFS)' if r['lfs'] else ''}" for r in rows)


def _export(ref: str, options: PublishOptions, out: Path) -> dict:
    return export_model(ref, out, data_dir=options.data_dir, models_dir=options.models_dir,
                        onnx=options.onnx, repo_id=options.repo_id)


def _export_with_plan(ref: str, options: PublishOptions) -> tuple[dict, list[dict]]:
    """Export into the mirror and list what changed there (compared with a copy taken before)."""
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        if options.out.is_dir():
            shutil.copytree(options.out, before, ignore=shutil.ignore_patterns(".git"))
        info = _export(ref, options, options.out)
        return info, plan_files(options.out, before)


def _dry_run(ref: str, options: PublishOptions, log: Log) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        info = _export(ref, options, Path(tmp) / "export")
        plan = plan_files(info["out"], options.out)
    log(f"dry run: would {'commit and push' if options.via == 'git' else 'upload'} to "
        f"{options.url}; nothing was changed")
    return dict(url=options.url, dry_run=True, plan=plan, message=info["message"],
                results=info["results"])


def _publish_api(ref: str, options: PublishOptions, log: Log) -> dict:
    token = require_token()
    check_replaceable(options.out)
    create_repo(options.repo_id, token)
    info, plan = _export_with_plan(ref, options)
    log(f"uploading {options.out} to {options.url}")
    commit = upload_folder(options.out, options.repo_id, info["message"], token)
    return dict(url=options.url, dry_run=False, plan=plan, message=info["message"],
                results=info["results"], commit=commit, pushed=True)


def _publish_git(ref: str, options: PublishOptions, log: Log) -> dict:
    to_hub = options.remote is None
    token = require_token() if to_hub else None
    check_replaceable(options.out)
    if to_hub:
        create_repo(options.repo_id, token)
    remote = find_remote(options.url, token, log)  # before the export: unreachable changes nothing
    info, plan = _export_with_plan(ref, options)
    pushed = push_folder(options.out, remote, info["message"], log)
    return dict(url=options.url, dry_run=False, plan=plan, message=info["message"],
                results=info["results"], **pushed)


ROUTES: dict[str, Callable[[str, PublishOptions, Log], dict]] = {
    "git": _publish_git,  # the mirror: huggingface/ is a git repository pushed with git LFS
    "api": _publish_api,
}
