"""Is a difference real? Intervals over seeds and paired comparisons between cells.

A seed fixes both the labelled images and the initialisation (unless a run's label_seed draws
its labelled images apart), so the runs of two cells with the same seed and labelled subset saw
the same labels and started from the same draw: they are paired, and the paired
difference removes most of the spread that the label draw puts on each cell (at 100 labels the
seeds of one cell span several points). What is computed, all with scipy.stats and statsmodels:

- a cell's 95% interval over its seeds: Student's t interval of the mean (with a handful of seeds
  a bootstrap is narrow and optimistic; the t interval assumes roughly normal errors);
- a comparison of a cell with its reference over the seeds both have: the mean paired difference
  d = error(cell) - error(reference) in points (negative: the cell is better) with the paired t
  interval (it assumes normal differences); the probability of improvement as rliable defines it,
  P(error(cell) < error(reference)) over every pair of their runs, ties counting one half (the
  Mann-Whitney U statistic over n * m); and the two-sided p-value of the exact paired permutation
  test (every sign flip of the differences; exact for 2-16 pairs);
  beside it the paired t-test's p-value (normal differences assumed), which can decide at 3-5
  seeds where the exact test cannot;
- Holm's correction of each kind of p-value across the comparisons of one table, and a verdict:
  better or worse when the corrected exact p is below 0.05; "better (t test)" or "worse (t
  test)" when only the corrected t-test p is; else no difference detected with n seeds;
- how many seeds would resolve a difference: the pairs a paired t-test at level 0.05 needs for
  power 0.8 against the observed spread of the differences, and never fewer than the permutation
  test needs to reach p < 0.05 at all (6 pairs: with n pairs its smallest two-sided p is 2^(1-n),
  0.25 with 3 pairs, 0.0625 with 5).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

CONFIDENCE = 0.95
LEVEL = 0.05  # a comparison is a difference when its Holm-corrected p is below this
POWER = 0.8
RESOLVE_POINTS = 0.5  # the difference the seeds-needed line is asked for
MOST_SEEDS = 1000  # seeds-needed says "1000" for anything beyond
EXACT_UP_TO = 16  # pairs: beyond this the permutation test samples 2^16 sign flips


class StatisticsError(ValueError):
    """Runs that cannot be compared (fewer than two shared seeds)."""


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student's t interval of the mean of `values`: mean -+ t_{n-1} * sd / sqrt(n); NaN for
    fewer than two values, the mean itself when they are all equal."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    mean, sem = float(x.mean()), float(stats.sem(x))
    if sem == 0:
        return mean, mean
    low, high = stats.t.interval(confidence, df=len(x) - 1, loc=mean, scale=sem)
    return float(low), float(high)


def smallest_p(pairs: int) -> float:
    """The smallest two-sided p-value an exact paired permutation (or signed-rank) test can give
    with `pairs` pairs: 2 / 2^n."""
    return min(1.0, 2.0 ** (1 - pairs))


def seeds_needed(difference: float, sd_of_differences: float) -> int | None:
    """Pairs needed to resolve a paired difference of `difference` points against differences
    that spread by `sd_of_differences`: a paired t-test at level LEVEL with power POWER, and at
    least the pairs at which the exact permutation test can reach p < LEVEL. None for a zero
    difference (nothing to resolve)."""
    if difference == 0:
        return None
    floor = next(n for n in range(2, 64) if smallest_p(n) < LEVEL)
    if sd_of_differences == 0:
        return floor
    effect = abs(difference) / sd_of_differences
    power = TTestPower()  # its power function, walked up n (its root finder fails on large effects)
    n = next(
        (n for n in range(2, MOST_SEEDS + 1) if power.power(effect, n, LEVEL) >= POWER),
        MOST_SEEDS,
    )
    return max(floor, n)


@dataclass(frozen=True)
class Comparison:
    """One cell against its reference, paired by seed (errors in percent, differences in
    points; a negative difference means the cell's error is lower)."""

    cell: str
    reference: str
    seeds: tuple[Any, ...]  # what paired the runs (tables.Pair), in order
    difference: float
    low: float
    high: float
    probability_of_improvement: float
    p_value: float  # exact paired permutation test
    p_holm: float
    p_t: float  # paired t-test (normal differences assumed)
    p_t_holm: float
    smallest_p: float
    seeds_for_resolve: int | None  # pairs to resolve RESOLVE_POINTS
    seeds_for_observed: int | None  # pairs to resolve the observed difference

    @property
    def verdict(self) -> str:
        """better or worse (by the exact test, or by the t test alone), or that no difference
        was detected with these seeds."""
        direction = "better" if self.difference < 0 else "worse"
        if self.p_holm < LEVEL:
            return direction
        if self.p_t_holm < LEVEL:
            return f"{direction} (t test)"
        return f"no difference detected with {len(self.seeds)} seeds"


def compare(
    cell: str,
    errors: Mapping[Any, float],
    reference: str,
    reference_errors: Mapping[Any, float],
) -> Comparison:
    """`cell` against `reference` over the runs both have (errors by what pairs the runs: a
    seed, or a seed and a label seed; keys that sort), uncorrected (`holm` corrects a table's
    comparisons together)."""
    seeds = tuple(sorted(set(errors) & set(reference_errors)))
    if len(seeds) < 2:
        raise StatisticsError(
            f"{cell} and {reference} share {len(seeds)} seed"
            f"{'' if len(seeds) == 1 else 's'} ({', '.join(map(str, seeds)) or 'none'}); "
            "a paired comparison needs at least 2"
        )
    a = np.array([errors[s] for s in seeds], dtype=float)
    b = np.array([reference_errors[s] for s in seeds], dtype=float)
    d = a - b
    low, high = t_interval(d)
    # rliable's probability of improvement: U / (n m), U counting the pairs where the
    # reference's error is higher, ties one half
    u = stats.mannwhitneyu(b, a, alternative="two-sided").statistic
    p_t = _paired_t_p(a, b)
    if np.all(d == 0):
        p = 1.0
    else:
        p = stats.permutation_test(
            (a, b),
            lambda x, y, axis: np.mean(x - y, axis=axis),
            permutation_type="samples",
            vectorized=True,
            n_resamples=np.inf if len(seeds) <= EXACT_UP_TO else 2**16,
            alternative="two-sided",
            random_state=0,
        ).pvalue
    sd = float(d.std(ddof=1))
    return Comparison(
        cell=cell,
        reference=reference,
        seeds=seeds,
        difference=float(d.mean()),
        low=low,
        high=high,
        probability_of_improvement=float(u) / (len(a) * len(b)),
        p_value=float(min(1.0, p)),
        p_holm=float(min(1.0, p)),
        p_t=p_t,
        p_t_holm=p_t,
        smallest_p=smallest_p(len(seeds)),
        seeds_for_resolve=seeds_needed(RESOLVE_POINTS, sd),
        seeds_for_observed=seeds_needed(float(d.mean()), sd),
    )


def _paired_t_p(a: np.ndarray, b: np.ndarray) -> float:
    """The paired t-test's two-sided p; where the differences do not spread (the test is
    undefined), 1 for no difference and 0 for a constant one."""
    d = a - b
    if np.all(d == d[0]):
        return 1.0 if d[0] == 0 else 0.0
    return float(stats.ttest_rel(a, b).pvalue)


def holm(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """The comparisons of one table with each kind of p-value corrected together (Holm 1979)."""
    if not comparisons:
        return []
    gc.freeze()  # statsmodels' Holm calls gc.collect(), which would walk every record read
    try:
        exact = multipletests([c.p_value for c in comparisons], alpha=LEVEL, method="holm")[1]
        t = multipletests([c.p_t for c in comparisons], alpha=LEVEL, method="holm")[1]
    finally:
        gc.unfreeze()
    return [
        replace(c, p_holm=float(p), p_t_holm=float(q))
        for c, p, q in zip(comparisons, exact, t, strict=True)
    ]
