"""Time to accuracy: digitnet recipes against the PyTorch MNIST example, in one run on one machine.

    python benchmarks/time_to_accuracy.py --recipe fast=configs/fast.yaml --seeds 0 1 2 \
        --recipe default=configs/default.yaml:0 --baseline-seeds 1 \
        --data-dir ../shared/datasets/mnist --out benchmarks/results/time_to_accuracy.json \
        --plot benchmarks/results/time_to_accuracy.png

Each training run is its own process (`digitnet train --config ...`, or
`benchmarks/baseline_mnist_example.py`), timed by wall clock from its launch, so Python start-up,
imports and data loading are included. The clock of an epoch stops when its checkpoint is written
(digitnet: after its 5,000-image validation pass, which is included) or when its training ends
(baseline: its per-epoch test evaluation is excluded). Test accuracy of every digitnet epoch is
measured afterwards from the epoch's checkpoint, outside the clock. A recipe is judged by the
accuracy of its final epoch; `time_to` gives the first epoch end at or above each threshold. Peak
resident memory (ru_maxrss) of each run comes from `os.wait4`.
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

THRESHOLDS = (0.99, 0.995)
HERE = Path(__file__).resolve().parent


def _launch(cmd: list[str], log: Path) -> tuple[float, float, float]:
    """Run `cmd`; returns (launch time.time(), wall seconds, peak RSS in MiB)."""
    print("$", " ".join(cmd), flush=True)
    start = time.time()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed ({status}): {' '.join(cmd)}; see {log}")
    return start, wall, usage.ru_maxrss / 1024  # Linux reports KiB


def run_digitnet(recipe: str, config: str, seed: int, args, work: Path) -> dict:
    """One `digitnet train` run; the accuracy curve comes from its per-epoch checkpoints."""
    from digitnet.data.datasets import load_splits
    from digitnet.store import load_model

    name = f"{recipe}-s{seed}-{int(time.time())}"
    cmd = [sys.executable, "-m", "digitnet", "train", "--config", config, "--seed", str(seed),
           "--name", name, "--no-progress", "--data-dir", args.data_dir,
           "--models-dir", str(work / "models"), "--json", str(work / f"{name}.json")]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    start, wall, rss = _launch(cmd, work / f"{name}.log")
    summary = json.loads((work / f"{name}.json").read_text())
    run_dir = Path(summary["path"])
    test = load_splits(args.data_dir, val_size=0)["test"]
    curve = []
    for meta in sorted(run_dir.glob("checkpoints/epoch-*/meta.json")):
        loaded = load_model(f"{run_dir}@{meta.parent.name}")
        acc = float((loaded.logits(test.images).argmax(1) == test.labels).double().mean())
        curve.append(dict(epoch=json.loads(meta.read_text())["epoch"],
                          seconds=meta.stat().st_mtime - start, test_acc=acc))
    return dict(recipe=recipe, seed=seed, ref=summary["ref"], config=config, wall_seconds=wall,
                peak_rss_mib=rss, final_test_acc=summary["test_acc"], curve=curve)


def run_baseline(seed: int, args, work: Path) -> dict:
    out = work / f"baseline-s{seed}.json"
    cmd = [sys.executable, str(HERE / "baseline_mnist_example.py"), "--seed", str(seed),
           "--epochs", str(args.baseline_epochs), "--data-dir", args.data_dir, "--json", str(out)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    start, wall, rss = _launch(cmd, work / f"baseline-s{seed}.log")
    rows = json.loads(out.read_text())
    curve = [dict(epoch=r["epoch"], seconds=r["time"] - start - r["eval_seconds_before"],
                  test_acc=r["test_acc"]) for r in rows]
    return dict(recipe="pytorch-example", seed=seed, wall_seconds=wall, peak_rss_mib=rss,
                final_test_acc=rows[-1]["test_acc"], curve=curve)


def time_to(curve: list[dict], threshold: float) -> float | None:
    return next((p["seconds"] for p in curve if p["test_acc"] >= threshold - 1e-12), None)


def _stats(values: list[float | None]) -> dict | None:
    if not values or any(v is None for v in values):
        return None
    return dict(median=statistics.median(values), mean=statistics.fmean(values), min=min(values),
                max=max(values), std=statistics.stdev(values) if len(values) > 1 else 0.0,
                n=len(values))


def summarise(runs: list[dict]) -> dict:
    """Per recipe: final accuracy, time to each threshold (and to the baseline's final accuracy)."""
    baseline = [r for r in runs if r["recipe"] == "pytorch-example"]
    target = statistics.median(r["final_test_acc"] for r in baseline) if baseline else None
    base_end = statistics.median(r["curve"][-1]["seconds"] for r in baseline) if baseline else None
    out = {}
    for recipe in dict.fromkeys(r["recipe"] for r in runs):
        group = [r for r in runs if r["recipe"] == recipe]
        row = dict(runs=len(group), final_test_acc=_stats([r["final_test_acc"] for r in group]),
                   wall_seconds=_stats([r["wall_seconds"] for r in group]),
                   final_epoch_seconds=_stats([r["curve"][-1]["seconds"] for r in group]),
                   peak_rss_mib=_stats([r["peak_rss_mib"] for r in group]))
        for t in THRESHOLDS:
            row[f"time_to_{t}"] = _stats([time_to(r["curve"], t) for r in group])
        if target is not None:
            row["time_to_baseline_final"] = _stats([time_to(r["curve"], target) for r in group])
        out[recipe] = row
    if baseline:
        base = out["pytorch-example"]
        for row in out.values():
            ratios = {}
            for key in ("time_to_0.99", "time_to_baseline_final"):
                if row.get(key) and base.get(key):
                    ratios[key] = base[key]["median"] / row[key]["median"]
            row["speedup_vs_baseline"] = ratios
        out["baseline_final_acc"] = target
        out["baseline_final_epoch_seconds"] = base_end
    return out


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colours = {}
    for r in runs:
        first = r["recipe"] not in colours
        colour = colours.setdefault(r["recipe"], f"C{len(colours)}")
        xs = [p["seconds"] for p in r["curve"]]
        ys = [100 * p["test_acc"] for p in r["curve"]]
        ax.plot(xs, ys, "o-", ms=3, color=colour, alpha=0.8, label=r["recipe"] if first else None)
    for t in THRESHOLDS:
        ax.axhline(100 * t, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_ylim(98.0, 100.0)
    ax.set_xlabel("wall-clock seconds since launch (log scale)")
    ax.set_ylabel("MNIST test accuracy (%)")
    ax.set_title("Test accuracy against training time, one point per epoch")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse_recipe(text: str, default_seeds: list[int]) -> tuple[str, str, list[int]]:
    """NAME=CONFIG[:SEED,SEED...]"""
    name, _, rest = text.partition("=")
    config, _, seeds = rest.partition(":")
    return name, config, [int(s) for s in seeds.split(",")] if seeds else default_seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", action="append", default=[],
                        help="NAME=CONFIG[:SEEDS] (repeatable), e.g. fast=configs/fast.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--baseline-seeds", type=int, nargs="*", default=[1],
                        help="seeds of the PyTorch example (default: 1, its own default)")
    parser.add_argument("--baseline-epochs", type=int, default=14)
    parser.add_argument("--threads", type=int, default=None, help="torch threads for every run")
    parser.add_argument("--data-dir", default="../shared/datasets/mnist")
    parser.add_argument("--out", required=True, help="JSON file for the results")
    parser.add_argument("--plot", default=None, help="PNG of accuracy against time")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="digitnet-tta-"))
    load_before = os.getloadavg()
    runs = []
    for spec in args.recipe:
        name, config, seeds = parse_recipe(spec, args.seeds)
        for seed in seeds:
            runs.append(run_digitnet(name, config, seed, args, work))
            print(json.dumps({k: v for k, v in runs[-1].items() if k != "curve"}), flush=True)
    for seed in args.baseline_seeds:
        runs.append(run_baseline(seed, args, work))
        print(json.dumps({k: v for k, v in runs[-1].items() if k != "curve"}), flush=True)
    result = dict(command=" ".join([Path(sys.executable).name, *sys.argv]),
                  machine=f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
                  date=time.strftime("%Y-%m-%d %H:%M %Z"), load_average_before=load_before,
                  load_average_after=os.getloadavg(), summary=summarise(runs), runs=runs)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        plot(runs, Path(args.plot))
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
