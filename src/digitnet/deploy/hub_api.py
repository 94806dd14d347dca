"""The Hugging Face Hub HTTP API: the token, creating a repository, uploading a finished folder.

The token comes from HF_TOKEN or the Hugging Face login; every error message is scrubbed of it
and says that nothing was published.
"""

from __future__ import annotations

from pathlib import Path

from digitnet.errors import DigitnetError, first_line
from digitnet.store.hub import hub_endpoint, network_errors
from digitnet.version import __version__


def resolve_token() -> str | None:
    """$HF_TOKEN, else the token of `hf auth login` (None if neither)."""
    from huggingface_hub import get_token

    return get_token()


def require_token() -> str:
    """The token, for a route that writes to the Hub.

    Raises:
        DigitnetError: neither HF_TOKEN nor a login; the message says how to log in.
    """
    token = resolve_token()
    if not token:
        raise DigitnetError("no Hugging Face token: set HF_TOKEN or log in with `hf auth login` "
                            "(the token needs write access); nothing was published")
    return token


def scrub(text: str, token: str | None) -> str:
    """`text` with the token replaced by ***, for messages that quote a server or git."""
    return text.replace(token, "***") if token else text


def _hub_error(error: BaseException, what: str, token: str | None) -> DigitnetError:
    """A DigitnetError for a failed Hub API call, always saying that nothing was published."""
    from huggingface_hub.errors import HfHubHTTPError

    detail = scrub(first_line(error), token)
    if isinstance(error, HfHubHTTPError):
        return DigitnetError(f"{what}: the Hub refused ({detail}); check the token's write "
                             f"access; nothing was published")
    return DigitnetError(f"{what}: cannot reach the Hub at {hub_endpoint()} ({detail}); are you "
                         f"offline? Nothing was published")


def _hub_api(token: str):
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub_endpoint(), token=token, library_name="digitnet",
                 library_version=__version__)


def create_repo(repo_id: str, token: str) -> None:
    """Create the model repository USER/NAME on the Hub unless it exists.

    Raises:
        DigitnetError: the Hub refused or cannot be reached.
    """
    from huggingface_hub.errors import HfHubHTTPError

    try:
        _hub_api(token).create_repo(repo_id, repo_type="model", exist_ok=True)
    except (HfHubHTTPError, *network_errors()) as e:
        raise _hub_error(e, f"creating {repo_id} on the Hub", token) from None


def upload_folder(folder: Path, repo_id: str, message: str, token: str) -> str | None:
    """Make the repository hold exactly the files of `folder`, in one commit.

    Returns:
        The commit id (None if the client did not say).

    Raises:
        DigitnetError: the Hub refused or cannot be reached.
    """
    from huggingface_hub.errors import HfHubHTTPError

    try:
        commit = _hub_api(token).upload_folder(
            repo_id=repo_id, folder_path=str(folder), repo_type="model",
            commit_message=message, delete_patterns="*",  # the repository mirrors `folder`
        )
    except (HfHubHTTPError, *network_errors()) as e:
        raise _hub_error(e, f"uploading {folder} to {repo_id}", token) from None
    return getattr(commit, "oid", None)
