"""The limits of `digitnet serve` (deploy/serve_limits.py): the upload size (413 before
decoding, also for a chunked body), the pixels an image may have (413 from its header, memory
bounded), decode slots (503 with Retry-After, first come first served) and the body timeout
(408)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from conftest import seven_png
from digitnet.deploy import serve, serve_content
from digitnet.errors import DigitnetError
from serve_client import post

pytest.importorskip("fastapi", reason="digitnet serve needs pip install 'digitnet[serve]'")
from fastapi.testclient import TestClient  # after the skip


@pytest.fixture(scope="module")
def model(serve_model) -> dict:
    """A cnn trained for one epoch on synthetic MNIST (conftest.serve_model)."""
    return serve_model


@pytest.fixture(scope="module")
def client(model) -> TestClient:
    return TestClient(serve.create_app(model["loaded"]))


@pytest.fixture
def small_limit(model, monkeypatch) -> TestClient:
    """An app that takes files up to 20 kB, and fails the test if it predicts anything."""
    def refuse(*args, **kwargs):
        raise AssertionError("an oversize upload reached predict_images")

    app = serve.create_app(model["loaded"], max_upload_mb=0.02)
    monkeypatch.setattr(serve_content, "predict_images", refuse)
    return TestClient(app)


@pytest.mark.parametrize("size", [20_001, 200_000], ids=["file-over", "body-over"])
def test_oversize_upload_is_413_before_decoding(small_limit, size):
    response = post(small_limit, b"\x89PNG" + b"\0" * (size - 4))
    assert response.status_code == 413
    assert "over the limit of 0.02 MB" in response.json()["detail"]


def test_oversize_chunked_upload_is_413(small_limit):
    def body():  # no Content-Length: the limit counts the bytes as they come
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        for _ in range(20):
            yield b"\0" * 10_000
        yield b"\r\n--b--\r\n"

    response = small_limit.post("/predict", content=body(),
                                headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413 and "limit of 0.02 MB" in response.json()["detail"]


def test_upload_at_the_limit_is_read(model):
    png = seven_png()
    client = TestClient(serve.create_app(model["loaded"], max_upload_mb=len(png) / serve.MB))
    assert post(client, png).status_code == 200


@pytest.mark.parametrize("limit", [0, -1, float("nan"), float("inf")])
def test_upload_limit_must_be_positive(model, limit):
    with pytest.raises(DigitnetError, match="positive number of MB"):
        serve.create_app(model["loaded"], max_upload_mb=limit)


def png_of(mode: str, width: int, height: int, fmt: str = "PNG") -> bytes:
    """A flat image: a small file whatever its size (deflate, LZW)."""
    if mode == "I;16":
        image = Image.fromarray(np.full((height, width), 50_000, np.uint16))
    else:
        image = Image.new(mode, (width, height), 200)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with almost no data after it."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload)))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0,
                                                             0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if Pillow decodes any pixel."""
    from PIL import ImageFile

    def refuse(self):
        raise AssertionError(f"decoded a {self.width}x{self.height} {self.format} image")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


@pytest.mark.parametrize(
    "make, pixels",
    [
        (lambda: png_of("RGB", 6300, 6300), "39.7 megapixels"),  # the 131 KB PNG
        (lambda: png_of("I;16", 4200, 4000), "16.8 megapixels"),  # 16-bit grey
        (lambda: png_of("P", 5000, 4000, "GIF"), "20.0 megapixels"),
        (lambda: png_header(20_000, 20_000), "decompression bomb"),  # a header and no data
    ],
    ids=["png-rgb-6300", "png-16bit", "gif", "header-only"],
)
def test_small_file_with_huge_pixels_is_413_before_decoding(client, no_decoding, make, pixels):
    content = make()
    assert len(content) < 2 * serve.MB  # far under the upload limit: the pixels are the problem
    response = post(client, content, "bomb.png")
    assert response.status_code == 413, response.text
    detail = response.json()["detail"]
    assert detail.startswith("bomb.png: ") and pixels in detail
    assert "at most 16 megapixels" in detail and "--max-megapixels" in detail
    assert response.headers["x-content-type-options"] == "nosniff"


def test_pixel_limit_is_a_setting(model):
    """--max-megapixels: the same image is refused under a lower limit, read under the default."""
    png = seven_png(400)  # 0.16 MP
    low = TestClient(serve.create_app(model["loaded"], max_megapixels=0.1))
    response = post(low, png)
    assert response.status_code == 413 and "at most 0.1 megapixels" in response.json()["detail"]
    assert low.get("/info").json()["max_pixels"] == 100_000
    assert post(TestClient(serve.create_app(model["loaded"])), png).status_code == 200


def test_decoded_memory_stays_bounded(model):
    """The issue's 131 KB PNG of 6300x6300 px cost the server ~1.45 GB; now it is refused from
    its header, and the peak memory of the process barely moves."""
    import resource

    client = TestClient(serve.create_app(model["loaded"]))
    bomb = png_of("RGB", 6300, 6300)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    import tracemalloc

    tracemalloc.start()
    try:
        for _ in range(4):
            assert post(client, bomb).status_code == 413
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert traced_peak < 20 * serve.MB and grown_mb < 100, (traced_peak, grown_mb)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_megapixels=0), "pixel limit"),
        (dict(max_megapixels=float("nan")), "pixel limit"),
        (dict(max_megapixels=41), "at most 40"),
        (dict(max_decodes=0), "1 to 64"),
        (dict(max_decodes=65), "1 to 64"),
        (dict(upload_timeout_s=-1), "upload timeout"),
        (dict(upload_timeout_s=float("inf")), "upload timeout"),
    ],
)
def test_limits_must_be_in_range(model, kwargs, match):
    with pytest.raises(DigitnetError, match=match):
        serve.create_app(model["loaded"], **kwargs)


def test_busy_server_answers_503_with_retry_after(model, monkeypatch):
    """One decode slot, held by a slow prediction: a second upload waits queue_timeout_s, then
    gets 503 with Retry-After; the first still gets its answer."""
    import asyncio
    import threading

    import httpx2

    release = threading.Event()
    real = serve.predict_upload

    def slow(*args, **kwargs):
        assert release.wait(10), "never released"
        return real(*args, **kwargs)

    monkeypatch.setattr(serve, "predict_upload", slow)
    app = serve.create_app(model["loaded"], max_decodes=1, queue_timeout_s=0.3)
    files = {"file": ("7.png", seven_png(), "image/png")}

    async def two_uploads():
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://t") as http:
            first = asyncio.create_task(http.post("/predict", files=files))
            await asyncio.sleep(0.1)  # the first holds the slot
            second = await http.post("/predict", files=files)
            release.set()
            return await first, second

    first, second = asyncio.run(asyncio.wait_for(two_uploads(), 30))
    assert first.status_code == 200 and first.json()["digit_found"]
    assert second.status_code == 503 and int(second.headers["retry-after"]) >= 1
    assert "busy" in second.json()["detail"]


def test_decode_slots_bound_count_and_pixels_in_flight():
    """Two big images never decode at once (their pixels together pass the budget), a small
    one runs beside a big one, and an image alone always runs."""
    import asyncio

    async def scenario() -> list[bool]:
        slots = serve.DecodeSlots(count=2, pixels=100)
        got = [await slots.acquire(80, 1)]  # alone: runs
        got.append(await slots.acquire(30, 0.05))  # 80 + 30 > 100: waits, times out
        got.append(await slots.acquire(20, 0.05))  # 80 + 20 fits
        got.append(await slots.acquire(1, 0.05))  # two running: the count is full
        await slots.release(80)
        got.append(await slots.acquire(30, 1))  # 20 + 30 fits now
        waiter = asyncio.create_task(slots.acquire(90, 5))  # 20 + 30 + 90: waits for both
        await slots.release(20)
        await asyncio.sleep(0.05)
        got.append(waiter.done())
        await slots.release(30)
        got.append(await waiter)  # alone again: the whole budget is free
        return got

    assert asyncio.run(asyncio.wait_for(scenario(), 30)) == [True, False, True, False, True,
                                                             False, True]


def test_decode_slots_are_first_come_first_served():
    """A small image that would fit does not overtake a big one waiting for room."""
    import asyncio

    async def scenario() -> list[bool]:
        slots = serve.DecodeSlots(count=2, pixels=100)
        assert await slots.acquire(80, 1)
        big = asyncio.create_task(slots.acquire(90, 5))
        await asyncio.sleep(0.05)
        small = asyncio.create_task(slots.acquire(5, 5))  # 80 + 5 fits, but big came first
        await asyncio.sleep(0.05)
        waiting = [big.done(), small.done()]
        await slots.release(80)
        return waiting + [await big, await small]  # big alone, then small beside it

    assert asyncio.run(asyncio.wait_for(scenario(), 30)) == [False, False, True, True]


def test_stalled_upload_is_408(model):
    """A body that stops arriving (slowloris) gets 408 after upload_timeout_s, instead of
    holding the connection for ever."""
    import asyncio

    app = serve.create_app(model["loaded"], upload_timeout_s=0.3)
    head = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n\x89PNG")
    scope = dict(type="http", asgi={"version": "3.0"}, http_version="1.1", method="POST",
                 scheme="http", path="/predict", raw_path=b"/predict", query_string=b"",
                 root_path="", server=("t", 80), client=("c", 1),
                 headers=[(b"content-type", b"multipart/form-data; boundary=b"),
                          (b"content-length", b"100000")])
    chunks = [dict(type="http.request", body=head, more_body=True)]
    sent = []

    async def receive():
        if chunks:
            return chunks.pop()
        await asyncio.sleep(3600)  # the client stalls

    async def send(message):
        sent.append(message)

    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert start["status"] == 408
    assert "did not arrive within 0.3 s" in json.loads(body)["detail"]


def test_cancelled_request_holds_its_slot_until_its_decode_ends(model, monkeypatch):
    """A request cancelled (by an anyio cancel scope, as Starlette cancels) while its image
    decodes keeps its slot until the decode is done, since the decode thread cannot be stopped:
    the next upload gets 503 meanwhile, and one after the decode ends is served."""
    import threading

    import anyio
    import httpx2

    started, release = threading.Event(), threading.Event()
    real = serve.predict_upload

    def slow(*args, **kwargs):
        started.set()
        assert release.wait(10), "never released"
        return real(*args, **kwargs)

    monkeypatch.setattr(serve, "predict_upload", slow)
    app = serve.create_app(model["loaded"], max_decodes=1, queue_timeout_s=0.3)
    files = {"file": ("7.png", seven_png(), "image/png")}
    got = {}

    async def requests(http):
        scope = anyio.CancelScope()

        async def first():
            with scope:
                got["first"] = await http.post("/predict", files=files)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(first)
            while not started.is_set():
                await anyio.sleep(0.01)
            scope.cancel()
            await anyio.sleep(0.05)
            with anyio.fail_after(5):  # the slot is free: this one waits for the decode thread
                got["during"] = await http.post("/predict", files=files)
            release.set()
        got["after"] = await http.post("/predict", files=files)

    async def scenario():
        transport = httpx2.ASGITransport(app=app)
        with anyio.fail_after(30):
            async with httpx2.AsyncClient(transport=transport, base_url="http://t") as http:
                await requests(http)

    anyio.run(scenario)
    assert got["during"].status_code == 503 and "busy" in got["during"].json()["detail"]
    assert got["after"].status_code == 200 and got["after"].json()["digit_found"]


@pytest.mark.parametrize("padding, on_thread", [(0, 0), (serve.INLINE_MEASURE_BYTES, 1)],
                         ids=["drawing-sized", "over-inline-size"])
def test_small_uploads_are_measured_without_a_thread_hop(model, monkeypatch, padding, on_thread):
    """Size and header of an upload up to INLINE_MEASURE_BYTES are read on the event loop (the
    decode is the request's only thread hop); a larger one's on a thread. Both are predicted."""
    import anyio.to_thread

    calls = []
    real = anyio.to_thread.run_sync

    async def counting(func, *args, **kwargs):
        calls.append(func.__name__)
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    client = TestClient(serve.create_app(model["loaded"]))
    png = seven_png()
    response = post(client, png + b"\0" * padding)  # trailing bytes after IEND: still read
    assert response.status_code == 200 and response.json()["digit_found"]
    assert calls.count("measure") == on_thread


@pytest.mark.parametrize("padding", [0, serve.INLINE_MEASURE_BYTES],
                         ids=["inline", "on-thread"])
def test_bomb_header_is_413_on_either_path(client, no_decoding, padding):
    response = post(client, png_header(20_000, 20_000) + b"\0" * padding, "bomb.png")
    assert response.status_code == 413 and "--max-megapixels" in response.json()["detail"]
