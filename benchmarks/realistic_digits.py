"""A realistic test set: MNIST test digits rendered the way people hand in their own digits, and a
model's accuracy on it next to its accuracy on the same digits as clean 28x28 MNIST images.

    python benchmarks/realistic_digits.py build OUT [--n 1000] [--seed 0] [--sheet docs/x.png]
    python benchmarks/realistic_digits.py evaluate REF OUT [--models-dir DIR] [--json PATH]

`build` writes OUT/<digit>/NNNN.{png,jpg} (dark ink on light, coloured or transparent paper,
100-600 px, off-centre, rotated, blurred, unevenly lit, JPEG-compressed), plus OUT/images.csv
saying which MNIST test digit each file shows and how it was rendered. The same seed gives the same
files. `evaluate` runs what `digitnet evaluate REF --dataset OUT` runs (the folder goes through the
new-image preprocessing) and the same model on the same digits straight from MNIST, and prints a
Markdown table, with accuracy per rendering condition.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from digitnet.constants import NUM_CLASSES

PAPERS = {  # RGB of the paper
    "white": (250, 250, 248), "cream": (245, 238, 215), "yellow": (246, 234, 160),
    "blue": (214, 228, 245), "pink": (246, 219, 224), "grey": (205, 205, 200),
}
PENS = {"black": (20, 20, 25), "blue": (25, 45, 140), "pencil": (95, 95, 100), "red": (150, 25, 30)}
MIN_SIDE, MAX_SIDE = 100, 600  # px of the rendered image
MAX_ANGLE = 15  # degrees of rotation either way
RGBA_SHARE, JPEG_SHARE = 0.15, 0.5  # of the images: transparent PNG, JPEG (the rest: opaque PNG)
DIGIT_BOX = 20  # MNIST digits fill a 20x20 box inside the 28x28 field
MIN_FILL, MAX_FILL = 0.3, 0.8  # the digit's longer side as a share of the image side
CSV_FIELDS = ["file", "label", "mnist_test_index", "side", "fill", "angle", "offset", "blur", "pen",
              "format", "paper", "lighting", "quality"]


# ------------------------------------------------------------------------------------- build
def pick_digits(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n // 10 random MNIST test indices per class (sorted within a class)."""
    rng = np.random.default_rng(seed)
    per_class = n // NUM_CLASSES
    picked = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
              for c in range(NUM_CLASSES)]
    return np.concatenate([np.sort(p) for p in picked])


def render(digit: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, dict]:
    """One MNIST digit (28x28, white on black) as a photo- or scan-like image, and how."""
    side = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
    fill = rng.uniform(MIN_FILL, MAX_FILL)  # the digit's 20 px box as a share of the image side
    angle = rng.uniform(-MAX_ANGLE, MAX_ANGLE)
    scaled = round(28 / DIGIT_BOX * fill * side)
    ink = Image.fromarray(digit).resize((scaled, scaled), Image.Resampling.BICUBIC)
    ink = ink.rotate(angle, Image.Resampling.BICUBIC, expand=True)
    ink = ink.crop(ink.getbbox())
    if max(ink.size) > MAX_FILL * side:  # rotation widened it past the image
        factor = MAX_FILL * side / max(ink.size)
        ink = ink.resize((max(1, round(ink.width * factor)), max(1, round(ink.height * factor))),
                         Image.Resampling.BICUBIC)
    canvas = Image.new("L", (side, side), 0)
    # anywhere in the image, usually off-centre, but never cut off
    x = int(rng.integers(0, side - ink.width + 1))
    y = int(rng.integers(0, side - ink.height + 1))
    canvas.paste(ink, (x, y))
    blur = rng.uniform(0, 0.012) * side  # px; camera shake and focus
    if blur > 0.3:
        canvas = canvas.filter(ImageFilter.GaussianBlur(blur))
    cover = np.asarray(canvas, np.float32) / 255.0  # (side, side) ink coverage
    pen = list(PENS)[int(rng.integers(len(PENS)))]
    pen_rgb = np.array(PENS[pen], np.float32)
    shares = [RGBA_SHARE, JPEG_SHARE, 1 - RGBA_SHARE - JPEG_SHARE]
    kind = rng.choice(["rgba", "jpeg", "png"], p=shares)
    params = dict(side=side, fill=round(fill, 3), angle=round(angle, 1), offset=[x, y],
                  blur=round(blur, 2), pen=pen, format=str(kind))
    if kind == "rgba":  # strokes on a transparent canvas, as drawing apps export
        rgba = np.dstack([np.broadcast_to(pen_rgb, cover.shape + (3,)), cover * 255])
        return Image.fromarray(np.round(rgba).astype(np.uint8), "RGBA"), params
    paper = list(PAPERS)[int(rng.integers(len(PAPERS)))]
    rgb = np.array(PAPERS[paper], np.float32) * (1 - cover[..., None]) + pen_rgb * cover[..., None]
    light, lighting = uneven_light(side, rng)
    rgb = rgb * light[..., None] + rng.normal(0, rng.uniform(0, 4), rgb.shape)  # sensor noise
    image = Image.fromarray(np.clip(np.round(rgb), 0, 255).astype(np.uint8), "RGB")
    params.update(paper=paper, lighting=lighting)
    if kind == "jpeg":
        params["quality"] = int(rng.integers(35, 96))
    return image, params


def uneven_light(side: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A multiplicative light field: even, a gradient across the page, or a shadow edge."""
    yy, xx = np.mgrid[0:side, 0:side] / side
    kind = rng.choice(["even", "gradient", "shadow"], p=[0.3, 0.4, 0.3])
    if kind == "even":
        return np.full((side, side), rng.uniform(0.85, 1.0), np.float32), "even"
    theta = rng.uniform(0, 2 * math.pi)
    along = xx * math.cos(theta) + yy * math.sin(theta)
    along = (along - along.min()) / max(float(np.ptp(along)), 1e-6)
    if kind == "gradient":
        low = rng.uniform(0.45, 0.8)
        return (low + (1 - low) * along).astype(np.float32), "gradient"
    edge, depth = rng.uniform(0.3, 0.7), rng.uniform(0.55, 0.8)  # a soft-edged shadow
    softness = 0.03
    shade = 1 / (1 + np.exp(-(along - edge) / softness))
    return (depth + (1 - depth) * shade).astype(np.float32), "shadow"


def save(image: Image.Image, params: dict, path_stem: Path) -> Path:
    if params["format"] == "jpeg":
        path = path_stem.with_suffix(".jpg")
        image.save(path, quality=params["quality"])
    else:
        path = path_stem.with_suffix(".png")
        image.save(path)
    return path


def build(out: Path, n: int, seed: int, data_dir: str | None, sheet: Path | None) -> list[dict]:
    """Write the set and OUT/images.csv; returns one row per image."""
    from digitnet.data.mnist import load_mnist

    mnist = load_mnist(data_dir)
    images, labels = mnist.test_images.numpy(), mnist.test_labels.numpy()
    rows = []
    for i, index in enumerate(pick_digits(labels, n, seed)):
        label = int(labels[index])
        image, params = render(images[index], np.random.default_rng([seed, int(index)]))
        (out / str(label)).mkdir(parents=True, exist_ok=True)
        path = save(image, params, out / str(label) / f"{i:04d}")
        params = {k: json.dumps(v) if isinstance(v, list) else v for k, v in params.items()}
        rows.append(dict(file=str(path.relative_to(out)), label=label, mnist_test_index=int(index),
                         **params))
    with open(out / "images.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, restval="")
        writer.writeheader()
        writer.writerows(rows)
    if sheet is not None:
        write_sheet(out, rows, sheet)
    return rows


def _thumbnail(path: Path, size: int) -> Image.Image:
    """An input as it would look on screen: transparency over a checkerboard."""
    image = Image.open(path)
    image.thumbnail((size, size))
    board = Image.new("RGB", image.size, (255, 255, 255))
    draw = ImageDraw.Draw(board)
    for y in range(0, image.height, 8):
        for x in range((y // 8 % 2) * 8, image.width, 16):
            draw.rectangle([x, y, x + 7, y + 7], fill=(220, 220, 220))
    board.paste(image.convert("RGBA"), (0, 0), image.convert("RGBA"))
    return board


def write_sheet(out: Path, rows: list[dict], sheet: Path, per_row: int = 10,
                tile: int = 96) -> None:
    """Two inputs per class (top) over their preprocessed 28x28 images (bottom), as one PNG."""
    from digitnet.data.preprocess import preprocess

    picked = [next(r for r in rows if r["label"] == c) for c in range(NUM_CLASSES)]
    picked += [[r for r in rows if r["label"] == c][1] for c in range(NUM_CLASSES)]
    pad = 4
    grid = Image.new("RGB", (per_row * (tile + pad) + pad, 4 * (tile + pad) + pad), (255, 255, 255))
    for k, row in enumerate(picked):
        x, y = pad + (k % per_row) * (tile + pad), pad + (k // per_row) * 2 * (tile + pad)
        grid.paste(_thumbnail(out / row["file"], tile), (x, y))
        pre = preprocess(out / row["file"]).image
        grid.paste(Image.fromarray(pre).resize((tile, tile), Image.Resampling.NEAREST),
                   (x, y + tile + pad))
    sheet.parent.mkdir(parents=True, exist_ok=True)
    grid.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(sheet, optimize=True)  # small


# ---------------------------------------------------------------------------------- evaluate
def naive_28x28(path: Path) -> np.ndarray:
    """The baseline without the preprocessing: flatten onto white, shrink to 28x28, invert."""
    image = Image.open(path).convert("RGBA")
    flat = Image.new("RGBA", image.size, (255, 255, 255, 255))
    flat.alpha_composite(image)
    small = flat.convert("L").resize((28, 28), Image.Resampling.BOX)
    return 255 - np.asarray(small)


def _folder_order(out: Path) -> list[str]:
    """Files in the order `load_image_folder` reads them: digit folders, then sorted names."""
    files = []
    for c in range(NUM_CLASSES):
        if (out / str(c)).is_dir():
            files += sorted(str(p.relative_to(out)) for p in (out / str(c)).iterdir()
                            if p.is_file() and not p.name.startswith("."))
    return files


def by_condition(rows: list[dict], correct: dict[str, bool]) -> list[tuple[str, int, float]]:
    """Accuracy on the realistic set per rendering condition: (condition, n, accuracy)."""
    groups: dict[str, list[bool]] = {}

    def add(key: str, row: dict) -> None:
        groups.setdefault(key, []).append(correct[row["file"]])

    for row in rows:
        add(f"format {row['format']}", row)
        add(f"side {'100-299' if int(row['side']) < 300 else '300-600'} px", row)
        add(f"rotation {'|a| >= 10' if abs(float(row['angle'])) >= 10 else '|a| < 10'} deg", row)
        strong = float(row["blur"]) >= 0.006 * int(row["side"])
        add(f"blur {'>= 0.6%' if strong else '< 0.6%'} of side", row)
        if row.get("lighting"):
            add(f"lighting {row['lighting']}", row)
            add(f"paper {row['paper']}", row)
        add(f"pen {row['pen']}", row)
    return [(k, len(v), float(np.mean(v))) for k, v in sorted(groups.items())]


def evaluate(ref: str, out: Path, models_dir: str | None, data_dir: str | None) -> dict:
    """The model on the realistic set and on the same digits straight from MNIST."""
    import torch

    from digitnet.data.datasets import TensorDataset
    from digitnet.data.mnist import load_mnist
    from digitnet.evaluation.datasets import load_eval_dataset
    from digitnet.evaluation.evaluate import evaluate_on
    from digitnet.store import load_model

    with open(out / "images.csv", newline="") as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    order = _folder_order(out)
    loaded = load_model(ref, models_dir)
    start = time.perf_counter()
    realistic = load_eval_dataset(str(out), data_dir)  # as `digitnet evaluate --dataset OUT`
    seconds = time.perf_counter() - start
    mnist = load_mnist(data_dir)
    index = torch.tensor([int(rows[f]["mnist_test_index"]) for f in order])
    labels = mnist.test_labels[index]
    clean = TensorDataset("same digits, MNIST 28x28", mnist.test_images[index], labels)
    assert torch.equal(labels, realistic.labels)
    naive_images = np.stack([naive_28x28(out / f) for f in order])
    naive = TensorDataset("naive", torch.from_numpy(naive_images), labels)
    results, right = {}, {}
    for name, dataset in (("clean", clean), ("realistic", realistic), ("naive", naive)):
        result, probs = evaluate_on(loaded, dataset)
        results[name] = {k: result[k] for k in ("n", "accuracy", "loss", "ece", "f1_macro")}
        results[name]["per_class_recall"] = [round(c["recall"], 4) for c in result["per_class"]]
        right[name] = probs.argmax(1) == labels
        if name == "realistic":
            preds = probs.argmax(1).tolist()
    correct = dict(zip(order, right["realistic"].tolist(), strict=True))
    mistakes = [dict(file=f, label=int(y), pred=p)
                for f, p, y in zip(order, preds, labels.tolist(), strict=True) if p != y]
    return dict(model=loaded.ref.label, folder=str(out), results=results, mistakes=mistakes,
                no_digit_found=int((realistic.images.flatten(1).amax(1) == 0).sum()),
                preprocess_seconds_per_image=seconds / len(order),
                both_right=int((right["clean"] & right["realistic"]).sum()),
                only_clean_right=int((right["clean"] & ~right["realistic"]).sum()),
                only_realistic_right=int((~right["clean"] & right["realistic"]).sum()),
                by_condition=by_condition(list(rows.values()), correct),
                machine=f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
                torch=torch.__version__, date=time.strftime("%Y-%m-%d"),
                command=" ".join(["python", *sys.argv]))


def to_markdown(report: dict) -> str:
    r = report["results"]
    lines = ["| test images | n | accuracy | loss | ECE | macro F1 |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for key, label in (("clean", "same MNIST digits, clean 28x28"),
                       ("realistic", "realistic set through `preprocess` (what evaluate does)"),
                       ("naive", "realistic set, naive resize to 28x28 and invert")):
        row = r[key]
        lines.append(f"| {label} | {row['n']} | {row['accuracy']:.2%} | {row['loss']:.4f} | "
                     f"{row['ece']:.4f} | {row['f1_macro']:.4f} |")
    lines += ["", "| condition (realistic set) | n | accuracy |", "| --- | ---: | ---: |"]
    lines += [f"| {k} | {n} | {acc:.2%} |" for k, n, acc in report["by_condition"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="render the realistic test set into OUT/<digit>/")
    p.add_argument("out", type=Path)
    p.add_argument("--n", type=int, default=1000, help="images, n // 10 per class (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--sheet", type=Path, help="also write a sample sheet PNG here")
    p.add_argument("--data-dir", default=None, help="MNIST folder (default: $DIGITNET_DATA_DIR)")
    p = sub.add_parser("evaluate", help="a model on OUT and on the same clean MNIST digits")
    p.add_argument("ref")
    p.add_argument("out", type=Path)
    p.add_argument("--models-dir", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args()
    if args.command == "build":
        if args.out.exists() and any(args.out.iterdir()):
            parser.error(f"{args.out} is not empty; build into a new folder")
        rows = build(args.out, args.n, args.seed, args.data_dir, args.sheet)
        print(f"wrote {len(rows)} images to {args.out}/<digit>/ and {args.out}/images.csv")
        return
    report = evaluate(args.ref, args.out, args.models_dir, args.data_dir)
    print(to_markdown(report))
    print(f"\nno digit found: {report['no_digit_found']} of {report['results']['realistic']['n']}; "
          f"right on both: {report['both_right']}, only clean: {report['only_clean_right']}, "
          f"only realistic: {report['only_realistic_right']}; preprocessing "
          f"{report['preprocess_seconds_per_image'] * 1000:.0f} ms/image")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
