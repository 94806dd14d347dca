"""The limits of `digitnet serve` against hostile or careless clients, each a flag: the upload
size (413 before anything is parsed), the pixels an image may decode to (413 from the file's
header), how many images are decoded at once (503 with Retry-After for a request that waits too
long for a slot), and how long a request body may take to arrive (408).

`UploadLimit` is ASGI middleware and `DecodeSlots` an async semaphore; fastapi and anyio are
imported inside them, so this module imports without them.
"""

import collections
import math
import time

from digitnet.data.preprocess import MAX_PIXELS
from digitnet.errors import DigitnetError

DEFAULT_MAX_UPLOAD_MB = 10.0  # a 12-megapixel phone JPEG is 3-6 MB
# Decoding and preprocessing an image at the pixel limit takes up to ~35 bytes a pixel (RGBA;
# float32 working copies), ~0.55 GB at 16 MP; the CLI's limit is preprocess.MAX_PIXELS (40 MP).
DEFAULT_MAX_MEGAPIXELS = 16.0  # a 12.2 MP (4032x3024) phone photo passes
DEFAULT_MAX_DECODES = 2  # images decoded and predicted at once; peak memory ~ this x the above
DEFAULT_QUEUE_TIMEOUT_S = 10.0  # a request waiting longer than this for a decode slot gets 503
DEFAULT_UPLOAD_TIMEOUT_S = 60.0  # a request body must arrive within this (10 MB at ~1.5 Mbit/s)
RETRY_AFTER_S = 2  # the Retry-After of a 503
MB = 1_000_000
MULTIPART_OVERHEAD = 64 * 1024  # bytes a request may carry on top of the file: boundaries, headers


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

    def _take(self, pixels: int) -> None:
        self.active += 1
        self.in_flight += pixels

    async def acquire(self, pixels: int, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for room for an image of `pixels`; False if none came."""
        import anyio

        # no one waits: taken at once, without anyio's lock and condition, whose checkpoints go
        # round the event loop (~0.1 ms a request on the busy 2 cores)
        if not self._queue and self._fits(pixels):
            self._take(pixels)
            return True
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
                    self._take(pixels)
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
        if not self._queue:  # no one to wake
            self.active -= 1
            self.in_flight -= pixels
            return
        async with self._changed:
            self.active -= 1
            self.in_flight -= pixels
            self._changed.notify_all()


def _positive(value: float, what: str, flag: str, top: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value <= top):
        raise DigitnetError(f"{what} must be a number above 0 and at most {top:g} "
                            f"({flag}), got {value}")
    return value


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
