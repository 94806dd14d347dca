"""`digitnet serve`: the demo page, the JSON API (same predictions as `digitnet predict`, clear
errors for bad uploads, the upload limit), the CLI wiring, and a real server over HTTP."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from digitnet.cli import main
from digitnet.data.idx import read_idx
from digitnet.data.preprocess import preprocess
from digitnet.deploy import serve, serve_content, server
from digitnet.errors import DigitnetError
from digitnet.store import ModelRef

from conftest import SERVE_REF as REF
from conftest import digitnet_server, post_image, seven_png

pytest.importorskip("fastapi", reason="digitnet serve needs pip install 'digitnet[serve]'")
from fastapi.testclient import TestClient  # after the skip

RESPONSE_KEYS = {"file", "label", "probabilities", "top_k", "digit_found", "reason", "image",
                 "path"}
SAME_AS_CLI = ("label", "probabilities", "top_k", "digit_found", "reason", "path")


@pytest.fixture(scope="module")
def model(serve_model) -> dict:
    """A cnn trained for one epoch on synthetic MNIST (conftest.serve_model)."""
    return serve_model


@pytest.fixture(scope="module")
def client(model) -> TestClient:
    return TestClient(serve.create_app(model["loaded"]))


def post(client: TestClient, content: bytes, name: str = "digit.png", **params):
    return client.post("/predict", params=params, files={"file": (name, content, "image/png")})


def decode_data_url(url: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url[len(prefix):]))))


# ------------------------------------------------------------------------------------ the page
def test_page_is_self_contained_and_names_the_model(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    assert '<canvas id="pad"' in page and 'type="file"' in page
    assert f"<code id=\"model\">{REF}</code>" in page and f"<title>digitnet: {REF}</title>" in page
    assert f'Number("{10 * serve.MB}")' in page  # the upload limit, for the page's own check
    assert "{{" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "loads something from outside"


def test_page_escapes_the_model_label(model):
    ref = ModelRef(Path("models/cnn-v1/a<b>&c"), None)
    page = serve.render_page(dataclasses.replace(model["loaded"], ref=ref), serve.MB)
    assert "a<b>&c" not in page and "cnn-v1/a&lt;b&gt;&amp;c" in page


# ------------------------------------------------------------------------------ health, info
def test_health_and_info(client, model):
    n_params = sum(p.numel() for p in model["loaded"].model.parameters())
    assert client.get("/health").json() == dict(status="ok", model=REF, arch="cnn-v1",
                                                parameters=n_params)
    info = client.get("/info").json()
    assert info["model"] == REF and info["parameters"] == n_params and info["epochs"] == 1
    assert info["max_upload_bytes"] == 10 * serve.MB and info["input_size"] == [1, 28, 28]
    # the accuracy that training recorded for this run, which is that of the model on its test set
    run_dir = Path(model["models"]) / "cnn-v1" / "tiny"
    assert info["test_accuracy"] == json.loads((run_dir / "summary.json").read_text())["test_acc"]
    data = Path(model["models"]).parent / "mnist"
    images = torch.from_numpy(read_idx(data / "t10k-images-idx3-ubyte.gz").copy())
    labels = torch.from_numpy(read_idx(data / "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    predicted = model["loaded"].logits(images).argmax(1)
    assert info["test_accuracy"] == (predicted == labels).double().mean().item()


def test_info_reports_the_summarys_test_accuracy(model, tmp_path):
    summary = dict(test_acc=0.4321, final=dict(val_acc=0.9876, train_acc=0.5))  # all different
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    loaded = dataclasses.replace(model["loaded"], ref=ModelRef(tmp_path, None))
    assert serve.model_info(loaded, serve.MB)["test_accuracy"] == 0.4321
    for damaged in ('{"test_acc": "high"}', "[]", "{", '{"test_acc": NaN}'):  # the page's number
        (tmp_path / "summary.json").write_text(damaged)  # is lost, the server keeps running
        assert serve.model_info(loaded, serve.MB)["test_accuracy"] is None, damaged
    (tmp_path / "summary.json").unlink()
    assert serve.model_info(loaded, serve.MB)["test_accuracy"] is None  # not trained to the end


# --------------------------------------------------------------------------------- predictions
@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_prediction_equals_digitnet_predict(client, model, tmp_path, capsys, fmt, suffix):
    path = tmp_path / f"seven{suffix}"
    path.write_bytes(seven_png(fmt=fmt))
    response = post(client, path.read_bytes(), path.name, top_k=5)
    assert response.status_code == 200
    result = response.json()
    assert set(result) == RESPONSE_KEYS and result["file"] == path.name
    assert main(["predict", REF, str(path), "--json", "--top-k", "5", "--models-dir",
                 model["models"]]) == 0
    [expected] = json.loads(capsys.readouterr().out)
    assert expected["digit_found"] and len(result["top_k"]) == 5
    assert {k: result[k] for k in SAME_AS_CLI} == {k: expected[k] for k in SAME_AS_CLI}
    np.testing.assert_array_equal(decode_data_url(result["image"]), preprocess(path).image)


def test_blank_image_has_no_label(client):
    buffer = io.BytesIO()
    Image.new("RGB", (300, 200), (245, 240, 230)).save(buffer, format="PNG")
    response = post(client, buffer.getvalue(), "blank.png")
    assert response.status_code == 200
    result = response.json()
    assert result["digit_found"] is False and result["label"] is None
    assert result["probabilities"] is None and result["top_k"] == [] and result["image"] is None
    assert "blank" in result["reason"]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"this is not an image", "notes.png: not an image file (expected PNG, JPEG"),
        (seven_png()[:300], "notes.png: truncated or corrupt image data"),
        (b"", "notes.png: the file is empty"),
    ],
    ids=["garbage", "truncated", "empty"],
)
def test_unreadable_upload_is_400_with_a_message(client, content, message):
    response = post(client, content, "notes.png")
    assert response.status_code == 400
    assert response.json()["detail"].startswith(message)


@pytest.mark.parametrize(
    "request_args",
    [dict(), dict(files={"image": ("a.png", b"x", "image/png")}), dict(data={"other": "x"})],
    ids=["no-body", "wrong-field", "form-without-file"],
)
def test_missing_file_field_is_400_and_says_how(client, request_args):
    response = client.post("/predict", **request_args)
    assert response.status_code == 400
    assert "multipart/form-data field 'file'" in response.json()["detail"]


def test_bad_top_k_is_422(client):
    response = post(client, seven_png(), top_k=11)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", "top_k"]


# ---------------------------------------------------------------------------------- size limit
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


# ------------------------------------------------------------------------------------------ CLI
def test_serve_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["serve", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--port" in out and "--host" in out and "--max-upload-mb" in out


@pytest.fixture
def no_server(monkeypatch):
    """Fail the test if `digitnet serve` gets as far as starting uvicorn."""
    def refuse(*args, **kwargs):
        raise AssertionError("the server was started")

    monkeypatch.setattr(serve, "serve", refuse)


def test_unknown_model_is_an_error_before_listening(model, no_server, monkeypatch, capsys):
    monkeypatch.setattr(serve, "bind_socket", lambda *a: pytest.fail("bound a socket"))
    assert main(["serve", "cnn-v1/nothing", "--models-dir", model["models"]]) == 1
    err = capsys.readouterr().err
    assert err.startswith("digitnet: error: model reference 'cnn-v1/nothing'")


def test_port_in_use_is_an_error(model, no_server, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", REF, "--models-dir", model["models"], "--port", str(port)]) == 1
    assert f"digitnet: error: cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


@pytest.mark.parametrize("port", [-1, 65536, 100000])
def test_port_out_of_range_is_an_error(model, no_server, capsys, port):
    """getaddrinfo took 100000 as port 34464 (100000 mod 65536) and listened there."""
    assert main(["serve", REF, "--models-dir", model["models"], "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err == f"digitnet: error: --port must be 0 to 65535 (0: any free port), got {port}\n"


def test_accepted_connections_have_nagle_off():
    """asyncio (and so uvicorn) sets TCP_NODELAY only on sockets whose protocol says TCP; with
    Nagle on, each request on a kept-alive connection waited ~40 ms for a delayed ACK."""
    import asyncio

    async def accept_one() -> int:
        sock = serve.bind_socket("127.0.0.1", 0)
        accepted = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport):
                conn = transport.get_extra_info("socket")
                accepted.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        try:
            return await asyncio.wait_for(accepted, 10)
        finally:
            writer.close()
            server.close()

    assert asyncio.run(accept_one()) != 0


def test_missing_packages_named_with_the_install_hint(model, no_server, monkeypatch, capsys):
    real = server.importlib.util.find_spec
    monkeypatch.setattr(server.importlib.util, "find_spec",
                        lambda name: None if name == "uvicorn" else real(name))
    assert main(["serve", REF, "--models-dir", model["models"]]) == 1
    assert ("digitnet serve needs uvicorn, which is not installed: pip install 'digitnet[serve]'"
            in capsys.readouterr().err)


def test_real_server_over_http(model):
    """`digitnet serve --port 0` in a subprocess: /health and a prediction over real HTTP."""
    with digitnet_server(model["models"]) as url:
        with urllib.request.urlopen(url + "health", timeout=30) as response:
            assert json.load(response)["model"] == REF
        status, result = post_image(url, seven_png(), "7.png")
        assert status == 200 and result["digit_found"] and result["label"] in range(10)


# ------------------------------------------------------------------- README promises (issue 18)
@pytest.fixture
def started(monkeypatch):
    """Run `digitnet serve` up to the point where uvicorn would start; yields what it got."""
    got = {}

    def capture(app, sock, *args, **kwargs):
        got["app"], got["address"] = app, sock.getsockname()[:2]
        sock.close()

    monkeypatch.setattr(serve, "serve", capture)
    return got


@pytest.mark.parametrize("host_args, host", [([], "127.0.0.1"), (["--host", "0.0.0.0"], "0.0.0.0")])
def test_serve_binds_the_given_host_and_port_zero_picks_one(model, started, capsys, host_args,
                                                            host):
    assert main(["serve", REF, "--models-dir", model["models"], "--port", "0", *host_args]) == 0
    bound, port = started["address"]
    assert bound == host and port > 0
    assert f"serving {REF} at http://{host}:{port}/" in capsys.readouterr().out


@pytest.mark.parametrize("limit_args, limit", [([], 10_000_000),
                                               (["--max-upload-mb", "0.02"], 20_000)])
def test_serve_max_upload_mb_gives_413_above_the_given_size(model, started, limit_args, limit):
    """--max-upload-mb MB (default 10): a file of MB * 10^6 bytes is read, one byte more is 413."""
    assert main(["serve", REF, "--models-dir", model["models"], "--port", "0", *limit_args]) == 0
    client = TestClient(started["app"])
    assert client.get("/info").json()["max_upload_bytes"] == limit
    png = seven_png()
    at_limit = png + b"\0" * (limit - len(png))  # trailing bytes after IEND: Pillow still reads it
    response = post(client, at_limit)
    assert response.status_code == 200 and response.json()["digit_found"]
    response = post(client, at_limit + b"\0")
    assert response.status_code == 413 and "over the limit" in response.json()["detail"]


def test_top_k_defaults_to_3_and_takes_1_to_10(client):
    assert len(post(client, seven_png()).json()["top_k"]) == 3
    for k in (1, 10):
        assert len(post(client, seven_png(), top_k=k).json()["top_k"]) == k
    assert post(client, seven_png(), top_k=0).status_code == 422


def test_batch_norm_is_folded_once_at_start_up(model, monkeypatch):
    """create_app folds batch norm into the convolutions once; requests reuse that model."""
    from digitnet.deploy import predict as predict_module

    calls = []
    real = predict_module.optimize_for_inference

    def counting(module, **kwargs):
        calls.append(module)
        return real(module, **kwargs)

    monkeypatch.setattr(predict_module, "optimize_for_inference", counting)
    client = TestClient(serve.create_app(model["loaded"]))
    assert len(calls) == 1
    for _ in range(3):
        assert post(client, seven_png()).status_code == 200
    assert len(calls) == 1
    folded = real(model["loaded"].model, script=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())


def test_info_gives_the_models_test_accuracy_and_preprocessing(client, model):
    summary = json.loads((Path(model["models"]) / "cnn-v1" / "tiny" / "summary.json").read_text())
    info = client.get("/info").json()
    assert info["test_accuracy"] == summary["test_acc"]
    data = model["loaded"].data_config
    assert (info["mean"], info["std"], info["label_names"]) == (data["mean"], data["std"],
                                                                data["label_names"])


# ------------------------------------------------------------------ pixels, decodes, deadlines
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


# ------------------------------------------------------------------- headers, HEAD, the schema
def test_every_response_says_nosniff_and_has_a_policy(client, model):
    small_limit = TestClient(serve.create_app(model["loaded"], max_upload_mb=0.02))
    responses = [client.get("/"), client.get("/health"), client.get("/nothing"),
                 post(client, b"junk"), post(small_limit, b"\0" * 30_000),
                 client.get("/openapi.json")]
    assert [r.status_code for r in responses] == [200, 200, 404, 400, 413, 200]
    for response in responses:
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "default-src 'none'" in response.headers["content-security-policy"]


def test_page_policy_allows_only_its_own_script_and_style(client):
    import hashlib

    response = client.get("/")
    policy = dict(part.strip().split(" ", 1)
                  for part in response.headers["content-security-policy"].split(";"))
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        [block] = re.findall(rf"<{tag}>(.*?)</{tag}>", response.text, flags=re.DOTALL)
        digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
        assert policy[directive] == f"'sha256-{digest}'"
    assert policy["default-src"] == "'none'" and policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'" and "http" not in policy["img-src"]


def test_head_of_the_page_is_200(client):
    response = client.head("/")
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-type"].startswith("text/html")


def test_errors_are_in_the_schema(client):
    schema = client.get("/openapi.json").json()
    responses = schema["paths"]["/predict"]["post"]["responses"]
    assert {"200", "400", "408", "413", "422", "503"} <= set(responses)
    for code in ("400", "408", "413", "503"):
        ref = responses[code]["content"]["application/json"]["schema"]["$ref"]
        assert schema["components"]["schemas"][ref.rsplit("/", 1)[1]]["required"] == ["detail"]
    assert "Retry-After" in responses["503"]["headers"]
    assert set(schema["paths"]) == {"/health", "/info", "/predict"}


def test_no_local_path_in_what_clients_see(model):
    """A model served by its path (an exported folder) is named by its folder only."""
    from digitnet.deploy.hub import HubModelRef

    folder = "/home/someone/private/exports/my-digits"
    ref = HubModelRef(Path(folder), None, folder)
    client = TestClient(serve.create_app(dataclasses.replace(model["loaded"], ref=ref)))
    answers = [client.get(p).text for p in ("/", "/health", "/info", "/openapi.json")]
    assert client.get("/health").json()["model"] == "my-digits"
    assert not any("/home/someone" in text for text in answers)
    stored = serve.public_label(model["loaded"])
    assert stored == REF  # a store reference is shown as it is


# ------------------------------------------------------------------------------ schema fuzzer
schemathesis = pytest.importorskip("schemathesis")
FUZZ_EXAMPLES = 25  # per operation and mode: ~N s in all on a laptop core


def test_api_conforms_to_its_schema(model):
    """schemathesis: generated requests, valid and invalid, against every operation; every
    answer has a documented status code and conforms to the schema, and none is a 5xx."""
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    schema = schemathesis.openapi.from_asgi("/openapi.json", serve.create_app(model["loaded"]))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == {"GET /health", "GET /info", "POST /predict"}
    for operation in operations:  # GET operations take nothing, so nothing to make invalid
        modes = [GenerationMode.POSITIVE] + [GenerationMode.NEGATIVE] * (operation.method == "post")
        for mode in modes:
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def conforms(case):
                # every check but one: a schema cannot say "bytes that decode to an image", so
                # schema-valid bytes that are not one are rightly refused with 400
                case.call_and_validate(excluded_checks=[positive_data_acceptance])

            conforms()


@pytest.mark.parametrize("flags, message", [
    (["--max-decodes", "0"], r"concurrent decodes must be 1 to 64 \(--max-decodes\), got 0"),
    (["--max-upload-mb", "nan"], "upload limit must be a positive number of MB, got nan"),
    (["--max-megapixels", "41"], "--max-megapixels"),
    (["--upload-timeout", "-1"], "--upload-timeout"),
    (["--port", "65536"], "--port must be 0 to 65535"),
])
def test_serve_flags_are_checked_before_the_model_is_loaded(tmp_path, capsys, flags, message):
    """A bad limit is named even when the model reference is bad too: no model is loaded first."""
    assert main(["serve", "cnn-v1/missing", "--models-dir", str(tmp_path), *flags]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err
