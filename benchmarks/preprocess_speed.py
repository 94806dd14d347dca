"""Speed of new-image preprocessing, in process: a 12-megapixel phone photo, a drawing from the
demo page, and small scans through `predict_images` (preprocessing and the batched forward pass),
for this tree's `src/` and, side by side in the same run, a baseline tree's.

    python benchmarks/preprocess_speed.py --baseline-src /tmp/old/src --model fast-v2/RUN \
        --models-dir models --data-dir ../shared/datasets/mnist \
        --out benchmarks/results/preprocess-speed.json

Each measurement runs in its own process per tree (`--worker`), with the same input files: the
photos are renderings of an MNIST validation digit (photo-shadow, which takes the photo path, and
photo-ballpoint, whose even paper takes the drawing path; benchmarks/renderings.py) resized to
4032x3024 and saved as JPEG quality 90; the drawing is drawing-light at 280x280; the
scans are 2,000 scan16-grey renderings. Times are medians over --repeats runs after one warm-up,
the trees alternating run by run so that load on the machine hits both alike. It also checks
that both trees give the same 28x28 images where the pipeline's version is the same.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
PHOTO_SIZE = (4032, 3024)  # a 12-megapixel phone photo
N_SCANS = 2_000


def make_inputs(work: Path, data_dir: str | None) -> dict:
    """Write the photo, the drawing and the scans; returns their paths."""
    sys.path.insert(0, str(HERE))
    import renderings as R

    images, _, index = R.pick_digits("val", 200, 0, data_dir)
    for name, rendering in (("photo", "photo-shadow"), ("photo_even", "photo-ballpoint")):
        data, _, _ = R.render_one(rendering, images[0], int(index[0]))
        photo = Image.open(io.BytesIO(data)).convert("RGB").resize(PHOTO_SIZE,
                                                                   Image.Resampling.BICUBIC)
        photo.save(work / f"{name}.jpg", quality=90)
    (work / "drawing.png").write_bytes(R.render_one("drawing-light", images[1], int(index[1]))[0])
    scans = work / "scans"
    scans.mkdir()
    for i in range(N_SCANS):
        k = i % len(images)
        png = R.render_one("scan16-grey", images[k], int(index[k]))[0]
        (scans / f"{i:05d}.png").write_bytes(png)
    return dict(photo=str(work / "photo.jpg"), photo_even=str(work / "photo_even.jpg"),
                drawing=str(work / "drawing.png"), scans=str(scans))


def worker(args) -> None:
    """Time this process's digitnet (whatever `src/` is on sys.path) on the inputs."""
    import torch

    from digitnet.data import preprocess as P
    from digitnet.deploy.predict import predict_images
    from digitnet.store import load_model

    torch.set_num_threads(args.threads)
    inputs = json.loads(args.inputs)
    out = {}
    for name in ("photo", "photo_even", "drawing"):
        data = Path(inputs[name]).read_bytes()
        P.preprocess(data)  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = P.preprocess(data)
            times.append(time.perf_counter() - start)
        out[name] = dict(median_s=statistics.median(times), times_s=times,
                         image=result.image.tolist(), path=getattr(result, "path", None))
    loaded = load_model(args.model, args.models_dir)
    files = [p.read_bytes() for p in sorted(Path(inputs["scans"]).iterdir())]
    predict_images(loaded, files[:50])  # warm-up
    times = []
    for _ in range(max(1, args.repeats // 4)):
        start = time.perf_counter()
        entries = predict_images(loaded, files)
        times.append(time.perf_counter() - start)
    out["scans"] = dict(median_s=statistics.median(times), times_s=times, count=len(files),
                        per_second=len(files) / statistics.median(times),
                        labels=[e["label"] for e in entries])
    out["preprocess_version"] = P.PREPROCESS_VERSION
    print(json.dumps(out))


def run_tree(src: str, inputs: dict, args) -> dict:
    from trees import run_worker

    worker_args = ["--inputs", json.dumps(inputs), "--model", args.model, "--repeats",
                   str(args.repeats), "--threads", str(args.threads)]
    if args.models_dir:
        worker_args += ["--models-dir", args.models_dir]
    return run_worker(src, __file__, worker_args)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model reference for the scans through predict")
    p.add_argument("--models-dir", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--baseline-src", default=None, help="another tree's src/ to measure beside")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3, help="processes per tree, alternating")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--inputs", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="digitnet-preprocess-speed-"))
    inputs = make_inputs(work, args.data_dir)
    trees = {"this": str(HERE.parent / "src")}
    if args.baseline_src:
        trees["baseline"] = args.baseline_src
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, src in trees.items():
            runs[name].append(run_tree(src, inputs, args))
    summary = {}
    for name, results in runs.items():
        summary[name] = dict(
            src=trees[name], preprocess_version=results[0]["preprocess_version"],
            photo_12mp_s=statistics.median(r["photo"]["median_s"] for r in results),
            photo_12mp_path=results[0]["photo"]["path"],
            photo_even_12mp_s=statistics.median(r["photo_even"]["median_s"] for r in results),
            photo_even_12mp_path=results[0]["photo_even"]["path"],
            drawing_280_ms=1e3 * statistics.median(r["drawing"]["median_s"] for r in results),
            scans_per_second=statistics.median(r["scans"]["per_second"] for r in results))
    if "baseline" in runs:
        versions = [summary[k]["preprocess_version"] for k in ("this", "baseline")]
        same_version = versions[0] == versions[1]
        a, b = runs["this"][0], runs["baseline"][0]
        summary["identical_outputs"] = dict(
            checked=same_version,
            photo=a["photo"]["image"] == b["photo"]["image"],
            drawing=a["drawing"]["image"] == b["drawing"]["image"],
            scan_labels=a["scans"]["labels"] == b["scans"]["labels"])
    load = os.getloadavg()
    report = dict(command=" ".join(sys.argv),
                  date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  machine=f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
                  load_average_before=load_before, load_average_after=load,
                  threads=args.threads, repeats=args.repeats,
                  rounds=args.rounds, photo_size=PHOTO_SIZE, n_scans=N_SCANS, summary=summary)
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
