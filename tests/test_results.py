from __future__ import annotations

from harness.ablation import load_ablation
from harness.records import make_record, write_record
from harness.results import load_runs, plot
from tests.test_records import MACHINE
from tests.test_stopping import history

LABELS = """
description = "two label counts, an estimator and the control"
variants = ["exact"]
controls = ["supervised-only"]
seeds = [0, 1]
epochs = 3

[axes]
labels = [10, 20]
"""


def test_curves_over_label_counts_get_a_panel_each(tmp_path):
    from PIL import Image

    path = tmp_path / "counts.toml"
    path.write_text(LABELS)
    ablation = load_ablation(str(path))
    for cell in ablation.cells():
        for seed in ablation.seeds:
            variant = ablation.variant(cell, seed)
            write_record(
                tmp_path / "runs", make_record(variant, history([30.0, 20.0, 25.0]), MACHINE)
            )
    runs, curves = load_runs(ablation, tmp_path)
    assert len(runs) == 8 and len(curves) == 8 * 3  # eight runs, three epochs each
    assert sorted(curves.groupby(["variant", "labels"]).size().index) == [
        ("exact", 10),
        ("exact", 20),
        ("supervised-only", 10),
        ("supervised-only", 20),
    ]
    assert set(runs["selected_test_error"]) == {20.0}  # at the best validation epoch

    curves_png, final_png = plot(ablation.name, runs, curves, tmp_path, "labels")
    with Image.open(curves_png) as panels, Image.open(final_png) as single:
        assert panels.width > 2 * panels.height  # two panels side by side, then the legend
        assert single.width < 2 * single.height
