"""The stop rule and a run's outcome, on made-up histories (pure functions, no data)."""

from __future__ import annotations

import pytest

from harness.config.variants import VariantError, create_variant
from harness.training.reports import EpochReport
from harness.training.stopping import best_index, outcome, should_stop, time_to_accuracy
from harness.training.trainer import Trainer


def history(val_errors, test_errors=None, seconds=10.0):
    test_errors = test_errors or val_errors
    return [
        EpochReport(
            epoch=i + 1,
            steps=1,
            losses={"loss": 1.0},
            test_accuracy=1 - t / 100,
            test_error=t,
            val_accuracy=1 - v / 100,
            samples_per_sec=1.0,
            epoch_seconds=seconds,
            temperature=1.0,
            alpha=1.0,
            eval_seconds=1.0,
        )
        for i, (v, t) in enumerate(zip(val_errors, test_errors, strict=True))
    ]


def test_an_improvement_counts_only_beyond_min_delta():
    h = history([20.0, 15.0, 14.95, 14.0, 14.05])
    assert best_index(h, min_delta=0.0) == 3
    assert best_index(h, min_delta=0.1) == 3  # 14.95 is not 0.1 below 15
    assert best_index(history([20.0, 15.0, 14.95]), min_delta=0.1) == 1
    assert best_index(history([20.0, 15.0, 14.95]), min_delta=0.0) == 2


def test_patience_counts_epochs_since_the_best():
    h = history([20.0, 15.0, 16.0, 15.5])
    assert not should_stop(h, patience=3, min_delta=0.1)
    assert should_stop(h, patience=2, min_delta=0.1)
    assert not should_stop(h, patience=0, min_delta=0.1)  # 0: no stop rule
    assert not should_stop([], patience=1, min_delta=0.1)


def test_the_outcome_reports_the_test_error_at_the_best_validation_epoch():
    h = history([20.0, 12.0, 13.0, 14.0], test_errors=[21.0, 12.5, 9.0, 13.5])
    out = outcome(h, epochs=100, patience=2, min_delta=0.1)
    assert out["selected_epoch"] == 2 and out["selected_test_error"] == 12.5
    assert out["selected_val_error"] == pytest.approx(12.0)
    assert out["final_test_error"] == 13.5
    assert out["best_test_error_test_selected"] == 9.0  # chosen on the test set: apart
    assert out["epochs_run"] == 4 and out["stopped_by"] == "patience"
    assert out["train_seconds"] == 40.0 and out["wall_seconds"] == 44.0
    assert out["epochs_to_90"] == 3 and out["seconds_to_90"] == 30.0  # 91% at epoch 3
    assert out["epochs_to_95"] is None and out["seconds_to_95"] is None
    assert outcome(h, epochs=4, patience=0, min_delta=0.1)["stopped_by"] == "budget"


def test_time_to_accuracy_is_the_first_epoch_at_the_target():
    h = history([50.0, 9.0, 4.0, 6.0], seconds=2.5)
    assert time_to_accuracy(h, 0.90) == (2, 5.0)
    assert time_to_accuracy(h, 0.95) == (3, 7.5)
    assert time_to_accuracy(h, 0.99) is None


def test_the_stop_rule_needs_validation_images():
    with pytest.raises(VariantError, match="needs validation images"):
        create_variant("exact", {"patience": 5})
    assert create_variant("exact", {"patience": 5, "validation": 100}).patience == 5


def test_a_run_ends_at_the_stop_rule_and_a_resumed_run_ends_at_the_same_epoch(generated, tmp_path):
    """A learning rate too small to learn anything: the validation error stalls at once, so the
    rule ends the run after `patience` epochs; a resumed run keeps the rule's state."""
    variant = create_variant(
        "supervised-only",
        {"labels": 100, "validation": 200, "patience": 2, "min_delta": 5.0, "epochs": 30},
    ).replace(lr=1e-9)
    whole = Trainer(variant, generated, "cpu", max_steps=2, progress=False)
    whole.fit()
    assert whole.epoch == 3 < variant.epochs  # the first epoch is the best; two more stop it

    first = Trainer(variant.replace(epochs=2), generated, "cpu", max_steps=2, progress=False)
    first.fit(checkpoints=[tmp_path / "c.pt"])
    resumed = Trainer(variant, generated, "cpu", max_steps=2, progress=False)
    assert resumed.resume_from([tmp_path / "c.pt"])
    resumed.fit()
    assert resumed.epoch == whole.epoch
    assert [r.val_accuracy for r in resumed.seed_history(0)] == [
        r.val_accuracy for r in whole.seed_history(0)
    ]


def test_an_improvement_of_exactly_min_delta_is_none_whatever_the_float_rounding():
    """4.66 -> 4.56 is 0.1 on paper and 0.09999999999999964 or 0.1000000000000005 in floats,
    depending on how the accuracies were rounded: the rule must decide the same both ways (a
    run's decision and its record's, read back, agree)."""
    h = history([4.66, 4.56])
    assert best_index(h, min_delta=0.1) == 0
    noisy = history([4.66, 4.56])
    noisy[0].val_accuracy, noisy[1].val_accuracy = 0.9533999919891357, 0.9544000029563904
    assert best_index(noisy, min_delta=0.1) == 0
