from __future__ import annotations

import optuna
import pytest

from harness.config.space import Choice, Range, describe, narrow, suggest
from harness.config.variants import VariantError, search_space


def test_every_m2_family_declares_a_space():
    assert {"lr", "alpha", "alpha_schedule", "z_dim", "hidden"} <= set(search_space("exact"))
    assert "temperature" in search_space("gumbel-0.5")
    assert {"anneal_rate", "temperature_min"} <= set(search_space("gumbel-anneal"))
    assert set(search_space("supervised-only")) == {"lr", "hidden"}


def test_narrowing_ranges_choices_and_fixed_values():
    space = narrow(
        search_space("gumbel-0.5"),
        ["lr=1e-4:1e-3", "hidden=256,512", "temperature=0.5", "z_dim=16:32"],
    )
    assert space["lr"] == Range(1e-4, 1e-3, log=True)
    assert space["hidden"] == Choice((256, 512)) and space["temperature"] == Choice((0.5,))
    assert space["z_dim"] == Range(16, 32, integer=True)
    assert "lr in [0.0001, 0.001] (log)" in describe(space)


def test_a_space_is_extended_with_any_variant_setting():
    """A researcher's own knob: a deeper classifier, another batch size, a network by name."""
    space = narrow(
        search_space("gumbel-0.5"),
        ["classifier_layers=1,2,3", "batch_size=64:256", "classifier_net=mlp,cnn"],
    )
    assert space["classifier_layers"] == Choice((1, 2, 3))
    assert space["batch_size"] == Range(64, 256, integer=True)
    assert space["classifier_net"] == Choice(("mlp", "cnn"))
    assert set(search_space("gumbel-0.5")) < set(space)
    with pytest.raises(VariantError, match="classifier_layers must be int"):
        narrow(search_space("exact"), ["classifier_layers=1.5,2"])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bogus=1:2", "unknown setting 'bogus'"),
        ("lr=1e-3:1e-4", "empty range"),
        ("lr=0.001:0.001", "empty range"),
        ("hidden=big", "hidden must be int"),
        ("lr", "key=low:high"),
    ],
)
def test_bad_space_entries_are_clear_errors(spec, message):
    with pytest.raises(VariantError, match=message):
        narrow(search_space("gumbel-0.5"), [spec])


def test_suggest_draws_every_knob_in_its_range():
    space = {
        "lr": Range(1e-4, 1e-2, log=True),
        "hidden": Choice((256, 512)),
        "z_dim": Range(8, 64, integer=True),
    }
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        drawn = suggest(study.ask(), space)
        assert 1e-4 <= drawn["lr"] <= 1e-2 and drawn["hidden"] in (256, 512)
        assert isinstance(drawn["z_dim"], int) and 8 <= drawn["z_dim"] <= 64
