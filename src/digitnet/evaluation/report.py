"""The evaluation report: plots per dataset, training curves, and a one-page Markdown summary."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from digitnet.data.datasets import TensorDataset
from digitnet.evaluation.plots import (
    plot_confusion_matrix,
    plot_misclassified,
    plot_per_class,
    plot_reliability_diagram,
    plot_training_curves,
)
from digitnet.figures import save_figure
from digitnet.fileio import atomic_write_json, atomic_write_text
from digitnet.store import LoadedModel


def slug(name: str) -> str:
    """A file-name-safe form of a dataset name (which may be a path)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "dataset"


def dataset_plot_paths(out_dir: Path, dataset: str) -> dict[str, Path]:
    base = out_dir / slug(dataset)
    kinds = ("confusion_matrix", "per_class", "misclassified", "reliability")
    return {k: base / f"{k}.png" for k in kinds}


def write_dataset_plots(out_dir: Path, result: dict, dataset: TensorDataset,
                        probs: torch.Tensor) -> None:
    paths = dataset_plot_paths(out_dir, result["dataset"])
    name = result["dataset"]
    save_figure(plot_confusion_matrix(result["confusion_matrix"],
                                      title=f"Confusion matrix: {name}"),
                paths["confusion_matrix"])
    save_figure(plot_per_class(result, title=f"Per-class precision and recall: {name}"),
                paths["per_class"])
    save_figure(plot_misclassified(dataset.images, result["misclassified"],
                                   title=f"Most confident mistakes: {name}"),
                paths["misclassified"])
    save_figure(plot_reliability_diagram(dataset.labels.numpy(), probs.numpy(),
                                         title=f"Calibration: {name}"), paths["reliability"])


def write_report(out_dir: Path, loaded: LoadedModel, results: list[dict],
                 history: list[dict]) -> Path:
    """Write results.json, training_curves.png and report.md (which links every plot)."""
    atomic_write_json(out_dir / "results.json", results)
    lines = [f"# Evaluation of {loaded.ref.label}", ""]
    arch = loaded.config["arch"]
    train = loaded.config.get("train", {})
    lines += [f"- architecture: {arch['id']} ({arch['model_args']})",
              f"- weights: {'epoch ' + str(loaded.epoch) if loaded.epoch else 'final'}",
              f"- recipe: {train.get('epochs')} epochs, batch {train.get('batch_size')}, "
              f"lr {train.get('lr')}, "
              f"augment {train.get('augment')}, seed {train.get('seed')}",
              f"- probabilities: {loaded.calibration.describe()}; loss, ECE and the reliability "
              f"diagrams use them, ECE (T=1) is that of the raw softmax", ""]
    lines += ["| dataset | n | loss | accuracy | precision (macro) | recall (macro) | F1 (macro) "
              "| ECE | ECE (T=1) |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r['dataset']} | {r['n']} | {r['loss']:.4f} | {r['accuracy']:.2%} | "
                     f"{r['precision_macro']:.4f} | {r['recall_macro']:.4f} | "
                     f"{r['f1_macro']:.4f} | "
                     f"{r['ece']:.4f} | {r['ece_uncalibrated']:.4f} |")
    if history:
        save_figure(plot_training_curves(history, title=f"Training curves: {loaded.ref.label}"),
                    out_dir / "training_curves.png")
        lines += ["", "## Training", "", "![training curves](training_curves.png)"]
    for r in results:
        paths = dataset_plot_paths(out_dir, r["dataset"])
        rel = {k: p.relative_to(out_dir).as_posix() for k, p in paths.items()}
        pairs = ", ".join(f"{p['label']} as {p['pred']} ({p['count']})"
                          for p in r["most_confused"][:5] if p["count"])
        lines += ["", f"## {r['dataset']}", "",
                  f"Accuracy {r['accuracy']:.2%} on {r['n']} images; {len(r['misclassified'])} "
                  f"mistakes listed in results.json. Most confused: {pairs or 'none'}.", "",
                  f"![confusion matrix]({rel['confusion_matrix']})", "",
                  f"![per-class precision and recall]({rel['per_class']})", "",
                  f"![misclassified digits]({rel['misclassified']})", "",
                  f"![reliability diagram]({rel['reliability']})", "",
                  "| class | precision | recall | F1 | support |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {c['label']} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} | "
                  f"{c['support']} |" for c in r["per_class"]]
    path = out_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
