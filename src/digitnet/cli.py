"""The `digitnet` command line: argparse wiring only; the work happens in the library modules."""

from __future__ import annotations

import argparse
import sys

from digitnet import __version__
from digitnet.errors import DigitnetError


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder with the four MNIST IDX files (default: $DIGITNET_DATA_DIR, else the user "
        "cache, downloaded once with checksums verified)",
    )


# ---------------------------------------------------------------------------------------- data
def cmd_data_verify(args: argparse.Namespace) -> int:
    from digitnet.data.mnist import resolve_data_dir, verify_mnist

    folder, source = resolve_data_dir(args.data_dir)
    print(f"MNIST folder: {folder} (chosen by {source})")
    rows = verify_mnist(args.data_dir)
    for row in rows:
        print(f"  {'ok  ' if row['ok'] else 'FAIL'} {row['file']}: {row['detail']}")
    bad = sum(not r["ok"] for r in rows)
    print("all four files verified" if not bad else f"{bad} of {len(rows)} files failed verification")
    return 1 if bad else 0


def cmd_data_explore(args: argparse.Namespace) -> int:
    from digitnet.data.explore import explore, format_summary

    def log(message: str) -> None:
        print(f"explore: {message}", file=sys.stderr)

    stats = explore(args.data_dir, args.out, args.val_size, log=log)
    print(format_summary(stats))
    return 0


def _add_data_commands(sub) -> None:
    data = sub.add_parser("data", help="MNIST files: verify, explore, ingest new data")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    p = data_sub.add_parser("verify", help="check the four MNIST files: format, counts, checksums")
    _add_data_dir(p)
    p.set_defaults(func=cmd_data_verify)

    p = data_sub.add_parser(
        "explore",
        help="class balance, pixel stats, ink per class, mean images, samples, duplicates",
    )
    _add_data_dir(p)
    p.add_argument(
        "--out",
        default="reports/explore",
        help="folder for the PNG plots, report.md and stats.json (default: reports/explore)",
    )
    p.add_argument(
        "--val-size",
        type=int,
        default=5000,  # the project's validation split, datasets.DEFAULT_VAL_SIZE
        help="validation images held out of the 60,000 training images (default: 5000)",
    )
    p.set_defaults(func=cmd_data_explore)

    _add_data_ingest_command(data_sub)


def cmd_data_ingest(args: argparse.Namespace) -> int:
    from digitnet.data.ingest import REPORT_FILE, format_ingest, ingest

    result = ingest(args.src, args.name, args.balance, args.min_per_class, args.datasets_dir,
                    progress=sys.stderr.isatty())
    print(format_ingest(result))
    if result.changed:
        print(f"wrote {result.folder}/ (IDX files, manifest.json, {REPORT_FILE})")
    if not result.folder.is_dir():
        print(f"digitnet: error: no image with a digit in {args.src}; dataset {args.name} "
              f"not created", file=sys.stderr)
        return 1
    return 0


def _add_data_ingest_command(data_sub) -> None:
    p = data_sub.add_parser(
        "ingest", help="add your own labelled images to a named dataset (preprocessed, deduplicated)"
    )
    p.add_argument("src", metavar="SRC", help="a folder with one subfolder per label "
                   "(SRC/7/*.png) or a CSV file of path,label rows (header optional, paths "
                   "relative to the CSV)")
    p.add_argument("--name", required=True, help="dataset name; ingesting into an existing "
                   "name adds to it")
    p.add_argument("--balance", choices=("none", "undersample", "oversample"), default=None,
                   help="class balance applied when the dataset is used for training: none, "
                   "undersample (at most the smallest class count per class) or oversample "
                   "(repeat up to the largest) (default: none, or the dataset's current policy)")
    p.add_argument("--min-per-class", type=int, default=10,  # ingest.DEFAULT_MIN_PER_CLASS
                   metavar="N", help="warn about classes with fewer examples (default: 10)")
    p.add_argument("--datasets-dir", default=None, metavar="DIR",
                   help="the data store (default: $DIGITNET_DATASETS_DIR, else ./datasets)")
    p.set_defaults(func=cmd_data_ingest)


# ------------------------------------------------------------------------------- train, models
def _add_models_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models-dir", default=None,
                   help="the model store (default: $DIGITNET_MODELS_DIR, else ./models)")


def cmd_train(args: argparse.Namespace) -> int:
    from digitnet.config import resolve_config
    from digitnet.fileio import atomic_write_json
    from digitnet.training.loop import fit

    if args.resume:
        ignored = [f"--{k.replace('_', '-')}" for k in _TRAIN_FIELDS if getattr(args, k) is not None]
        if ignored or args.config:
            raise DigitnetError(f"--resume continues a run with its own configuration; "
                                f"drop {', '.join(ignored + (['--config'] if args.config else []))}")
        summary = fit(None, args.data_dir, args.models_dir, resume=args.resume,
                      progress=not args.no_progress, device=args.device)
    else:
        cfg = resolve_config(args.config, **{k: getattr(args, k) for k in _TRAIN_FIELDS})
        summary = fit(cfg, args.data_dir, args.models_dir, progress=not args.no_progress,
                      device=args.device)
    if args.json:
        try:
            atomic_write_json(args.json, summary)
        except OSError as e:  # the run itself is complete and saved
            raise DigitnetError(f"{args.json}: cannot write the summary ({e.strerror or e}); "
                                f"the run {summary['ref']} is complete") from None
    print(summary["ref"])
    return 0


# CLI flags that map 1:1 onto TrainConfig fields (None = not given, keep the recipe's value)
_TRAIN_FIELDS = ("arch", "version", "epochs", "batch_size", "lr", "optimizer", "weight_decay",
                 "label_smoothing", "augment", "augment_severity", "augment_kind", "seed",
                 "val_size", "subset", "data", "class_weighting", "threads", "precision", "name",
                 "max_steps")


def _add_train_command(sub) -> None:
    from digitnet.config import AUGMENT_KINDS, MAX_THREADS, TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train a model (or --resume one) into the model store")
    p.add_argument("--arch", help=f"architecture name, e.g. cnn or cnn-v1 (default: {d.arch}); "
                   "see `digitnet models list`")
    p.add_argument("--version", type=int, help="architecture version (default: the newest)")
    p.add_argument("--epochs", type=int, help=f"epochs, 1-10000 (default: {d.epochs})")
    p.add_argument("--batch-size", type=int, help=f"batch size, 1-65536 (default: {d.batch_size})")
    p.add_argument("--lr", type=float, help=f"peak learning rate, finite and > 0 (default: {d.lr})")
    p.add_argument("--optimizer", choices=["sgd", "adamw"], help=f"optimizer (default: {d.optimizer})")
    p.add_argument("--weight-decay", type=float,
                   help=f"weight decay, finite and >= 0 (default: {d.weight_decay})")
    p.add_argument("--label-smoothing", type=float,
                   help=f"label smoothing, 0 <= S < 1 (default: {d.label_smoothing})")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help=f"augment training batches (default: {d.augment})")
    p.add_argument("--augment-severity", type=int,
                   help=f"augmentation strength 1-5 (default: {d.augment_severity})")
    p.add_argument("--augment-kind", choices=AUGMENT_KINDS,
                   help="warp: rotation, scale, shear, elastic, stroke, noise; shift: random whole-"
                   "pixel shifts of up to SEVERITY pixels, cheaper; handwriting: stroke width "
                   "(thin to very thick), aspect ratio, slant, binarisation, low resolution, the "
                   "ink refitted into the 20x20 box as new images are "
                   f"(default: {d.augment_kind})")
    p.add_argument("--seed", type=int, help=f"random seed, 0 to 2**63-1 (default: {d.seed})")
    p.add_argument("--val-size", type=int, help="validation images, 0 to fewer than the training "
                   f"images (default: {d.val_size})")
    p.add_argument("--subset", type=int,
                   help="train on a stratified subset of N >= 10 images (default: all)")
    p.add_argument("--data", action="append", help="training dataset, repeatable: mnist or an "
                   "ingested dataset name (default: mnist)")
    p.add_argument("--class-weighting", action=argparse.BooleanOptionalAction, default=None,
                   help="weight the loss by inverse class frequency (default: off)")
    p.add_argument("--threads", type=int,
                   help=f"torch threads, 1-{MAX_THREADS} (default: torch's choice)")
    p.add_argument("--device", default="auto", metavar="DEVICE",
                   help="where to train: auto (CUDA if present, else CPU), cpu, cuda, cuda:N or "
                   "mps; a run may be resumed on another device (default: auto)")
    p.add_argument("--precision", choices=["fp32", "bf16"],
                   help="bf16: autocast training to bfloat16, faster on CPUs with AVX512-BF16 "
                   f"(default: {d.precision})")
    p.add_argument("--name", help="run name: 1-128 letters, digits, '.', '_' or '-', starting "
                   "with a letter or digit, not 'latest' (default: a timestamp)")
    p.add_argument("--max-steps", type=int, help="stop each epoch after N >= 1 steps (smoke tests)")
    p.add_argument("--config", help="YAML or JSON recipe; flags given here override it")
    p.add_argument("--resume", metavar="REF",
                   help="continue a run from its last checkpoint (or REF@epoch-N, REF@best)")
    p.add_argument("--json", metavar="PATH", help="also write a summary (reference, metrics) here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_data_dir(p)
    _add_models_dir(p)
    p.set_defaults(func=cmd_train)


def cmd_models_list(args: argparse.Namespace) -> int:
    from digitnet.models import (DEFAULT_ARCH, count_flops, count_parameters, create_model,
                                 get_spec, list_specs)
    from digitnet.store import list_runs, models_root, read_metrics

    default_id = get_spec(DEFAULT_ARCH).arch_id  # `digitnet train` trains the newest version
    print(f"{'architecture':<14}{'params':>10}{'MFLOPs':>9}  description")
    for spec in list_specs():
        model = create_model(spec.name, spec.version)
        default = " (default)" if spec.arch_id == default_id else ""
        print(f"{spec.arch_id:<14}{count_parameters(model):>10,}{count_flops(model) / 1e6:>9.2f}  "
              f"{spec.description}{default}")
    runs = list_runs(args.models_dir)
    print(f"\ntrained models in {models_root(args.models_dir)}: {len(runs)}")
    for run in runs:
        rows = read_metrics(run)
        summary = run / "summary.json"
        status = "done" if summary.is_file() else f"{len(rows)} epochs, unfinished"
        val = f"val acc {rows[-1]['val_acc']:.2%}" if rows and rows[-1].get("val_acc") else ""
        print(f"  {run.parent.name}/{run.name:<24} {status:<22} {val}")
    return 0


def _add_models_commands(sub) -> None:
    p = sub.add_parser("models", help="architectures and trained models")
    models_sub = p.add_subparsers(dest="models_command", required=True, metavar="COMMAND")
    p = models_sub.add_parser("list", help="every architecture version and every trained model")
    _add_models_dir(p)
    p.set_defaults(func=cmd_models_list)


# ---------------------------------------------------------------------------------- preprocess
def cmd_preprocess(args: argparse.Namespace) -> int:
    from digitnet.data.preprocess import ImageError, output_stems, preprocess, save_result

    failed = []
    for path, stem in zip(args.images, output_stems(args.images)):
        try:
            result = preprocess(path, debug=args.debug)
        except ImageError as e:
            failed.append(path)
            print(f"FAIL   {e}", file=sys.stderr)
            continue
        written = save_result(result, args.out, stem)
        if result.digit_found:
            print(f"digit  {path} -> {written[0]} ({result.path}, {result.polarity})")
        else:
            print(f"blank  {path}: no digit found, nothing written ({result.path}: {result.reason})")
    if args.debug:
        print(f"stages of each image: {args.out}/debug/<name>/")
    print(f"{len(args.images) - len(failed)} of {len(args.images)} images processed"
          + (f"; {len(failed)} could not be read: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def _add_preprocess_command(sub) -> None:
    p = sub.add_parser("preprocess", help="turn new images into 28x28 MNIST-format digits")
    p.add_argument("images", nargs="+", metavar="IMG",
                   help="image files (PNG, JPEG, BMP, GIF, TIFF or WebP, any size)")
    p.add_argument("--out", required=True, help="folder for the 28x28 <name>.png outputs")
    p.add_argument("--debug", action="store_true",
                   help="also write every stage as PNG into OUT/debug/<name>/ (default: off)")
    p.set_defaults(func=cmd_preprocess)


# ---------------------------------------------------------------------------- evaluate, compare
def _add_datasets(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", action="append", metavar="NAME",
                   help="test dataset, repeatable: mnist-test (default), mnist-val, "
                   "mnist-test-augmented[:SEVERITY], a folder DIR/<digit>/*.png, IMAGES,LABELS "
                   "(two IDX files) or an ingested dataset name")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from digitnet.evaluation.datasets import DEFAULT_DATASET
    from digitnet.evaluation.evaluate import evaluate_model, format_results
    from digitnet.fileio import atomic_write_json

    from digitnet.calibration import calibration_from_dict

    results = evaluate_model(args.ref, args.dataset or [DEFAULT_DATASET], args.data_dir,
                             args.models_dir, args.out)
    calibration = calibration_from_dict(results[0]["calibration"], args.ref)
    print(f"model {results[0]['model']}: probabilities {calibration.describe()}")
    print(format_results(results))
    if args.json:
        atomic_write_json(args.json, results)
        print(f"wrote {args.json}")
    if args.out:
        print(f"wrote plots and {args.out}/report.md")
    return 0


def _add_evaluate_command(sub) -> None:
    p = sub.add_parser("evaluate", help="metrics, plots and a report for a saved model or checkpoint")
    p.add_argument("ref", metavar="REF", help="model reference: ARCH-vN/RUN, ARCH-vN/latest, "
                   "...@best, ...@epoch-N, or a path to a model or checkpoint folder")
    _add_datasets(p)
    p.add_argument("--json", metavar="PATH", help="write one result object per dataset here")
    p.add_argument("--out", metavar="DIR", help="write plots and report.md into DIR")
    _add_data_dir(p)
    _add_models_dir(p)
    p.set_defaults(func=cmd_evaluate)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from digitnet.calibration import calibration_from_dict
    from digitnet.evaluation.calibrate import calibrate_model

    info = calibrate_model(args.ref, args.data_dir, args.models_dir)
    before = calibration_from_dict(info["before"], args.ref)
    after = calibration_from_dict(info["after"], args.ref)
    print(f"model {info['model']}")
    print(f"  before: {before.describe()}; validation ECE {info['val_ece_before']:.4f}")
    print(f"  now:    {after.describe()}; validation ECE {info['val_ece_after']:.4f}")
    return 0


def _add_calibrate_command(sub) -> None:
    p = sub.add_parser("calibrate", help="fit and store the temperature of a model saved without "
                       "one (on its validation split; the weights are not changed)")
    p.add_argument("ref", metavar="REF", help="model reference: ARCH-vN/RUN, ...@best, "
                   "...@epoch-N, or a path to a model or checkpoint folder")
    _add_data_dir(p)
    _add_models_dir(p)
    p.set_defaults(func=cmd_calibrate)


def cmd_compare(args: argparse.Namespace) -> int:
    from digitnet.evaluation.compare import compare, to_markdown, write_comparison
    from digitnet.evaluation.datasets import DEFAULT_DATASET
    from digitnet.store import expand_refs

    rows = compare(expand_refs(args.refs, args.models_dir), args.dataset or [DEFAULT_DATASET],
                   args.data_dir, args.models_dir)
    print(to_markdown(rows), end="")
    for path in write_comparison(rows, args.out, args.metric):
        print(f"wrote {path}")
    return 0


def _add_compare_command(sub) -> None:
    p = sub.add_parser("compare", help="compare models and checkpoints across test datasets")
    p.add_argument("refs", nargs="+", metavar="REF",
                   help="model references; REF@all stands for every epoch checkpoint of a run; a "
                        "quoted glob such as 'cnn-v1/*' names every matching run")
    _add_datasets(p)
    p.add_argument("--out", default="reports/compare", metavar="DIR",
                   help="folder for comparison.csv/.md/.json/.png (default: reports/compare)")
    p.add_argument("--metric", default="accuracy", help="metric of the bar chart (default: accuracy)")
    _add_data_dir(p)
    _add_models_dir(p)
    p.set_defaults(func=cmd_compare)


# ------------------------------------------------------------------------------------ ensemble
def cmd_ensemble(args: argparse.Namespace) -> int:
    from digitnet.evaluation.datasets import DEFAULT_DATASET
    from digitnet.evaluation.ensemble import evaluate_ensemble
    from digitnet.evaluation.evaluate import format_results
    from digitnet.fileio import atomic_write_json
    from digitnet.store import expand_refs

    refs = expand_refs(args.refs, args.models_dir)
    results = evaluate_ensemble(refs, args.dataset or [DEFAULT_DATASET], args.data_dir,
                                args.models_dir)
    for r in results:
        members = "  ".join(f"{m['model']} {m['accuracy']:.2%}" for m in r["members"])
        print(f"{r['dataset']}: members {members}")
    print(f"ensemble of {len(refs)} (mean probabilities)")
    print(format_results(results))
    if args.json:
        atomic_write_json(args.json, results)
        print(f"wrote {args.json}")
    return 0


def _add_ensemble_command(sub) -> None:
    p = sub.add_parser("ensemble", help="evaluate the average of several models' probabilities")
    p.add_argument("refs", nargs="+", metavar="REF",
                   help="model references, as for evaluate; a quoted glob such as 'wide-v1/ens-*' "
                        "names every matching run")
    _add_datasets(p)
    p.add_argument("--json", metavar="PATH", help="write one result object per dataset here")
    _add_data_dir(p)
    _add_models_dir(p)
    p.set_defaults(func=cmd_ensemble)


# ------------------------------------------------------------------------------------- predict
def cmd_predict(args: argparse.Namespace) -> int:
    import json

    from digitnet.deploy.predict import format_prediction, predict_files, summarize, to_jsonable
    from digitnet.store import load_model

    loaded = load_model(args.ref, args.models_dir)
    entries = predict_files(loaded, args.inputs, args.top_k)
    if args.json:
        try:
            text = json.dumps(to_jsonable(entries), indent=2, allow_nan=False)
        except ValueError:  # NaN is not JSON; finite weights can still overflow to it
            raise DigitnetError(f"{loaded.ref.label}: the model gave NaN or infinite "
                                f"probabilities; its weights cannot predict") from None
        print(text)
    else:
        for entry in entries:
            print(format_prediction(entry))
    print(f"{loaded.ref.label}: {summarize(entries)}", file=sys.stderr)
    return 1 if any(e["error"] for e in entries) else 0


def _add_predict_command(sub) -> None:
    p = sub.add_parser("predict", help="predict the digit in new images (files, folders, globs)")
    p.add_argument("ref", metavar="REF", help="model reference: ARCH-vN/RUN, ARCH-vN/latest, "
                   "latest, ...@best, or a path to a model or checkpoint folder")
    p.add_argument("inputs", nargs="+", metavar="PATH",
                   help="image files, folders (every image file inside, recursively, sorted) or "
                   "glob patterns such as 'scans/*.jpg' (expanded here too)")
    p.add_argument("--top-k", type=int, default=3, metavar="K",  # predict.DEFAULT_TOP_K
                   help="list the K most probable labels, 1-10 (default: 3)")
    p.add_argument("--json", action="store_true",
                   help="print a JSON list, one object per file (default: one text line per file)")
    _add_models_dir(p)
    p.set_defaults(func=cmd_predict)


# --------------------------------------------------------------------------------------- serve
def cmd_serve(args: argparse.Namespace) -> int:
    from digitnet.deploy.serve import (
        bind_socket,
        check_limits,
        check_port,
        check_serve_dependencies,
        create_app,
        serve,
        url_of,
    )
    from digitnet.store import load_model

    check_serve_dependencies()
    check_port(args.port)  # every flag before the model is loaded
    check_limits(args.max_upload_mb, args.max_megapixels, args.max_decodes, args.upload_timeout)
    loaded = load_model(args.ref, args.models_dir)  # a bad reference fails before anything listens
    app = create_app(loaded, args.max_upload_mb, args.max_megapixels, args.max_decodes,
                     args.upload_timeout)
    sock = bind_socket(args.host, args.port)
    print(f"serving {loaded.ref.label} at {url_of(sock)} (Ctrl+C to stop)", flush=True)
    serve(app, sock)
    return 0


def _add_serve_command(sub) -> None:
    p = sub.add_parser("serve", help="web demo (draw or upload a digit) and JSON API for "
                       "predictions; needs pip install 'digitnet[serve]'")
    p.add_argument("ref", metavar="REF", help="model reference: ARCH-vN/RUN, ARCH-vN/latest, "
                   "latest, ...@best, a model or checkpoint folder, or hf://USER/NAME")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 for every network interface "
                   "(default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000,
                   help="port, 0 to 65535; 0 picks a free one (default: 8000)")
    p.add_argument("--max-upload-mb", type=float, default=10.0,  # serve.DEFAULT_MAX_UPLOAD_MB
                   metavar="MB",
                   help="largest image file accepted; larger uploads get HTTP 413 (default: 10)")
    p.add_argument("--max-megapixels", type=float, default=16.0,  # serve.DEFAULT_MAX_MEGAPIXELS
                   metavar="MP",
                   help="largest image accepted, in millions of pixels, read from the file's "
                   "header before decoding; larger ones get HTTP 413 (default: 16; at most 40)")
    p.add_argument("--max-decodes", type=int, default=2,  # serve.DEFAULT_MAX_DECODES
                   metavar="N",
                   help="uploads decoded and predicted at once; one that waits over 10 s for a "
                   "slot gets HTTP 503 with Retry-After (default: 2; 1-64)")
    p.add_argument("--upload-timeout", type=float, default=60.0,  # serve.DEFAULT_UPLOAD_TIMEOUT_S
                   metavar="S",
                   help="seconds a request body may take to arrive; slower ones get HTTP 408 "
                   "(default: 60)")
    _add_models_dir(p)
    p.set_defaults(func=cmd_serve)


# ------------------------------------------------------------------------------ export, publish
def _print_export(info: dict) -> None:
    from digitnet.deploy.export import format_size
    from digitnet.evaluation.evaluate import format_results

    print(format_results(info["results"]))
    for name, size in info["files"].items():
        print(f"  {name:<22}{format_size(size):>10}")
    onnx = info["config"].get("onnx")
    if onnx:
        print(f"ONNX parity: largest |logit difference| {onnx['max_abs_diff']:.2e} on "
              f"{onnx['parity_images']} images (ONNX Runtime against PyTorch)")


def cmd_export(args: argparse.Namespace) -> int:
    from digitnet.deploy.export import export_model

    info = export_model(args.ref, args.out, args.data_dir, args.models_dir, onnx=args.onnx,
                        repo_id=args.repo_id)
    _print_export(info)
    print(f"wrote {info['out']} (model card: {info['out'] / 'README.md'})")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from digitnet.deploy.publish import PublishOptions, format_plan, publish

    def log(message: str) -> None:
        print(f"publish: {message}", file=sys.stderr)

    options = PublishOptions(repo_id=args.repo_id, out=args.out, via=args.via,
                             remote=args.remote, dry_run=args.dry_run, onnx=args.onnx,
                             data_dir=args.data_dir, models_dir=args.models_dir)
    info = publish(args.ref, options, log=log)
    print(f"{'would publish' if info['dry_run'] else 'published'} to {info['url']}: "
          f"\"{info['message']}\"")
    print(format_plan(info["plan"]))
    if not info["dry_run"]:
        print(f"commit {info['commit']}" + ("" if info["pushed"] else " (already there)"))
    return 0


def _add_export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="REF", help="model reference: ARCH-vN/RUN, ARCH-vN/latest, "
                   "latest, ...@best, ...@epoch-N, a model folder or hf://USER/NAME")
    p.add_argument("--out", default="huggingface", metavar="DIR",
                   help="the exported folder, the Hub repository's mirror (default: huggingface)")
    p.add_argument("--onnx", action="store_true",
                   help="also write model.onnx, checked against PyTorch (default: off)")
    _add_data_dir(p)
    _add_models_dir(p)


def _add_export_commands(sub) -> None:
    p = sub.add_parser("export", help="write a Hugging Face Hub folder: weights, config, model "
                       "card with evaluation results, optional ONNX")
    _add_export_args(p)
    p.add_argument("--repo-id", metavar="USER/NAME",
                   help="Hub repository named in the card's loading example "
                   "(default: the placeholder USER/digitnet-ARCH-vN)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("publish", help="export into the mirror folder and publish it to the "
                       "Hugging Face Hub (git + LFS, or the Hub API)")
    _add_export_args(p)
    p.add_argument("--repo-id", required=True, metavar="USER/NAME",
                   help="Hub repository (created if missing)")
    p.add_argument("--via", choices=["git", "api"], default="git",
                   help="git: commit in the mirror and push with git LFS; api: upload with "
                   "huggingface_hub (default: git)")
    p.add_argument("--remote", metavar="URL",
                   help="push to this git remote instead of the Hub, e.g. file:///srv/model.git")
    p.add_argument("--dry-run", action="store_true",
                   help="list the files that would be committed or uploaded; change nothing")
    p.set_defaults(func=cmd_publish)


# ---------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digitnet",
        description="Create, train, evaluate and deploy CNNs that read handwritten digits.",
    )
    parser.add_argument("--version", action="version", version=f"digitnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data_commands(sub)
    _add_train_command(sub)
    _add_models_commands(sub)
    _add_evaluate_command(sub)
    _add_calibrate_command(sub)
    _add_compare_command(sub)
    _add_ensemble_command(sub)
    _add_preprocess_command(sub)
    _add_predict_command(sub)
    _add_serve_command(sub)
    _add_export_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except DigitnetError as e:
        print(f"digitnet: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("digitnet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        sys.stderr.close()
        return 0
