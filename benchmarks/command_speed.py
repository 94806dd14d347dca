"""Wall time of one `digitnet` command for this tree's src/ and, side by side, a baseline tree's.

    python benchmarks/command_speed.py --baseline-src /tmp/old/src --repeats 5 \
        --out benchmarks/results/evaluate-speed.json -- \
        evaluate fast-v2/RUN --dataset mnist-test --dataset mnist-test-augmented \
        --models-dir models --data-dir ../shared/datasets/mnist --out /tmp/evaluation

Each run is a fresh `python -m digitnet ...` process (imports included, as a user pays them) with
PYTHONPATH set to the tree's src/; the trees alternate run by run, so that load on the machine
hits both alike. Prints and writes the median, min and max of each, and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_once(src: Path, command: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=str(src), MPLBACKEND="Agg")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "digitnet", *command], env=env,
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{src}: digitnet {' '.join(command)} failed ({done.returncode}):\n"
                         f"{done.stderr[-2000:]}")
    return seconds


def summary(times: list[float]) -> dict:
    return dict(median_s=round(statistics.median(times), 3), min_s=round(min(times), 3),
                max_s=round(max(times), 3), runs=[round(t, 3) for t in times])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-src", type=Path, required=True,
                        help="the src/ folder of the tree to compare against")
    parser.add_argument("--repeats", type=int, default=5, help="runs per tree (default: 5)")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="after --: the digitnet command and its arguments")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the digitnet command after --")
    trees = {"this": HERE.parent / "src", "baseline": args.baseline_src.resolve()}
    times = {name: [] for name in trees}
    for src in trees.values():  # one warm-up each: the file cache, not the code
        run_once(src, command)
    for i in range(args.repeats):
        for name, src in (trees.items() if i % 2 == 0 else reversed(trees.items())):
            times[name].append(run_once(src, command))
            print(f"run {i + 1}/{args.repeats} {name}: {times[name][-1]:.2f} s", flush=True)
    result = dict(command=["digitnet", *command],
                  date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                  load_average=[round(x, 2) for x in os.getloadavg()],
                  baseline_src=str(trees["baseline"]),
                  **{name: summary(t) for name, t in times.items()})
    for name in trees:
        print(f"{name:>8}: median {result[name]['median_s']:.2f} s "
              f"({result[name]['min_s']:.2f}-{result[name]['max_s']:.2f})")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
