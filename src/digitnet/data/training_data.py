"""What training takes from the dataset store: the training set combined from MNIST and ingested
datasets (each with the balance policy recorded for it), and the fingerprint a run records.
"""

from __future__ import annotations

import os

import torch

from digitnet.data.dataset_store import (
    MANIFEST_FILE,
    datasets_root,
    known_datasets,
    list_datasets,
    load_dataset,
    read_manifest,
)
from digitnet.data.datasets import TensorDataset
from digitnet.errors import DigitnetError
from digitnet.fileio import sha256_file


def dataset_fingerprint(name: str, datasets_dir: str | os.PathLike | None = None) -> dict:
    """What a training run records about an ingested dataset: count, policy and hashes."""
    root = datasets_root(datasets_dir)
    manifest = read_manifest(name, root)
    return dict(name=name, path=str((root / name).resolve()), count=manifest["count"],
                balance=manifest["balance"], content_sha256=manifest["content_sha256"],
                manifest_sha256=sha256_file(root / name / MANIFEST_FILE))


def combine_training_data(
    mnist_train: TensorDataset,
    names: tuple[str, ...],
    datasets_dir: str | os.PathLike | None = None,
) -> TensorDataset:
    """Concatenate the training datasets named in `names`, in order.

    "mnist" stands for `mnist_train`; any other name is an ingested dataset, taken with the balance
    policy recorded when it was ingested.

    Raises:
        DigitnetError: an unknown name, or a combination with no images.
    """
    root = datasets_root(datasets_dir)
    parts = []
    for name in dict.fromkeys(names):  # a name given twice counts once
        if name == "mnist":
            parts.append(mnist_train)
            continue
        if name not in list_datasets(root):
            raise DigitnetError(f"training dataset {name!r}: expected 'mnist' or an ingested "
                                f"dataset; {known_datasets(root)}")
        parts.append(load_dataset(name, root, read_manifest(name, root)["balance"]))
    combined = TensorDataset("+".join(p.name for p in parts), torch.cat([p.images for p in parts]),
                             torch.cat([p.labels for p in parts]))
    if not len(combined):
        raise DigitnetError(f"training datasets {', '.join(names)} hold no images")
    return combined
