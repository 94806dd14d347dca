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


# ------------------------------------------- one rule for keys and types in every file (issue 15)
LEGACY_TRAIN = Path(__file__).parent / "data" / "legacy-v1-keys.json"  # its "train": the section


def _resumed_run_config(tmp_path: Path, **train) -> Path:
    """A run config.json whose `train` section is the one an older digitnet wrote
    (tests/data/legacy-v1-keys.json), with `train` keys added."""
    import json

    config = {"train": {**json.loads(LEGACY_TRAIN.read_text())["train"], **train}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_unknown_key_is_the_same_error_in_a_recipe_and_in_a_resumed_run(tmp_path):
    """A recipe file and a resumed run's config.json follow one rule: an unknown key is an error
    naming the file and the key and listing the valid keys."""
    import json

    from digitnet.config import config_from_dict
    from digitnet.errors import DigitnetError

    recipe = tmp_path / "r.yaml"
    recipe.write_text("epochs: 2\nlearning_rate: 0.1\n")
    with pytest.raises(DigitnetError) as from_recipe:
        load_config_file(recipe)
    run_config = _resumed_run_config(tmp_path, learning_rate=0.1)
    train = json.loads(run_config.read_text())["train"]
    with pytest.raises(DigitnetError) as from_run:
        config_from_dict(train, source=f"{run_config} (train)")
    known = ", ".join(sorted(f.name for f in dataclasses.fields(TrainConfig)))
    rule = f"unknown config key(s) learning_rate; known keys: {known}"
    assert str(from_recipe.value) == f"{recipe}: {rule}"
    assert str(from_run.value) == f"{run_config} (train): {rule}"


def test_a_run_written_by_an_older_digitnet_has_only_known_keys():
    """RETIRED_KEYS is empty: no TrainConfig field was ever removed or renamed (git log -p
    src/digitnet/config.py), so the old run's keys are all fields and it resumes unchanged."""
    import json

    from digitnet.config import RETIRED_KEYS, config_from_dict

    train = json.loads(LEGACY_TRAIN.read_text())["train"]
    assert RETIRED_KEYS == {}
    resumed = config_from_dict(train).to_dict()
    assert {k: v for k, v in resumed.items() if k in train} == train
    added = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.name not in train}
    assert {k: resumed[k] for k in added} == added == {"sync_bn": None}  # fields added since


def test_retired_keys_are_ignored_with_a_warning_in_both_places(tmp_path, monkeypatch):
    import json

    from digitnet import config

    monkeypatch.setattr(config, "RETIRED_KEYS", {"old_knob": "removed in 0.2"})
    recipe = tmp_path / "r.yaml"
    recipe.write_text("epochs: 2\nold_knob: 3\n")
    with pytest.warns(UserWarning, match="config key 'old_knob' ignored: removed in 0.2"):
        assert load_config_file(recipe) == {"epochs": 2}
    train = json.loads(_resumed_run_config(tmp_path, old_knob=3).read_text())["train"]
    with pytest.warns(UserWarning, match="config key 'old_knob' ignored: removed in 0.2"):
        assert config.config_from_dict(train).epochs == 2


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(TrainConfig)])
def test_value_types_are_checked_from_the_type_hints(tmp_path, name):
    """Each field's values are checked against its type hint (typing.get_type_hints): a value
    of another type is an error naming the file, the field and the type expected; None is
    accepted exactly where the hint is Optional."""
    import json
    import typing

    from digitnet.config import field_type
    from digitnet.errors import DigitnetError

    hint = typing.get_type_hints(TrainConfig)[name]
    kind, optional = field_type(name)
    assert optional == (type(None) in typing.get_args(hint))
    wrong = {bool: 1, int: "1", float: "1.0", str: 1, tuple: {"a": 1}}[kind]
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({name: wrong}))
    expected = "a list of" if kind is tuple else kind.__name__
    with pytest.raises(DigitnetError, match=rf"r\.json: config field '{name}': expected "
                                            rf"{expected}"):
        load_config_file(recipe)
    recipe.write_text(json.dumps({name: None}))
    if optional:
        assert load_config_file(recipe) == {name: None}
    else:
        with pytest.raises(DigitnetError, match=f"'{name}': expected .*found null"):
            load_config_file(recipe)
