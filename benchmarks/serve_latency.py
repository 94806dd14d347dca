"""Latency of `digitnet serve`: one prediction, in process and over HTTP, for a drawing from the
demo page and for a phone-sized photo.

    python benchmarks/serve_latency.py --model wide-v1/RUN --models-dir models \
        --data-dir ../shared/datasets/mnist --out benchmarks/results/serve-latency.json

Side by side in the same run:
- `predict_upload` with the model as loaded, which folds batch norm on every call (what the server
  did before it prepared the model once), and with the model prepared once (what it does now);
- the whole request over HTTP to a real uvicorn server on 127.0.0.1, one client with a kept-alive
  connection (`http.client`), as the demo page sends it: multipart upload, JSON answer with the
  28x28 image as a PNG data URL.
Each figure is the p50 and p99 over --calls calls after 20 warm-up calls, repeated --repeats
times; the median of the repeats is reported with their range.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import socket
import statistics
import sys
import threading
import time
import uuid

import numpy as np
import torch
from PIL import Image

from digitnet.data.idx import read_idx
from digitnet.deploy.predict import prepare_for_prediction
from digitnet.deploy.serve import create_app
from digitnet.deploy.serve_content import predict_upload
from digitnet.deploy.server import bind_socket
from digitnet.store import load_model

WARMUP = 20


def test_images(data_dir: str) -> dict[str, bytes]:
    """The first MNIST test digit as the demo page sends a drawing (its canvas: white brush
    strokes on black, 280x280 PNG: the drawing-light rendering of benchmarks/renderings.py), the
    same digit upscaled (bicubic, grey edges: the input of the runs before 3 December 2026) and
    as a phone photo (4000x3000 JPEG, dark ink on light grey paper)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import renderings

    digit = read_idx(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz"))[0]
    canvas = renderings.render_one("drawing-light", digit, 0)[0]
    upscaled = Image.fromarray(digit).resize((280, 280), Image.Resampling.BICUBIC)
    ink = Image.fromarray(255 - digit).resize((1800, 1800), Image.Resampling.BICUBIC)
    photo = Image.new("L", (4000, 3000), 235)
    photo.paste(ink, (1100, 600))
    out = {"demo-canvas drawing PNG": canvas}
    for name, image, fmt in (("upscaled digit 280x280 PNG", upscaled, "PNG"),
                             ("photo 4000x3000 JPEG", photo.convert("RGB"), "JPEG")):
        buffer = io.BytesIO()
        image.save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        out[name] = buffer.getvalue()
    return out


def percentiles(call, calls: int) -> dict:
    for _ in range(WARMUP):
        call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    p50, p99 = np.percentile(times, [50, 99])
    return dict(p50_ms=float(p50), p99_ms=float(p99))


def repeated(call, calls: int, repeats: int) -> dict:
    runs = [percentiles(call, calls) for _ in range(repeats)]
    return {key: dict(median=statistics.median(r[key] for r in runs),
                      low=min(r[key] for r in runs), high=max(r[key] for r in runs))
            for key in ("p50_ms", "p99_ms")}


def multipart(content: bytes, filename: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    body += content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def open_connection(port: int) -> http.client.HTTPConnection:
    """A kept-alive connection with Nagle's algorithm off, as browsers open them (http.client
    sends headers and body in two writes; with Nagle on, the server's delayed ACK adds ~40 ms)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.connect()
    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return connection


def http_poster(port: int, content: bytes):
    """A function that POSTs `content` to /predict and returns the JSON answer. Its connection
    opens on the first call: uvicorn drops connections idle for 5 s."""
    body, content_type = multipart(content, "upload")
    connection = None

    def post() -> dict:
        nonlocal connection
        connection = connection or open_connection(port)
        connection.request("POST", "/predict", body, {"Content-Type": content_type})
        response = connection.getresponse()
        answer = json.loads(response.read())
        assert response.status == 200, answer
        return answer

    return post


def start_server(app):
    import uvicorn

    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs=dict(sockets=[sock]), daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model reference")
    parser.add_argument("--models-dir", default=None)
    parser.add_argument("--data-dir", default="../shared/datasets/mnist")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument("--calls", type=int, default=200, help="calls per repeat (default: 200)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats (default: 3)")
    parser.add_argument("--out", required=True, help="JSON file for the results")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    loaded = load_model(args.model, args.models_dir)
    prepared = prepare_for_prediction(loaded)
    images = test_images(args.data_dir)
    server, thread, port = start_server(create_app(loaded))
    rows = []
    for name, content in images.items():
        # photos take ~100x longer to decode and clean up: fewer calls keep the run short
        calls = args.calls if len(content) < 100_000 else max(20, args.calls // 10)
        labels = set()  # each path's label, which must agree
        for path, call in (
            ("predict_upload, batch norm folded per call (before)",
             lambda content=content, name=name: predict_upload(loaded, content, name)),
            ("predict_upload, model prepared once (now)",
             lambda content=content, name=name: predict_upload(prepared, content, name)),
            ("HTTP POST /predict to digitnet serve", http_poster(port, content)),
        ):
            labels.add(call()["label"])
            row = dict(image=name, bytes=len(content), path=path, calls=calls,
                       **repeated(call, calls, args.repeats))
            rows.append(row)
            print(f"{name:<22} {path:<54} p50 {row['p50_ms']['median']:8.2f} ms  "
                  f"p99 {row['p99_ms']['median']:8.2f} ms", flush=True)
        if len(labels) != 1:
            sys.exit(f"{name}: the paths disagree on the label: {sorted(labels)}")
    server.should_exit = True
    thread.join(timeout=10)
    result = dict(command=" ".join(["python", *sys.argv]), model=loaded.ref.label,
                  date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  machine=f"{platform.machine()}, {os.cpu_count()} cores", torch=torch.__version__,
                  threads=args.threads, repeats=args.repeats, load_average=os.getloadavg(),
                  rows=rows)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
