"""The web demo and JSON API (`digitnet serve`): a FastAPI app over `predict.predict_images`.

    GET  /         the demo page: draw a digit or upload a photo; see the label, the ten
                   probabilities and the 28x28 image the model saw
    POST /predict  an image file (multipart field `file`) -> the prediction as JSON
    GET  /health   the model's label, architecture and parameter count
    GET  /info     the same, with the model's preprocessing configuration and test accuracy

fastapi, uvicorn and python-multipart are optional (`pip install 'digitnet[serve]'`); they are
imported inside the functions that need them, so this module imports without them.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time,
# and they name classes imported inside create_app.
import base64
import html
import importlib.util
import json
import math
import os
import socket
from importlib import resources
from typing import TYPE_CHECKING, Annotated

from digitnet import __version__
from digitnet.constants import NUM_CLASSES
from digitnet.data.preprocess import PREPROCESS_VERSION, encode_png
from digitnet.deploy.predict import DEFAULT_TOP_K, predict_images, prepare_for_prediction
from digitnet.errors import DigitnetError
from digitnet.store import SUMMARY_FILE, LoadedModel

if TYPE_CHECKING:
    from fastapi import FastAPI

DEFAULT_MAX_UPLOAD_MB = 10.0  # a 12-megapixel phone JPEG is 3-6 MB
MB = 1_000_000
MULTIPART_OVERHEAD = 64 * 1024  # bytes a request may carry on top of the file: boundaries, headers
INSTALL_HINT = "pip install 'digitnet[serve]'"
# import name -> distribution name of what `digitnet serve` needs beyond digitnet itself
SERVE_PACKAGES = {"fastapi": "fastapi", "uvicorn": "uvicorn",
                  "python_multipart": "python-multipart"}
PAGE = "static/index.html"  # package data of digitnet.deploy
NO_FILE = ("no file in the request: send the image as the multipart/form-data field 'file', "
           "e.g. curl -F file=@digit.png http://HOST:PORT/predict")


def check_serve_dependencies() -> None:
    """Raises DigitnetError naming the missing packages and how to install them."""
    missing = [dist for module, dist in SERVE_PACKAGES.items()
               if importlib.util.find_spec(module) is None]
    if missing:
        raise DigitnetError(f"digitnet serve needs {', '.join(missing)}, which "
                            f"{'is' if len(missing) == 1 else 'are'} not installed: {INSTALL_HINT}")


# ------------------------------------------------------------------------------------ contents
def model_info(loaded: LoadedModel, max_upload_bytes: int | None = None) -> dict:
    """What /health and /info say about the model (plain JSON values)."""
    from digitnet.models import count_parameters

    info = dict(model=loaded.ref.label, arch=loaded.config["arch"]["id"],
                parameters=count_parameters(loaded.model))
    if max_upload_bytes is None:
        return info
    summary = loaded.ref.run_dir / SUMMARY_FILE
    test_accuracy = None
    if summary.is_file():
        try:
            test_accuracy = json.loads(summary.read_text()).get("test_acc")
        except (OSError, json.JSONDecodeError):
            pass  # a damaged summary costs the page one number, not the server
    data = loaded.data_config
    return dict(info, epochs=loaded.epoch, created=loaded.config.get("created"),
                test_accuracy=test_accuracy, input_size=data["input_size"], mean=data["mean"],
                std=data["std"], label_names=data["label_names"], max_upload_bytes=max_upload_bytes,
                preprocess_version=PREPROCESS_VERSION, digitnet_version=__version__)


def png_data_url(image) -> str:
    """A uint8 (H, W) image as a `data:image/png;base64,...` URL."""
    return "data:image/png;base64," + base64.b64encode(encode_png(image)).decode("ascii")


def render_page(loaded: LoadedModel, max_upload_bytes: int) -> str:
    """The demo page with the model's name and the upload limit filled in."""
    page = resources.files("digitnet.deploy").joinpath(PAGE).read_text(encoding="utf-8")
    return (page.replace("{{MODEL}}", html.escape(loaded.ref.label))
            .replace("{{MAX_UPLOAD_BYTES}}", str(max_upload_bytes)))


def predict_upload(loaded: LoadedModel, content: bytes, name: str,
                   top_k: int = DEFAULT_TOP_K) -> dict:
    """Predict the digit in the bytes of an uploaded image file, as `digitnet predict` would.

    Returns:
        `file`, `label`, `probabilities`, `top_k`, `digit_found`, `reason` (see
        `predict_images`) and `image`: the 28x28 image the model saw as a PNG data URL, or None.

    Raises:
        DigitnetError: the bytes are not an image that can be read (the message starts with
            `name`).
    """
    [entry] = predict_images(loaded, [content], top_k, names=[name], with_images=True)
    if entry["error"]:
        reason = entry["error"].partition(": ")[2]  # preprocess names the source "<N bytes>"
        raise DigitnetError(f"{name}: {reason}")
    image = entry.pop("image")
    entry.pop("error")
    return dict(entry, image=None if image is None else png_data_url(image))


# ------------------------------------------------------------------------------------- the app
def too_large(size: int | None, limit: int) -> str:
    what = "the upload is over" if size is None else f"the upload is {size / MB:.1f} MB, over"
    return f"{what} the limit of {limit / MB:g} MB (digitnet serve --max-upload-mb)"


class UploadLimit:
    """ASGI middleware refusing request bodies larger than `max_body_bytes` with 413, before
    anything parses or decodes them: at once when Content-Length says so, else (a chunked
    upload) as soon as the bytes received pass the limit."""

    def __init__(self, app, max_body_bytes: int, file_limit: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.file_limit = file_limit  # named in the message

    async def __call__(self, scope, receive, send) -> None:
        from fastapi import HTTPException
        from fastapi.responses import JSONResponse
        from starlette.datastructures import Headers

        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            response = JSONResponse({"detail": too_large(int(declared), self.file_limit)}, 413)
            return await response(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                # raised inside the request handler: FastAPI turns it into the JSON response
                raise HTTPException(413, too_large(None, self.file_limit))
            return message

        await self.app(scope, limited_receive, send)


def create_app(loaded: LoadedModel, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB) -> "FastAPI":
    """The demo and API for one loaded model; every prediction goes through `predict_images`.

    Args:
        loaded: a model from `digitnet.store.load_model`, kept for the life of the app.
        max_upload_mb: largest image file accepted, in MB (10^6 bytes); larger uploads get 413
            before they are decoded.

    Raises:
        DigitnetError: fastapi or python-multipart missing, or max_upload_mb not positive.
    """
    check_serve_dependencies()
    from fastapi import FastAPI, File, HTTPException, Query, UploadFile
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse

    if not (max_upload_mb > 0 and math.isfinite(max_upload_mb)):
        raise DigitnetError(f"the upload limit must be a positive number of MB, got "
                            f"{max_upload_mb}")
    max_bytes = int(max_upload_mb * MB)
    page = render_page(loaded, max_bytes)
    health = dict(status="ok", **model_info(loaded))
    info = model_info(loaded, max_bytes)
    prepared = prepare_for_prediction(loaded)  # once, not per request (~3 ms each)

    # no /docs or /redoc: their pages load scripts from a CDN, and the demo must work offline
    app = FastAPI(title="digitnet", version=__version__, docs_url=None, redoc_url=None,
                  description=f"Handwritten digit recognition with {loaded.ref.label}")
    app.add_middleware(UploadLimit, max_body_bytes=max_bytes + MULTIPART_OVERHEAD,
                       file_limit=max_bytes)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/health")
    def get_health() -> dict:
        """The model being served: label, architecture, parameter count."""
        return health

    @app.get("/info")
    def get_info() -> dict:
        """The model, its preprocessing configuration and test accuracy, and the upload limit."""
        return info

    @app.post("/predict")
    async def predict(
        file: Annotated[UploadFile | None, File(description="an image: PNG, JPEG, ...")] = None,
        top_k: Annotated[int, Query(ge=1, le=NUM_CLASSES)] = DEFAULT_TOP_K,
    ) -> dict:
        """Predict the digit in an uploaded image: label, ten probabilities, top-k, the 28x28
        image the model saw (PNG data URL), or why no digit was found."""
        if file is None:
            raise HTTPException(400, NO_FILE)
        name = file.filename or "upload"
        content = await file.read(max_bytes + 1)
        if len(content) > max_bytes:
            raise HTTPException(413, too_large(file.size, max_bytes))
        if not content:
            raise HTTPException(400, f"{name}: the file is empty; expected an image file")
        try:  # preprocessing and the forward pass run off the event loop
            return await run_in_threadpool(predict_upload, prepared, content, name, top_k)
        except DigitnetError as e:
            raise HTTPException(400, str(e)) from None

    return app


# ---------------------------------------------------------------------------------- the server
def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port).

    Raises:
        DigitnetError: the port is not 0 to 65535, or the address cannot be used (port taken,
            unknown host, no permission).
    """
    if not 0 <= port <= 65535:  # getaddrinfo would take 100000 as 100000 % 65536
        raise DigitnetError(f"--port must be 0 to 65535 (0: any free port), got {port}")
    sock = None
    try:
        family, _, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)[0]
        # proto must say TCP (socket.create_server leaves it 0): asyncio turns Nagle's algorithm
        # off only on such sockets, and with it on, every request on a kept-alive connection
        # waited ~40 ms for the client's delayed ACK (benchmarks/serve_latency.py)
        sock = socket.socket(family, socket.SOCK_STREAM, proto)
        if os.name == "posix":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen()
        return sock
    except OSError as e:
        if sock is not None:
            sock.close()
        why = os.strerror(e.errno) if e.errno and e.errno > 0 else e.strerror or str(e)
        raise DigitnetError(f"cannot listen on {host}:{port} ({why}); choose another --port or "
                            f"--host") from None


def serve(app: "FastAPI", sock: socket.socket, log_level: str = "info") -> None:
    """Serve `app` on a bound socket with uvicorn until interrupted (Ctrl+C, SIGTERM)."""
    check_serve_dependencies()
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"
