"""The spread decomposition against statsmodels' REML fit of the same crossed random effects,
and its intervals against their definitions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

from harness.reporting.spread import SpreadError, decompose, satterthwaite
from harness.training.trainer import scores


def grid(draws: int, seeds: int, sd_label: float, sd_seed: float, sd_rest: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    label, init = rng.normal(0, sd_label, draws), rng.normal(0, sd_seed, seeds)
    return pd.DataFrame(
        [
            {"label_seed": i, "seed": j, "selected_test_error": 10 + label[i] + init[j] + e}
            for i in range(draws)
            for j, e in zip(range(seeds), rng.normal(0, sd_rest, seeds), strict=True)
        ]
    )


def test_the_components_are_the_reml_estimates_of_a_balanced_grid():
    runs = grid(6, 6, 2.0, 1.0, 0.5)
    label, init, residual = decompose(runs)
    model = sm.MixedLM.from_formula(
        "selected_test_error ~ 1",
        groups=np.ones(len(runs)),
        vc_formula={"label": "0 + C(label_seed)", "init": "0 + C(seed)"},
        re_formula="0",
        data=runs,
    ).fit(reml=True)
    reml = dict(zip(model.model.exog_vc.names, model.vcomp, strict=True))
    assert [label.variance, init.variance] == pytest.approx([reml["label"], reml["init"]], rel=1e-3)
    assert residual.variance == pytest.approx(model.scale, rel=1e-3)
    assert label.share + init.share + residual.share == pytest.approx(1.0)
    assert label.p < 0.001 and init.p < 0.001  # both effects are there


def test_a_label_draw_without_effect_is_not_called_one():
    label, init, _ = decompose(grid(3, 3, 0.0, 3.0, 0.3, seed=2))
    assert label.p > 0.05 and init.p < 0.01
    assert label.share < init.share


def test_the_intervals_are_satterthwaites_and_the_residuals_exact():
    *_, residual = decompose(grid(3, 3, 1.0, 1.0, 1.0))
    df = residual.df
    assert residual.low == pytest.approx(df * residual.variance / stats.chi2.ppf(0.975, df))
    assert residual.high == pytest.approx(df * residual.variance / stats.chi2.ppf(0.025, df))
    # nu = s2^2 / sum (c MS)^2 / df: with the MS_e term 0, nu is the first term's df
    low, high = satterthwaite(2.0, [(2.0, 4.0), (0.0, 4.0)])
    assert (low, high) == pytest.approx(
        (4 * 2.0 / stats.chi2.ppf(0.975, 4), 4 * 2.0 / stats.chi2.ppf(0.025, 4))
    )
    assert satterthwaite(0.0, [(1.0, 2.0), (1.0, 4.0)]) == (0.0, 0.0)


def test_a_grid_with_one_label_draw_is_refused():
    with pytest.raises(SpreadError, match="at least 2 label draws and 2 seeds; the runs have 1"):
        decompose(grid(1, 3, 1.0, 1.0, 1.0))


def test_scores_are_each_seeds_accuracy_and_error_per_class():
    y = torch_tensor([0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    predicted = torch_tensor([[0, 1, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9], [0] * 12])
    accuracy, per_class = scores(predicted, y)
    assert accuracy == pytest.approx([11 / 12, 2 / 12])
    assert per_class[0] == pytest.approx([50.0] + [0.0] * 9)
    assert per_class[1] == pytest.approx([0.0] + [100.0] * 9)


def torch_tensor(values):
    import torch

    return torch.tensor(values)
