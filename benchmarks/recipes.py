"""The named recipes side by side: what `make run` costs with each, and what each model is worth.

    python benchmarks/recipes.py --recipe default=configs/default.yaml \
        --recipe fast=configs/fast.yaml \
        --split val --data-dir ../shared/datasets/mnist --out benchmarks/results/recipes-val.json

For each recipe, in one run on one machine and one after another, the three commands `make run`
runs (`digitnet data verify`, `digitnet train --config RECIPE`, `digitnet evaluate` on the clean
and the augmented MNIST test sets), each its own process timed by wall clock from its launch, so
Python start-up, imports and data loading count. Then, outside the clock, the trained model on the
real-world benchmark (`benchmarks/real_world.py evaluate`) on renderings of the validation digits
(`--split val`, what a choice between recipes may look at) or of the test digits (`--split test`,
what is reported). The table gives the time, the MNIST test accuracy and ECE, and the real-world
accuracy: the mean over renderings, the worst rendering, and the mean of each rendering kind.
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

HERE = Path(__file__).resolve().parent
EURO_ONE = "photo-euro-one"  # benchmarks/renderings.py's EURO_ONE.name
TIME_LIMIT = 120.0  # s: training and evaluation of the default recipe on a 2-core CPU (issue 14)


def _timed(cmd: list[str], log: Path) -> float:
    """Run `cmd` with its output in `log`; its wall-clock seconds."""
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode
    if code:
        raise SystemExit(f"failed with exit code {code}: {' '.join(cmd)}; see {log}")
    return time.perf_counter() - start


def run_recipe(name: str, config: str, args, work: Path) -> dict:
    """`make run` with one recipe, timed step by step, then the real-world benchmark."""
    digitnet = [sys.executable, "-m", "digitnet"]
    data = ["--data-dir", args.data_dir]
    store = ["--models-dir", str(work / "models")]
    run = f"{name}-s{args.seed}"
    seconds = {
        "verify": _timed([*digitnet, "data", "verify", *data], work / f"{run}-verify.log"),
        "train": _timed([*digitnet, "train", "--config", config, "--seed", str(args.seed),
                         "--name", run, "--no-progress", *data, *store,
                         "--json", str(work / f"{run}-train.json")], work / f"{run}-train.log"),
    }
    ref = json.loads((work / f"{run}-train.json").read_text())["ref"]
    seconds["evaluate"] = _timed(
        [*digitnet, "evaluate", ref, "--dataset", "mnist-test", "--dataset", "mnist-test-augmented",
         *data, *store, "--out", str(work / f"{run}-evaluation"),
         "--json", str(work / f"{run}-evaluation.json")], work / f"{run}-evaluate.log")
    rows = json.loads((work / f"{run}-evaluation.json").read_text())
    evaluation = {r["dataset"]: r for r in rows}
    real_world = work / f"{run}-real-world.json"
    subprocess.run([sys.executable, str(HERE / "real_world.py"), "evaluate", ref, *store, *data,
                    "--split", args.split, "--n-per-class", str(args.n_per_class),
                    "--json", str(real_world)], check=True)
    report = json.loads(real_world.read_text())
    per_rendering = _rendering_accuracies(report)
    kinds = {n: r["kind"] for n, r in report["renderings"].items() if n in per_rendering}
    return dict(recipe=name, config=config, seed=args.seed, ref=ref, seconds=seconds,
                make_run_seconds=sum(seconds.values()),
                mnist_test=_metrics(evaluation.get("mnist-test", {})),
                mnist_test_augmented=_metrics(evaluation.get("mnist-test-augmented", {})),
                real_world=per_rendering,
                real_world_kinds={k: statistics.fmean(a for n, a in per_rendering.items()
                                                      if kinds[n] == k)
                                  for k in sorted(set(kinds.values()))},
                real_world_mean=statistics.fmean(per_rendering.values()),
                real_world_worst=min(per_rendering.values()))


def _metrics(result: dict) -> dict:
    return {key: result.get(key) for key in ("accuracy", "loss", "ece", "f1_macro")}


def _rendering_accuracies(report: dict) -> dict[str, float]:
    """{rendering: accuracy} of the one model in a real_world.py JSON report, without the
    European-style one (scored apart there: its truth is not an MNIST label)."""
    (model,) = report["models"]
    return {name: row["accuracy"] for name, row in model["renderings"].items()
            if name != EURO_ONE}


def markdown(rows: list[dict], split: str) -> str:
    kinds = sorted({k for r in rows for k in r["real_world_kinds"]})
    lines = [f"| recipe | make run (s) | train (s) | MNIST test acc | ECE | real-world {split}: "
             f"mean | worst (rendering) | " + " | ".join(kinds) + " |",
             "|---" * (7 + len(kinds)) + "|"]
    for r in rows:
        worst = min(r["real_world"], key=r["real_world"].get)
        within = "" if r["make_run_seconds"] <= TIME_LIMIT else " (over 2 min)"
        lines.append(
            f"| {r['recipe']} | {r['make_run_seconds']:.0f}{within} | {r['seconds']['train']:.0f} "
            f"| {100 * r['mnist_test']['accuracy']:.2f}% | {r['mnist_test']['ece']:.4f} "
            f"| {100 * r['real_world_mean']:.2f}% | {100 * r['real_world_worst']:.2f}% ({worst}) | "
            + " | ".join(f"{100 * r['real_world_kinds'].get(k, float('nan')):.2f}%" for k in kinds)
            + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", action="append", required=True, metavar="NAME=CONFIG",
                   help="a named recipe: a name and its YAML file, repeatable")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=("val", "test"), default="val",
                   help="digits the real-world renderings are made of (choose on val)")
    p.add_argument("--n-per-class", type=int, default=30)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", required=True, help="JSON file for every number")
    args = p.parse_args(argv)
    recipes = [r.split("=", 1) for r in args.recipe]
    if any(len(r) != 2 for r in recipes):
        p.error("--recipe takes NAME=CONFIG")
    work = Path(tempfile.mkdtemp(prefix="digitnet-recipes-"))
    load_before = os.getloadavg()
    rows = [run_recipe(name, config, args, work) for name, config in recipes]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=HERE).stdout.strip()
    report = dict(command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), commit=commit,
                  machine=f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
                  load_before=load_before, load_after=os.getloadavg(), split=args.split,
                  time_limit_seconds=TIME_LIMIT, work_dir=str(work), recipes=rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(rows, args.split))
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; "
          f"details in {args.out}")


if __name__ == "__main__":
    main()
