"""`digitnet data verify|explore|ingest` and `digitnet preprocess`: the data pipeline's commands."""

from __future__ import annotations

import argparse
import sys

from digitnet.cli.options import add_data_dir


def cmd_data_verify(args: argparse.Namespace) -> int:
    from digitnet.data.mnist import resolve_data_dir, verify_mnist

    folder, source = resolve_data_dir(args.data_dir)
    print(f"MNIST folder: {folder} (chosen by {source})")
    rows = verify_mnist(args.data_dir)
    for row in rows:
        print(f"  {'ok  ' if row['ok'] else 'FAIL'} {row['file']}: {row['detail']}")
    bad = sum(not r["ok"] for r in rows)
    print("all four files verified" if not bad
          else f"{bad} of {len(rows)} files failed verification")
    return 1 if bad else 0


def cmd_data_explore(args: argparse.Namespace) -> int:
    from digitnet.data.explore import explore, format_summary

    def log(message: str) -> None:
        print(f"explore: {message}", file=sys.stderr)

    stats = explore(args.data_dir, args.out, args.val_size, log=log)
    print(format_summary(stats))
    return 0


def cmd_data_ingest(args: argparse.Namespace) -> int:
    from digitnet.data.dataset_store import REPORT_FILE
    from digitnet.data.ingest import format_ingest, ingest

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
            print(f"blank  {path}: no digit found, nothing written "
                  f"({result.path}: {result.reason})")
    if args.debug:
        print(f"stages of each image: {args.out}/debug/<name>/")
    print(f"{len(args.images) - len(failed)} of {len(args.images)} images processed"
          + (f"; {len(failed)} could not be read: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def add_commands(sub) -> None:
    """`data` with its subcommands, and `preprocess`."""
    data = sub.add_parser("data", help="MNIST files: verify, explore, ingest new data")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    _add_verify(data_sub)
    _add_explore(data_sub)
    _add_ingest(data_sub)


def add_preprocess_command(sub) -> None:
    p = sub.add_parser("preprocess", help="turn new images into 28x28 MNIST-format digits")
    p.add_argument("images", nargs="+", metavar="IMG",
                   help="image files (PNG, JPEG, BMP, GIF, TIFF or WebP, any size)")
    p.add_argument("--out", required=True, help="folder for the 28x28 <name>.png outputs")
    p.add_argument("--debug", action="store_true",
                   help="also write every stage as PNG into OUT/debug/<name>/ (default: off)")
    p.set_defaults(func=cmd_preprocess)


def _add_verify(data_sub) -> None:
    p = data_sub.add_parser("verify", help="check the four MNIST files: format, counts, checksums")
    add_data_dir(p)
    p.set_defaults(func=cmd_data_verify)


def _add_explore(data_sub) -> None:
    p = data_sub.add_parser(
        "explore",
        help="class balance, pixel stats, ink per class, mean images, samples, duplicates",
    )
    add_data_dir(p)
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


def _add_ingest(data_sub) -> None:
    p = data_sub.add_parser("ingest", help="add your own labelled images to a named dataset "
                            "(preprocessed, deduplicated)")
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
