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


def _add_data_commands(sub) -> None:
    data = sub.add_parser("data", help="MNIST files: verify, explore, ingest new data")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    p = data_sub.add_parser("verify", help="check the four MNIST files: format, counts, checksums")
    _add_data_dir(p)
    p.set_defaults(func=cmd_data_verify)


# ---------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digitnet",
        description="Create, train, evaluate and deploy CNNs that read handwritten digits.",
    )
    parser.add_argument("--version", action="version", version=f"digitnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data_commands(sub)
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
