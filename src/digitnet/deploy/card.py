"""The model card: README.md of an exported model, with the Hub's YAML metadata and model-index.

The metadata is built with `huggingface_hub.ModelCardData`, so the Hub (and `ModelCard.load`)
reads the evaluation results back: one model-index entry per test set, four metrics each.
"""

from __future__ import annotations

from collections.abc import Sequence

from digitnet.data.augment import AUGMENTED, AUGMENTED_SEED, AUGMENTED_SEVERITY

LICENSE = "apache-2.0"  # code and weights; MNIST itself is CC BY-SA 3.0 (see the card text)
HUB_DATASET = "ylecun/mnist"
TAGS = ["image-classification", "mnist", "pytorch", "digitnet"]
CONFUSION_MATRIX_FILE = "confusion_matrix.png"
# (metric type on the Hub, key in the evaluation result, display name)
CARD_METRICS = (
    ("accuracy", "accuracy", "Accuracy"),
    ("f1", "f1_macro", "F1 (macro)"),
    ("precision", "precision_macro", "Precision (macro)"),
    ("recall", "recall_macro", "Recall (macro)"),
)
# How each evaluation dataset is described in the model-index. The Hub groups results by
# (task, dataset type, config, split), so the augmented set needs its own config to stay separate.
DATASET_ENTRIES = {
    "mnist-test": dict(dataset_name="MNIST test", dataset_config="mnist", dataset_split="test"),
    AUGMENTED: dict(
        dataset_name=(f"MNIST test, augmented (severity {AUGMENTED_SEVERITY}, "
                      f"seed {AUGMENTED_SEED})"),
        dataset_config=f"mnist-augmented-severity-{AUGMENTED_SEVERITY}",
        dataset_split="test",
        dataset_args=dict(augmentation=f"digitnet {AUGMENTED} (rotation, scale, shift, shear, "
                          f"elastic, stroke width, noise), severity {AUGMENTED_SEVERITY}, "
                          f"seed {AUGMENTED_SEED}"),
    ),
}
# Training settings shown in the card's recipe table, in this order, when the run recorded them.
RECIPE_KEYS = ("epochs", "batch_size", "optimizer", "lr", "warmup_frac", "weight_decay",
               "label_smoothing", "augment", "augment_severity", "class_weighting", "val_size",
               "subset", "data", "seed")


def eval_results(results: Sequence[dict]):
    """`huggingface_hub.EvalResult`s (four metrics per known test set) from evaluation results."""
    from huggingface_hub import EvalResult

    entries = []
    for result in results:
        dataset = DATASET_ENTRIES.get(result["dataset"])
        if dataset is None:
            continue
        for metric_type, key, name in CARD_METRICS:
            entries.append(EvalResult(
                task_type="image-classification", task_name="Image Classification",
                dataset_type=HUB_DATASET, metric_type=metric_type, metric_name=name,
                metric_value=float(result[key]),
                metric_args=None if metric_type == "accuracy" else dict(average="macro"),
                **dataset,
            ))
    return entries


def card_metadata(model_name: str, results: Sequence[dict]):
    """The YAML front matter as `huggingface_hub.ModelCardData`."""
    from huggingface_hub import ModelCardData

    return ModelCardData(
        license=LICENSE, library_name="digitnet", pipeline_tag="image-classification",
        tags=list(TAGS), datasets=[HUB_DATASET], metrics=[m for m, _, _ in CARD_METRICS],
        model_name=model_name, eval_results=eval_results(results) or None,
    )


def _value(value) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return "none" if value is None else str(value)


def _metrics_table(results: Sequence[dict]) -> list[str]:
    lines = ["| test set | images | accuracy | precision (macro) | recall (macro) | F1 (macro) "
             "| loss |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| `{r['dataset']}` | {r['n']:,} | {r['accuracy']:.4f} | "
                     f"{r['precision_macro']:.4f} | {r['recall_macro']:.4f} | "
                     f"{r['f1_macro']:.4f} | {r['loss']:.4f} |")
    return lines


def _recipe_table(train: dict) -> list[str]:
    rows = [(k, train[k]) for k in RECIPE_KEYS if k in train]
    if not rows:
        return ["The training recipe was not recorded with this model."]
    return ["| setting | value |", "| --- | --- |"] + [f"| {k} | {_value(v)} |" for k, v in rows]


def _temperature(export_config: dict) -> float:
    return (export_config.get("calibration") or {}).get("temperature", 1.0)


def _calibration_text(export_config: dict, clean: dict | None) -> list[str]:
    """What the probabilities mean: the temperature the logits are divided by, and the ECE."""
    record = export_config.get("calibration") or {}
    ece = (f" (expected calibration error {clean['ece']:.3f} on `mnist-test`, "
           f"{clean['ece_uncalibrated']:.3f} before)"
           if clean and "ece_uncalibrated" in clean else "")
    if not record.get("calibrated"):
        reason = record.get("reason") or "the model was exported before digitnet calibrated"
        ece = f" (expected calibration error {clean['ece']:.3f} on `mnist-test`)" \
            if clean and "ece" in clean else ""
        return [f"The probabilities are the plain softmax of the logits, not calibrated{ece}: "
                f"{reason}. Use them to rank answers, not as exact chances."]
    return [f"The probabilities are calibrated by temperature scaling: the logits are divided by "
            f"T = {record['temperature']:.4f} before the softmax{ece}. T was fitted on the "
            f"{record.get('images', 0):,} held-out validation images after training; it is "
            "`calibration.temperature` in `config.json`, `digitnet.load` applies it (`probs`), "
            "and it never changes which digit is predicted."]


def _usage(repo_id: str, has_onnx: bool, mean: float, std: float,
           temperature: float = 1.0) -> list[str]:
    lines = [
        "```bash",
        "pip install digitnet",
        "```",
        "",
        "```python",
        "import digitnet",
        f'model = digitnet.load("hf://{repo_id}")  # safetensors weights, strict key check',
        "# images: uint8 tensor (N, 28, 28), a white digit on black, centred as in MNIST",
        "logits = model.logits(images)  # (N, 10), raw",
        f"probs = model.probs(images)  # softmax(logits / {temperature:.4f}), calibrated",
        "preds = logits.argmax(dim=1)  # the digits",
        "```",
        "",
        "`digitnet evaluate hf://" + repo_id + "` scores it on any test set, and `digitnet "
        "preprocess` turns photos or scans of a digit into MNIST-format 28x28 images first.",
    ]
    if has_onnx:
        lines += [
            "",
            "Without PyTorch, `model.onnx` runs in ONNX Runtime; it takes float images "
            f"`(N, 1, 28, 28)` scaled to [0, 1] and normalised with mean {mean} and std {std}:",
            "",
            "```python",
            "import numpy as np",
            "import onnxruntime as ort",
            'session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])',
            f"x = ((images[:, None] / 255.0 - {mean}) / {std}).astype(\"float32\")  "
            "# images: uint8 numpy (N, 28, 28)",
            'logits = session.run(None, {"images": x})[0]  # (N, 10), already divided by T',
            "probs = np.exp(logits - logits.max(1, keepdims=True))",
            "probs /= probs.sum(1, keepdims=True)  # the calibrated probabilities",
            "```",
        ]
    return lines


def render_model_card(
    export_config: dict,
    results: Sequence[dict],
    repo_id: str,
    train: dict,
    data: dict,
    num_params: int,
) -> str:
    """README.md of an exported model: metadata, use, training, metrics, limitations.

    Args:
        export_config: the exported config.json (architecture, normalisation, source, onnx).
        results: evaluation results (`evaluate_on`), `mnist-test` first.
        repo_id: USER/NAME on the Hub, used in the loading example and as the model name.
        train: the run's training recipe (its config.json `train` section).
        data: the run's training data facts (its config.json `data` section; may be empty).
        num_params: parameter count of the network.
    """
    model_name = repo_id.split("/")[-1]
    meta = card_metadata(model_name, results)
    arch_id = export_config["arch_id"]
    by_name = {r["dataset"]: r for r in results}
    clean, augmented = by_name.get("mnist-test"), by_name.get(AUGMENTED)
    source = export_config["source"]
    has_onnx = "onnx" in export_config
    headline = []
    if clean:
        headline.append(f"**{clean['accuracy']:.2%}** accuracy on the MNIST test set")
    if augmented:
        headline.append(f"**{augmented['accuracy']:.2%}** on a harder, augmented copy of it")
    train_size = data.get("train_size")
    train_images = (f"{train_size:,} MNIST training images" if train_size
                    else "the MNIST training images")
    val_size = train.get("val_size")
    lines = [
        "---", meta.to_yaml(), "---", "",
        f"# {model_name}",
        "",
        f"A small convolutional network (`{arch_id}`, {num_params:,} parameters) that reads one "
        "handwritten digit, 0 to 9, from a 28x28 grayscale image. It was trained on MNIST with "
        "the `digitnet` library"
        + (f" and reaches {' and '.join(headline)}." if headline else "."),
        "",
        "## Intended use",
        "",
        "Recognising single handwritten digits that look like MNIST: one centred digit, white on a "
        "black background, 28x28 pixels. It suits teaching, demos and as a baseline for digit "
        "recognition. It is not meant for multi-digit strings, printed text, other alphabets, or "
        "any decision about a person (cheques, forms, exams) without human review.",
        "",
        "## How to use",
        "",
        *_usage(repo_id, has_onnx, export_config["mean"], export_config["std"],
                _temperature(export_config)),
        "",
        *_calibration_text(export_config, clean),
        "",
        "## Training data",
        "",
        f"[MNIST]({'https://huggingface.co/datasets/' + HUB_DATASET}) (Yann LeCun, Corinna Cortes, "
        f"Christopher J.C. Burges): {train_images} were used for training"
        + (f", with {val_size:,} more held out for validation" if val_size else "")
        + ". The test sets below were never used in training. MNIST is licensed under "
        "CC BY-SA 3.0; these weights and the digitnet code are licensed under Apache-2.0.",
        "",
        "## Training recipe",
        "",
        f"Source model `{source['ref']}`"
        + (f", weights after {source['epoch']} epochs" if source.get("epoch") else "")
        + f", digitnet {export_config['digitnet_version']}. Inputs are scaled to [0, 1] and "
        f"normalised with mean {export_config['mean']} and std {export_config['std']}.",
        "",
        *_recipe_table(train),
        "",
        "## Evaluation",
        "",
        f"`mnist-test` is the MNIST test set; `{AUGMENTED}` is the same images under "
        f"a fixed random augmentation (rotation, scaling, shift, shear, elastic distortion, stroke "
        f"width and noise; severity {AUGMENTED_SEVERITY} of 5, seed {AUGMENTED_SEED}), a check of "
        "robustness to less tidy handwriting. Precision, recall and F1 are macro averages over the "
        "ten classes.",
        "",
        *_metrics_table(results),
        "",
        f"![Confusion matrix on the MNIST test set]({CONFUSION_MATRIX_FILE})",
        "",
        "## Limitations",
        "",
        "- The model always answers with a digit: it has no notion of \"not a digit\", and its "
        "confidence on unfamiliar inputs (letters, doodles, blank images) is not meaningful.",
        *(["- Its probabilities are calibrated on MNIST validation digits; on inputs unlike "
           "MNIST they can still be over-confident."]
          if (export_config.get("calibration") or {}).get("calibrated") else []),
        "- It expects MNIST's preprocessing: a centred digit, white on black, scaled into a 20x20 "
        "box. Photos or scans must go through `digitnet preprocess` (or the same steps) first; "
        "dark-on-light or off-centre digits are misread.",
        "- MNIST was written by American Census Bureau employees and high-school students; "
        "digits written in other styles (for example a crossed 7 or an open 4) may be recognised "
        "less well.",
        "- Untidy handwriting is harder than MNIST's"
        + (f": accuracy is {augmented['accuracy']:.2%} on the augmented test set against "
           f"{clean['accuracy']:.2%} on the clean one" if clean and augmented else "")
        + "; real-world inputs may be harder still.",
        "",
        "## Files",
        "",
        "- `model.safetensors`: the weights (the full PyTorch state dict)",
        "- `config.json`: architecture, hyperparameters, label names, input size, normalisation, "
        "preprocessing version, source model",
        *(["- `model.onnx`: the network for ONNX Runtime (dynamic batch size, opset "
           f"{export_config['onnx']['opset']}); its `logits` output is divided by T = "
           f"{_temperature(export_config):.4f} inside the graph (also in its metadata)"]
          if has_onnx else []),
        f"- `{CONFUSION_MATRIX_FILE}`: the confusion matrix on `mnist-test`",
        "",
    ]
    return "\n".join(lines)
