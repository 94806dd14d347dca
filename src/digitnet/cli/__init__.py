"""The `digitnet` command line: argparse wiring only; the work happens in the library modules.

One file per command group: data.py (data verify/explore/ingest, preprocess), train.py (train,
its flags generated from TrainConfig), models.py (models list), evaluate.py (evaluate, calibrate,
compare, ensemble), deploy.py (predict, serve, export, publish); options.py holds the flags they
share. `main` is the entry point of `digitnet` and `python -m digitnet`.
"""

from __future__ import annotations

import argparse
import sys

from digitnet.cli import data, deploy, evaluate, models, train
from digitnet.errors import DigitnetError
from digitnet.version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digitnet",
        description="Create, train, evaluate and deploy CNNs that read handwritten digits.",
    )
    parser.add_argument("--version", action="version", version=f"digitnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data.add_commands(sub)
    train.add_command(sub)
    models.add_commands(sub)
    evaluate.add_commands(sub)
    data.add_preprocess_command(sub)
    deploy.add_commands(sub)
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


__all__ = ["build_parser", "main"]
