"""`digitnet train`: its training flags are generated from the TrainConfig fields, whose metadata
(config.py) holds each one's help text, default, choices and range."""

from __future__ import annotations

import argparse
import dataclasses
import os

from digitnet.cli.options import add_data_dir, add_models_dir
from digitnet.config import DIST_TIMEOUT_S, cli_fields, field_type
from digitnet.errors import DigitnetError


def cmd_train(args: argparse.Namespace) -> int:
    from digitnet.config import resolve_config
    from digitnet.fileio import atomic_write_json
    from digitnet.training.distributed import (
        check_batch,
        environment_rank,
        is_writer,
        launch_local,
    )
    from digitnet.training.loop import fit

    if args.nproc is not None and args.nproc < 1:
        raise DigitnetError(f"--nproc must be at least 1, got {args.nproc}")
    if args.nproc is not None and args.nproc > 1:
        if "WORLD_SIZE" in os.environ:
            raise DigitnetError("--nproc starts its own processes; under torchrun, drop --nproc "
                                "(torchrun's --nproc-per-node says how many)")
        if not args.resume:  # a recipe the processes cannot share fails here, once
            cfg = resolve_config(args.config,
                                 **{f.name: getattr(args, f.name) for f in cli_fields()})
            check_batch(cfg.batch_size, args.nproc)
        launch_local(args.nproc, child_argv(args))  # rank 0 prints the reference
        return 0
    if args.resume:
        ignored = [flag_of(f) for f in cli_fields() if getattr(args, f.name) is not None]
        ignored += ["--config"] if args.config else []
        if ignored:
            raise DigitnetError(f"--resume continues a run with its own configuration; "
                                f"drop {', '.join(ignored)}")
        summary = fit(None, args.data_dir, args.models_dir, resume=args.resume,
                      progress=not args.no_progress, device=args.device,
                      dist_timeout=args.dist_timeout)
    else:
        cfg = resolve_config(args.config, **{f.name: getattr(args, f.name) for f in cli_fields()})
        summary = fit(cfg, args.data_dir, args.models_dir, progress=not args.no_progress,
                      device=args.device, dist_timeout=args.dist_timeout)
    if not is_writer(environment_rank()):  # another rank of a distributed run: rank 0 reports
        return 0
    if args.json:
        try:
            atomic_write_json(args.json, summary)
        except OSError as e:  # the run itself is complete and saved
            raise DigitnetError(f"{args.json}: cannot write the summary ({e.strerror or e}); "
                                f"the run {summary['ref']} is complete") from None
    print(summary["ref"])
    return 0


def child_argv(args: argparse.Namespace) -> list[str]:
    """`train` and the flags of `args` but --nproc: what each process of --nproc runs."""
    argv = ["train"]
    for f in cli_fields():
        value, flag = getattr(args, f.name), flag_of(f)
        if value is None:
            continue
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list):  # repeatable
            argv += [item for v in value for item in (flag, str(v))]
        else:
            argv += [flag, str(value)]
    for name in ("device", "config", "resume", "json", "data_dir", "models_dir", "dist_timeout"):
        if getattr(args, name) is not None:
            argv += ["--" + name.replace("_", "-"), str(getattr(args, name))]
    return argv + (["--no-progress"] if args.no_progress else [])


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
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train with N processes on this machine, started by torch's elastic "
                   "launcher as `torchrun --nproc-per-node N` does; --batch-size stays the "
                   "global batch (default: 1, the plain path)")
    p.add_argument("--dist-timeout", type=float, default=DIST_TIMEOUT_S, metavar="SECONDS",
                   help="with several processes, how long one waits for the others before the "
                   f"run fails with an error (default: {DIST_TIMEOUT_S:g})")
    add_data_dir(p)
    add_models_dir(p)
    p.set_defaults(func=cmd_train)

