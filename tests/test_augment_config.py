"""Augmentation settings (data/augment_config.py): AugmentConfig checks its fields, names the
field and what was expected, and the severity presets are what the docs say."""

from __future__ import annotations

import pytest

from digitnet.data.augment_config import AugmentConfig
from digitnet.errors import DigitnetError


@pytest.mark.parametrize("level", [-1, 6, 2.0, "3", True, None])
def test_bad_severity_raises(level):
    with pytest.raises(DigitnetError, match="severity"):
        AugmentConfig.for_severity(level)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(scale=(1.2, 0.8)), "scale"),
        (dict(scale=(0.0, 1.0)), "scale"),
        (dict(scale=(1.0,)), "scale"),
        (dict(thickness_prob=1.5), "thickness_prob"),
        (dict(rotate=-1), "rotate"),
        (dict(noise_std=-0.1), "noise_std"),
        (dict(elastic_sigma=0), "elastic_sigma"),
    ],
)
def test_bad_config_raises(kwargs, field):
    with pytest.raises(DigitnetError, match=field):
        AugmentConfig(**kwargs)


@pytest.mark.parametrize("kwargs", [
    dict(scale=(0.5, 0.5)), dict(scale=[0.9, 1.1]), dict(thickness_prob=0.0),
    dict(thickness_prob=1.0), dict(rotate=0.0, shift=0.0, shear=0.0, elastic_alpha=0.0,
                                   noise_std=0.0), dict(elastic_sigma=0.01)])
def test_config_bounds_are_inclusive_where_documented(kwargs):
    cfg = AugmentConfig(**kwargs)
    assert isinstance(cfg.scale, tuple) and all(type(v) is float for v in cfg.scale)


@pytest.mark.parametrize("kwargs, message", [
    (dict(scale=(1.0, 1.0, 1.0)), "AugmentConfig.scale: expected (min, max), got (1.0, 1.0, 1.0)"),
    (dict(scale=(-0.5, 1.0)), "AugmentConfig.scale: expected 0 < min <= max, got (-0.5, 1.0)"),
    (dict(thickness_prob=-0.01), "AugmentConfig.thickness_prob: expected 0..1, got -0.01"),
    (dict(elastic_sigma=-1.0), "AugmentConfig.elastic_sigma: expected > 0, got -1.0"),
    (dict(shift=-0.5), "AugmentConfig.shift: expected >= 0, got -0.5"),
    (dict(shear=-2), "AugmentConfig.shear: expected >= 0, got -2"),
    (dict(elastic_alpha=-1), "AugmentConfig.elastic_alpha: expected >= 0, got -1"),
])
def test_bad_config_message_names_field_and_expectation(kwargs, message):
    with pytest.raises(DigitnetError) as info:
        AugmentConfig(**kwargs)
    assert str(info.value) == message


def test_severity_presets_and_message():
    assert AugmentConfig.for_severity(0) == AugmentConfig()
    assert AugmentConfig.for_severity(3).rotate == 15
    assert AugmentConfig.for_severity(5).noise_std == 0.15
    with pytest.raises(DigitnetError) as info:
        AugmentConfig.for_severity(7)
    assert str(info.value) == "augmentation severity must be an integer 0..5, got 7"
