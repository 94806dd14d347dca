"""The web demo and JSON API (`digitnet serve`): a FastAPI app over `predict.predict_images`.

    GET  /         the demo page: draw a digit or upload a photo; see the label, the ten
                   probabilities and the 28x28 image the model saw
    POST /predict  an image file (multipart field `file`) -> the prediction as JSON
    GET  /health   the model's label, architecture and parameter count
    GET  /info     the same, with the model's preprocessing configuration and test accuracy

This module builds the app and its routes. What the routes answer is deploy/serve_content.py's,
the limits against hostile or careless clients (413, 408, 503) are deploy/serve_limits.py's, and
running it (socket, uvicorn) is deploy/server.py's.

fastapi, uvicorn and python-multipart are optional (`pip install 'digitnet[serve]'`); they are
imported inside the functions that need them, so this module imports without them.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time,
# and they name classes imported inside create_app.
import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Annotated, Any

from digitnet.constants import NUM_CLASSES
from digitnet.data.preprocess import ImageError, ImageTooLargeError, check_image_size
from digitnet.deploy.predict import DEFAULT_TOP_K, prepare_for_prediction
from digitnet.deploy.serve_content import (
    SecurityHeaders,
    model_info,
    page_policy,
    predict_upload,
    public_label,
    render_page,
)
from digitnet.deploy.serve_limits import (
    DEFAULT_MAX_DECODES,
    DEFAULT_MAX_MEGAPIXELS,
    DEFAULT_MAX_UPLOAD_MB,
    DEFAULT_QUEUE_TIMEOUT_S,
    DEFAULT_UPLOAD_TIMEOUT_S,
    MB,
    MULTIPART_OVERHEAD,
    RETRY_AFTER_S,
    DecodeSlots,
    UploadLimit,
    check_limits,
    too_large,
)
from digitnet.deploy.server import check_serve_dependencies
from digitnet.errors import DigitnetError
from digitnet.store import LoadedModel
from digitnet.version import __version__

if TYPE_CHECKING:
    from fastapi import FastAPI

# Uploads up to this size have their size and header read on the event loop, not on a thread:
# a demo drawing (4.2 kB in benchmarks/serve_latency.py) is spared a thread hop (two context
# switches, slow on busy cores). A header costs Pillow at most ~0.25 us a byte (a JPEG of 8,000
# empty segments: 8 ms at 32 kB on the 2 busy cores), so no upload this small holds the loop for
# long; larger ones go to a thread.
INLINE_MEASURE_BYTES = 32 * 1024
NO_FILE = ("no file in the request: send the image as the multipart/form-data field 'file', "
           "e.g. curl -F file=@digit.png http://HOST:PORT/predict")


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
        if file.size is not None and file.size <= INLINE_MEASURE_BYTES:  # in memory, small
            pixels = measure(file, name)
        else:
            pixels = await anyio.to_thread.run_sync(measure, file, name)
        if not await slots.acquire(pixels, queue_timeout_s):  # waits in its spooled file
            raise HTTPException(503, busy, headers={"Retry-After": str(RETRY_AFTER_S)})
        try:  # reading, decoding and the forward pass run off the event loop, on a thread
            # of the decode pool; awaited shielded, so that the slot is held until the decode
            # ends even when a cancel scope cancels the request (a thread cannot be stopped)
            job = decoders.submit(read_and_predict, file, name, top_k)
            with anyio.CancelScope(shield=True):
                return await asyncio.wrap_future(job)
        finally:
            with anyio.CancelScope(shield=True):
                await slots.release(pixels)

    return app
