"""Training throughput of `digitnet train` on one process with 2 threads against 2 processes of 1
thread started by torchrun (DistributedDataParallel, gloo), same recipe and global batch; one
process of 1 thread for reference.

    python benchmarks/ddp_scaling.py --data-dir ../shared/datasets/mnist --repeats 3 \
        --out benchmarks/results/ddp-scaling.json

Each run is a real `digitnet train` of --epochs epochs on a --subset of MNIST; its figure is the
images/s that rank 0 records in metrics.jsonl for the last epoch (training only: the first epoch
warms up, validation is excluded). The configurations alternate within each round, so that load
from elsewhere on the machine hits them alike; the JSON holds every run, the medians, and the
load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RECIPES = {  # name -> extra `digitnet train` flags (the default recipe otherwise: fast-v2, 512)
    "default (handwriting augmentation)": [],
    "shift augmentation (configs/fast.yaml's kind)": ["--augment-kind", "shift"],
}
LAYOUTS = {  # name -> (processes, threads per process)
    "1 process x 1 thread": (1, 1),  # the reference: what one core does
    "1 process x 2 threads": (1, 2),
    "2 processes x 1 thread": (2, 1),
}


def train_command(processes: int, threads: int, flags: list[str], args) -> list[str]:
    common = ["train", "--epochs", str(args.epochs), "--subset", str(args.subset),
              "--val-size", "1000", "--threads", str(threads), "--no-progress", *flags]
    if args.data_dir:
        common += ["--data-dir", args.data_dir]
    if processes == 1:
        return [sys.executable, "-m", "digitnet", *common]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={processes}", "-m", "digitnet", *common]


def images_per_second(processes: int, threads: int, flags: list[str], args) -> float:
    """One run; the images/s of its last epoch."""
    with tempfile.TemporaryDirectory() as models:
        env = dict(os.environ, DIGITNET_MODELS_DIR=models, OMP_NUM_THREADS=str(threads))
        done = subprocess.run(train_command(processes, threads, flags, args), env=env,
                              capture_output=True, text=True, timeout=1800)
        if done.returncode:
            raise SystemExit(f"training failed:\n{done.stderr[-3000:]}")
        (metrics,) = Path(models).glob("*/*/metrics.jsonl")
        rows = [json.loads(line) for line in metrics.read_text().splitlines()]
        return rows[-1]["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="MNIST folder (default: as digitnet)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration (3)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (default: 2)")
    parser.add_argument("--subset", type=int, default=10_000,
                        help="training images per run (default: 10000)")
    parser.add_argument("--out", default=None, help="write the results here as JSON")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    load_before = os.getloadavg()
    runs = {recipe: {layout: [] for layout in LAYOUTS} for recipe in RECIPES}
    for round_ in range(args.repeats):
        for recipe, flags in RECIPES.items():
            for layout, (processes, threads) in LAYOUTS.items():
                speed = images_per_second(processes, threads, flags, args)
                runs[recipe][layout].append(speed)
                print(f"round {round_ + 1}: {recipe}, {layout}: {speed:,.0f} images/s",
                      flush=True)
    medians = {recipe: {layout: statistics.median(v) for layout, v in layouts.items()}
               for recipe, layouts in runs.items()}
    for recipe, layouts in medians.items():
        print(f"{recipe}: " + ", ".join(f"{k} {v:,.0f}" for k, v in layouts.items()))
    result = dict(started=started, finished=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                  load_average_before=load_before, load_average_after=os.getloadavg(),
                  cpus=os.cpu_count(), platform=platform.platform(), torch=torch.__version__,
                  epochs=args.epochs, subset=args.subset, repeats=args.repeats,
                  images_per_s_median=medians, images_per_s_runs=runs)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
