"""Compare models (of any architecture) and checkpoints of one run across test datasets."""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from pathlib import Path

from digitnet.evaluation.datasets import load_eval_dataset
from digitnet.evaluation.evaluate import evaluate_on, model_val_size
from digitnet.evaluation.metrics import SCALAR_METRICS
from digitnet.fileio import atomic_write_json, atomic_write_text
from digitnet.store import expand_checkpoints, load_model

COLUMNS = ("model", "arch", "epoch", "dataset") + SCALAR_METRICS


def compare(
    refs: list[str],
    datasets: list[str],
    data_dir: str | os.PathLike | None = None,
    models_dir: str | os.PathLike | None = None,
) -> list[dict]:
    """One row per (model, dataset) with the scalar metrics; each dataset is built once.
    `REF@all` stands for every epoch checkpoint of that run (`expand_checkpoints`)."""
    cache = {}
    rows = []
    for ref in expand_checkpoints(refs, models_dir):
        loaded = load_model(ref, models_dir)
        for name in datasets:
            key = (name, model_val_size(loaded) if name == "mnist-val" else None)
            if key not in cache:
                cache[key] = load_eval_dataset(name, data_dir, model_val_size(loaded))
            result, _ = evaluate_on(loaded, cache[key])
            rows.append(dict(model=loaded.ref.label, arch=loaded.config["arch"]["id"],
                             epoch=loaded.epoch,
                             **{k: result[k] for k in ("dataset",) + SCALAR_METRICS}))
    return rows


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: r.get(k) for k in COLUMNS} for r in rows)
    return buf.getvalue()


def to_markdown(rows: list[dict], metrics=("accuracy", "loss", "precision_macro", "recall_macro",
                                           "f1_macro", "ece")) -> str:
    """A table of models x datasets x metrics; accuracy as a percentage."""
    header = "| model | dataset | " + " | ".join(metrics) + " |"
    lines = [header, "|" + " --- |" * (2 + len(metrics))]
    for r in rows:
        cells = [f"{r[m]:.2%}" if m == "accuracy" else f"{r[m]:.4f}" for m in metrics]
        lines.append(f"| {r['model']} | {r['dataset']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_comparison(rows: list[dict], out_dir: str | os.PathLike,
                     metric: str = "accuracy") -> list[Path]:
    """Write comparison.csv, comparison.md, comparison.json and comparison.png (grouped bars),
    plus accuracy_by_epoch.png when checkpoints of one run are compared."""
    from digitnet.evaluation.plots import plot_comparison, plot_metric_by_epoch
    from digitnet.figures import save_figure

    out = Path(out_dir)
    paths = [out / f"comparison.{ext}" for ext in ("csv", "md", "json", "png")]
    atomic_write_text(paths[0], to_csv(rows))
    atomic_write_text(paths[1], to_markdown(rows))
    atomic_write_json(paths[2], rows)
    save_figure(plot_comparison(rows, metric), paths[3])
    first = rows[0]["dataset"] if rows else None
    per_run = Counter(r["model"].split("@")[0] for r in rows if r["dataset"] == first)
    if per_run and max(per_run.values()) > 1:  # several checkpoints of one run: draw them by epoch
        paths.append(out / "accuracy_by_epoch.png")
        save_figure(plot_metric_by_epoch(rows, metric), paths[-1])
    return paths
