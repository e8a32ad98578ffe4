from __future__ import annotations

import pytest

from harness.ablation import load_ablation, run_ablation
from harness.results import epoch_curves, load_runs, plot, wall_time
from harness.tracking import Tracker

pytest.importorskip("mlflow")

LABELS = """
description = "two label counts, an estimator and the control"
variants = ["exact"]
controls = ["supervised-only"]
seeds = [0]
epochs = 2

[axes]
labels = [10, 20]
"""


def test_curves_over_label_counts_get_a_panel_each(tmp_path):
    from PIL import Image

    path = tmp_path / "counts.toml"
    path.write_text(LABELS)
    ablation = load_ablation(str(path))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_ablation(
        ablation, tracking_uri=store, max_steps=1, checkpoint_dir=tmp_path, echo=lambda *a: None
    )
    tracker = Tracker(store, ablation.name)
    runs = load_runs(tracker, ablation.name, [c.name for c in ablation.cells()], ["labels"])

    curves = epoch_curves(tracker, runs, ["labels"])
    assert len(curves) == 4 * 2  # four runs, two epochs each
    assert sorted(curves.groupby(["variant", "labels"]).size().index) == [
        ("exact", 10),
        ("exact", 20),
        ("supervised-only", 10),
        ("supervised-only", 20),
    ]

    curves_png, final_png = plot(ablation.name, tracker, runs, tmp_path, "labels")
    with Image.open(curves_png) as panels, Image.open(final_png) as single:
        assert panels.width > 2 * panels.height  # two panels side by side, then the legend
        assert single.width < 2 * single.height


def test_wall_time_is_the_span_of_the_runs_not_their_sum():
    import pandas as pd

    two_at_once = pd.DataFrame({"started": [0.0, 0.0, 600.0], "ended": [600.0, 600.0, 900.0]})
    assert wall_time(two_at_once) == "15.0 min wall, 25.0 min summed over 3 runs"
