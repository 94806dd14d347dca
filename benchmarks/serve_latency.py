"""Latency of `digitnet serve`: one prediction, in process and over HTTP, for a drawing from the
demo page, an upscaled MNIST digit and a phone-sized photo.

    python benchmarks/serve_latency.py --model fast-v2/RUN --models-dir models \
        --data-dir ../shared/datasets/mnist --baseline-src /tmp/old/src \
        --out benchmarks/results/serve-latency.json

Side by side in the same run:
- `predict_upload` in this process (this tree, the model prepared once, `--threads` torch
  threads): decode, preprocess, forward pass, the 28x28 image as a PNG data URL (this process
  made the photo, so glibc's malloc thresholds are already raised here, see deploy/server.py);
- the whole request over HTTP to `python -m digitnet serve MODEL --port 0` started from this
  tree's src/ and, with --baseline-src, from another tree's, each with its own flags and
  defaults (torch threads, access log), as a user starts it. One client with a kept-alive
  connection (`http.client`, Nagle off) sends the image as the demo page does: multipart upload,
  JSON answer with the 28x28 image as a PNG data URL.
The paths take turns, repeat by repeat, so that a change in the machine's load falls on all.
Each figure is the p50 and p99 over --calls calls after 20 warm-up calls, repeated --repeats
times; the median of the repeats is reported with their range, and for each server its CPU time
(all threads) and minor page faults per call, from /proc. Every path must give the same label.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import platform
import socket
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from digitnet.data.idx import read_idx
from digitnet.deploy.predict import prepare_for_prediction
from digitnet.deploy.serve_content import predict_upload
from digitnet.store import load_model

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from trees import cpu_seconds, served  # noqa: E402  (a sibling file of this script)

WARMUP = 20
IMAGES = ("drawing", "upscaled", "photo")  # --images: the keys of test_images


def test_images(data_dir: str) -> dict[str, bytes]:
    """The first MNIST test digit as the demo page sends a drawing (its canvas: white brush
    strokes on black, 280x280 PNG: the drawing-light rendering of benchmarks/renderings.py), the
    same digit upscaled (bicubic, grey edges: the input of the runs before 3 December 2026) and
    as a phone photo (4000x3000 JPEG, dark ink on light grey paper)."""
    import renderings

    digit = read_idx(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz"))[0]
    canvas = renderings.render_one("drawing-light", digit, 0)[0]
    upscaled = Image.fromarray(digit).resize((280, 280), Image.Resampling.BICUBIC)
    ink = Image.fromarray(255 - digit).resize((1800, 1800), Image.Resampling.BICUBIC)
    photo = Image.new("L", (4000, 3000), 235)
    photo.paste(ink, (1100, 600))
    out = {"drawing": ("demo-canvas drawing PNG", canvas)}
    for key, name, image, fmt in (
            ("upscaled", "upscaled digit 280x280 PNG", upscaled, "PNG"),
            ("photo", "photo 4000x3000 JPEG", photo.convert("RGB"), "JPEG")):
        buffer = io.BytesIO()
        image.save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        out[key] = (name, buffer.getvalue())
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


def summarize(runs: list[dict]) -> dict:
    """The median of the repeats' p50 and p99, with their range and each repeat's value."""
    return {key: dict(median=statistics.median(r[key] for r in runs),
                      low=min(r[key] for r in runs), high=max(r[key] for r in runs),
                      repeats=[round(r[key], 3) for r in runs])
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
    opens on the first call, and again when uvicorn has closed it (idle for 5 s, while another
    server took its turn): in the warm-up calls."""
    body, content_type = multipart(content, "upload")
    connection = None

    def post() -> dict:
        nonlocal connection
        connection = connection or open_connection(port)
        try:
            connection.request("POST", "/predict", body, {"Content-Type": content_type})
            response = connection.getresponse()
        except (http.client.RemoteDisconnected, ConnectionError):
            connection.close()
            connection = open_connection(port)
            connection.request("POST", "/predict", body, {"Content-Type": content_type})
            response = connection.getresponse()
        answer = json.loads(response.read())
        assert response.status == 200, answer
        return answer

    return post


def calls_for(content: bytes, calls: int) -> int:
    # photos take ~10x longer to decode and clean up: fewer calls keep the run short
    return calls if len(content) < 100_000 else max(20, calls // 10)


def in_process_caller(prepared, content: bytes, name: str):
    return lambda: predict_upload(prepared, content, name)


def measure(args, images: dict, trees: dict[str, str], loads: list[float]) -> list[dict]:
    """Each image through `predict_upload` in this process and as POST /predict to each tree's
    `digitnet serve`, the paths taking turns repeat by repeat; also each server's CPU time per
    call (all its threads; less swayed by the load than latency). The 1-minute load average at
    the start of each repeat is appended to `loads`."""
    serve_args = [args.model, *(["--models-dir", args.models_dir] if args.models_dir else [])]
    with contextlib.ExitStack() as stack:
        servers = {tree: stack.enter_context(served(src, serve_args))
                   for tree, src in trees.items()}
        prepared = prepare_for_prediction(load_model(args.model, args.models_dir))
        callers = {("in process", key): in_process_caller(prepared, content, name)
                   for key, (name, content) in images.items()}
        callers.update({(tree, key): http_poster(port, content)
                        for tree, (port, _) in servers.items()
                        for key, (_, content) in images.items()})
        labels = {k: call()["label"] for k, call in callers.items()}
        runs: dict[tuple, list[dict]] = {k: [] for k in callers}
        for _ in range(args.repeats):
            loads.append(round(os.getloadavg()[0], 2))
            for path, key in callers:
                calls = calls_for(images[key][1], args.calls)
                pid = servers[path][1] if path in servers else None
                before = None if pid is None else cpu_seconds(pid)
                run = percentiles(callers[path, key], calls)
                if before is not None:  # the warm-up calls count too
                    after = cpu_seconds(pid)
                    run["cpu_ms"] = 1e3 * (after[0] - before[0]) / (calls + WARMUP)
                    run["minor_faults"] = (after[1] - before[1]) / (calls + WARMUP)
                runs[path, key].append(run)
    rows = []
    for (path, key), path_runs in runs.items():
        name, content = images[key]
        cpu = [r["cpu_ms"] for r in path_runs if "cpu_ms" in r]
        faults = [r["minor_faults"] for r in path_runs if "minor_faults" in r]
        rows.append(dict(image=name, bytes=len(content),
                         path=("predict_upload in process (this)" if path == "in process" else
                               f"HTTP POST /predict to digitnet serve ({path})"),
                         tree="this" if path == "in process" else path,
                         calls=calls_for(content, args.calls), label=labels[path, key],
                         **summarize(path_runs),
                         server_cpu_ms=statistics.median(cpu) if cpu else None,
                         server_minor_faults=statistics.median(faults) if faults else None))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model reference")
    parser.add_argument("--models-dir", default=None)
    parser.add_argument("--data-dir", default="../shared/datasets/mnist")
    parser.add_argument("--baseline-src", default=None,
                        help="another tree's src/ whose server is measured beside this one's")
    parser.add_argument("--images", nargs="+", choices=IMAGES, default=list(IMAGES),
                        help=f"which images (default: {' '.join(IMAGES)})")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads in process (default: 1, as digitnet serve runs)")
    parser.add_argument("--calls", type=int, default=200, help="calls per repeat (default: 200)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats (default: 5)")
    parser.add_argument("--out", required=True, help="JSON file for the results")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    images = {key: value for key, value in test_images(args.data_dir).items()
              if key in args.images}
    trees = {"this": str(HERE.parent / "src")}
    if args.baseline_src:
        trees["baseline"] = str(Path(args.baseline_src).resolve())
    loads: list[float] = []
    rows = measure(args, images, trees, loads)
    for row in rows:
        print(f"{row['image']:<27} {row['path']:<48} p50 {row['p50_ms']['median']:8.2f} ms "
              f"[{row['p50_ms']['low']:.2f}-{row['p50_ms']['high']:.2f}]  "
              f"p99 {row['p99_ms']['median']:8.2f} ms"
              + (f"  server CPU {row['server_cpu_ms']:.2f} ms, {row['server_minor_faults']:.0f} "
                 f"page faults" if row.get("server_cpu_ms") else ""),
              flush=True)
    for name in {row["image"] for row in rows}:
        labels = {row["label"] for row in rows if row["image"] == name}
        if len(labels) != 1:
            sys.exit(f"{name}: the paths disagree on the label: {sorted(labels)}")
    result = dict(command=" ".join(["python", *sys.argv]), model=args.model, trees=trees,
                  date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  machine=f"{platform.machine()}, {os.cpu_count()} cores", torch=torch.__version__,
                  threads_in_process=args.threads, repeats=args.repeats,
                  load_average_before=load_before, load_average_after=os.getloadavg(),
                  load_average_1min_per_repeat=loads,
                  rows=rows)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
