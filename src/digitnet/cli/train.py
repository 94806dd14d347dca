"""`digitnet train`: its training flags are generated from the TrainConfig fields, whose metadata
(config.py) holds each one's help text, default, choices and range."""

from __future__ import annotations

import argparse
import dataclasses

from digitnet.cli.options import add_data_dir, add_models_dir
from digitnet.config import cli_fields, field_type
from digitnet.errors import DigitnetError


def cmd_train(args: argparse.Namespace) -> int:
    from digitnet.config import resolve_config
    from digitnet.fileio import atomic_write_json
    from digitnet.training.loop import fit

    if args.resume:
        ignored = [flag_of(f) for f in cli_fields() if getattr(args, f.name) is not None]
        ignored += ["--config"] if args.config else []
        if ignored:
            raise DigitnetError(f"--resume continues a run with its own configuration; "
                                f"drop {', '.join(ignored)}")
        summary = fit(None, args.data_dir, args.models_dir, resume=args.resume,
                      progress=not args.no_progress, device=args.device)
    else:
        cfg = resolve_config(args.config, **{f.name: getattr(args, f.name) for f in cli_fields()})
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


def flag_of(f: dataclasses.Field) -> str:
    """The CLI flag of a TrainConfig field: --batch-size for batch_size, unless it names its own."""
    return "--" + (f.metadata["flag"] or f.name.replace("_", "-"))


def help_of(f: dataclasses.Field) -> str:
    """The field's help text with its range and its default, e.g. "images per optimizer step,
    1-65536 (default: 512)"."""
    meta = f.metadata
    text = meta["help"] + (f", {meta['range'].brief()}" if meta["range"] is not None else "")
    default = meta["default_help"]
    if default is None:
        default = (("on" if f.default else "off") if isinstance(f.default, bool)
                   else ", ".join(f.default) if isinstance(f.default, tuple) else f.default)
    return f"{text} (default: {default})".replace("%", "%%")  # argparse formats help with %


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field that has one; None (not given) keeps the recipe's value."""
    for f in cli_fields():
        flag, kind = flag_of(f), field_type(f.name)[0]
        common = {"dest": f.name, "default": None, "help": help_of(f)}
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif kind is tuple:  # repeatable: --data a --data b
            p.add_argument(flag, action="append", metavar=f.name.upper(), **common)
        elif f.metadata["choices"] is not None:
            p.add_argument(flag, type=kind, choices=f.metadata["choices"], **common)
        else:
            p.add_argument(flag, type=kind, metavar=flag[2:].upper().replace("-", "_"), **common)


def add_command(sub) -> None:
    p = sub.add_parser("train", help="train a model (or --resume one) into the model store")
    add_config_flags(p)
    p.add_argument("--device", default="auto", metavar="DEVICE",
                   help="where to train: auto (CUDA if present, else CPU), cpu, cuda, cuda:N or "
                   "mps; a run may be resumed on another device (default: auto)")
    p.add_argument("--config", help="YAML or JSON recipe; flags given here override it")
    p.add_argument("--resume", metavar="REF",
                   help="continue a run from its last checkpoint (or REF@epoch-N, REF@best)")
    p.add_argument("--json", metavar="PATH", help="also write a summary (reference, metrics) here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_data_dir(p)
    add_models_dir(p)
    p.set_defaults(func=cmd_train)

