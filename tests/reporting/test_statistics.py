"""Is a difference real: intervals, paired comparisons, Holm, seeds needed, and where they show
(tables, `m2h compare`), checked against scipy on known data."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from harness.cli.main import main
from harness.config.ablations import load_ablation
from harness.reporting.statistics import (
    StatisticsError,
    compare,
    holm,
    seeds_needed,
    smallest_p,
    t_interval,
)

REFERENCE = {0: 12.0, 1: 7.5, 2: 16.1, 3: 9.8, 4: 6.7}
CELL = {0: 13.1, 1: 8.0, 2: 17.4, 3: 10.1, 4: 7.9}


def test_the_cell_interval_is_students_t_interval_of_the_mean():
    values = [10.63, 12.32, 8.28, 9.79, 6.68]
    mean, sem = np.mean(values), stats.sem(values)
    half = stats.t.ppf(0.975, df=4) * sem
    assert t_interval(values) == pytest.approx((mean - half, mean + half))
    assert all(np.isnan(t_interval([3.0])))
    assert t_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_a_comparison_matches_scipy_and_an_enumeration_of_every_sign_flip():
    c = compare("cell", CELL, "reference", REFERENCE)
    a = np.array([CELL[s] for s in range(5)])
    b = np.array([REFERENCE[s] for s in range(5)])
    d = a - b
    assert c.seeds == (0, 1, 2, 3, 4)
    assert c.difference == pytest.approx(d.mean())
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert (c.low, c.high) == pytest.approx((ci.low, ci.high))
    assert c.p_t == pytest.approx(stats.ttest_rel(a, b).pvalue)
    flips = [np.mean(d * signs) for signs in itertools.product([1, -1], repeat=5)]
    by_hand = np.mean([abs(m) >= abs(d.mean()) - 1e-12 for m in flips])
    assert c.p_value == pytest.approx(by_hand)
    assert c.p_value == pytest.approx(smallest_p(5)) == 0.0625  # every seed worse
    assert c.probability_of_improvement == pytest.approx(stats.mannwhitneyu(b, a).statistic / 25)


def test_the_probability_of_improvement_is_rlibles_over_every_pair_of_runs():
    better = compare("c", {0: 1.0, 1: 2.0}, "r", {0: 3.0, 1: 4.0})
    assert better.probability_of_improvement == 1.0  # every error of the cell is lower
    tied = compare("c", {0: 1.0, 1: 2.0}, "r", {0: 1.0, 1: 2.0})
    assert tied.probability_of_improvement == 0.5  # 2 ties of 4 pairs, 1 lower, 1 higher
    assert tied.verdict == "no difference detected with 2 seeds"


def test_pairing_finds_a_difference_the_unpaired_means_do_not():
    # the seed (the label draw) moves the error by 25 points; the cell is 1 point worse on each
    reference = {s: 5.0 + 5 * s for s in range(6)}
    cell = {s: e + 1.0 + 0.1 * (s % 2) for s, e in reference.items()}
    unpaired = stats.ttest_ind(list(cell.values()), list(reference.values()))
    assert unpaired.pvalue > 0.5
    c = compare("cell", cell, "reference", reference)
    assert c.p_value == pytest.approx(smallest_p(6)) == 0.03125
    assert c.verdict == "worse"
    assert c.low > 0


def test_with_five_seeds_the_exact_test_cannot_decide_and_the_verdict_falls_to_the_t_test():
    c = holm([compare("cell", CELL, "reference", REFERENCE)])[0]
    assert c.p_holm == 0.0625 and c.p_t_holm < 0.05
    assert c.verdict == "worse (t test)"


def test_holm_corrects_a_tables_p_values_together():
    found = [
        compare("a", {0: 1.0, 1: 2.0}, "r", {0: 1.5, 1: 2.1}),
        compare("b", {0: 1.0, 1: 2.0}, "r", {0: 1.5, 1: 2.2}),
        compare("c", {0: 1.0, 1: 2.0}, "r", {0: 1.5, 1: 2.3}),
    ]
    ps = [0.01, 0.04, 0.03]
    found = [c.__class__(**{**c.__dict__, "p_value": p}) for c, p in zip(found, ps, strict=True)]
    # Holm: sorted 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 -> max(0.06, 0.04)
    assert [c.p_holm for c in holm(found)] == pytest.approx([0.03, 0.06, 0.06])


def test_cells_that_share_fewer_than_two_seeds_are_refused():
    with pytest.raises(StatisticsError, match=r"share 1 seed \(1\); a paired comparison needs"):
        compare("cell", {0: 1.0, 1: 2.0}, "reference", {1: 3.0, 2: 4.0})
    with pytest.raises(StatisticsError, match="share 0 seeds"):
        compare("cell", {0: 1.0}, "reference", {2: 4.0})


def test_seeds_needed_grows_with_the_spread_and_never_falls_below_what_the_exact_test_needs():
    assert smallest_p(6) < 0.05 <= smallest_p(5)
    assert seeds_needed(0.5, 0.0) == 6
    assert seeds_needed(5.0, 0.1) == 6
    assert seeds_needed(0.0, 1.0) is None
    noisy, noisier = seeds_needed(0.5, 1.0), seeds_needed(0.5, 2.0)
    assert 6 < noisy < noisier
    # a paired t-test with that many pairs has the power asked for, one fewer does not
    from statsmodels.stats.power import TTestPower

    assert TTestPower().power(0.5, noisy, 0.05) >= 0.8 > TTestPower().power(0.5, noisy - 1, 0.05)


def test_each_cell_is_compared_with_its_reference_at_the_same_problem_settings():
    labels = load_ablation("labels")
    pairs = {c.name: getattr(labels.reference_of(c), "name", None) for c in labels.cells()}
    assert pairs["gumbel-st[labels=600]"] == "exact[labels=600]"
    assert pairs["supervised-only[labels=3000]"] == "exact[labels=3000]"
    assert pairs["exact[labels=100]"] is None
    y_term = load_ablation("y-term")  # a reference by settings: each cell against its twin
    pairs = {c.name: getattr(y_term.reference_of(c), "name", None) for c in y_term.cells()}
    assert pairs["gumbel-0.5[y_term=sampled]"] == "gumbel-0.5[y_term=analytic]"
    assert pairs["gumbel-0.1[y_term=sampled]"] == "gumbel-0.1[y_term=analytic]"


def test_an_unknown_reference_is_refused_in_one_line(tmp_path):
    from harness.config.ablations import AblationError

    bad = tmp_path / "bad.toml"
    bad.write_text('variants = ["exact"]\nreference = "gumbel-st"\n')
    with pytest.raises(AblationError, match="reference 'gumbel-st' is not one of its variants"):
        load_ablation(str(bad))
    bad.write_text('variants = ["exact"]\nreference = { alpha = 3.0 }\n[axes]\nalpha = [1.0]\n')
    with pytest.raises(AblationError, match=r"reference alpha = 3\.0 is not a value of its axis"):
        load_ablation(str(bad))


@pytest.fixture
def labels_results(tmp_path):
    """A results folder with the committed records of the labels campaign: gumbel-st at the 3
    seeds it planned (the temperature campaign adds seeds 3-4 of its 100-label cell, which
    `m2h compare` would pair too)."""
    shutil.copytree(Path(__file__).resolve().parents[2] / "results" / "runs", tmp_path / "runs")
    for later in (tmp_path / "runs").glob("gumbel-st-*-s[34].json"):
        later.unlink()
    return tmp_path


def test_the_labels_table_gives_intervals_and_paired_comparisons(labels_results, capsys):
    assert main(["table", "labels", "--out", str(labels_results)]) == 0
    md = (labels_results / "labels.md").read_text()
    assert "## Paired comparisons against `exact`" in md
    section = md.split("## Paired comparisons")[1]
    row = next(line for line in section.splitlines() if line.startswith("| gumbel-st[labels=600] "))
    assert "exact[labels=600]" in row and "+2.05" in row and "[1.07, 3.04]" in row
    assert "worse (t test)" in row
    assert "Seeds needed" in md
    csv = (labels_results / "labels_comparisons.csv").read_text()
    assert csv.startswith("cell,reference,seeds,pairs,difference")
    assert len(csv.splitlines()) == 1 + 8  # gumbel-st and the control at 4 label counts


def test_m2h_compare_pairs_two_cells_by_seed(labels_results, capsys):
    out = str(labels_results)
    assert main(["compare", "gumbel-st", "exact", "--ablation", "labels", "--where",
                 "labels=600", "--out", out]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "paired over seeds 0 1 2" in printed and "+2.05 points" in printed
    assert "verdict: worse (t test)" in printed
    assert main(["compare", "labels:exact[labels=100]", "labels:gumbel-st[labels=100]",
                 "--out", out]) == 0  # fmt: skip
    assert "-2.15 points" in capsys.readouterr().out


def test_m2h_compare_refuses_cells_without_two_shared_seeds_in_one_line(labels_results, capsys):
    runs = labels_results / "runs"
    for path in runs.glob("gumbel-st-*-s[12].json"):
        path.unlink()
    code = main(["compare", "labels:gumbel-st[labels=600]", "labels:exact[labels=600]",
                 "--out", str(labels_results)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "share 1 seed (0); a paired comparison needs" in err


def test_the_paired_plot_draws_intervals_corrected_as_the_verdicts_are():
    """Issue 55: an interval that leaves out zero beside "no difference detected" read as a
    contradiction; the bold interval is 95% for all comparisons at once (Bonferroni), so one
    that leaves out zero is a difference the Holm-corrected t test detects too."""
    from harness.reporting.plots import corrected_interval, nonnegative_interval, paired_figure

    reference = {s: 10.0 + 0.3 * s for s in range(5)}

    def shifted(k: int) -> dict[int, float]:
        return {s: e - 0.3 * k + 0.05 * (s % 2) for s, e in reference.items()}

    found = holm([compare(f"c{k}", shifted(k), "ref", reference) for k in range(1, 5)])
    assert any(corrected_interval(c, len(found))[1] < 0 for c in found)
    for c in found:
        assert corrected_interval(c, 1) == pytest.approx((c.low, c.high))
        low, high = corrected_interval(c, len(found))
        assert low < c.low and high > c.high  # wider for four comparisons at once
        if high < 0:  # it leaves out zero: the corrected t test finds the difference too
            assert c.p_t_holm < 0.05 and not c.verdict.startswith("no difference")
    assert nonnegative_interval([0.1, 5.0, 0.2])[0] == 0.0  # an error's interval stops at zero
    figure = paired_figure("t", found)
    labels = [t.get_text() for t in figure.axes[1].get_yticklabels()]
    assert sorted(labels) == sorted(c.verdict for c in found)  # the verdicts, at the right
