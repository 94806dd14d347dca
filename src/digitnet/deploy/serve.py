"""The web demo and JSON API (`digitnet serve`): a FastAPI app over `predict.predict_images`.

    GET  /         the demo page: draw a digit or upload a photo; see the label, the ten
                   probabilities and the 28x28 image the model saw
    POST /predict  an image file (multipart field `file`) -> the prediction as JSON
    GET  /health   the model's label, architecture and parameter count
    GET  /info     the same, with the model's preprocessing configuration and test accuracy

Limits against hostile or careless clients (each a `digitnet serve` flag): the upload size (413
before anything is parsed), the pixels an image may decode to (413 from the file's header,
before decoding), how many images are decoded at once (a request that waits too long for a
slot gets 503 with Retry-After), and how long a request body may take to arrive (408).

fastapi, uvicorn and python-multipart are optional (`pip install 'digitnet[serve]'`); they are
imported inside the functions that need them, so this module imports without them.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time,
# and they name classes imported inside create_app.
import base64
import collections
import hashlib
import html
import importlib.util
import math
import os
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from digitnet import __version__
from digitnet.constants import NUM_CLASSES
from digitnet.data.preprocess import (
    MAX_PIXELS,
    PREPROCESS_VERSION,
    ImageError,
    ImageTooLargeError,
    check_image_size,
    encode_png,
)
from digitnet.deploy.predict import DEFAULT_TOP_K, predict_images, prepare_for_prediction
from digitnet.errors import DigitnetError
from digitnet.fileio import read_json
from digitnet.store import SUMMARY_FILE, SUMMARY_SCHEMA, LoadedModel

if TYPE_CHECKING:
    from fastapi import FastAPI

DEFAULT_MAX_UPLOAD_MB = 10.0  # a 12-megapixel phone JPEG is 3-6 MB
# Decoding and preprocessing an image at the pixel limit takes up to ~35 bytes a pixel (RGBA;
# float32 working copies), ~0.55 GB at 16 MP; the CLI's limit is preprocess.MAX_PIXELS (40 MP).
DEFAULT_MAX_MEGAPIXELS = 16.0  # a 12.2 MP (4032x3024) phone photo passes
DEFAULT_MAX_DECODES = 2  # images decoded and predicted at once; peak memory ~ this x the above
DEFAULT_QUEUE_TIMEOUT_S = 10.0  # a request waiting longer than this for a decode slot gets 503
DEFAULT_UPLOAD_TIMEOUT_S = 60.0  # a request body must arrive within this (10 MB at ~1.5 Mbit/s)
MAX_CONNECTIONS = 256  # uvicorn answers 503 beyond this many open connections and requests
RETRY_AFTER_S = 2  # the Retry-After of a 503
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
def public_label(loaded: LoadedModel) -> str:
    """The model's label as clients see it: a store reference (`cnn-v1/run@best`) or Hub
    reference as it is, but a model served by its path shows only its folder's name, never
    where it lies on this machine."""
    label = loaded.ref.label
    if Path(label).is_absolute() or label.startswith(("~", ".")) or "\\" in label:
        name, checkpoint = loaded.ref.run_dir.name, loaded.ref.checkpoint
        return name if checkpoint is None else f"{name}@{checkpoint}"
    return label


def model_info(loaded: LoadedModel, max_upload_bytes: int | None = None) -> dict:
    """What /health and /info say about the model (plain JSON values)."""
    from digitnet.models import count_parameters

    info = dict(model=public_label(loaded), arch=loaded.config["arch"]["id"],
                parameters=count_parameters(loaded.model))
    if max_upload_bytes is None:
        return info
    summary = loaded.ref.run_dir / SUMMARY_FILE
    test_accuracy = None
    if summary.is_file():
        try:
            test_accuracy = read_json(summary, "run summary", SUMMARY_SCHEMA).get("test_acc")
        except DigitnetError:
            pass  # a damaged summary costs the page one number, not the server
    data = loaded.data_config
    return dict(info, epochs=loaded.epoch, created=loaded.config.get("created"),
                test_accuracy=test_accuracy, input_size=data["input_size"], mean=data["mean"],
                std=data["std"], label_names=data["label_names"], max_upload_bytes=max_upload_bytes,
                preprocess_version=PREPROCESS_VERSION, digitnet_version=__version__,
                temperature=loaded.temperature, calibrated=loaded.calibration.calibrated)


def png_data_url(image) -> str:
    """A uint8 (H, W) image as a `data:image/png;base64,...` URL."""
    return "data:image/png;base64," + base64.b64encode(encode_png(image)).decode("ascii")


def render_page(loaded: LoadedModel, max_upload_bytes: int) -> str:
    """The demo page with the model's name and the upload limit filled in."""
    page = resources.files("digitnet.deploy").joinpath(PAGE).read_text(encoding="utf-8")
    return (page.replace("{{MODEL}}", html.escape(public_label(loaded)))
            .replace("{{MAX_UPLOAD_BYTES}}", str(max_upload_bytes)))


def page_policy(page: str) -> str:
    """A Content-Security-Policy for the demo page: nothing from elsewhere, its own inline script
    and style only (by hash), requests to this server only, no framing."""
    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.DOTALL)
        return " ".join("'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest())
                        .decode("ascii") + "'" for b in blocks) or "'none'"

    return (f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
            f"img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; "
            f"form-action 'none'; frame-ancestors 'none'")


def predict_upload(loaded: LoadedModel, content: bytes, name: str,
                   top_k: int = DEFAULT_TOP_K, max_pixels: int | None = None) -> dict:
    """Predict the digit in the bytes of an uploaded image file, as `digitnet predict` would.

    Returns:
        `file`, `label`, `probabilities`, `top_k`, `digit_found`, `reason` (see
        `predict_images`) and `image`: the 28x28 image the model saw as a PNG data URL, or None.

    Raises:
        ImageTooLargeError: the image has more than `max_pixels` pixels (default:
            preprocess.MAX_PIXELS), found from its header before decoding.
        DigitnetError: the bytes are not an image that can be read (the message starts with
            `name`).
    """
    try:
        check_image_size(content, max_pixels)  # the header only: a bomb is refused undecoded
    except ImageTooLargeError as e:
        raise ImageTooLargeError(f"{name}: {str(e).partition(': ')[2]}") from None
    except ImageError:
        pass  # predict_images says what is wrong with the file, the same way for every caller
    [entry] = predict_images(loaded, [content], top_k, names=[name], with_images=True,
                             max_pixels=max_pixels)
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
    upload) as soon as the bytes received pass the limit. A body that has not arrived in full
    `timeout_s` seconds after the request began gets 408 (uvicorn times out idle connections
    between requests, not a body that trickles in)."""

    def __init__(self, app, max_body_bytes: int, file_limit: int,
                 timeout_s: float = DEFAULT_UPLOAD_TIMEOUT_S) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.file_limit = file_limit  # named in the message
        self.timeout_s = timeout_s

    async def __call__(self, scope, receive, send) -> None:
        import anyio
        from fastapi import HTTPException
        from fastapi.responses import JSONResponse
        from starlette.datastructures import Headers

        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            response = JSONResponse({"detail": too_large(int(declared), self.file_limit)}, 413)
            return await response(scope, receive, send)
        received, complete = 0, False
        deadline = time.monotonic() + self.timeout_s

        async def limited_receive():
            nonlocal received, complete
            if complete:  # the body is in: what follows is waiting for a disconnect
                return await receive()
            with anyio.move_on_after(deadline - time.monotonic()) as waited:
                message = await receive()
            if waited.cancelled_caught:
                # raised inside the request handler: FastAPI turns it into the JSON response
                raise HTTPException(408, f"the request body did not arrive within "
                                         f"{self.timeout_s:g} s (digitnet serve --upload-timeout)")
            received += len(message.get("body", b""))
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            if received > self.max_body_bytes:
                raise HTTPException(413, too_large(None, self.file_limit))
            return message

        await self.app(scope, limited_receive, send)


class SecurityHeaders:
    """ASGI middleware adding `X-Content-Type-Options: nosniff` to every response, and a
    Content-Security-Policy that allows nothing to those that do not set their own (the page
    sets one that allows itself)."""

    POLICY = "default-src 'none'; frame-ancestors 'none'"

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def secured_send(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers.append((b"x-content-type-options", b"nosniff"))
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", self.POLICY.encode()))
                message = dict(message, headers=headers)
            await send(message)

        await self.app(scope, receive, secured_send)


class DecodeSlots:
    """At most `count` images decoded at once, holding at most `pixels` pixels together: memory
    stays near what one image at the pixel limit takes (~35 bytes a pixel), however many small
    ones run beside it. An image alone always fits (its pixels were checked against the limit).
    First come, first served: a big image waiting for room is not overtaken by small ones.
    """

    def __init__(self, count: int, pixels: int) -> None:
        self.count, self.pixels = count, pixels
        self.active = self.in_flight = 0
        self._queue: collections.deque = collections.deque()  # the waiting, oldest first
        self._changed = None  # an anyio.Condition, made inside the event loop

    def _fits(self, pixels: int) -> bool:
        return self.active < self.count and (
            self.active == 0 or self.in_flight + pixels <= self.pixels)

    async def acquire(self, pixels: int, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for room for an image of `pixels`; False if none came."""
        import anyio

        if self._changed is None:
            self._changed = anyio.Condition()
        ticket = object()
        self._queue.append(ticket)
        try:
            with anyio.move_on_after(timeout_s):
                async with self._changed:
                    while self._queue[0] is not ticket or not self._fits(pixels):
                        await self._changed.wait()
                    self._queue.popleft()
                    self.active += 1
                    self.in_flight += pixels
                    self._changed.notify_all()  # the next in line may fit as well
                    return True
            return False
        finally:
            if ticket in self._queue:  # gave up waiting: let the next in line try
                self._queue.remove(ticket)
                with anyio.CancelScope(shield=True):
                    async with self._changed:
                        self._changed.notify_all()

    async def release(self, pixels: int) -> None:
        async with self._changed:
            self.active -= 1
            self.in_flight -= pixels
            self._changed.notify_all()


def _positive(value: float, what: str, flag: str, top: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value <= top):
        raise DigitnetError(f"{what} must be a number above 0 and at most {top:g} "
                            f"({flag}), got {value}")
    return value


def _response_models():
    """The API's response bodies as pydantic models, for validation and the OpenAPI schema."""
    from pydantic import BaseModel, ConfigDict, Field

    class Problem(BaseModel):
        detail: str = Field(description="what was wrong with the request, and the limit if any")

    class Health(BaseModel):
        status: str
        model: str = Field(description="the model's reference; a folder's name, never its path")
        arch: str
        parameters: int

    class Info(Health):
        model_config = ConfigDict(extra="allow")
        status: str | None = None
        epochs: int | None
        created: str | None
        test_accuracy: float | None
        input_size: list[int]
        mean: Any
        std: Any
        label_names: list[str]
        max_upload_bytes: int
        max_pixels: int
        preprocess_version: int
        digitnet_version: str
        temperature: float = Field(description="probabilities are softmax(logits / temperature)")
        calibrated: bool = Field(description="false: temperature 1, the raw softmax")

    class Prediction(BaseModel):
        file: str
        label: int | None = Field(description="the digit; null when none was found")
        probabilities: list[float] | None = Field(description="ten, summing to 1; or null")
        top_k: list[tuple[int, float]] = Field(description="[label, probability], best first")
        digit_found: bool
        reason: str | None = Field(description="why no digit was found, else null")
        path: str | None = Field(None, description="how the image was treated: mnist, scan, "
                                 "drawing or photo (see digitnet.data.preprocess.PATHS)")
        image: str | None = Field(description="the 28x28 image the model saw, a PNG data URL")

    return Problem, Health, Info, Prediction


def check_limits(
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    max_decodes: int = DEFAULT_MAX_DECODES,
    upload_timeout_s: float = DEFAULT_UPLOAD_TIMEOUT_S,
    queue_timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S,
) -> None:
    """Check the server's limits (see `create_app`), so that `digitnet serve` can refuse a bad
    flag before it loads a model.

    Raises:
        DigitnetError: a limit out of its range, named by its flag.
    """
    if not (max_upload_mb > 0 and math.isfinite(max_upload_mb)):
        raise DigitnetError(f"the upload limit must be a positive number of MB, got "
                            f"{max_upload_mb}")
    _positive(max_megapixels, "the pixel limit", "--max-megapixels", MAX_PIXELS / 1e6)
    _positive(upload_timeout_s, "the upload timeout", "--upload-timeout", 3600)
    _positive(queue_timeout_s, "the queue timeout", "queue_timeout_s", 3600)
    if type(max_decodes) is not int or not 1 <= max_decodes <= 64:
        raise DigitnetError(f"the number of concurrent decodes must be 1 to 64 (--max-decodes), "
                            f"got {max_decodes}")


def create_app(
    loaded: LoadedModel,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    max_decodes: int = DEFAULT_MAX_DECODES,
    upload_timeout_s: float = DEFAULT_UPLOAD_TIMEOUT_S,
    queue_timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S,
) -> "FastAPI":
    """The demo and API for one loaded model; every prediction goes through `predict_images`.

    Args:
        loaded: a model from `digitnet.store.load_model`, kept for the life of the app.
        max_upload_mb: largest image file accepted, in MB (10^6 bytes); larger uploads get 413
            before they are decoded.
        max_megapixels: largest image accepted, in millions of pixels (at most MAX_PIXELS);
            larger ones get 413, read from the file's header before decoding.
        max_decodes: how many uploads are decoded and predicted at once (1-64).
        upload_timeout_s: a request body still incomplete this long after the request began
            gets 408.
        queue_timeout_s: an upload waiting this long for a decode slot gets 503 with
            Retry-After.

    Raises:
        DigitnetError: fastapi or python-multipart missing, or a limit out of its range.
    """
    check_serve_dependencies()
    import anyio
    from fastapi import FastAPI, File, HTTPException, Query, UploadFile
    from fastapi.responses import HTMLResponse

    check_limits(max_upload_mb, max_megapixels, max_decodes, upload_timeout_s, queue_timeout_s)
    max_bytes = int(max_upload_mb * MB)
    max_pixels = int(max_megapixels * 1e6)
    page = render_page(loaded, max_bytes)
    page_headers = {"Content-Security-Policy": page_policy(page)}
    health = dict(status="ok", **model_info(loaded))
    info = dict(model_info(loaded, max_bytes), max_pixels=max_pixels)
    prepared = prepare_for_prediction(loaded)  # once, not per request (~3 ms each)
    slots = DecodeSlots(max_decodes, max_pixels)  # the memory and CPU that uploads take at once
    # decoding on these threads alone: memory that glibc keeps per thread after a decode (its
    # arenas) is kept by max_decodes threads, not by every thread of anyio's pool
    decoders = ThreadPoolExecutor(max_decodes, thread_name_prefix="digitnet-decode")
    Problem, Health, Info, Prediction = _response_models()

    def problem(description: str) -> dict:
        return dict(model=Problem, description=description)

    busy = f"busy: no decode slot came free within {queue_timeout_s:g} s; retry later"
    errors = {400: problem("no file, or a file that is not a readable image"),
              408: problem("the request body did not arrive in time (--upload-timeout)"),
              413: problem("the file is over the upload limit (--max-upload-mb), or the image "
                           "has more pixels than the limit (--max-megapixels)"),
              503: dict(problem(busy), headers={"Retry-After": {
                  "description": "seconds to wait", "schema": {"type": "integer"}}})}

    # no /docs or /redoc: their pages load scripts from a CDN, and the demo must work offline
    app = FastAPI(title="digitnet", version=__version__, docs_url=None, redoc_url=None,
                  description=f"Handwritten digit recognition with {public_label(loaded)}")
    app.add_middleware(UploadLimit, max_body_bytes=max_bytes + MULTIPART_OVERHEAD,
                       file_limit=max_bytes, timeout_s=upload_timeout_s)
    app.add_middleware(SecurityHeaders)  # added last: outermost, so every response has them

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse,
                   include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers=page_headers)

    @app.get("/health", response_model=Health)
    def get_health() -> dict:
        """The model being served: label, architecture, parameter count."""
        return health

    @app.get("/info", response_model=Info)
    def get_info() -> dict:
        """The model, its preprocessing configuration and test accuracy, and the limits."""
        return info

    def measure(file, name: str) -> int:
        """The pixels of an upload, from its size and header alone: 413 or 400 when it cannot
        be taken; 0 when it is no image that can be read (predicting it then says why)."""
        fp = file.file
        fp.seek(0, os.SEEK_END)
        size = fp.tell()
        if size > max_bytes:
            raise HTTPException(413, too_large(size, max_bytes))
        if size == 0:
            raise HTTPException(400, f"{name}: the file is empty; expected an image file")
        try:
            fp.seek(0)
            width, height = check_image_size(fp, max_pixels)
            return width * height
        except ImageTooLargeError as e:
            raise HTTPException(413, f"{name}: {str(e).partition(': ')[2]} (digitnet serve "
                                     f"--max-megapixels)") from None
        except ImageError:
            return 0
        finally:
            fp.seek(0)

    def read_and_predict(file, name: str, top_k: int) -> dict:
        content = file.file.read(max_bytes + 1)
        try:
            return predict_upload(prepared, content, name, top_k, max_pixels)
        except ImageTooLargeError as e:
            raise HTTPException(413, f"{e} (digitnet serve --max-megapixels)") from None
        except DigitnetError as e:
            raise HTTPException(400, str(e)) from None

    @app.post("/predict", response_model=Prediction, responses=errors)
    async def predict(
        file: Annotated[UploadFile | None, File(description="an image: PNG, JPEG, ...")] = None,
        top_k: Annotated[int, Query(ge=1, le=NUM_CLASSES)] = DEFAULT_TOP_K,
    ) -> dict:
        """Predict the digit in an uploaded image: label, ten probabilities, top-k, the 28x28
        image the model saw (PNG data URL), or why no digit was found."""
        if file is None:
            raise HTTPException(400, NO_FILE)
        name = file.filename or "upload"
        # size and header first, without a slot: a bomb is refused at once, undecoded
        pixels = await anyio.to_thread.run_sync(measure, file, name)
        if not await slots.acquire(pixels, queue_timeout_s):  # waits in its spooled file
            raise HTTPException(503, busy, headers={"Retry-After": str(RETRY_AFTER_S)})
        try:  # reading, decoding and the forward pass run off the event loop, on a thread
            # of the decode pool (the waiting thread returns when it is done, even on cancel)
            job = decoders.submit(read_and_predict, file, name, top_k)
            return await anyio.to_thread.run_sync(job.result)
        finally:
            with anyio.CancelScope(shield=True):
                await slots.release(pixels)

    return app


# ---------------------------------------------------------------------------------- the server
def check_port(port: int) -> None:
    """Raises DigitnetError unless `port` is 0 (any free port) to 65535."""
    if not 0 <= port <= 65535:  # getaddrinfo would take 100000 as 100000 % 65536
        raise DigitnetError(f"--port must be 0 to 65535 (0: any free port), got {port}")


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port).

    Raises:
        DigitnetError: the port is not 0 to 65535, or the address cannot be used (port taken,
            unknown host, no permission).
    """
    check_port(port)
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

    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5,
                            limit_concurrency=MAX_CONNECTIONS)
    uvicorn.Server(config).run(sockets=[sock])


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"
