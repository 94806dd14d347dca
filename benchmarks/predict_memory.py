"""Peak resident memory and wall time of `digitnet predict` on image files, next to the floor
of a Python process that only imports torch.

    python benchmarks/predict_memory.py --model cnn-v1/latest --models-dir models \
        --data-dir ../shared/datasets/mnist --count 1 1000 \
        --out benchmarks/results/predict_memory.json

The images are MNIST test digits written as PNG files; each measurement is its own process,
and its ru_maxrss comes from `os.wait4`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image


def measure(cmd: list[str]) -> dict:
    """Run `cmd` (output discarded); wall seconds and peak RSS in MiB."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr.read().decode()}")
    return dict(wall_seconds=time.perf_counter() - start, peak_rss_mib=usage.ru_maxrss / 1024)


def write_digits(folder: Path, count: int, data_dir: str) -> None:
    from digitnet.data.mnist import load_mnist

    images = load_mnist(data_dir).test_images[:count].numpy()
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:05d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model reference")
    parser.add_argument("--models-dir", default=None)
    parser.add_argument("--data-dir", default="../shared/datasets/mnist")
    parser.add_argument("--count", type=int, nargs="+", default=[1, 1000], help="images per run")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="digitnet-predict-"))
    rows = [dict(what="python -c 'import torch'",
                 **measure([sys.executable, "-c", "import torch"]))]
    for count in args.count:
        folder = work / str(count)
        write_digits(folder, count, args.data_dir)
        cmd = [sys.executable, "-m", "digitnet", "predict", args.model, str(folder), "--json"]
        if args.models_dir:
            cmd += ["--models-dir", args.models_dir]
        rows.append(dict(what=f"digitnet predict, {count} PNG files", images=count, **measure(cmd)))
    for row in rows:
        print(f"{row['what']:40s} {row['wall_seconds']:6.2f} s  {row['peak_rss_mib']:6.0f} MiB")
    result = dict(model=args.model, date=time.strftime("%Y-%m-%d %H:%M"), rows=rows,
                  load_average=os.getloadavg(),
                  command=" ".join([Path(sys.executable).name, *sys.argv]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
