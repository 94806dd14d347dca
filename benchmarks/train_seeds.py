"""Train a recipe with several seeds and report test accuracy and time: median, mean, spread.

    python benchmarks/train_seeds.py --seeds 0 1 2 --data-dir ../shared/datasets/mnist \
        --models-dir runs/bench --out benchmarks/results/default.json [-- extra train flags]

Everything after `--` is passed to `digitnet train` (e.g. `--no-augment`, `--arch lenet5`).
Writes one JSON file with every run and the aggregate, and prints a Markdown table row.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path


def run_one(seed: int, args: argparse.Namespace, extra: list[str]) -> dict:
    summary_path = Path(args.models_dir) / f"summary-seed{seed}-{int(time.time())}.json"
    cmd = [sys.executable, "-m", "digitnet", "train", "--seed", str(seed), "--no-progress",
           "--data-dir", args.data_dir, "--models-dir", args.models_dir,
           "--json", str(summary_path),
           *extra]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    summary = json.loads(summary_path.read_text())
    return dict(seed=seed, ref=summary["ref"], test_acc=summary["test_acc"],
                test_loss=summary["test_loss"],
                val_acc=summary["final"].get("val_acc"), wall_seconds=wall,
                train_seconds=summary["total_seconds"])


def aggregate(runs: list[dict], key: str) -> dict:
    values = [r[key] for r in runs]
    return dict(median=statistics.median(values), mean=statistics.fmean(values),
                min=min(values), max=max(values),
                std=statistics.stdev(values) if len(values) > 1 else 0.0)


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-dir", default="../shared/datasets/mnist")
    parser.add_argument("--models-dir", default="runs/bench")
    parser.add_argument("--out", required=True, help="JSON file for the results")
    parser.add_argument("--label", default=None, help="name of the recipe in the table")
    args = parser.parse_args(argv)
    Path(args.models_dir).mkdir(parents=True, exist_ok=True)
    runs = [run_one(seed, args, extra) for seed in args.seeds]
    result = dict(label=args.label or (" ".join(extra) or "default"), train_flags=extra,
                  command=" ".join([Path(sys.executable).name, *sys.argv]),
                  machine=f"{platform.machine()}, {platform.processor() or 'cpu'}, "
                          f"{__import__('os').cpu_count()} cores",
                  date=time.strftime("%Y-%m-%d"), runs=runs,
                  test_acc=aggregate(runs, "test_acc"),
                  wall_seconds=aggregate(runs, "wall_seconds"))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    acc, wall = result["test_acc"], result["wall_seconds"]
    accs = ", ".join(f"{r['test_acc']:.2%}" for r in runs)
    print(f"| {result['label']} | {len(runs)} | {acc['median']:.2%} | "
          f"{acc['mean']:.2%} ± {acc['std']:.2%} "
          f"| {accs} | {wall['median']:.0f} s |")


if __name__ == "__main__":
    main()
