"""`digitnet serve` under hostile load: many clients at once, valid and invalid uploads mixed,
and decompression-bomb-like images (small files, huge pixel counts).

    python benchmarks/serve_load.py -n 2000 -c 32 --out benchmarks/results/serve_load.json
    python benchmarks/serve_load.py --model cnn-v1/RUN --models-dir models   # a trained model

Starts `digitnet serve MODEL --port 0` on 127.0.0.1 in a subprocess (without --model: an
untrained cnn-v1 made in a temporary folder by one optimizer step on synthetic data; labels
do not matter here, the server's work per request does), sends -n requests from -c threads,
each on its own kept-alive connection (reopened after the server closes it), and reports
throughput, p50/p99 latency, the count of each status code, dropped connections (a request
that got no HTTP answer) and the server's peak RSS (VmHWM of /proc/PID/status). Only 127.0.0.1
is ever contacted.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import io
import json
import os
import platform
import re
import select
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

BOUNDARY = "digitnetloadboundary"


# --------------------------------------------------------------------------------- payloads
def _encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _seven(size: int) -> Image.Image:
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    s, w = size, max(2, size // 14)
    draw.line([(0.3 * s, 0.2 * s), (0.7 * s, 0.2 * s), (0.45 * s, 0.8 * s)], fill=255, width=w)
    draw.line([(0.4 * s, 0.5 * s), (0.65 * s, 0.5 * s)], fill=255, width=w)
    return img


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (len(payload).to_bytes(4, "big") + kind + payload
                + zlib.crc32(kind + payload).to_bytes(4, "big"))

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def payloads(max_upload_bytes: int) -> dict[str, tuple[bytes, float, set[int]]]:
    """name -> (file bytes, share of the requests, expected status codes)."""
    drawing = _encoded(_seven(280), "PNG")  # what the demo page sends
    paper = Image.new("L", (1600, 1200), 230)
    paper.paste(Image.eval(_seven(900), lambda v: 255 - v), (350, 150))
    photo = _encoded(paper.convert("RGB"), "JPEG", quality=88)
    phone = Image.new("L", (4032, 3024), 228)  # 12.2 MP: a phone photo at full size
    phone.paste(Image.eval(_seven(2000), lambda v: 255 - v), (1000, 500))
    phone_jpeg = _encoded(phone.convert("RGB"), "JPEG", quality=85)
    big_rgb = _encoded(Image.new("RGB", (6300, 6300), (200, 200, 200)), "PNG")  # the issue's
    wide16 = _encoded(Image.fromarray(np.full((4500, 4000), 50_000, np.uint16)), "PNG")
    gif = _encoded(Image.new("P", (6000, 5000), 3), "GIF")
    return {
        "drawing-png": (drawing, 0.35, {200}),
        "photo-jpeg-1600x1200": (photo, 0.15, {200}),
        "phone-jpeg-4032x3024": (phone_jpeg, 0.02, {200}),
        "junk-bytes": (os.urandom(5000), 0.08, {400}),
        "truncated-png": (drawing[: len(drawing) // 2], 0.08, {400}),
        "empty": (b"", 0.04, {400}),
        "oversize": (b"\x89PNG" + b"\0" * (max_upload_bytes + 10), 0.04, {413}),
        "bomb-png-6300x6300-rgb": (big_rgb, 0.10, {413}),
        "bomb-png-16bit-4500x4000": (wide16, 0.05, {413}),
        "bomb-gif-6000x5000": (gif, 0.05, {413}),
        "bomb-header-20000x20000": (_png_header(20_000, 20_000), 0.04, {413}),
    }


def multipart(content: bytes, name: str) -> bytes:
    return (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + \
        f"\r\n--{BOUNDARY}--\r\n".encode()


# ---------------------------------------------------------------------------------- the server
def tiny_model(folder: Path) -> tuple[str, str]:
    """An untrained cnn-v1 saved as a store model (one step on synthetic data): (ref, models)."""
    from digitnet.config import TrainConfig
    from digitnet.data.idx import write_idx
    from digitnet.training.loop import fit

    data, models = folder / "mnist", folder / "models"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 200), ("t10k", 50)):
        write_idx(data / f"{prefix}-images-idx3-ubyte.gz",
                  rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(data / f"{prefix}-labels-idx1-ubyte.gz",
                  (np.arange(n) % 10).astype(np.uint8))
    fit(TrainConfig(arch="cnn", epochs=1, name="load", batch_size=32, val_size=50, threads=1,
                    augment=False, max_steps=1), str(data), str(models), progress=False)
    return "cnn-v1/load", str(models)


def start_server(ref: str, models: str, extra: list[str]) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "digitnet", "serve", ref, "--models-dir", models, "--host",
         "127.0.0.1", "--port", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    line = proc.stdout.readline() if ready else ""
    match = re.search(r"at http://127\.0\.0\.1:(\d+)/", line)
    if not match:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    # uvicorn's access log goes to stdout: keep reading it, or the server blocks on a full pipe
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, int(match.group(1))


def peak_rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) / 1024


# ------------------------------------------------------------------------------------ the load
def run_load(port: int, plan: list[str], bodies: dict[str, bytes], concurrency: int,
             timeout: float) -> list[dict]:
    """Send every request of `plan` from `concurrency` threads; one record per request."""
    records: list[dict] = []
    lock = threading.Lock()
    cursor = iter(range(len(plan)))

    def worker() -> None:
        conn = None
        while True:
            with lock:
                i = next(cursor, None)
            if i is None:
                break
            kind = plan[i]
            start = time.perf_counter()
            record = dict(kind=kind, status=None, error=None)
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
                conn.request("POST", "/predict", body=bodies[kind], headers={
                    "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
                response = conn.getresponse()
                body = response.read()
                record["status"] = response.status
                if response.status >= 500:
                    record["detail"] = body[:200].decode("utf-8", "replace")
                if response.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                record["error"] = f"{type(e).__name__}: {e}"
                if conn is not None:
                    conn.close()
                conn = None
            record["ms"] = (time.perf_counter() - start) * 1000
            with lock:
                records.append(record)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return records


def summarize(records: list[dict], seconds: float, expected: dict[str, set[int]]) -> dict:
    answered = [r for r in records if r["status"] is not None]
    times = np.array([r["ms"] for r in answered]) if answered else np.zeros(1)
    per_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in records:
        per_kind[r["kind"]][str(r["status"]) if r["status"] else "dropped"] += 1
    unexpected = {k: dict(c) for k, c in per_kind.items()
                  if set(c) - {str(s) for s in expected[k]} - {"503"}}
    return dict(
        requests=len(records), seconds=round(seconds, 2),
        throughput_rps=round(len(records) / seconds, 1),
        p50_ms=round(float(np.percentile(times, 50)), 1),
        p99_ms=round(float(np.percentile(times, 99)), 1),
        max_ms=round(float(times.max()), 1),
        status_codes=dict(sorted(collections.Counter(str(r["status"]) for r in answered).items())),
        status_5xx_other_than_503=sum(1 for r in answered if r["status"] >= 500
                                      and r["status"] != 503),
        status_503=sum(1 for r in answered if r["status"] == 503),
        dropped_connections=sum(1 for r in records if r["status"] is None),
        errors=sorted({r["error"] for r in records if r["error"]})[:5],
        per_payload={k: dict(sorted(c.items())) for k, c in sorted(per_kind.items())},
        unexpected_statuses=unexpected,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--requests", type=int, default=2000)
    parser.add_argument("-c", "--concurrency", type=int, default=32)
    parser.add_argument("--model", help="model reference (default: an untrained cnn-v1)")
    parser.add_argument("--models-dir", help="with --model: the model store")
    parser.add_argument("--timeout", type=float, default=60.0, help="client socket timeout, s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="an argument for `digitnet serve`, e.g. --serve-arg=--max-decodes=1")
    parser.add_argument("--only", action="append", default=[], metavar="PAYLOAD",
                        help="send only these payloads (repeatable; default: the whole mix)")
    parser.add_argument("--out", default="benchmarks/results/serve_load.json")
    args = parser.parse_args()
    if not (1 <= args.requests <= 100_000 and 1 <= args.concurrency <= 256):
        parser.error("-n must be 1-100000 and -c 1-256")

    with tempfile.TemporaryDirectory() as tmp:
        ref, models = ((args.model, args.models_dir or "models") if args.model
                       else tiny_model(Path(tmp)))
        catalogue = payloads(10 * 1_000_000)
        kinds = args.only or list(catalogue)
        shares = np.array([catalogue[k][1] for k in kinds])
        rng = np.random.default_rng(args.seed)
        plan = [kinds[i] for i in rng.choice(len(kinds), args.requests, p=shares / shares.sum())]
        bodies = {k: multipart(catalogue[k][0], k + ".png") for k in kinds}
        proc, port = start_server(ref, models, args.serve_arg)
        try:
            start = time.perf_counter()
            records = run_load(port, plan, bodies, args.concurrency, args.timeout)
            seconds = time.perf_counter() - start
            alive = proc.poll() is None
            rss = peak_rss_mb(proc.pid) if alive else None
        finally:
            proc.terminate()
            proc.wait(30)
    result = dict(
        command=" ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]),
        model=ref, concurrency=args.concurrency, serve_args=args.serve_arg,
        machine=dict(platform=platform.platform(), cpus=os.cpu_count(),
                     python=platform.python_version()),
        payload_bytes={k: len(v[0]) for k, v in catalogue.items()},
        server_alive_after=alive, server_peak_rss_mb=None if rss is None else round(rss, 1),
        **summarize(records, seconds, {k: v[2] for k, v in catalogue.items()}),
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "per_payload"}, indent=2))


if __name__ == "__main__":
    main()
