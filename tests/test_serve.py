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
from digitnet.deploy import serve
from digitnet.errors import DigitnetError
from digitnet.store import ModelRef

from conftest import SERVE_REF as REF
from conftest import digitnet_server, post_image, seven_png

pytest.importorskip("fastapi", reason="digitnet serve needs pip install 'digitnet[serve]'")
from fastapi.testclient import TestClient  # after the skip

RESPONSE_KEYS = {"file", "label", "probabilities", "top_k", "digit_found", "reason", "image"}
SAME_AS_CLI = ("label", "probabilities", "top_k", "digit_found", "reason")


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
    monkeypatch.setattr(serve, "predict_images", refuse)
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
    real = serve.importlib.util.find_spec
    monkeypatch.setattr(serve.importlib.util, "find_spec",
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
