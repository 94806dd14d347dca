"""Speed of the three training augmentations on one CPU thread: `shift` (`shift_batch`), `warp`
(`augment_batch` with a severity preset) and `handwriting` (`augment_batch` with a handwriting
preset), on batches of 512 MNIST training images, as `digitnet train` applies them.

    python benchmarks/augment_speed.py --data-dir ../shared/datasets/mnist \
        --out benchmarks/results/augment-speed.json

Each round times every configuration once (the configurations alternate, so that load on the
machine hits them alike); the figures are medians over --rounds rounds, and `vs_shift1` is how
many times longer a batch takes than with 1-pixel shifts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from digitnet.data.augment import AugmentConfig, augment_batch, shift_batch
from digitnet.data.mnist import load_mnist

BATCH = 512
CONFIGS = {  # name -> (kind, level)
    "shift 1 px": ("shift", 1),
    "shift 2 px": ("shift", 2),
    "warp severity 2": ("warp", 2),
    "warp severity 3": ("warp", 3),
    "handwriting 2": ("handwriting", 2),
    "handwriting 3": ("handwriting", 3),
}


def make_step(kind: str, level: int, images: torch.Tensor, generator: torch.Generator):
    """A function that augments `images` once, as training does for `kind` at `level`."""
    if kind == "shift":
        return lambda: shift_batch(images, level, generator)
    preset = AugmentConfig.for_severity if kind == "warp" else AugmentConfig.for_handwriting
    cfg = preset(level)
    return lambda: augment_batch(images, cfg, generator)


def seconds_per_batch(step, min_seconds: float) -> float:
    """Mean time of `step` over as many calls as fill `min_seconds` (at least 3)."""
    step()  # warm-up
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < min_seconds:
        step()
        calls += 1
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="MNIST folder (default: as digitnet)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default: 5)")
    parser.add_argument("--min-seconds", type=float, default=0.5,
                        help="time per configuration and round (default: 0.5)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = load_mnist(args.data_dir).train_images[:BATCH].clone()
    generator = torch.Generator().manual_seed(0)
    steps = {name: make_step(*spec, images, generator) for name, spec in CONFIGS.items()}
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for _ in range(args.rounds):
        for name, step in steps.items():
            times[name].append(seconds_per_batch(step, args.min_seconds))
    base = statistics.median(times["shift 1 px"])
    rows = []
    for name, runs in times.items():
        median = statistics.median(runs)
        rows.append({"config": name, "ms_per_batch": round(median * 1e3, 3),
                     "images_per_s": round(BATCH / median), "vs_shift1": round(median / base, 1)})
        print(f"{name:<18} {median * 1e3:8.2f} ms per {BATCH}  {BATCH / median:>10,.0f} images/s"
              f"  {median / base:6.1f}x shift 1 px")
    if args.out:
        result = {"batch": BATCH, "threads": 1, "rounds": args.rounds, "torch": torch.__version__,
                  "machine": platform.machine(), "cpus": os.cpu_count(),
                  "load_average": os.getloadavg(), "rows": rows}
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
