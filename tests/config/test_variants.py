from __future__ import annotations

import math

import pytest
import torch

from harness.config.variants import (
    _REGISTRY,
    Variant,
    VariantError,
    create_variant,
    get_variant,
    list_variants,
    load_user_variants,
    parse_overrides,
    register_variant,
)

REQUIRED = {
    "tutorial-gumbel",
    "paper-exact",
    "exact",
    "gumbel-0.1",
    "gumbel-0.5",
    "gumbel-1",
    "gumbel-anneal",
    "gumbel-st",
    "supervised-only",
}


def test_required_variants_are_registered_with_descriptions():
    names = {v.name for v in list_variants()}
    assert names >= REQUIRED
    assert all(v.description for v in list_variants())


def test_tutorial_variant_matches_the_reference_tutorial():
    v = get_variant("tutorial-gumbel")
    assert (v.estimator, v.y_term, v.temperature) == ("gumbel", "sampled", 0.1)
    assert (v.hidden, v.z_dim, v.activation, v.lr, v.batch_size) == (512, 64, "relu", 1e-3, 128)
    assert v.alpha_scaling == "tutorial"


def test_decorator_and_call_registration():
    @register_variant
    def my_test_variant() -> Variant:
        """A test variant."""
        return Variant(estimator="gumbel", temperature=0.7)

    assert my_test_variant().temperature == 0.7  # the decorator returns the factory
    registered = get_variant("my-test-variant")
    assert (registered.name, registered.description, registered.temperature) == (
        "my-test-variant",
        "A test variant.",
        0.7,
    )
    register_variant("called-variant", Variant(lr=0.5))
    assert get_variant("called-variant").lr == 0.5


def test_overrides_are_typed_and_validated():
    v = create_variant(
        "exact", parse_overrides(["temperature=0.5", "labels=600", "optimizer=adamw"])
    )
    assert (v.temperature, v.labels, v.optimizer) == (0.5, 600, "adamw")
    assert isinstance(v.labels, int) and isinstance(v.temperature, float)
    assert get_variant("exact").labels == 100  # the registered variant is untouched


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("temperature=0", "temperature must be > 0"),
        ("temperature=-1", "temperature must be > 0"),
        ("alpha=-0.1", "alpha must be >= 0"),
        ("labels=55", "positive multiple of the 10 classes"),
        ("labels=0", "positive multiple"),
        ("batch_size=0", "batch_size must be > 0"),
        ("labels=ten", "labels must be int"),
        ("estimator=magic", "estimator must be one of exact, gumbel, gumbel-st, supervised"),
        ("tempreature=1", "unknown setting 'tempreature' (did you mean 'temperature'?)"),
        ("temperature", "key=value"),
        ("weight_decay=-1e-5", "weight_decay must be >= 0"),
        ("optimizer=adamw weight_decay=2e-5", "weight_decay is Adam's L2 term; adamw decays"),
    ],
)
def test_bad_overrides_are_clear_errors(override, message):
    with pytest.raises(VariantError, match=None) as info:
        create_variant("exact", parse_overrides(override.split(" ")))
    assert message in str(info.value)


def test_unknown_variant_suggests_the_nearest():
    with pytest.raises(VariantError, match=r"unknown variant 'exat' \(did you mean 'exact'\?\)"):
        get_variant("exat")


def test_params_are_flat_and_complete():
    params = get_variant("paper-exact").params()
    assert "description" not in params
    assert params["hidden"] == 500 and params["activation"] == "softplus" and params["z_dim"] == 50
    assert all(isinstance(v, int | float | str | bool | None) for v in params.values())
    assert params["label_seed"] is None  # the run's seed draws the labels


def test_paper_exact_settings_are_the_values_its_docstring_cites():
    v = get_variant("paper-exact")
    cited = {  # phrase in the docstring -> the setting it states
        "exact marginalisation": v.estimator == "exact",
        "500 softplus units": (v.hidden, v.activation) == (500, "softplus"),
        "z=50": v.z_dim == 50,
        "N(0, 1e-3^2) with zero biases": v.init_std == 1e-3,
        "Adam lr 3e-4": (v.optimizer, v.lr) == ("adam", 3e-4),
        "10,000 training images held out for validation": v.validation == 10_000,
        "the paper's batch composition": v.batch_rule == "paper",
        "every image weighing the same": v.term_weighting == "per-row",
        "alpha = 0.1 N": (v.alpha, v.alpha_scaling) == (0.1, "paper"),
        "a budget of 100": v.epochs == 100,
    }
    for phrase, holds in cited.items():
        assert phrase in v.description, phrase
        assert holds, phrase


def test_overrides_given_as_values_are_typed_like_text():
    v = create_variant("exact", {"lr": 3e-05, "hidden": 256, "alpha_schedule": "cosine"})
    assert (v.lr, v.hidden, v.alpha_schedule) == (3e-05, 256, "cosine")
    with pytest.raises(VariantError, match=r"hidden must be int, got '256\.5'"):
        create_variant("exact", {"hidden": 256.5})
    with pytest.raises(VariantError, match="unknown setting 'hiden'"):
        create_variant("exact", {"hiden": 256})


@pytest.mark.parametrize("name", [v.name for v in list_variants()])
def test_every_registered_variant_trains_on_generated_data(name, generated):
    """A smoke test that follows the registry (as timm's tests follow list_models()): a variant
    is tested the day it is registered. Two steps on generated data, finite losses, and every
    report figure in range (M1+M2 on the features of an M1 trained for an epoch)."""
    from harness.training.trainer import Trainer

    variant = create_variant(name, {"epochs": 1, "labels": 100})
    data = generated
    if variant.features == "m1":
        from harness.config.m1 import m1_settings
        from harness.training.features import feature_splits
        from harness.training.m1 import M1Training

        settings = m1_settings(variant.replace(m1_epochs=1, m1_hidden=32))
        m1 = M1Training(settings, data.train_x, data.val_x, torch.device("cpu"))
        m1.fit()
        data = feature_splits(data, m1.model, min_std=0.0)
    (report,) = Trainer(variant, data, "cpu", max_steps=2, progress=False).run_epoch()
    assert all(math.isfinite(v) for v in report.losses.values()), report.losses
    assert 0.0 <= report.test_accuracy <= 1.0 and report.samples_per_sec > 0


def test_a_setting_given_twice_is_refused_not_silently_the_last():
    with pytest.raises(VariantError, match="temperature is set twice"):
        parse_overrides(["temperature=0.2", "temperature=1.0"])


def test_a_users_variants_module_registers_and_a_broken_one_names_its_line(tmp_path):
    good = tmp_path / "mine.py"
    good.write_text(
        "from harness.config.variants import get_variant, register_variant\n\n\n"
        "@register_variant\ndef deep_classifier():\n"
        '    """Two hidden layers in q(y|x), z of 128."""\n'
        '    return get_variant("gumbel-0.5").replace(classifier_layers=2, z_dim=128)\n'
    )
    load_user_variants(good)
    try:
        variant = get_variant("deep-classifier")
        assert variant.classifier_layers == 2 and variant.description.startswith("Two hidden")
    finally:
        _REGISTRY.pop("deep-classifier")
    broken = tmp_path / "broken.py"
    broken.write_text("x = 1\n\nraise RuntimeError('oops')\n")
    with pytest.raises(VariantError, match=rf"^{broken}:3: RuntimeError: oops$"):
        load_user_variants(broken)
    table = tmp_path / "v.toml"
    table.write_text('[a]\nbase = "exact"\n[a.set]\nclassifier_layerz = 2\n')
    with pytest.raises(VariantError, match=r"v.toml: variant \[a\]: unknown setting"):
        load_user_variants(table)
