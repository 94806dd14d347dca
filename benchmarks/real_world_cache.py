"""Tuning on the real-world renderings without paying for preprocessing each time: preprocessing
does not depend on the model, so `build` renders and preprocesses one split's renderings once into
an .npz (the 28x28 images `digitnet predict` would see), and `score` reads any number of models'
accuracy on it in seconds, per rendering and on the digits the model reads right as clean MNIST
(the mnist-png rendering), which separates what a rendering costs from the digits' own difficulty.

    python benchmarks/real_world_cache.py build OUT.npz --split val [--n-per-class 40]
        [--names a,b] [--workers 2] [--data-dir DIR]
    python benchmarks/real_world_cache.py score OUT.npz REF [REF ...] [--models-dir DIR]

Tune on `--split val`; `benchmarks/real_world.py evaluate --split test` is the report. A cache
holds the pipeline it was built with (PYTHONPATH picks the tree), so rebuild it after a pipeline
change.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from renderings import EURO_ONE, count_for, pick_digits, render_one  # noqa: E402


def _one(task: tuple[str, np.ndarray, int]) -> tuple[np.ndarray, bool, str]:
    """(the 28x28 image predict would see, digit found, path) of one rendered digit."""
    from digitnet.data.preprocess import preprocess

    name, digit, index = task
    result = preprocess(render_one(name, digit, index, 0)[0])
    image = result.image if result.digit_found else np.zeros((28, 28), np.uint8)
    return image, bool(result.digit_found), str(result.path)


def build(out: Path, split: str, n_per_class: int, names: list[str], workers: int,
          data_dir: str | None) -> int:
    images, labels, index = pick_digits(split, n_per_class, 0, data_dir)
    tasks, truth, rendering = [], [], []
    for name in names:
        for c in range(10):
            for i in np.flatnonzero(labels == c)[:count_for(name, n_per_class)]:
                tasks.append((name, images[i], int(index[i])))
                truth.append(1 if name == EURO_ONE.name else int(labels[i]))
                rendering.append(name)
    if workers <= 1:
        done = [_one(t) for t in tasks]
    else:  # the digits travel with the tasks: workers need no state of their own
        with ProcessPoolExecutor(workers) as pool:
            done = list(pool.map(_one, tasks, chunksize=8))
    np.savez_compressed(out, images=np.stack([d[0] for d in done]),
                        found=np.array([d[1] for d in done]), paths=np.array([d[2] for d in done]),
                        labels=np.array(truth), names=np.array(rendering),
                        index=np.array([t[2] for t in tasks]), split=split)
    return len(done)


def score(cache: Path, refs: list[str], models_dir: str | None) -> str:
    from digitnet.errors import DigitnetError
    from digitnet.store import load_model
    from real_world import model_probs

    try:
        d = np.load(cache)
        missing = {"images", "found", "labels", "names", "index"} - set(d.files)
    except OSError as e:
        raise SystemExit(f"{cache}: cannot read it ({e.strerror or e})") from None
    except ValueError:
        missing = {"an .npz archive"}
    if missing:
        raise SystemExit(f"{cache}: not a cache written by `build` (expected "
                         f"{', '.join(sorted(missing))})")
    names = list(dict.fromkeys(d["names"].tolist()))
    ten = [n for n in names if n != EURO_ONE.name]
    lines = [f"{'rendering':26s}" + "".join(f"{r.split('/')[-1][-16:]:>17s}" for r in refs)]
    table, clean = {}, {}
    for ref in refs:
        try:
            loaded = load_model(ref, models_dir)
        except DigitnetError as e:
            raise SystemExit(f"{ref}: {e}") from None
        probs = model_probs(loaded, d["images"])
        right = np.where(d["found"], probs.argmax(1), -1) == d["labels"]
        table[ref] = {n: right[d["names"] == n].mean() for n in names}
        png = d["names"] == "mnist-png"
        good = np.isin(d["index"], d["index"][png][right[png]]) if png.any() else np.ones_like(
            right)
        clean[ref] = {n: right[(d["names"] == n) & good].mean() for n in ten if n != "mnist-png"}
    for n in names:
        lines.append(f"{n:26s}" + "".join(f"{100 * table[r][n]:17.2f}" for r in refs))
    lines.append(f"{'mean (ten classes)':26s}" + "".join(
        f"{100 * np.mean([table[r][n] for n in ten]):17.2f}" for r in refs))
    lines.append(f"{'read right as clean:':26s}")
    for n in clean[refs[0]]:
        lines.append(f"{'  ' + n:26s}" + "".join(f"{100 * clean[r][n]:17.2f}" for r in refs))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="render and preprocess a split once")
    p.add_argument("out", type=Path)
    p.add_argument("--split", choices=["val", "test"], required=True)
    p.add_argument("--n-per-class", type=int, default=40)
    p.add_argument("--names", help="comma-separated renderings (default: all)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--data-dir", default=None)
    p = sub.add_parser("score", help="models' accuracy on a built cache")
    p.add_argument("cache", type=Path)
    p.add_argument("refs", nargs="+", metavar="REF")
    p.add_argument("--models-dir", default=None)
    args = parser.parse_args()
    if args.command == "build":
        from real_world import _names  # the one check of --names

        names = _names(args.names)
        start = time.perf_counter()
        n = build(args.out, args.split, args.n_per_class, names, args.workers, args.data_dir)
        print(f"{n} images in {time.perf_counter() - start:.0f} s -> {args.out}")
    else:
        print(score(args.cache, args.refs, args.models_dir))


if __name__ == "__main__":
    main()
