"""The git + LFS mirror: commit a finished export folder and push it, with git LFS, to a remote.

The push goes to the branch the remote's HEAD names (`main` on the Hub; `master` for a bare
repository made by a plain `git init --bare`), so that a clone of the remote holds the model.
A token reaches git only through the environment of its processes: it is never written to a file.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from digitnet.deploy.export import is_lfs
from digitnet.deploy.hub_api import scrub
from digitnet.errors import DigitnetError
from digitnet.store.hub import LFS_POINTER_PREFIX, OFFLINE_HINTS, hub_endpoint

GIT_TIMEOUT_S = 600  # per git command; pushes of these small models take seconds
FALLBACK_BRANCH = "main"  # the Hub's branch, for a remote that does not say what HEAD names
_UNNAMED = "digitnet-head-not-named"  # a branch name no remote's HEAD will have


@dataclass(frozen=True)
class Remote:
    """A git remote as `find_remote` saw it before the export."""

    url: str
    branch: str  # the branch the remote's HEAD names: the one a clone checks out
    commit: str | None  # that branch's commit; None if it has none yet
    token: str | None = field(default=None, repr=False)  # for the Hub's auth header only


def require_git_lfs() -> None:
    """Raises DigitnetError, saying how to install them, if git or git LFS is missing."""
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
        detail = scrub((result.stderr or result.stdout).strip(), token)
        raise DigitnetError(f"{what or 'git ' + args[0]} failed: {detail}")
    return result


def _list_remote(url: str, env: dict[str, str], token: str | None) -> tuple[str | None, dict]:
    """(the branch HEAD names, or None if not advertised; {branch: commit}) from ls-remote."""
    result = _git(["ls-remote", "--symref", url], None, env, token, check=False)
    if result.returncode != 0:
        detail = scrub(result.stderr.strip(), token)
        if any(hint in detail.lower() for hint in OFFLINE_HINTS):
            raise DigitnetError(f"cannot reach {url} ({detail.splitlines()[-1] if detail else ''});"
                                f" are you offline? Nothing was published")
        raise DigitnetError(f"git cannot read {url}: {detail}; nothing was published")
    head, branches = None, {}
    for line in result.stdout.splitlines():
        value, _, name = line.partition("\t")  # "ref: refs/heads/main\tHEAD" or "SHA\tREF"
        if name == "HEAD" and value.startswith("ref: refs/heads/"):
            head = value.removeprefix("ref: refs/heads/")
        elif name.startswith("refs/heads/"):
            branches[name.removeprefix("refs/heads/")] = value
    return head, branches


def _unborn_head(url: str, env: dict[str, str], token: str | None) -> str | None:
    """The branch HEAD names in a remote where that branch has no commit yet (an empty bare
    repository): ls-remote does not say, but git >= 2.31 asks for it when cloning (protocol v2).
    None if the remote does not say either way."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe"
        cloned = _git(["-c", f"init.defaultBranch={_UNNAMED}", "clone", "-q", "--bare",
                       "--depth=1", "--no-tags", url, str(probe)], None, env, token, check=False)
        if cloned.returncode != 0:
            return None
        head = _git(["symbolic-ref", "-q", "HEAD"], probe, env, check=False).stdout.strip()
    branch = head.removeprefix("refs/heads/")
    return branch if head.startswith("refs/heads/") and branch != _UNNAMED else None


def find_remote(url: str, token: str | None = None,
                log: Callable[[str], None] = lambda message: None) -> Remote:
    """Read what the remote holds, before anything local changes.

    Args:
        url: the git remote.
        token: the Hub token, for a URL on `hub_endpoint()` (None for other remotes).
        log: told which branch will be pushed when the remote does not name one.

    Raises:
        DigitnetError: the remote cannot be reached or read; nothing was published.
    """
    env = _git_env(token)
    head, branches = _list_remote(url, env, token)
    branch = head or _unborn_head(url, env, token)
    if branch is None:
        branch = FALLBACK_BRANCH
        log(f"{url} does not say which branch its HEAD names; pushing to {branch}")
    return Remote(url=url, branch=branch, commit=branches.get(branch), token=token)


def _identity_args(mirror: Path, env: dict[str, str]) -> list[str]:
    """The user's git identity if configured, else a neutral one for the mirror's commits."""
    for var in ("GIT_AUTHOR_IDENT", "GIT_COMMITTER_IDENT"):
        if _git(["var", var], mirror, env, check=False).returncode != 0:
            return ["-c", "user.name=digitnet", "-c", "user.email=digitnet@localhost"]
    return []


def _prepare_mirror(mirror: Path, env: dict[str, str], branch: str) -> None:
    """Make `mirror` a git repository on `branch` with git LFS set up in its own config."""
    if not (mirror / ".git").exists():
        _git(["init", "-q"], mirror, env)
    _git(["symbolic-ref", "HEAD", f"refs/heads/{branch}"], mirror, env)
    _git(["lfs", "install", "--local"], mirror, env, what="git lfs install --local")


def _check_lfs_staged(mirror: Path, env: dict[str, str]) -> None:
    """Every staged file matching the LFS patterns must be an LFS pointer, never raw bytes."""
    staged = _git(["ls-files"], mirror, env).stdout.split()
    for name in (n for n in staged if is_lfs(n)):
        blob = subprocess.run(["git", "cat-file", "blob", f":{name}"], cwd=mirror, env=env,
                              capture_output=True).stdout
        if not blob.startswith(LFS_POINTER_PREFIX):
            raise DigitnetError(f"{mirror / name} was staged as raw bytes, not through git LFS; "
                                f"check `git lfs install --local` in {mirror}; nothing was "
                                f"published")


def push_folder(folder: Path, remote: Remote, message: str,
                log: Callable[[str], None] = lambda message: None) -> dict:
    """Commit the finished export `folder` (made a git repository if it is not) and push it.

    The commit goes on top of the remote's branch, so the push is a fast-forward even if the
    remote was changed elsewhere; its files are exactly those of `folder`.

    Args:
        folder: the export, as `export_model` left it.
        remote: from `find_remote`.
        message: the commit message.
        log: receives progress messages.

    Returns:
        commit (the mirror's HEAD), branch (the remote branch), pushed (False if the remote
        already had the commit).

    Raises:
        DigitnetError: git or git LFS failed; the message says that nothing was published.
    """
    env, token = _git_env(remote.token), remote.token
    _prepare_mirror(folder, env, remote.branch)
    if remote.commit:
        _git(["fetch", "-q", "--no-tags", remote.url, f"refs/heads/{remote.branch}"], folder, env,
             token, what=f"git fetch {remote.url}")
        _git(["reset", "-q", "--soft", "FETCH_HEAD"], folder, env)
    _git(["add", "-A"], folder, env)
    _check_lfs_staged(folder, env)
    has_head = _git(["rev-parse", "-q", "--verify", "HEAD"], folder, env,
                    check=False).returncode == 0
    staged = _git(["diff", "--cached", "--quiet"], folder, env, check=False).returncode != 0
    if staged or not has_head:
        _git([*_identity_args(folder, env), "commit", "-q", "-m", message], folder, env)
    commit = _git(["rev-parse", "HEAD"], folder, env).stdout.strip()
    result = dict(commit=commit, branch=remote.branch, pushed=False)
    if commit == remote.commit:
        log(f"{remote.url} already has this model ({commit[:12]}); nothing to push")
        return result
    log(f"pushing {commit[:12]} to {remote.url} (branch {remote.branch}) with git LFS")
    not_published = f"the commit is in {folder}, but nothing was published"
    _git(["lfs", "push", remote.url, remote.branch], folder, env, token,
         what=f"git lfs push to {remote.url} ({not_published})")
    _git(["push", "-q", "--no-verify", remote.url, f"HEAD:refs/heads/{remote.branch}"], folder,
         env, token, what=f"git push to {remote.url} ({not_published})")
    result["pushed"] = True
    return result
