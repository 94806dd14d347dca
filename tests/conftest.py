"""Shared fixtures: the real shared MNIST folder, tiny synthetic MNIST-format data, and a tiny
model served by a real `digitnet serve` subprocess (tests/test_serve*.py)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from digitnet.data.idx import write_idx

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "datasets" / "mnist"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST folder ($DIGITNET_DATA_DIR, else ../shared/datasets/mnist)."""
    folder = Path(os.environ.get("DIGITNET_DATA_DIR") or SHARED_MNIST)
    if not (folder / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"real MNIST not found in {folder}; set DIGITNET_DATA_DIR")
    return folder


def make_synthetic_mnist(folder: Path, n_train: int = 200, n_test: int = 50, seed: int = 0) -> Path:
    """Write four small IDX files in MNIST layout: each digit class is a distinct bright blob."""
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        images = rng.integers(0, 30, size=(n, 28, 28), dtype=np.uint8)
        for i, label in enumerate(labels):
            r, c = divmod(int(label), 5)
            images[i, 4 + 10 * r : 12 + 10 * r, 2 + 5 * c : 6 + 5 * c] = 255
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


@pytest.fixture
def synthetic_mnist(tmp_path) -> Path:
    """A folder with tiny synthetic MNIST-format IDX files (200 train, 50 test)."""
    return make_synthetic_mnist(tmp_path / "mnist")


# ------------------------------------------------------------------------ `digitnet serve` tests
SERVE_REF = "cnn-v1/tiny"


@pytest.fixture(scope="session")
def serve_model(tmp_path_factory) -> dict:
    """A cnn trained for one epoch on synthetic MNIST (a few seconds), loaded once: its models
    folder (`models`) and the loaded model (`loaded`), reference SERVE_REF."""
    from digitnet.config import TrainConfig
    from digitnet.store import load_model
    from digitnet.training.loop import fit

    root = tmp_path_factory.mktemp("serve")
    data = make_synthetic_mnist(root / "mnist")
    models = root / "models"
    fit(TrainConfig(arch="cnn", epochs=1, name="tiny", batch_size=32, val_size=50, threads=1,
                    augment=False, lr=0.05), data, models, progress=False)
    return dict(models=str(models), loaded=load_model(SERVE_REF, models))


def seven_png(size: int = 200, paper=(255, 255, 255), pen=(0, 0, 0), fmt: str = "PNG") -> bytes:
    """A hand-drawn-looking 7 with a crossbar, dark ink on light paper."""
    img = Image.new("RGB", (size, size), paper)
    draw = ImageDraw.Draw(img)
    s, w = size, max(2, size // 14)
    draw.line([(0.3 * s, 0.2 * s), (0.7 * s, 0.2 * s), (0.45 * s, 0.8 * s)], fill=pen, width=w)
    draw.line([(0.4 * s, 0.5 * s), (0.65 * s, 0.5 * s)], fill=pen, width=w)
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    return buffer.getvalue()


@contextlib.contextmanager
def digitnet_server(models_dir: str, ref: str = SERVE_REF) -> Iterator[str]:
    """`digitnet serve REF --port 0` in a subprocess; yields the URL it prints, then stops it with
    SIGINT (Ctrl+C) and checks that it exited cleanly."""
    # stdout and stderr (uvicorn's access log goes to stdout) into a file, never a pipe that
    # fills up and blocks the server
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "digitnet", "serve", ref, "--models-dir", models_dir,
             "--port", "0"], stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            pattern = rf"serving {re.escape(ref)} at (http://127\.0\.0\.1:\d+/)"
            deadline, match = time.monotonic() + 60, None
            while match is None and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
                log.seek(0)
                match = re.search(pattern, log.read())
            if not match:
                log.seek(0)
                pytest.fail(f"digitnet serve printed no address within 60 s; its output:\n"
                            f"{log.read()[-4000:]}")
            yield match.group(1)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode in (0, 130, -signal.SIGINT)


def post_image(url: str, content: bytes, name: str = "digit.png") -> tuple[int, dict]:
    """POST a file to a real server's /predict over HTTP: the status code and the JSON body."""
    body = (f'--b\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: image/png\r\n\r\n").encode() + content + b"\r\n--b--\r\n"
    request = urllib.request.Request(url + "predict", data=body, headers={
        "Content-Type": "multipart/form-data; boundary=b"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.load(e)
