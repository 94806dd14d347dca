"""How an ensemble grows: test accuracy of the mean probabilities of its first k members, k = 1..N.

    python benchmarks/ensemble_growth.py 'wide-v1/ens-*' 'wide-v2/ens-*' \
        --models-dir runs/ensemble \
        --data-dir ../shared/datasets/mnist --out benchmarks/results/ensemble.json \
        --plot benchmarks/results/ensemble.png

Members are taken in the order given (globs expand oldest run first), never sorted by their test
accuracy, so the curve does not choose members on the test set. The JSON also says how far the
members' mistakes overlap: test images that every member gets wrong, that any member gets wrong,
and those the ensemble still gets wrong (index, label, prediction and the two probabilities).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch


def growth(probs: list[torch.Tensor], labels: torch.Tensor) -> list[float]:
    """Accuracy of the mean of the first k probability tensors, for k = 1..len(probs)."""
    total = torch.zeros_like(probs[0])
    out = []
    for p in probs:
        total += p
        out.append(float((total.argmax(1) == labels).double().mean()))
    return out


def overlap(probs: list[torch.Tensor], labels: torch.Tensor) -> dict:
    """How the members' errors overlap, and what the equal-weight ensemble still gets wrong."""
    wrong = torch.stack([p.argmax(1) != labels for p in probs])  # (members, N)
    mean = torch.stack(probs).mean(0)
    errors = (mean.argmax(1) != labels).nonzero().flatten().tolist()
    return dict(
        wrong_in_all=int(wrong.all(0).sum()), wrong_in_any=int(wrong.any(0).sum()),
        ensemble_errors=[dict(index=i, label=int(labels[i]), predicted=int(mean[i].argmax()),
                              p_label=round(float(mean[i, labels[i]]), 4),
                              p_predicted=round(float(mean[i].max()), 4),
                              members_wrong=int(wrong[:, i].sum())) for i in errors])


def plot(result: dict, path: str, target: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = range(1, len(result["members"]) + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(k, [100 * a for a in result["growth"]], "o-", label="ensemble of the first k members")
    ax.plot(k, [100 * m["accuracy"] for m in result["members"]], "s", alpha=0.6,
            label="member k alone")
    if target:
        ax.axhline(100 * target, color="grey", ls="--", lw=1, label=f"target {target:.2%}")
    ax.set(xlabel="members", ylabel=f"{result['dataset']} accuracy (%)",
           title=f"Ensemble of {len(result['members'])}: {result['growth'][-1]:.2%}")
    ax.set_xticks(list(k))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    from digitnet.evaluation.datasets import load_eval_dataset
    from digitnet.evaluation.evaluate import model_val_size, predict_probs
    from digitnet.store import expand_refs, load_model

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("refs", nargs="+", help="model references or quoted globs, in order")
    parser.add_argument("--dataset", default="mnist-test")
    parser.add_argument("--data-dir", default="../shared/datasets/mnist")
    parser.add_argument("--models-dir", default=None)
    parser.add_argument("--target", type=float, default=0.998)
    parser.add_argument("--out", required=True, help="JSON file for the results")
    parser.add_argument("--plot", help="PNG of accuracy against the number of members")
    args = parser.parse_args()

    refs = expand_refs(args.refs, args.models_dir)
    models = [load_model(r, args.models_dir) for r in refs]
    dataset = load_eval_dataset(args.dataset, args.data_dir, model_val_size(models[0]))
    probs = [predict_probs(m, dataset.images) for m in models]
    labels = dataset.labels
    members = [dict(model=m.ref.label, accuracy=float((p.argmax(1) == labels).double().mean()))
               for m, p in zip(models, probs)]
    result = dict(dataset=dataset.name, date=time.strftime("%Y-%m-%d"),
                  machine=f"{platform.machine()}, {platform.processor() or 'cpu'}",
                  command="python benchmarks/ensemble_growth.py " + " ".join(args.refs),
                  members=members, growth=growth(probs, labels), **overlap(probs, labels))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for i, (m, acc) in enumerate(zip(members, result["growth"]), 1):
        print(f"{i:3d}  {m['model']:40s} {m['accuracy']:.2%}   first {i}: {acc:.2%}")
    print(f"wrong in every member: {result['wrong_in_all']}, in any: {result['wrong_in_any']}, "
          f"ensemble errors: {len(result['ensemble_errors'])}")
    if args.plot:
        plot(result, args.plot, args.target)
        print(f"wrote {args.out}, {args.plot}")


if __name__ == "__main__":
    from digitnet.errors import DigitnetError

    try:
        main()
    except DigitnetError as e:  # a bad reference or data folder: the message says which
        raise SystemExit(f"ensemble_growth.py: error: {e}") from None
