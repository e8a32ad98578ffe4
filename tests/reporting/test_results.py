from __future__ import annotations

from pathlib import Path

import pytest

from harness.config.ablations import load_ablation
from harness.reporting.plots import final_figure, plot
from harness.reporting.tables import PAPER_M2_ERROR, compares_with_paper, load_runs
from harness.runs.records import make_record, write_record
from tests.runs.test_records import MACHINE
from tests.training.test_stopping import history

LABELS = """
description = "two label counts, an estimator and the control"
variants = ["exact"]
controls = ["supervised-only"]
seeds = [0, 1]
epochs = 3

[axes]
labels = [10, 20]
"""


def labels_runs(folder: Path, errors: list[float], spec: str = LABELS):
    """The ablation `spec` (LABELS) with a record of `errors` for every cell and seed, in
    `folder`: the ablation, its runs and its curves."""
    path = folder / "counts.toml"
    path.write_text(spec)
    ablation = load_ablation(str(path))
    for cell in ablation.cells():
        for seed in ablation.seeds:
            variant = ablation.variant(cell, seed)
            write_record(folder / "runs", make_record(variant, history(errors), MACHINE))
    return (ablation, *load_runs(ablation, folder))


def test_curves_over_label_counts_get_a_panel_each(tmp_path):
    from PIL import Image

    ablation, runs, curves = labels_runs(tmp_path, [30.0, 20.0, 25.0])
    assert len(runs) == 8 and len(curves) == 8 * 3  # eight runs, three epochs each
    assert sorted(curves.groupby(["variant", "labels"]).size().index) == [
        ("exact", 10),
        ("exact", 20),
        ("supervised-only", 10),
        ("supervised-only", 20),
    ]
    assert set(runs["selected_test_error"]) == {20.0}  # at the best validation epoch

    curves_png, final_png = plot(ablation.name, runs, curves, tmp_path, "labels")
    with Image.open(curves_png) as panels, Image.open(final_png) as final:
        assert panels.width > 2 * panels.height  # two panels side by side, then the legend
        assert 2 * final.height < final.width < 3 * final.height  # error | speed


def test_no_curve_is_drawn_from_one_epoch(tmp_path, capsys):
    from harness.cli.main import main

    path = tmp_path / "counts.toml"
    path.write_text(LABELS.replace("epochs = 3", "epochs = 1"))
    ablation = load_ablation(str(path))
    for cell in ablation.cells():
        variant = ablation.variant(cell, 0)
        write_record(tmp_path / "runs", make_record(variant, history([30.0]), MACHINE))
    assert main(["plot", str(path), "--out", str(tmp_path)]) == 0
    assert "no curves: the runs have one epoch each" in capsys.readouterr().out
    assert not (tmp_path / "counts_curves.png").exists()
    assert (tmp_path / "counts_final.png").exists()


def test_the_quickstart_trains_long_enough_to_show_a_difference():
    quickstart = load_ablation("quickstart")
    assert quickstart.epochs >= 3  # curves, not a column of dots
    assert {c.variant for c in quickstart.cells()} == {"exact", "gumbel-st", "supervised-only"}


def test_a_plot_along_an_axis_with_one_variant_so_far(tmp_path):
    """A campaign's first records may hold a single variant: the plots still come out."""
    path = tmp_path / "counts.toml"
    path.write_text(LABELS)
    ablation = load_ablation(str(path))
    cell = ablation.cells()[0]
    write_record(
        tmp_path / "runs", make_record(ablation.variant(cell, 0), history([30.0, 20.0]), MACHINE)
    )
    runs, curves = load_runs(ablation, tmp_path)
    assert len(runs) == 1
    assert [p.name for p in plot(ablation.name, runs, curves, tmp_path, "labels")] == [
        "counts_curves.png",
        "counts_final.png",
    ]


GRID = LABELS.replace("labels = [10, 20]", "lr = [0.001, 0.0003]\nalpha = [1.0, 0.1]")


def test_a_partly_run_grid_is_plotted_with_what_it_has(tmp_path, capsys):
    """A grid whose cells have two seeds, one, or none yet (a campaign under way): the grid
    figure comes out, each cell saying what its seeds give."""
    from harness.cli.main import main
    from harness.reporting.plots import grid_label

    path = tmp_path / "grid.toml"
    path.write_text(GRID)
    ablation = load_ablation(str(path))
    full, single = ablation.cells()[:2]
    for cell, seeds in [(full, (0, 1)), (single, (0,))]:
        for seed in seeds:
            variant = ablation.variant(cell, seed)
            errors = [30.0, 20.0 + seed]
            write_record(tmp_path / "runs", make_record(variant, history(errors), MACHINE))
    assert main(["plot", str(path), "--out", str(tmp_path)]) == 0, capsys.readouterr().err
    assert (tmp_path / "grid_grid.png").exists()
    assert grid_label(20.5, (14.15, 26.85)) == "20.50\n[14.15, 26.85]"
    assert grid_label(20.0, (float("nan"), float("nan"))) == "20.00\n(one seed)"
    assert grid_label(float("nan"), float("nan")) == ""


def test_the_final_plot_along_labels_shows_the_papers_errors_where_it_reports_them(tmp_path):
    """Label counts 100 and 20: the paper's M2 has a mean ± std at 100 alone, drawn beside the
    runs when the plot compares with the paper, and not otherwise."""
    import matplotlib.pyplot as plt
    from matplotlib.container import ErrorbarContainer

    path = tmp_path / "counts.toml"
    path.write_text(LABELS.replace("[10, 20]", "[100, 20]"))
    ablation = load_ablation(str(path))
    for cell in ablation.cells():
        variant = ablation.variant(cell, 0)
        write_record(tmp_path / "runs", make_record(variant, history([30.0, 20.0]), MACHINE))
    runs, _ = load_runs(ablation, tmp_path)
    assert compares_with_paper(ablation.axes, runs)
    assert not compares_with_paper(ablation.axes, runs.assign(dataset="fashion"))

    with_paper = final_figure(ablation.name, runs, "labels", paper=True)
    (bars,) = [c for c in with_paper.axes[0].containers if isinstance(c, ErrorbarContainer)]
    line, _, (lines,) = bars.lines
    labels = [t.get_text() for t in with_paper.axes[0].get_xticklabels()]
    assert line.get_ydata().tolist() == [PAPER_M2_ERROR[100][0]]
    assert line.get_xdata()[0] < labels.index("100")  # beside the runs at 100 labels
    assert lines.get_segments()[0][:, 1].tolist() == pytest.approx([10.26, 13.68])
    legend = [t.get_text() for t in with_paper.axes[0].get_legend().get_texts()]
    assert "paper's M2 (Kingma et al. 2014)" in legend

    without = final_figure(ablation.name, runs, "labels", paper=False)
    assert not any(isinstance(c, ErrorbarContainer) for c in without.axes[0].containers)
    plt.close("all")


def m2_and_m1m2_runs(
    tmp_path, spec: str = 'variants = ["exact", "m1m2"]\n[axes]\nlabels = [100, 600]'
):
    """Records of one seed of each cell of `spec` (by default exact and m1m2 at 100 and 600
    labels), and the runs they make."""
    path = tmp_path / "stacked.toml"
    path.write_text(f'description = "M2 and M1+M2"\nseeds = [0]\nepochs = 3\n{spec}\n')
    ablation = load_ablation(str(path))
    for cell in ablation.cells():
        variant = ablation.variant(cell, 0)
        write_record(tmp_path / "runs", make_record(variant, history([30.0, 20.0]), MACHINE))
    runs, _ = load_runs(ablation, tmp_path)
    return ablation, runs


def test_m1m2_cells_stand_beside_the_papers_m1m2_row_and_m2_cells_beside_its_m2_row(tmp_path):
    from harness.reporting.tables import PAPER_M1M2_ERROR, summarize

    ablation, runs = m2_and_m1m2_runs(tmp_path)
    table = summarize(runs, compares_with_paper(ablation.axes, runs), list(ablation.axes))
    rows = {cell: row for cell, row in zip(table["cell"], table.itertuples(), strict=True)}
    assert rows["exact[labels=600]"].paper_m2_error.startswith(f"{PAPER_M2_ERROR[600][0]:.2f}")
    assert rows["exact[labels=600]"].paper_m1m2_error == ""
    assert (
        rows["m1m2[labels=100]"].paper_m1m2_error
        == "3.33 ± 0.14"
        == (f"{PAPER_M1M2_ERROR[100][0]:.2f} ± {PAPER_M1M2_ERROR[100][1]:.2f}")
    )
    assert rows["m1m2[labels=100]"].paper_m2_error == ""


def test_m1m2_cells_at_one_label_count_still_stand_beside_the_papers_m1m2_row(tmp_path):
    """An ablation of M1+M2 recipes at 100 labels (m1m2-recipe, m1m2-long) sweeps no label count,
    yet the paper's M1+M2 row is its target: the column is there, the M2 one is not."""
    from harness.reporting.tables import summarize

    spec = 'variants = ["m1m2"]\n[set]\nlabels = 100\n[axes]\nlr = [0.001, 0.0003]'
    ablation, runs = m2_and_m1m2_runs(tmp_path, spec)
    assert not compares_with_paper(ablation.axes, runs)  # no label axis for the plots to mark
    table = summarize(runs, compares_with_paper(ablation.axes, runs), list(ablation.axes))
    assert table["paper_m1m2_error"].tolist() == ["3.33 ± 0.14"] * 2
    assert "paper_m2_error" not in table
    fashion = summarize(runs.assign(dataset="fashion"), False, list(ablation.axes))
    assert "paper_m1m2_error" not in fashion


def test_the_final_plot_of_m1m2_cells_shows_the_papers_m1m2_row_too(tmp_path):
    from matplotlib.container import ErrorbarContainer

    from harness.reporting.tables import PAPER_M1M2_ERROR

    ablation, runs = m2_and_m1m2_runs(tmp_path)
    figure = final_figure(ablation.name, runs, "labels", paper=True)
    bars = [c for c in figure.axes[0].containers if isinstance(c, ErrorbarContainer)]
    heights = [bar.lines[0].get_ydata().tolist() for bar in bars]
    assert [PAPER_M2_ERROR[n][0] for n in (100, 600)] in heights
    assert [PAPER_M1M2_ERROR[n][0] for n in (100, 600)] in heights
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert "paper's M1+M2 (Kingma et al. 2014)" in legend


def test_a_table_says_which_cells_mix_numerics_versions():
    import pandas as pd

    from harness.reporting.tables import _mixed, _numerics

    old = {"git_commit": "6e1b6f0~1"}  # before the softplus change: version 0 where git knows
    made = {"numerics_version": 1, "segments": [old, {"git_commit": "HEAD"}]}
    assert _numerics(made["segments"][-1], made) == "version 1"  # the record's own word
    assert _numerics({"git_commit": "0" * 40}, made) == "version unknown (commit not here)"
    runs = pd.DataFrame(
        {"cell": ["a", "a", "b"], "numerics": ["version 0", "version 1", "version 1 & version 0"]}
    )
    assert _mixed(runs, "numerics") == " (cells whose runs mix them: a, b)"
    assert _mixed(runs[runs.cell == "a"].iloc[1:], "numerics") == ""


def test_the_answers_page_asks_each_ablations_question_and_keeps_controls_apart():
    from harness.config.ablations import load_ablation
    from harness.reporting.answers import answers_markdown, question

    assert question(load_ablation("m1m2")) == "M1+M2 (Kingma et al. 2014, Table 1's best row)"
    page = answers_markdown(Path(__file__).resolve().parents[2] / "results", ["estimator"])
    (row,) = [line for line in page.splitlines() if line.startswith("| [`estimator`]")]
    # the supervised-only control is worse, but it is no answer to "which estimator"
    assert "3 no difference; the controls: worse" in row and "| none " in row


def test_a_cell_of_one_seed_claims_no_spread_and_no_interval(tmp_path):
    from harness.reporting.answers import _lowest
    from harness.reporting.tables import shown_frame, summarize

    one_seed = LABELS.replace("seeds = [0, 1]", "seeds = [0]")
    ablation, runs, _ = labels_runs(tmp_path, [30.0, 20.0], one_seed)
    table = summarize(runs, False, list(ablation.axes))
    shown = shown_frame(table)
    assert set(shown["test error (%)"]) == {"20.00 (one seed)"}
    assert set(shown["95% CI (t)"]) == {"n < 2"}
    lowest = _lowest(table)  # the answers page's pick, at each label count
    assert lowest.count("20.00 (one seed) n < 2") == 2 and "nan" not in lowest
