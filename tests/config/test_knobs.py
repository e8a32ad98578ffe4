"""Each setting declared once with its rules (harness/config/knobs.py): every knob has a part,
every rule is wired to the settings that declare it, and the derived lists follow the knobs."""

from __future__ import annotations

import dataclasses

import pytest

from harness.config import knobs
from harness.config.variants import (
    LATER_SETTINGS,
    M1_SETTINGS,
    STOP_SETTINGS,
    Variant,
    VariantError,
    applicable_params,
    get_variant,
    settings_by_part,
)

SETTINGS = [f for f in dataclasses.fields(Variant) if f.name not in ("name", "description")]
RULED = [f for f in SETTINGS if f.metadata.get("rule") is not None]
# a value each rule refuses, and one it takes
REFUSED = {
    knobs.positive: 0,
    knobs.non_negative: -1,
    knobs.fraction: 1.0,
    knobs.factor: 0.0,
    knobs.seed: 2**32,
    knobs.optional_seed: -1,
    knobs.whole_classes: 15,
}


def test_every_setting_belongs_to_a_shared_part_or_the_familys_own():
    parts = (*knobs.SHARED_PARTS, *knobs.FAMILY_PARTS)
    assert all(knobs.part_of(f) in parts for f in SETTINGS), [
        f.name for f in SETTINGS if knobs.part_of(f) not in parts
    ]


@pytest.mark.parametrize("setting", RULED, ids=lambda f: f.name)
def test_a_value_a_settings_rule_refuses_is_one_line_naming_the_setting(setting):
    value = REFUSED[setting.metadata["rule"]]
    if isinstance(setting.default, float):
        value = float(value)
    with pytest.raises(VariantError) as refused:
        Variant(**{"validation": 10000, setting.name: value})
    assert str(refused.value).startswith(f"{setting.name} must ")
    assert str(refused.value).endswith(f", got {value!r}") and "\n" not in str(refused.value)


def test_the_lists_the_rest_of_the_harness_reads_come_from_the_knobs():
    assert STOP_SETTINGS == ("epochs", "patience", "min_delta")
    assert M1_SETTINGS and all(name.startswith("m1_") for name in M1_SETTINGS)
    assert {"family", "label_seed", "clip_norm", *M1_SETTINGS} <= set(LATER_SETTINGS)
    assert not {"estimator", "lr", "labels", "seed", *STOP_SETTINGS} & set(LATER_SETTINGS)


def test_a_knobs_reach_decides_what_a_variant_shows():
    exact = applicable_params(get_variant("exact"))
    assert "temperature" not in exact and "lr" in exact
    annealed = applicable_params(get_variant("gumbel-anneal"))
    assert {"temperature", "anneal_rate", "temperature_min"} <= set(annealed)


def test_settings_group_by_part_shared_ones_first():
    grouped = settings_by_part(applicable_params(get_variant("m1m2-reimpl")))
    assert list(grouped) == [*knobs.SHARED_PARTS, *knobs.FAMILY_PARTS]
    assert "lr" in grouped[knobs.OPTIMISATION] and "labels" in grouped[knobs.DATA]
    assert "m1_z_dim" in grouped[knobs.M1] and "estimator" in grouped[knobs.MODEL]
    assert "name" not in {k for part in grouped.values() for k in part}
