"""`digitnet serve` from the command line (deploy/server.py): flags checked before the model is
loaded, the host and port it binds, clear errors for a taken or bad port and missing packages,
and a real server over HTTP."""

from __future__ import annotations

import json
import re
import socket
import sys
import urllib.request

import pytest

from conftest import SERVE_REF as REF
from conftest import digitnet_server, post_image, seven_png
from digitnet.cli import main
from digitnet.deploy import server
from digitnet.errors import DigitnetError
from serve_client import post

pytest.importorskip("fastapi", reason="digitnet serve needs pip install 'digitnet[serve]'")
from fastapi.testclient import TestClient  # after the skip


@pytest.fixture(scope="module")
def model(serve_model) -> dict:
    """A cnn trained for one epoch on synthetic MNIST (conftest.serve_model)."""
    return serve_model


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

    monkeypatch.setattr(server, "serve", refuse)


def test_unknown_model_is_an_error_before_listening(model, no_server, monkeypatch, capsys):
    monkeypatch.setattr(server, "bind_socket", lambda *a: pytest.fail("bound a socket"))
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
        sock = server.bind_socket("127.0.0.1", 0)
        accepted = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport):
                conn = transport.get_extra_info("socket")
                accepted.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        listener = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        try:
            return await asyncio.wait_for(accepted, 10)
        finally:
            writer.close()
            listener.close()

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


@pytest.fixture
def started(monkeypatch):
    """Run `digitnet serve` up to the point where uvicorn would start; yields what it got."""
    got = {}

    def capture(app, sock, *args, **kwargs):
        got["app"], got["address"], got["kwargs"] = app, sock.getsockname()[:2], kwargs
        sock.close()

    monkeypatch.setattr(server, "serve", capture)
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


@pytest.mark.parametrize("flags, message", [
    (["--max-decodes", "0"], r"concurrent decodes must be 1 to 64 \(--max-decodes\), got 0"),
    (["--max-upload-mb", "nan"], "upload limit must be a positive number of MB, got nan"),
    (["--max-megapixels", "41"], "--max-megapixels"),
    (["--upload-timeout", "-1"], "--upload-timeout"),
    (["--port", "65536"], "--port must be 0 to 65535"),
    (["--threads", "0"], "--threads must be 1 to 256, got 0"),
])
def test_serve_flags_are_checked_before_the_model_is_loaded(tmp_path, capsys, flags, message):
    """A bad limit is named even when the model reference is bad too: no model is loaded first."""
    assert main(["serve", "cnn-v1/missing", "--models-dir", str(tmp_path), *flags]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err


@pytest.mark.parametrize("thread_args, threads", [([], server.DEFAULT_THREADS),
                                                   (["--threads", "2"], 2)])
def test_serve_threads_flag_reaches_the_server(model, started, thread_args, threads):
    """--threads N (default: DEFAULT_THREADS, 1) is what `serve` sets torch to."""
    assert main(["serve", REF, "--models-dir", model["models"], "--port", "0",
                 *thread_args]) == 0
    assert started["kwargs"]["threads"] == threads


def test_serve_sets_torch_threads_and_malloc_before_uvicorn_runs(monkeypatch):
    """`serve` sets the process's torch threads and glibc's thresholds, then runs uvicorn."""
    import torch
    import uvicorn

    seen = {}
    monkeypatch.setattr(server, "keep_freed_memory", lambda: seen.setdefault("malloc", True))
    monkeypatch.setattr(uvicorn.Server, "run",
                        lambda self, sockets=None: seen.setdefault("threads",
                                                                   torch.get_num_threads()))
    before = torch.get_num_threads()
    try:
        with socket.socket() as sock:
            server.serve(object(), sock, threads=3)
    finally:
        torch.set_num_threads(before)
    assert seen == {"malloc": True, "threads": 3}
    with pytest.raises(DigitnetError, match="--threads must be 1 to 256, got 0"):
        server.serve(object(), socket.socket(), threads=0)


# A thread that allocates and frees arrays the size of a drawing's working copies (4 x 0.6 MB)
# again and again: with glibc's own thresholds (raised only to 0.6 MB by these arrays) each round
# gives the memory back to the kernel and faults it in again (~430 faults); after
# keep_freed_memory it stays in the thread's heap.
FAULTS_SCRIPT = """
import resource, sys, threading
import numpy as np
from digitnet.deploy.server import keep_freed_memory
if sys.argv[1] == "set":
    assert keep_freed_memory()
def work():
    for _ in range(50):
        arrays = [np.ones((280, 280)) * k for k in range(4)]; del arrays
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(200):
        arrays = [np.ones((280, 280)) * k for k in range(4)]; del arrays
    print(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
t = threading.Thread(target=work); t.start(); t.join()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_keep_freed_memory_stops_page_faults_on_a_thread():
    import os
    import subprocess

    def faults(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT, mode], capture_output=True,
                              text=True, timeout=120, env=dict(os.environ))
        assert done.returncode == 0, done.stderr
        return int(done.stdout)

    assert faults("default") > 200 * 100
    assert faults("set") < 100
