"""What the MLflow UI shows of a run (harness/tracking/views.py), without a browser: outcomes
rounded as the tables round them (the UI's own figures are tests/tracking/test_ui.py's)."""

from __future__ import annotations

import pytest

from harness.tracking.views import shown


@pytest.mark.parametrize(
    ("name", "value", "as_shown"),
    [
        ("final_samples_per_sec", 2617.6879, 2618.0),  # the audit's unrounded rows/s
        ("seconds_to_95", 556.959999, 557.0),  # and 423.392900...
        ("seconds_to_90", 423.3929, 423.0),
        ("train_seconds", 1234.56, 1235.0),
        ("selected_test_error", 3.72222, 3.72),
        ("best_test_error_test_selected", 10.4649, 10.46),
        ("epochs_run", 48, 48.0),
        ("selected_epoch", 38, 38.0),
    ],
)
def test_a_runs_outcome_is_shown_to_the_tables_precision(name, value, as_shown):
    assert shown(name, value) == as_shown
