"""`digitnet serve`: the demo page, the JSON API (same predictions as `digitnet predict`, clear
errors for bad uploads), headers and the OpenAPI schema. Its limits: tests/test_serve_limits.py;
the CLI wiring and a real server over HTTP: tests/test_server.py."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SERVE_REF as REF
from conftest import seven_png
from digitnet.cli import main
from digitnet.data.idx import read_idx
from digitnet.data.preprocess import preprocess
from digitnet.deploy import serve
from digitnet.store import ModelRef
from serve_client import post

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


# ------------------------------------------------------------------- README promises (issue 18)


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
    from digitnet.store.hub import HubModelRef

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
