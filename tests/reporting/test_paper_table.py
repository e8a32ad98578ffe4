"""The paper's table side by side: which runs enter, which cell is picked (by validation, never
by test), and how a pick is shown."""

from __future__ import annotations

from dataclasses import replace

from harness.config.variants import create_variant
from harness.reporting.paper_table import cells, family_of, paper_markdown, pick
from harness.runs.records import make_record, write_record
from tests.runs.test_records import MACHINE
from tests.training.test_stopping import history


def _record(variant, test_errors, val_shift=0.0):
    made = make_record(variant, history(test_errors), MACHINE)
    rows = [replace(r, val_accuracy=r.val_accuracy - val_shift / 100) for r in made.history]
    return replace(made, history=rows)


def test_the_pick_is_the_lowest_validation_error_never_the_lowest_test_error(tmp_path):
    base = {"validation": 200, "patience": 2, "epochs": 4}
    low_test = create_variant("exact", base)
    low_val = create_variant("exact", {**base, "lr": 5e-4})
    records = []
    for seed in range(3):
        # lower test error, but higher validation error: the table must not pick it
        records.append(_record(low_test.replace(seed=seed), [30.0, 10.0], val_shift=20.0))
        records.append(_record(low_val.replace(seed=seed), [30.0, 20.0]))
    by_row = cells(records)
    picked = pick(by_row[("M2", 100)])
    assert picked is not None and {r.variant.lr for r in picked} == {5e-4}
    assert pick([c[:2] for c in by_row[("M2", 100)]]) is None  # two seeds are not enough


def test_runs_outside_the_protocol_stay_out(tmp_path):
    assert family_of(create_variant("supervised-only")) is None
    assert family_of(create_variant("m1m2-reimpl")) == "M1+M2"
    assert family_of(create_variant("sdgm")) == "SDGM"
    no_validation = create_variant("exact", {"epochs": 4})
    fixed_draw = create_variant("exact", {"validation": 200, "patience": 2, "label_seed": 7})
    records = [_record(no_validation.replace(seed=s), [30.0, 20.0]) for s in range(3)]
    records += [_record(fixed_draw.replace(seed=s), [30.0, 20.0]) for s in range(3)]
    assert cells(records) == {}


def test_the_page_shows_the_published_rows_and_each_pick_with_its_interval(tmp_path):
    variant = create_variant("exact", {"validation": 200, "patience": 2, "epochs": 4})
    for seed, error in enumerate([20.0, 22.0, 24.0]):
        write_record(tmp_path / "runs", _record(variant.replace(seed=seed), [30.0, error]))
    page = paper_markdown(tmp_path)
    assert "| M2, Kingma et al. 2014 " in page and "11.97 ± 1.71" in page
    assert "22.00 ± 2.00 [17.03, 26.97], 3 seeds" in page
    assert "- M2 at 100 labels: `exact` (epochs=4, patience=2, validation=200)" in page
