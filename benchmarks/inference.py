"""Inference speed of a trained model on this CPU: batch throughput and single-image latency for
each execution path, as a fraction of the machine's measured FP32 peak, with prediction parity.

    python benchmarks/inference.py --model cnn-v1/latest --models-dir models \
        --data-dir ../shared/datasets/mnist --out benchmarks/results/inference.json

Paths: PyTorch eager (as `LoadedModel.logits` runs it), eager with batch norm folded and
channels-last weights, TorchScript traced + frozen (`optimize_for_inference`), TorchScript with
`torch.jit.optimize_for_inference` (oneDNN), torch.compile (inductor), ONNX Runtime FP32 and
ONNX Runtime int8 (static QDQ quantisation calibrated on training images), each when available.
The peak is the best of several large float32 matrix products (torch.mm), in GFLOP/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from digitnet.data.datasets import load_splits, to_model_input
from digitnet.deploy.fast import fold_batch_norm, onnxruntime_available, optimize_for_inference
from digitnet.models import count_flops, create_model
from digitnet.store import load_model

BATCH = 1000  # images per forward pass for throughput
LATENCY_CALLS = 500  # single-image forward passes per latency measurement
REPEATS = 5  # throughput passes over the test set; the median is reported


def measure_peak_gflops(threads: int, size: int = 2048, repeats: int = 10) -> float:
    """Best GFLOP/s of float32 `size`x`size` matrix products (2 n^3 FLOPs each)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def _torch_runner(module):
    @torch.no_grad()
    def run(x: torch.Tensor) -> np.ndarray:
        return module(x).numpy()
    return run


def build_paths(model: torch.nn.Module, calibration: torch.Tensor, compile_model: bool,
                setup_seconds: dict) -> dict:
    """name -> function mapping normalised (B, 1, 28, 28) float32 to logits (B, 10) as numpy.

    `setup_seconds` receives how long preparing each path of `optimize_for_inference` took.
    """
    paths = {}
    for name, build in (("eager", lambda: model.eval()),
                        ("eager, BN folded, channels-last",
                         lambda: optimize_for_inference(model, script=False)),
                        ("TorchScript frozen (optimize_for_inference)",
                         lambda: optimize_for_inference(model)),
                        *([("ONNX Runtime FP32 (optimize_for_inference, backend=onnxruntime)",
                            lambda: optimize_for_inference(model, backend="onnxruntime"))]
                          if onnxruntime_available() else [])):
        start = time.perf_counter()
        paths[name] = _torch_runner(build())
        setup_seconds[name] = time.perf_counter() - start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.freeze(torch.jit.trace(fold_batch_norm(model), calibration[:2]))
        paths["TorchScript + jit.optimize_for_inference (oneDNN)"] = _torch_runner(
            torch.jit.optimize_for_inference(traced))
    if compile_model:
        try:
            start = time.perf_counter()
            compiled = torch.compile(fold_batch_norm(model), dynamic=False)
            with torch.no_grad():
                compiled(calibration[:BATCH])
                compiled(calibration[:1])
            paths["torch.compile (inductor)"] = _torch_runner(compiled)
            setup_seconds["torch.compile (inductor)"] = time.perf_counter() - start
        except Exception as e:  # noqa: BLE001 (a missing compiler must not stop the benchmark)
            print(f"torch.compile unavailable: {e}", file=sys.stderr)
    paths.update(_onnx_paths(model, calibration))
    return paths


def _onnx_paths(model: torch.nn.Module, calibration: torch.Tensor) -> dict:
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as e:
        print(f"ONNX Runtime paths skipped: {e}", file=sys.stderr)
        return {}
    from digitnet.deploy.onnx import export_onnx

    work = Path(tempfile.mkdtemp(prefix="digitnet-onnx-"))
    fp32, pre, int8 = work / "model.onnx", work / "pre.onnx", work / "int8.onnx"
    export_onnx(model, fp32, calibration[:64])

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"images": calibration[i:i + 100].numpy()}
                                 for i in range(0, len(calibration), 100)])

        def get_next(self):
            return next(self.batches, None)

    quant_pre_process(str(fp32), str(pre))
    quantize_static(str(pre), str(int8), Reader(), activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(int8), options, providers=["CPUExecutionProvider"])
    return {"ONNX Runtime int8 (static QDQ)":
            lambda x: session.run(["logits"], {"images": x.numpy()})[0]}


def measure_throughput(run, images: torch.Tensor) -> float:
    """Median images/s over REPEATS passes over `images` in batches of BATCH."""
    run(images[:BATCH])
    rates = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        for i in range(0, len(images), BATCH):
            run(images[i:i + BATCH])
        rates.append(len(images) / (time.perf_counter() - start))
    return statistics.median(rates)


def measure_latency(run, images: torch.Tensor) -> dict:
    """p50 and p99 milliseconds of single-image calls."""
    for i in range(20):
        run(images[i:i + 1])
    times = []
    for i in range(LATENCY_CALLS):
        x = images[i:i + 1]
        start = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - start) * 1000)
    q = np.percentile(times, [50, 99])
    return dict(p50_ms=float(q[0]), p99_ms=float(q[1]))


def load_subject(ref: str | None, models_dir: str | None, arch: str):
    if ref:
        loaded = load_model(ref, models_dir)
        return loaded.model.eval(), loaded.data_config, loaded.ref.label
    torch.manual_seed(0)
    return create_model(arch).eval(), dict(mean=0.1307, std=0.3081), f"{arch} (random weights)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None,
                        help="model reference (default: random cnn weights)")
    parser.add_argument("--arch", default="cnn", help="architecture when no --model (default: cnn)")
    parser.add_argument("--models-dir", default=None)
    parser.add_argument("--data-dir", default="../shared/datasets/mnist")
    parser.add_argument("--threads", type=int, default=2, help="threads for batches (default: 2)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--out", required=True, help="JSON file for the results")
    args = parser.parse_args()

    model, data_config, label = load_subject(args.model, args.models_dir, args.arch)
    splits = load_splits(args.data_dir)
    test = splits["test"]
    images = to_model_input(test.images, data_config["mean"], data_config["std"])
    calibration = to_model_input(splits["train"].images[:BATCH], data_config["mean"],
                                 data_config["std"])
    peaks = {t: measure_peak_gflops(t) for t in sorted({1, args.threads})}
    torch.set_num_threads(args.threads)
    flops = count_flops(model)
    setup = {}
    paths = build_paths(model, calibration, not args.no_compile, setup)
    reference = paths["eager"](images)
    rows = []
    for name, run in paths.items():
        torch.set_num_threads(args.threads)
        logits = np.concatenate([run(images[i:i + BATCH]) for i in range(0, len(images), BATCH)])
        rate = measure_throughput(run, images)
        latency = {f"threads_{args.threads}": measure_latency(run, images)}
        if args.threads != 1 and not name.startswith("ONNX"):  # ONNX sessions fix their threads
            torch.set_num_threads(1)
            latency["threads_1"] = measure_latency(run, images)
        row = dict(path=name, setup_seconds=setup.get(name), images_per_s=rate,
                   gflops=rate * flops / 1e9,
                   fraction_of_peak=rate * flops / 1e9 / peaks[args.threads], latency=latency,
                   max_abs_logit_diff=float(np.abs(logits - reference).max()),
                   same_argmax=float((logits.argmax(1) == reference.argmax(1)).mean()),
                   test_acc=float((logits.argmax(1) == test.labels.numpy()).mean()))
        rows.append(row)
        lat = latency[f"threads_{args.threads}"]
        print(f"{name:52s} {rate:9,.0f} img/s {row['fraction_of_peak']:6.1%} of peak  "
              f"p50 {lat['p50_ms']:.3f} ms p99 {lat['p99_ms']:.3f} ms  "
              f"argmax same {row['same_argmax']:.4%}  "
              f"max|dlogit| {row['max_abs_logit_diff']:.1e}", flush=True)
    result = dict(model=label, flops_per_image=flops, threads=args.threads, batch=BATCH,
                  peak_gflops={str(k): v for k, v in peaks.items()}, paths=rows,
                  machine=(f"{platform.machine()}, {os.cpu_count()} cores, "
                           f"torch {torch.__version__}"),
                  date=time.strftime("%Y-%m-%d %H:%M"), load_average=os.getloadavg(),
                  command=" ".join([Path(sys.executable).name, *sys.argv]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"peak {peaks} GFLOP/s; {flops / 1e6:.1f} MFLOP per image; wrote {args.out}")


if __name__ == "__main__":
    main()
