"""Flags that several commands share: where the MNIST files, the model store and the test
datasets are."""

from __future__ import annotations

import argparse


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder with the four MNIST IDX files (default: $DIGITNET_DATA_DIR, else the user "
        "cache, downloaded once with checksums verified)",
    )


def add_models_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models-dir", default=None,
                   help="the model store (default: $DIGITNET_MODELS_DIR, else ./models)")


def add_datasets(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", action="append", metavar="NAME",
                   help="test dataset, repeatable: mnist-test (default), mnist-val, "
                   "mnist-test-augmented[:SEVERITY], a folder DIR/<digit>/*.png, IMAGES,LABELS "
                   "(two IDX files) or an ingested dataset name")
