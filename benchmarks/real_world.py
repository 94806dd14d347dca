"""The real-world benchmark: models on MNIST digits rendered the way other sources hand digits in
(frame-filling scans, phone photos, drawings, MNIST as PNG; see renderings.py), through the same
path as `digitnet predict`, next to the same digits as clean MNIST and a plain reference step.

    python benchmarks/real_world.py evaluate REF [REF ...] --split val|test [--n-per-class 20]
        [--models-dir DIR] [--json PATH] [--baseline JSON] [--sheet PNG]
    python benchmarks/real_world.py build OUT --split val|test [--n-per-class 20]
    python benchmarks/real_world.py table JSON [--baseline JSON]

Tune on `--split val` (renderings of the validation digits); report on `--split test`. Run it
with PYTHONPATH pointing at another src/ tree to measure that tree's pipeline ("today's
pipeline" is main's src/); `--baseline` puts an earlier run's accuracy next to this one's.
`build` writes the images to OUT/<rendering>/<digit>/ (and OUT/images.csv), for a person to look
at and for `digitnet predict OUT/<rendering>`. `table` prints a saved run's tables again.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from renderings import EURO_ONE, RENDERINGS, count_for, pick_digits, render_one

BENCHMARKS = Path(__file__).resolve().parent
DEFAULT_N_PER_CLASS = 20  # 200 images per rendering (60 of the 2-4 MP photos): minutes on 2 cores
SHEET_SAMPLES = 8  # inputs per rendering on the sample sheet
PROB_DECIMALS = 6  # as digitnet.deploy.predict rounds its probabilities


# ---------------------------------------------------------------------------- the reference
def plain_step(data: bytes) -> np.ndarray | None:
    """The issue's "plain 15-line step": white on black (inverting when the median is light),
    subtract the median, crop to the ink, fit 20x20 keeping the aspect ratio, centre by mass.

    Returns:
        uint8 (28, 28), white on black, or None when nothing is left after the median.
    """
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        flat = Image.new("RGBA", image.size, (255, 255, 255, 255))
        flat.alpha_composite(image.convert("RGBA"))
        image = flat
    grey = np.asarray(image.convert("L"), np.float32)
    ink = 255 - grey if np.median(grey) > 127 else grey
    ink = np.clip(ink - np.median(ink), 0, None)
    if ink.max() <= 0:
        return None
    rows, cols = np.flatnonzero((ink > 0.1 * ink.max()).any(1)), np.flatnonzero(
        (ink > 0.1 * ink.max()).any(0))
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] / ink.max()
    scale = 20 / max(crop.shape)
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    small = np.asarray(Image.fromarray(crop, "F").resize(size, Image.Resampling.LANCZOS))
    field = np.zeros((28, 28), np.float32)
    top, left = (28 - size[1]) // 2, (28 - size[0]) // 2
    field[top:top + size[1], left:left + size[0]] = np.clip(small, 0, 1)
    return _centred_by_mass(field)


def _centred_by_mass(field: np.ndarray) -> np.ndarray:
    """Shift a (28, 28) float image by whole pixels so that its centre of mass is (14, 14)."""
    ys, xs = np.mgrid[0:28, 0:28]
    mass = field.sum()
    dy = int(round(14 - (ys * field).sum() / mass)) if mass > 0 else 0
    dx = int(round(14 - (xs * field).sum() / mass)) if mass > 0 else 0
    out = np.zeros_like(field)
    src = field[max(0, -dy):28 - max(0, dy), max(0, -dx):28 - max(0, dx)]
    out[max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------ the models
def model_probs(loaded, images: np.ndarray) -> np.ndarray:
    """Probabilities of uint8 (N, 28, 28) images, as `digitnet predict` computes them (the model
    prepared for prediction; calibrated when the tree has calibration), float64 (N, 10)."""
    import torch

    from digitnet.deploy.predict import prepare_for_prediction

    prepared = prepare_for_prediction(loaded)
    batch = torch.from_numpy(np.ascontiguousarray(images, np.uint8))
    if len(batch) == 0:
        return np.zeros((0, 10))
    if hasattr(prepared, "probs"):  # trees with temperature scaling
        return prepared.probs(batch).double().numpy()
    return torch.softmax(prepared.logits(batch).double(), dim=1).numpy()


def predict(loaded, files: list[bytes]) -> tuple[list[dict], float]:
    """`digitnet predict`'s path on file contents: entries (with the 28x28 images), seconds."""
    from digitnet.deploy.predict import predict_images

    start = time.perf_counter()
    entries = predict_images(loaded, files, top_k=1, names=[f"#{i}" for i in range(len(files))],
                             with_images=True)
    return entries, time.perf_counter() - start


def _ece(labels: np.ndarray, probs: np.ndarray) -> float | None:
    from digitnet.evaluation.metrics import expected_calibration_error

    return expected_calibration_error(labels, probs, 15) if len(labels) else None


# ----------------------------------------------------------------------------- evaluation
def _rendered(name: str, images: np.ndarray, labels: np.ndarray, index: np.ndarray,
              n_per_class: int, seed: int) -> tuple[np.ndarray, list[bytes]]:
    """Positions (into the picked digits) and file contents of one rendering's images."""
    keep = np.concatenate([np.flatnonzero(labels == c)[:count_for(name, n_per_class)]
                           for c in range(10)])
    files = [render_one(name, images[i], int(index[i]), seed)[0] for i in keep]
    return keep, files


def score_rendering(name: str, models: list, files: list[bytes], labels: np.ndarray,
                    clean: list[np.ndarray], digits: np.ndarray) -> tuple[list[dict], list]:
    """Every model on one rendering's files.

    Args:
        clean: per model, the probabilities of the same digits as clean MNIST in memory.
        digits: the MNIST digits (N, 28, 28) the files show.

    Returns:
        One result dict per model, and the first model's 28x28 images (None: no digit found).
    """
    first, seconds = predict(models[0], files)
    found = np.array([e["digit_found"] for e in first], bool)
    seen = np.stack([e["image"] if e["image"] is not None else np.zeros((28, 28), np.uint8)
                     for e in first])
    paths = _paths(first, files)
    reasons = Counter((e["reason"] or e["error"]).split(" (")[0]  # the kind, not the numbers
                      for e in first if not e["digit_found"])
    plain = [plain_step(f) for f in files]
    plain_found = np.array([p is not None for p in plain], bool)
    plain_images = np.stack([p if p is not None else np.zeros((28, 28), np.uint8) for p in plain])
    results = []
    for m, loaded in enumerate(models):
        probs = model_probs(loaded, seen[found])
        if m == 0:  # the probabilities here are predict's own: a drift would show at once
            ours = np.round(probs, PROB_DECIMALS)
            theirs = np.array([e["probabilities"] for e in first if e["digit_found"]]).reshape(
                ours.shape)
            assert np.abs(ours - theirs).max(initial=0) <= 2e-6, "model_probs != predict's"
        preds = np.full(len(files), -1)
        preds[found] = probs.argmax(1)
        plain_preds = np.full(len(files), -1)
        plain_preds[plain_found] = model_probs(loaded, plain_images[plain_found]).argmax(1)
        row = dict(
            n=len(files), accuracy=float(np.mean(preds == labels)),
            no_digit=float(np.mean(~found)), errors=sum(e["error"] is not None for e in first),
            ece=_ece(labels[found], probs), mean_confidence=(
                float(probs.max(1).mean()) if len(probs) else None),
            clean_accuracy=float(np.mean(clean[m].argmax(1) == labels)),
            plain_accuracy=float(np.mean(plain_preds == labels)),
            plain_no_digit=float(np.mean(~plain_found)),
            predict_seconds_per_image=seconds / len(files) if m == 0 else None,
            paths=paths, no_digit_reasons=dict(reasons.most_common()),
            wrong=[int(i) for i in np.flatnonzero(preds != labels)])
        if name == EURO_ONE.name:
            row["read_as_7"] = float(np.mean(preds == 7))
        if name == "mnist-png":
            row.update(_identity(seen, found, digits, probs, clean[m]))
        results.append(row)
    return results, [seen[i] if found[i] else None for i in range(len(files))]


def _paths(entries: list[dict], files: list[bytes]) -> dict[str, int]:
    """How many images took each preprocessing path: from predict's entries ("path"), else from
    `PreprocessResult.path` (preprocessing again), else nothing (pipelines without paths)."""
    from digitnet.data.preprocess import PreprocessResult, preprocess

    if any("path" in e for e in entries):
        counts = Counter(str(e["path"]) for e in entries if e.get("path") is not None)
    elif "path" in getattr(PreprocessResult, "__dataclass_fields__", {}):
        counts = Counter(str(preprocess(f).path) for f in files)
    else:
        counts = Counter()
    return dict(sorted(counts.items()))


def _identity(seen: np.ndarray, found: np.ndarray, digits: np.ndarray, probs: np.ndarray,
              clean: np.ndarray) -> dict:
    """MNIST as PNG against MNIST in memory: the images and the predictions, exactly."""
    same_images = bool(found.all() and np.array_equal(seen, digits))
    same = bool(found.all() and np.array_equal(probs.argmax(1), clean.argmax(1))
                and np.array_equal(np.round(probs, PROB_DECIMALS),
                                   np.round(clean, PROB_DECIMALS)))
    diff = float(np.abs(probs - clean[found]).max(initial=0)) if found.any() else None
    changed = int((~found).sum() + (seen[found] != digits[found]).any((1, 2)).sum())
    return dict(identical_images=same_images, identical_predictions=same, images_changed=changed,
                max_probability_difference=diff)


def evaluate(refs: list[str], split: str, n_per_class: int, seed: int, models_dir: str | None,
             data_dir: str | None, names: list[str], progress: bool = True) -> tuple[dict, dict]:
    """Every model on every rendering. Returns the report, and sheet samples per rendering."""
    from tqdm import tqdm

    from digitnet.store import load_model

    start = time.perf_counter()
    models = [load_model(ref, models_dir) for ref in refs]
    images, labels, index = pick_digits(split, n_per_class, seed, data_dir)
    clean_all = [model_probs(m, images) for m in models]
    per_model: list[dict] = [{} for _ in models]
    samples, render_seconds = {}, 0.0
    total = sum(10 * count_for(n, n_per_class) for n in names)
    bar = tqdm(total=total, unit="img", disable=not progress, file=sys.stderr)
    for name in names:
        bar.set_description(name)
        t = time.perf_counter()
        keep, files = _rendered(name, images, labels, index, n_per_class, seed)
        render_seconds += time.perf_counter() - t
        truth = np.ones(len(keep), np.int64) if name == EURO_ONE.name else labels[keep]
        rows, seen = score_rendering(name, models, files, truth, [c[keep] for c in clean_all],
                                     images[keep])
        for m, row in enumerate(rows):
            row["wrong"] = [int(index[keep][i]) for i in row["wrong"]]  # as MNIST indices
            per_model[m][name] = row
        picks = np.linspace(0, len(files) - 1, SHEET_SAMPLES).round().astype(int)
        samples[name] = [(files[i], seen[i]) for i in picks]
        bar.update(len(files))
    bar.close()
    report = dict(
        command=" ".join(["python", *sys.argv]), split=split, n_per_class=n_per_class, seed=seed,
        renderings={n: dict(kind=_rendering(n).kind, about=_rendering(n).about) for n in names},
        models=[_model_entry(m, r) for m, r in zip(models, per_model, strict=True)],
        pipeline=_pipeline(), machine=_machine(), wall_seconds=time.perf_counter() - start,
        render_seconds=render_seconds, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    return report, samples


def _rendering(name: str):
    return EURO_ONE if name == EURO_ONE.name else RENDERINGS[name]


def _model_entry(loaded, rows: dict) -> dict:
    ten = [r["accuracy"] for n, r in rows.items() if n != EURO_ONE.name]
    return dict(model=loaded.ref.label, temperature=getattr(loaded, "temperature", None),
                mean_accuracy=float(np.mean(ten)) if ten else None,
                min_accuracy=float(np.min(ten)) if ten else None, renderings=rows)


def _git(folder: Path) -> dict:
    """The last commit that changed `folder`, and whether it has uncommitted changes now."""
    def run(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(folder), *args], capture_output=True,
                                  text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return dict(commit=run("log", "-1", "--format=%H", "--", ".") or None,
                head=run("rev-parse", "HEAD") or None,
                dirty=bool(run("status", "--porcelain", "--untracked-files=no", "--", ".")))


def _pipeline() -> dict:
    """Which digitnet tree was measured: where it was imported from, its commit, its version."""
    import digitnet
    from digitnet.data import preprocess

    src = Path(digitnet.__file__).resolve().parent
    return dict(src=str(src), preprocess_version=getattr(preprocess, "PREPROCESS_VERSION", None),
                **_git(src))


def _machine() -> dict:
    import PIL
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return dict(machine=f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
                python=platform.python_version(), torch=torch.__version__,
                torch_threads=torch.get_num_threads(), numpy=np.__version__,
                pillow=PIL.__version__, load_average=load, benchmark=_git(BENCHMARKS))


# --------------------------------------------------------------------------------- output
def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _baseline_rows(baseline: dict | None, model: str, n_models: int,
                   baseline_model: str | None = None) -> dict | None:
    """The baseline's renderings for `baseline_model` if given, else for `model`, or its only
    model's when it has one."""
    if baseline is None:
        return None
    by_name = {m["model"]: m["renderings"] for m in baseline["models"]}
    if baseline_model is not None:
        if baseline_model not in by_name:
            raise SystemExit(f"--baseline-model {baseline_model}: the baseline has "
                             f"{', '.join(by_name)}")
        return by_name[baseline_model]
    if model in by_name:
        return by_name[model]
    return next(iter(by_name.values())) if len(by_name) == 1 and n_models == 1 else None


def to_markdown(report: dict, baseline: dict | None = None,
                baseline_model: str | None = None) -> str:
    """One table per model: a row per rendering (beside the baseline's `baseline_model`, or
    its model of the same name)."""
    out = []
    same = ("split", "n_per_class", "seed")
    if baseline is not None and any(baseline.get(k) != report.get(k) for k in same):
        out += ["**the baseline rendered other digits**: " + ", ".join(
            f"{k} {baseline.get(k)} there, {report.get(k)} here" for k in same), ""]
    for entry in report["models"]:
        base = _baseline_rows(baseline, entry["model"], len(report["models"]), baseline_model)
        t = entry["temperature"]
        out += [f"**{entry['model']}**" + (f" (T = {t:.3f})" if t is not None else "") +
                f", split {report['split']}, pipeline {report['pipeline']['commit'] or '?'}"
                f"{' (dirty)' if report['pipeline']['dirty'] else ''}", ""]
        head = "| rendering | n | accuracy | "
        head += "baseline | change | " if base is not None else ""
        head += "no digit | ECE | mean conf. | clean MNIST | plain step | paths |"
        out += [head, "|" + " --- |" + " ---: |" * (head.count("|") - 3) + " --- |"]
        for name, r in entry["renderings"].items():
            cells = [name, str(r["n"]), _pct(r["accuracy"])]
            if base is not None:
                b = base.get(name, {}).get("accuracy")
                cells += [_pct(b), "-" if b is None else f"{100 * (r['accuracy'] - b):+.2f}"]
            ece = "-" if r["ece"] is None else f"{r['ece']:.4f}"
            paths = ", ".join(f"{k} {v}" for k, v in r["paths"].items()) or "-"
            cells += [_pct(r["no_digit"]), ece, _pct(r["mean_confidence"]),
                      _pct(r["clean_accuracy"]), _pct(r["plain_accuracy"]), paths]
            out.append("| " + " | ".join(cells) + " |")
        out += ["", f"mean over the ten-class renderings {_pct(entry['mean_accuracy'])}, "
                    f"lowest {_pct(entry['min_accuracy'])}"]
        png = entry["renderings"].get("mnist-png")
        if png is not None:
            out.append(f"mnist-png: images identical to MNIST {png['identical_images']}, "
                       f"predictions identical to in-memory {png['identical_predictions']}")
        euro = entry["renderings"].get(EURO_ONE.name)
        if euro is not None:
            out.append(f"{EURO_ONE.name} (every image a 1): read as 1 {_pct(euro['accuracy'])}, "
                       f"as 7 {_pct(euro['read_as_7'])}")
        out.append("")
    out.append(f"{report['wall_seconds']:.0f} s in all ({report['render_seconds']:.0f} s "
               f"rendering); {report['machine']['machine']}")
    return "\n".join(out)


def _thumbnail(data: bytes, size: int) -> Image.Image:
    """An input as a viewer shows it: EXIF orientation applied, transparency over a checkerboard."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGBA")
    scale = size / max(image.size)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                         Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS)
    board = Image.new("RGBA", image.size, (255, 255, 255, 255))
    draw = ImageDraw.Draw(board)
    for y in range(0, image.height, 8):
        for x in range((y // 8 % 2) * 8, image.width, 16):
            draw.rectangle([x, y, x + 7, y + 7], fill=(215, 215, 215, 255))
    board.alpha_composite(image)
    return board.convert("RGB")


def write_sheet(samples: dict, path: Path, tile: int = 56) -> None:
    """A row per rendering: SHEET_SAMPLES inputs, each beside the 28x28 image the model saw."""
    label_w, pad = 170, 4
    cell = 2 * tile + pad
    sheet = Image.new("RGB", (label_w + SHEET_SAMPLES * (cell + pad), len(samples) * (tile + pad)
                              + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for row, (name, items) in enumerate(samples.items()):
        y = pad + row * (tile + pad)
        draw.text((pad, y + tile // 2 - 6), name, fill=(0, 0, 0))
        for k, (data, seen) in enumerate(items):
            x = label_w + k * (cell + pad)
            thumb = _thumbnail(data, tile)
            sheet.paste(thumb, (x + (tile - thumb.width) // 2, y + (tile - thumb.height) // 2))
            shown = seen if seen is not None else np.full((28, 28), 90, np.uint8)  # grey: none
            sheet.paste(Image.fromarray(shown).resize((tile, tile), Image.Resampling.NEAREST),
                        (x + tile + pad, y))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=96, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)  # small


def build(out: Path, split: str, n_per_class: int, seed: int, data_dir: str | None,
          names: list[str]) -> int:
    """Write every rendering's files to OUT/<rendering>/<digit>/ and OUT/images.csv."""
    images, labels, index = pick_digits(split, n_per_class, seed, data_dir)
    rows = []
    for name in names:
        for i in np.concatenate([np.flatnonzero(labels == c)[:count_for(name, n_per_class)]
                                 for c in range(10)]):
            data, ext, params = render_one(name, images[i], int(index[i]), seed)
            label = 1 if name == EURO_ONE.name else int(labels[i])
            folder = out / name / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{split}-{int(index[i]):05d}.{ext}"
            path.write_bytes(data)
            rows.append(dict(file=str(path.relative_to(out)), rendering=name, label=label,
                             split=split, mnist_index=int(index[i]), params=json.dumps(params)))
    with open(out / "images.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def _names(arg: str | None) -> list[str]:
    known = [*RENDERINGS, EURO_ONE.name]
    if arg is None:
        return known
    names = [n.strip() for n in arg.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown rendering(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("table", help="print a saved run's tables (against a baseline)")
    p.add_argument("json", type=Path)
    p.add_argument("--baseline", type=Path, help="an earlier run's JSON to compare with")
    p.add_argument("--baseline-model", help="the baseline's model to compare with (default: "
                   "the one of the same name, or its only one)")
    for command in ("evaluate", "build"):
        p = sub.add_parser(command)
        if command == "evaluate":
            p.add_argument("refs", nargs="+", metavar="REF", help="model references")
            p.add_argument("--models-dir", default=None)
            p.add_argument("--json", type=Path, help="write everything here")
            p.add_argument("--baseline", type=Path, help="an earlier run's JSON to compare with")
            p.add_argument("--baseline-model", help="the baseline's model to compare with")
            p.add_argument("--sheet", type=Path, help="write a sample sheet PNG here")
            p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
        else:
            p.add_argument("out", type=Path, help="a new or empty folder")
        p.add_argument("--split", choices=["val", "test"], required=True,
                       help="val: the validation digits (tune on these); test: MNIST test")
        p.add_argument("--n-per-class", type=int, default=DEFAULT_N_PER_CLASS,
                       help=f"digits of each class per rendering (default: {DEFAULT_N_PER_CLASS};"
                            " the 2-4 MP photos use 30%% of it)")
        p.add_argument("--names", help="comma-separated renderings (default: all)")
        p.add_argument("--seed", type=int, default=0, help="digits and renderings (default: 0)")
        p.add_argument("--data-dir", default=None,
                       help="MNIST folder (default: $DIGITNET_DATA_DIR)")
    args = parser.parse_args()
    baseline = json.loads(args.baseline.read_text()) if getattr(args, "baseline", None) else None
    if args.command == "table":
        print(to_markdown(json.loads(args.json.read_text()), baseline, args.baseline_model))
        return
    names = _names(args.names)
    if args.command == "build":
        if args.out.exists() and any(args.out.iterdir()):
            parser.error(f"{args.out} is not empty; build into a new folder")
        n = build(args.out, args.split, args.n_per_class, args.seed, args.data_dir, names)
        print(f"wrote {n} images to {args.out}/<rendering>/<digit>/ and {args.out}/images.csv")
        return
    import torch

    torch.set_num_threads(args.threads)
    report, samples = evaluate(args.refs, args.split, args.n_per_class, args.seed,
                               args.models_dir, args.data_dir, names)
    print(to_markdown(report, baseline, args.baseline_model))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.sheet:
        write_sheet(samples, args.sheet)


if __name__ == "__main__":
    main()
