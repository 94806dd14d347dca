"""`digitnet evaluate`, `calibrate`, `compare` and `ensemble`: the evaluation pipeline's
commands."""

from __future__ import annotations

import argparse

from digitnet.cli.options import add_data_dir, add_datasets, add_models_dir


def cmd_evaluate(args: argparse.Namespace) -> int:
    from digitnet.calibration import calibration_from_dict
    from digitnet.evaluation.datasets import DEFAULT_DATASET
    from digitnet.evaluation.evaluate import evaluate_model, format_results
    from digitnet.fileio import atomic_write_json

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


def add_commands(sub) -> None:
    """evaluate, calibrate, compare, ensemble (in this order in `digitnet --help`)."""
    p = sub.add_parser("evaluate",
                       help="metrics, plots and a report for a saved model or checkpoint")
    p.add_argument("ref", metavar="REF", help="model reference: ARCH-vN/RUN, ARCH-vN/latest, "
                   "...@best, ...@epoch-N, or a path to a model or checkpoint folder")
    add_datasets(p)
    p.add_argument("--json", metavar="PATH", help="write one result object per dataset here")
    p.add_argument("--out", metavar="DIR", help="write plots and report.md into DIR")
    add_data_dir(p)
    add_models_dir(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("calibrate", help="fit and store the temperature of a model saved without "
                       "one (on its validation split; the weights are not changed)")
    p.add_argument("ref", metavar="REF", help="model reference: ARCH-vN/RUN, ...@best, "
                   "...@epoch-N, or a path to a model or checkpoint folder")
    add_data_dir(p)
    add_models_dir(p)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("compare", help="compare models and checkpoints across test datasets")
    p.add_argument("refs", nargs="+", metavar="REF",
                   help="model references; REF@all stands for every epoch checkpoint of a run; a "
                        "quoted glob such as 'cnn-v1/*' names every matching run")
    add_datasets(p)
    p.add_argument("--out", default="reports/compare", metavar="DIR",
                   help="folder for comparison.csv/.md/.json/.png (default: reports/compare)")
    p.add_argument("--metric", default="accuracy",
                   help="metric of the bar chart (default: accuracy)")
    add_data_dir(p)
    add_models_dir(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("ensemble", help="evaluate the average of several models' probabilities")
    p.add_argument("refs", nargs="+", metavar="REF",
                   help="model references, as for evaluate; a quoted glob such as 'wide-v1/ens-*' "
                        "names every matching run")
    add_datasets(p)
    p.add_argument("--json", metavar="PATH", help="write one result object per dataset here")
    add_data_dir(p)
    add_models_dir(p)
    p.set_defaults(func=cmd_ensemble)
