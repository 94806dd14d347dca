"""Byte-for-byte identity of new-image preprocessing between this tree's `src/` and a baseline's:
the proof that a speed change changed nothing.

    python benchmarks/preprocess_identity.py --baseline-src /tmp/old/src \
        --data-dir ../shared/datasets/mnist [--per-kind 24] [--model fast-v2/RUN --models-dir DIR]

Renders MNIST validation and training digits as every rendering of the real-world benchmark
(benchmarks/renderings.py, two rendering seeds, the European-style 1 too), plus 12-megapixel
JPEGs of two photos, the same renderings rescaled to other sizes, blank and noise images and
arrays of each dtype and channel layout; then preprocesses every input in one process per tree
and compares, input by input, everything `preprocess` returns: the 28x28 image's bytes,
digit_found, reason, path and polarity, and, with `debug=True` on a subset, every stage picture.
With --model, `predict_images` on all of them must give the same entries too. Exits 1 on any
difference. `--pin FILE` writes the outputs' digests for tests/test_preprocess_identity.py.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
DEBUG_EVERY = 4  # every this-th input is also preprocessed with debug=True (stages compared)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, "PNG")
    return buffer.getvalue()


def _extra_inputs(images: np.ndarray, index: np.ndarray, R) -> list[tuple[str, bytes]]:
    """Sizes, formats and odd cases the renderings do not cover."""
    out = []
    rng = np.random.default_rng(1234)
    for name, rendering in (("12mp-photo", "photo-shadow"), ("12mp-even", "photo-ballpoint"),
                            ("12mp-marker", "photo-marker")):
        for k in (0, 7):
            data = R.render_one(rendering, images[k], int(index[k]))[0]
            photo = Image.open(io.BytesIO(data)).convert("RGB").resize((4032, 3024),
                                                                       Image.Resampling.BICUBIC)
            buffer = io.BytesIO()
            photo.save(buffer, "JPEG", quality=90)
            out.append((f"{name}-{k}.jpg", buffer.getvalue()))
    sizes = [(9, 9), (12, 20), (16, 16), (24, 24), (28, 28), (40, 30), (64, 64), (100, 70),
             (129, 127), (280, 280), (300, 500), (1000, 800), (2500, 1800)]
    kinds = ["scan16-grey", "scan32-binary", "drawing-light", "drawing-dark", "photo-pencil",
             "photo-grid", "drawing-transparent"]
    for j, (w, h) in enumerate(sizes):
        for kind in kinds[j % 3:: 3]:
            k = (3 * j + len(kind)) % len(images)
            data = R.render_one(kind, images[k], int(index[k]))[0]
            img = Image.open(io.BytesIO(data))
            img = img.convert("RGBA" if img.mode in ("RGBA", "LA", "PA") else "RGB")
            out.append((f"resized-{kind}-{w}x{h}.png",
                        _png(np.asarray(img.resize((w, h), Image.Resampling.BILINEAR)))))
    for w, h in ((1, 1), (3, 5), (28, 28), (16, 16), (200, 150), (2100, 900)):
        for level in (0, 128, 255):
            out.append((f"flat-{level}-{w}x{h}.png", _png(np.full((h, w), level, np.uint8))))
        noise = rng.integers(0, 256, (h, w)).astype(np.uint8)
        out.append((f"noise-{w}x{h}.png", _png(noise)))
        faint = np.clip(200 + rng.normal(0, 4, (h, w)), 0, 255).astype(np.uint8)
        out.append((f"faint-noise-{w}x{h}.png", _png(faint)))
    for k in range(10):  # MNIST digits shifted, scaled, inverted, with a speck: near-MNIST format
        digit = images[k]
        out.append((f"mnist-inverted-{k}.png", _png(255 - digit)))
        out.append((f"mnist-shifted-{k}.png", _png(np.roll(digit, (k % 5) - 2, axis=k % 2))))
        speck = digit.copy()
        speck[k, 27 - k] = 255
        out.append((f"mnist-speck-{k}.png", _png(speck)))
        out.append((f"mnist-small-{k}.png", _png(np.asarray(
            Image.fromarray(digit).resize((16 + k, 16 + k), Image.Resampling.BILINEAR)))))
    return out


def _array_inputs(inputs: list[tuple[str, bytes]]) -> list[tuple[str, dict]]:
    """Some of the PNG inputs again as numpy arrays of other dtypes and channel layouts."""
    out = []
    for name, data in inputs[::9]:
        if not name.endswith(".png"):
            continue
        img = Image.open(io.BytesIO(data))
        gray = np.asarray(img.convert("L"))
        rgba = np.asarray(img.convert("RGBA"))
        out.append((f"{name}:u8", dict(array=gray)))
        out.append((f"{name}:u16", dict(array=gray.astype(np.uint16) * 257)))
        out.append((f"{name}:f32", dict(array=gray.astype(np.float32) / 255)))
        out.append((f"{name}:f64", dict(array=gray.astype(np.float64) / 255)))
        out.append((f"{name}:rgb", dict(array=rgba[..., :3].copy())))
        out.append((f"{name}:rgba", dict(array=rgba)))
        out.append((f"{name}:bool", dict(array=gray > 127)))
    return out


def make_inputs(work: Path, data_dir: str | None, per_kind: int) -> Path:
    """Write every input under `work`; returns the manifest (a JSON list of [name, file])."""
    sys.path.insert(0, str(HERE))
    import renderings as R
    from digitnet.data.mnist import load_mnist

    val, _, val_index = R.pick_digits("val", max(1, per_kind // 10), 0, data_dir)
    mnist = load_mnist(data_dir)
    rng = np.random.default_rng(2026)
    train_index = np.sort(rng.choice(len(mnist.train_labels), per_kind, replace=False))
    train = mnist.train_images.numpy()[train_index]
    inputs: list[tuple[str, bytes]] = []
    names = [*R.RENDERINGS, R.EURO_ONE.name]
    for name in names:
        digits = [("val", d, i) for d, i in zip(val, val_index, strict=True)]
        digits += [("train", d, i) for d, i in zip(train, train_index, strict=True)]
        for n, (split, digit, i) in enumerate(digits[: 2 * per_kind]):
            seed = n % 2
            data, ext, _ = R.render_one(name, digit, int(i), seed)
            inputs.append((f"{name}/{split}-{int(i)}-s{seed}.{ext}", data))
    inputs += _extra_inputs(val, val_index, R)
    arrays = _array_inputs(inputs)
    manifest = []
    for k, (name, data) in enumerate(inputs):
        path = work / f"{k:05d}{Path(name).suffix}"
        path.write_bytes(data)
        manifest.append([name, str(path)])
    for k, (name, item) in enumerate(arrays):
        path = work / f"array-{k:05d}.npy"
        np.save(path, item["array"])
        manifest.append([name, str(path)])
    (work / "manifest.json").write_text(json.dumps(manifest))
    return work / "manifest.json"


def _describe(result) -> dict:
    out = dict(image=_digest(result.image.tobytes()), shape=list(result.image.shape),
               dtype=str(result.image.dtype), digit_found=bool(result.digit_found),
               reason=result.reason, path=result.path, polarity=result.polarity,
               source=result.source if not result.source.startswith("/") else "<path>")
    return out


def worker(args) -> None:
    """Preprocess every input with this process's digitnet; print one JSON object per line."""
    import torch

    from digitnet.data.preprocess import ImageError, preprocess

    torch.set_num_threads(1)
    manifest = json.loads(Path(args.manifest).read_text())
    outputs, started = {}, time.perf_counter()
    loaded_inputs = []
    for k, (name, file) in enumerate(manifest):
        image = np.load(file) if file.endswith(".npy") else Path(file).read_bytes()
        loaded_inputs.append(image)
        try:
            entry = _describe(preprocess(image))
        except ImageError as e:
            entry = dict(error=f"{type(e).__name__}: {e}")
        if k % DEBUG_EVERY == 0 and "error" not in entry:
            debugged = preprocess(image, debug=True)
            entry["debug"] = _describe(debugged)
            entry["stages"] = {s: [_digest(p.tobytes()), list(p.shape), str(p.dtype)]
                               for s, p in debugged.stages.items()}
        outputs[name] = entry
    seconds = time.perf_counter() - started
    predictions = None
    if args.model:
        from digitnet.deploy.predict import predict_images, to_jsonable
        from digitnet.store import load_model

        loaded = load_model(args.model, args.models_dir)
        names = [name for name, _ in manifest]
        predictions = to_jsonable(predict_images(loaded, loaded_inputs, names=names))
    print(json.dumps(dict(outputs=outputs, predictions=predictions, seconds=seconds)))


def run_tree(src: str, manifest: Path, args) -> dict:
    from trees import run_worker

    worker_args = ["--manifest", str(manifest)]
    if args.model:
        worker_args += ["--model", args.model]
    if args.models_dir:
        worker_args += ["--models-dir", args.models_dir]
    return run_worker(src, __file__, worker_args)


def compare(this: dict, baseline: dict) -> list[str]:
    """Every input whose outputs differ, with what differs."""
    differences = []
    if this["outputs"].keys() != baseline["outputs"].keys():
        differences.append("the trees saw different inputs")
    for name, ours in this["outputs"].items():
        theirs = baseline["outputs"].get(name)
        if ours != theirs:
            keys = sorted(k for k in set(ours) | set(theirs or {})
                          if ours.get(k) != (theirs or {}).get(k))
            differences.append(f"{name}: {', '.join(keys)}")
    if this["predictions"] != baseline["predictions"]:
        a, b = this["predictions"] or [], baseline["predictions"] or []
        differing = [x["file"] for x, y in zip(a, b, strict=False) if x != y]
        differences.append(f"predict_images differs on {len(differing)}: {differing[:5]}")
    return differences


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline-src", default=None, help="the other tree's src/ to compare with")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--per-kind", type=int, default=24,
                   help="inputs per rendering and seed: half validation, half training digits")
    p.add_argument("--model", default=None, help="also compare predict_images with this model")
    p.add_argument("--models-dir", default=None)
    p.add_argument("--inputs-dir", default=None, help="keep the rendered inputs here")
    p.add_argument("--pin", default=None, help="write this tree's digests to this JSON file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--manifest", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    work = Path(args.inputs_dir or tempfile.mkdtemp(prefix="digitnet-identity-"))
    manifest = work / "manifest.json"
    if not manifest.exists():
        work.mkdir(parents=True, exist_ok=True)
        manifest = make_inputs(work, args.data_dir, args.per_kind)
    n = len(json.loads(manifest.read_text()))
    this = run_tree(str(HERE.parent / "src"), manifest, args)
    print(f"this tree: {n} inputs in {this['seconds']:.1f} s")
    if args.pin:
        Path(args.pin).write_text(json.dumps(this["outputs"], indent=0, sort_keys=True) + "\n")
    if not args.baseline_src:
        return
    baseline = run_tree(args.baseline_src, manifest, args)
    print(f"baseline:  {n} inputs in {baseline['seconds']:.1f} s")
    differences = compare(this, baseline)
    kinds: dict[str, int] = {}
    for name in this["outputs"]:
        kind = name.split("/")[0] if "/" in name else name.split("-")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    print("inputs by kind: " + ", ".join(f"{k} {v}" for k, v in kinds.items()))
    staged = sum("stages" in e for e in this["outputs"].values())
    print(f"{n} inputs compared ({staged} with debug stages"
          f"{', and predict_images' if args.model else ''}): "
          f"{'all identical' if not differences else f'{len(differences)} differ'}")
    for line in differences[:50]:
        print("  " + line)
    if differences:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
