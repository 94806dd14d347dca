"""`digitnet models list`: the registered architectures and the trained models in the store."""

from __future__ import annotations

import argparse

from digitnet.cli.options import add_models_dir


def cmd_models_list(args: argparse.Namespace) -> int:
    from digitnet.models import (
        DEFAULT_ARCH,
        count_flops,
        count_parameters,
        create_model,
        get_spec,
        list_specs,
    )
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


def add_commands(sub) -> None:
    p = sub.add_parser("models", help="architectures and trained models")
    models_sub = p.add_subparsers(dest="models_command", required=True, metavar="COMMAND")
    p = models_sub.add_parser("list", help="every architecture version and every trained model")
    add_models_dir(p)
    p.set_defaults(func=cmd_models_list)
