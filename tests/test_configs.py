"""The recipe files in configs/: each says every hyperparameter, so that it means the same thing
when a default changes, and configs/default.yaml is what `digitnet train` does with no flags."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from digitnet.config import TrainConfig, load_config_file

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
RECIPE_FIELDS = ("arch", "epochs", "batch_size", "lr", "optimizer", "weight_decay",
                 "label_smoothing", "warmup_frac", "augment", "augment_kind", "augment_severity",
                 "precision", "val_size")


def test_there_are_recipes():
    assert {p.stem for p in CONFIGS} >= {"default", "fast", "quick", "best", "cnn"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_each_recipe_spells_out_every_hyperparameter(path):
    recipe = load_config_file(path)
    missing = [f for f in RECIPE_FIELDS if f not in recipe]
    assert not missing, f"{path.name} leaves {missing} to the defaults"
    if path.stem != "default":  # the default follows the newest version, as `digitnet train` does
        assert "version" in recipe, f"{path.name} does not pin the architecture version"
    TrainConfig(**recipe)  # and the values are valid together


def test_default_recipe_file_is_the_no_flag_default():
    recipe = load_config_file(Path(__file__).parents[1] / "configs" / "default.yaml")
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert {k: v for k, v in recipe.items()} == {k: defaults[k] for k in recipe}
