"""The family registry (harness/training/family.py): every registered family, and every
registered variant of it, trains through the one loop, alone and stacked; a family from a file
outside the package is one `register_family`; an unknown family is refused before anything
runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from harness.config.variants import (
    VariantError,
    create_variant,
    list_variants,
    load_user_variants,
)
from harness.training.family import TERMS, get_family, list_families, predict
from harness.training.trainer import Trainer

TINY = {"hidden": 16, "z_dim": 4, "validation": 0, "patience": 0, "epochs": 1}
TINY_FAMILY = Path(__file__).with_name("tiny_family.py")


def _variants_of(family: str) -> list[str]:
    return [variant.name for variant in list_variants() if variant.family == family]


def test_the_harness_registers_its_own_families():
    assert "m2" in list_families()
    assert len(_variants_of("m2")) > 10  # every built-in variant is an M2 so far


@pytest.mark.parametrize("family", list_families())
def test_every_family_trains_a_step_and_reports_its_terms(family, generated):
    for name in _variants_of(family):
        variant = create_variant(name, {**TINY, "features": "pixels", "likelihood": "bernoulli"})
        trainer = Trainer(variant, generated, "cpu", max_steps=2, progress=False)
        (report,) = trainer.run_epoch()
        assert set(report.losses) == set(TERMS)
        assert all(torch.isfinite(torch.tensor(v)) for v in report.losses.values())
        model = trainer.seed_model(0)
        assert torch.equal(
            predict(get_family(family), model, generated.test_x),
            trainer.stepper.predictions(generated.test_x)[0],
        )


def test_a_family_from_a_file_outside_the_package_trains_alone_and_stacked(generated):
    load_user_variants(TINY_FAMILY)
    variant = create_variant("softmax-regression", {"labels": 100, "epochs": 1})
    assert variant.family == "softmax-regression"
    alone = Trainer(variant, generated, "cpu", max_steps=20, progress=False)
    (report,) = alone.run_epoch()
    assert isinstance(alone.seed_model(0), nn.Linear)  # its model, not M2's
    assert report.losses["unlabelled"] == 0 and report.losses["classification"] > 0
    assert report.test_accuracy > 0.5  # the generated classes are separable
    stack = Trainer(variant, generated, "cpu", seeds=[0, 1], max_steps=20, progress=False)
    first, second = stack.run_epoch()
    assert first.losses["loss"] != second.losses["loss"]  # each seed its own weights
    assert isinstance(stack.seed_model(1), nn.Linear)


def test_an_unknown_family_is_refused_with_the_registered_ones():
    refused = r"family 'vae' is not a registered family; families: m2, adgm"
    with pytest.raises(VariantError, match=refused):
        create_variant("exact", {"family": "vae"})
    with pytest.raises(VariantError, match="did you mean 'm2'"):
        create_variant("exact", {"family": "m2s"})
    with pytest.raises(ValueError, match=r"family .nope. is not registered.*entry-point group"):
        get_family("nope")


def test_a_built_in_family_is_found_again_after_the_registry_is_emptied():
    from harness.training import family

    family.REGISTERED.clear()  # the conftest puts it back after the test
    assert get_family("adgm").name == "adgm" and "m2" in list_families()


def _moved(key: str, value):
    """A value of setting `key` other than its default `value`."""
    from harness.config.networks import NETWORKS

    if isinstance(value, bool):
        return not value
    if key.endswith("_net"):
        return next(name for name in NETWORKS if name != value)
    if key == "regularised":
        return "classifier"
    if key == "dropout":
        return 0.3
    return value + 1 if isinstance(value, int) else value + 0.01


@pytest.mark.parametrize("family", list_families())
def test_a_family_ignores_what_it_says_it_does_not_read_and_refuses_it(family):
    """Every setting a family lists as unread leaves its networks as they are (their layers
    and, from one seed, their weights), so `m2h show` may hide it; set, it is refused."""
    from harness.config.families import UNREAD
    from harness.config.variants import applicable_params

    for name in _variants_of(family):
        small = {"hidden": 16, "z_dim": 4}
        variant = create_variant(name, small)
        shown = applicable_params(variant)
        torch.manual_seed(0)
        reference = get_family(family).build(variant, 784)
        for key in sorted(UNREAD[family]):
            assert key not in shown
            other = _moved(key, getattr(variant, key))
            with pytest.raises(VariantError, match=f"family {family!r} does not read {key}="):
                create_variant(name, {**small, key: other})
            unchecked = create_variant(name, small)
            object.__setattr__(unchecked, key, other)  # past the check, to build it anyway
            torch.manual_seed(0)
            built = get_family(family).build(unchecked, 784)
            assert repr(built) == repr(reference), key
            for (k, a), b in zip(
                reference.state_dict().items(), built.state_dict().values(), strict=True
            ):
                assert torch.equal(a, b), (key, k)
