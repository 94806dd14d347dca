"""`digitnet predict`, `serve`, `export` and `publish`: the deployment pipeline's commands."""

from __future__ import annotations

import argparse
import sys

from digitnet.cli.options import add_data_dir, add_models_dir
from digitnet.errors import DigitnetError


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


def cmd_serve(args: argparse.Namespace) -> int:
    from digitnet.deploy.serve import create_app
    from digitnet.deploy.serve_limits import check_limits
    from digitnet.deploy.server import (
        bind_socket,
        check_port,
        check_serve_dependencies,
        check_threads,
        serve,
        url_of,
    )
    from digitnet.store import load_model

    check_serve_dependencies()
    check_port(args.port)  # every flag before the model is loaded
    check_threads(args.threads)
    check_limits(args.max_upload_mb, args.max_megapixels, args.max_decodes, args.upload_timeout)
    loaded = load_model(args.ref, args.models_dir)  # a bad reference fails before anything listens
    app = create_app(loaded, args.max_upload_mb, args.max_megapixels, args.max_decodes,
                     args.upload_timeout)
    sock = bind_socket(args.host, args.port)
    print(f"serving {loaded.ref.label} at {url_of(sock)} (Ctrl+C to stop)", flush=True)
    serve(app, sock, threads=args.threads)
    return 0


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


def add_commands(sub) -> None:
    """predict, serve, export, publish (in this order in `digitnet --help`)."""
    _add_predict(sub)
    _add_serve(sub)
    _add_export_and_publish(sub)


def _add_predict(sub) -> None:
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
    add_models_dir(p)
    p.set_defaults(func=cmd_predict)


def _add_serve(sub) -> None:
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
    p.add_argument("--threads", type=int, default=1, metavar="N",  # server.DEFAULT_THREADS
                   help="torch threads of each prediction's forward pass; one image gains "
                   "nothing from more, and --max-decodes uploads run at once (default: 1)")
    add_models_dir(p)
    p.set_defaults(func=cmd_serve)


def _add_export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="REF", help="model reference: ARCH-vN/RUN, ARCH-vN/latest, "
                   "latest, ...@best, ...@epoch-N, a model folder or hf://USER/NAME")
    p.add_argument("--out", default="huggingface", metavar="DIR",
                   help="the exported folder, the Hub repository's mirror (default: huggingface)")
    p.add_argument("--onnx", action="store_true",
                   help="also write model.onnx, checked against PyTorch (default: off)")
    add_data_dir(p)
    add_models_dir(p)


def _add_export_and_publish(sub) -> None:
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
