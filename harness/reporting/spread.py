"""How much of a cell's spread over seeds the labelled subset makes, and how much the
initialisation: a two-way random-effects analysis of variance of runs crossed over label draws
(`label_seed`) and seeds.

The model, for the run with label draw i and seed j (one run each, every draw with every seed):

    error_ij = mu + L_i + I_j + e_ij,   L_i ~ N(0, s2_L), I_j ~ N(0, s2_I), e_ij ~ N(0, s2_e)

with a label draws and b seeds. With one run per pair the draw-by-seed interaction cannot be told
from the residual: e_ij holds both. statsmodels' OLS and `anova_lm` give the mean squares; their
expectations give the components (Searle, Casella and McCulloch 1992, ch. 4):

    E[MS_L] = s2_e + b s2_L,   E[MS_I] = s2_e + a s2_I,   E[MS_e] = s2_e
    s2_L = (MS_L - MS_e) / b,  s2_I = (MS_I - MS_e) / a    (truncated at 0)

Why this and not REML (statsmodels' MixedLM with crossed variance components): on a complete
balanced grid the ANOVA estimates are REML's wherever they are positive, they come with F tests
that are exact under normality (is s2_L zero? F = MS_L / MS_e on (a-1, (a-1)(b-1)) degrees of
freedom), and on a 3 x 3 grid MixedLM's optimiser often ends in convergence warnings (2 of 4
generated grids, tried when this was written; tests/reporting/test_spread.py checks the two agree
on a 6 x 6 grid). Each component's 95% interval
is Satterthwaite's (1946): s2 treated as a scaled chi-square with nu = (c MS)^2 / sum (c_k MS_k)^2
/ df_k degrees of freedom, scipy's chi-square quantiles giving [nu s2 / chi2_{0.975}, nu s2 /
chi2_{0.025}]; the residual's is exact. With 2 and 4 degrees of freedom the intervals are wide:
they say how little nine runs pin a variance down, which is the point of showing them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from scipy import stats
from statsmodels.formula.api import ols
from statsmodels.stats.anova import anova_lm

CONFIDENCE = 0.95
LABELS, SEEDS = "label_seed", "seed"


class SpreadError(ValueError):
    """Runs that are not a complete grid of label draws by seeds."""


@dataclass(frozen=True)
class Component:
    """One source of spread: its variance (points squared) with a 95% interval, its share of
    the total, and for the label draw and the initialisation the F test that it is zero."""

    source: str
    df: float
    mean_square: float
    variance: float
    low: float
    high: float
    share: float
    p: float | None  # the F test's p (None for the residual)

    @property
    def sd(self) -> float:
        """The component's standard deviation, in points."""
        return math.sqrt(self.variance)


def crossed_grid(runs: pd.DataFrame, value: str = "selected_test_error") -> pd.DataFrame:
    """The runs' `value` as a grid, a row per label draw and a column per seed; a SpreadError
    unless every draw has one run at every seed (at least 2 of each)."""
    grid = runs.pivot_table(index=LABELS, columns=SEEDS, values=value, aggfunc="count")
    if grid.shape[0] < 2 or grid.shape[1] < 2:
        raise SpreadError(
            f"a decomposition needs at least 2 label draws and 2 seeds; the runs have "
            f"{grid.shape[0]} and {grid.shape[1]}"
        )
    holes = [(d, s) for d in grid.index for s in grid.columns if grid.loc[d, s] != 1]
    if holes:
        listed = ", ".join(f"label seed {d} seed {s}" for d, s in holes)
        raise SpreadError(
            f"the grid of label draws by seeds is not complete: no single run at {listed}"
        )
    return runs.pivot_table(index=LABELS, columns=SEEDS, values=value)


def decompose(runs: pd.DataFrame, value: str = "selected_test_error") -> list[Component]:
    """The spread of `value` over a complete grid of label draws by seeds, split into the label
    draw's, the initialisation's and the residual's (the module's docstring says how)."""
    grid = crossed_grid(runs, value)
    a, b = grid.shape
    long = runs[[LABELS, SEEDS]].assign(y=runs[value])  # one run per pair (crossed_grid)
    table = anova_lm(ols(f"y ~ C({LABELS}) + C({SEEDS})", data=long).fit(), typ=2)
    ms = (table["sum_sq"] / table["df"]).to_dict()
    df = table["df"].to_dict()
    ms_l, ms_i, ms_e = ms[f"C({LABELS})"], ms[f"C({SEEDS})"], ms["Residual"]
    df_l, df_i, df_e = df[f"C({LABELS})"], df[f"C({SEEDS})"], df["Residual"]
    s2_l, s2_i = max(0.0, (ms_l - ms_e) / b), max(0.0, (ms_i - ms_e) / a)
    total = s2_l + s2_i + ms_e
    parts = []
    for source, ms_k, df_k, s2, n, p in [
        ("labelled subset", ms_l, df_l, s2_l, b, table["PR(>F)"][f"C({LABELS})"]),
        ("initialisation", ms_i, df_i, s2_i, a, table["PR(>F)"][f"C({SEEDS})"]),
    ]:
        low, high = satterthwaite(s2, [(ms_k / n, df_k), (ms_e / n, df_e)])
        parts.append(Component(source, df_k, ms_k, s2, low, high, s2 / total, float(p)))
    low, high = chi_square_interval(ms_e, df_e)
    parts.append(Component("residual", df_e, ms_e, ms_e, low, high, ms_e / total, None))
    return parts


def satterthwaite(estimate: float, terms: list[tuple[float, float]]) -> tuple[float, float]:
    """Satterthwaite's interval for a variance estimated as c_1 MS_1 - c_2 MS_2 (`terms`: each
    c_k MS_k with its degrees of freedom): nu = estimate^2 / sum (c_k MS_k)^2 / df_k; (0, 0)
    for an estimate of 0."""
    if estimate <= 0:
        return 0.0, 0.0
    nu = estimate**2 / sum(scaled**2 / df for scaled, df in terms)
    return chi_square_interval(estimate, nu)


def chi_square_interval(variance: float, df: float) -> tuple[float, float]:
    """The interval of a variance estimated on `df` degrees of freedom:
    [df s2 / chi2_{(1+c)/2}, df s2 / chi2_{(1-c)/2}]."""
    upper, lower = stats.chi2.ppf([(1 + CONFIDENCE) / 2, (1 - CONFIDENCE) / 2], df)
    return float(df * variance / upper), float(df * variance / lower)


def class_errors(runs: pd.DataFrame, draw_column: str = LABELS) -> pd.DataFrame:
    """Per label draw, the mean test error of each class (percent) at the epoch the stop rule
    selected, over the draw's runs whose records hold it, with how many runs that is."""
    rows = [
        [draw, *errors]
        for draw, errors in zip(runs[draw_column], runs["selected_class_errors"], strict=True)
        if isinstance(errors, list)
    ]
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows, columns=[draw_column, *range(len(rows[0]) - 1)])
    grouped = frame.groupby(draw_column)
    table = grouped.mean()
    table["runs"] = grouped.size()
    return table


def spread_markdown(runs: pd.DataFrame) -> list[str]:
    """The spread section of a table whose runs cross label draws with seeds: the grid of test
    errors, the decomposition and the per-class errors by label draw; while the grid has holes,
    a line saying which."""
    try:
        grid = crossed_grid(runs)
    except SpreadError as err:
        return ["## Where the spread comes from", "", f"Not yet: {err}.", ""]
    parts = decompose(runs)
    shown = grid.map(lambda v: f"{v:.2f}")
    shown.index = [f"label seed {d}" for d in grid.index]
    shown.columns = [f"seed {s}" for s in grid.columns]
    shown["mean over seeds"] = [f"{v:.2f}" for v in grid.mean(axis=1)]
    means = grid.mean(axis=0).map(lambda v: f"{v:.2f}").tolist()
    shown.loc["mean over label draws"] = [*means, f"{grid.to_numpy().mean():.2f}"]
    components = pd.DataFrame(
        {
            "source": [c.source for c in parts],
            "df": [f"{c.df:g}" for c in parts],
            "mean square": [f"{c.mean_square:.2f}" for c in parts],
            "variance (points²)": [f"{c.variance:.2f}" for c in parts],
            f"{CONFIDENCE:.0%} interval": [f"[{c.low:.2f}, {c.high:.2f}]" for c in parts],
            "sd (points)": [f"{c.sd:.2f}" for c in parts],
            "share": [f"{c.share:.0%}" for c in parts],
            "F test p": ["-" if c.p is None else f"{c.p:.3g}" for c in parts],
        }
    )
    lines = [
        "## Where the spread comes from",
        "",
        "Test error (%) at the epoch the stop rule selects, for every label draw (`label_seed`: "
        "the 100 labelled images) with every seed (the initialisation, the batches and the "
        "noise); the runs whose two seeds agree are the runs without a label seed of their own.",
        "",
        shown.to_markdown(disable_numparse=True),
        "",
        "A two-way random-effects analysis of variance (harness/reporting/spread.py: the mean "
        "squares from statsmodels' `anova_lm`, the components from their expectations, "
        "truncated at 0; with one run per pair, the residual holds the draw-by-seed "
        "interaction). The F test asks whether a component is zero (exact under normal "
        f"errors); the {CONFIDENCE:.0%} intervals are Satterthwaite's (the residual's exact), "
        "and with so few draws they are wide.",
        "",
        components.to_markdown(index=False, disable_numparse=True),
        "",
    ]
    per_class = class_errors(runs)
    if not per_class.empty:
        counts = per_class.pop("runs")
        worst = per_class.idxmax(axis=1)
        shown_classes = per_class.map(lambda v: f"{v:.1f}")
        shown_classes.columns = [f"digit {k}" for k in per_class.columns]
        shown_classes["hardest"] = [f"digit {k}" for k in worst]
        shown_classes["runs"] = counts.astype(str)
        shown_classes.index = [f"label seed {d}" for d in per_class.index]
        lines += [
            "Which labelled subsets are hard: each digit's test error (%) by label draw, the "
            "mean over the draw's runs at the epoch the stop rule selects (over the runs whose "
            "records hold errors per class; older records do not).",
            "",
            shown_classes.to_markdown(disable_numparse=True),
            "",
        ]
    return lines
