"""Plots of an ablation (seaborn), from the runs `tables.load_runs` reads: the test-error curves,
the reported error per cell with its 95% t interval (and the paper's M2 beside it along label
counts), and the paired differences against each cell's reference."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator
from scipy import stats

from harness.files import write_all_atomically
from harness.reporting.statistics import CONFIDENCE, Comparison, t_interval
from harness.reporting.tables import (
    PAPER_M1M2_ERROR,
    PAPER_M2_ERROR,
    PROBLEM_AXES,
    compares_with_paper,
    comparisons,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from harness.config.ablations import Ablation


def plot(
    name: str,
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    out_dir: Path,
    axis: str | None = None,
    paper: bool = False,
    found: Sequence[Comparison] = (),
    grid: Sequence[str] = (),
) -> list[Path]:
    """The test-error curves (`curves_figure`; not drawn from runs of one epoch: a curve needs
    two), the reported error per cell (`final_figure`, with the paper's M2 errors where `paper`),
    for a sweep over two settings `grid` the grid of them (`grid_figure`), and, where there are
    comparisons, the paired differences (`paired_figure`); the paths written."""
    sns.set_theme(style="whitegrid", context="notebook")
    figures: dict[Path, Figure] = {}
    if curves["epoch"].nunique() > 1:
        figures[out_dir / f"{name}_curves.png"] = curves_figure(name, runs, curves, axis)
    figures[out_dir / f"{name}_final.png"] = final_figure(name, runs, axis, paper)
    if len(grid) == 2:
        figures[out_dir / f"{name}_grid.png"] = grid_figure(name, runs, grid[0], grid[1])
    if found:
        figures[out_dir / f"{name}_paired.png"] = paired_figure(name, found)
    try:  # all written, or none replaced
        return write_all_atomically({path: partial(_save_png, f) for path, f in figures.items()})
    finally:
        for figure in figures.values():
            plt.close(figure)


def ablation_plots(
    ablation: Ablation, runs: pd.DataFrame, curves: pd.DataFrame, out_dir: Path
) -> list[Path]:
    """`plot` of an ablation's runs as `m2h plot` draws them: along its one axis, beside the
    paper where it sweeps label counts, its grid where it sweeps two settings, and its paired
    comparisons."""
    axis = next(iter(ablation.axes)) if len(ablation.axes) == 1 else None
    paper = compares_with_paper(ablation.axes, runs)
    grid = list(ablation.axes) if len(ablation.axes) == 2 else []
    found = comparisons(ablation, runs)
    return plot(ablation.name, runs, curves, out_dir, axis, paper, found, grid)


def _save_png(figure: Figure, path: Path) -> None:
    figure.savefig(path, dpi=120, format="png")


def curves_figure(name: str, runs: pd.DataFrame, curves: pd.DataFrame, axis: str | None) -> Figure:
    """Test error by epoch per cell, mean and band over seeds; when the swept `axis` changes the
    problem (labels or dataset), one panel per value of it and a line per variant."""
    title = f"{name}: test error by epoch (mean ± sd over seeds)"
    if axis in PROBLEM_AXES and axis in runs:
        grid = sns.relplot(
            curves,
            kind="line",
            x="epoch",
            y="test_error",
            hue="variant",
            col=axis,
            col_wrap=min(4, curves[axis].nunique()),
            errorbar="sd",
            marker="o",
            height=3.2,
            facet_kws={"sharey": False},
        )
        grid.set_axis_labels("epoch", "test error (%)")
        grid.figure.suptitle(title)
        for ax in grid.axes.flat:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        grid.figure.subplots_adjust(top=0.82)
        return grid.figure
    fig, ax = plt.subplots(figsize=(8, 5))
    sns.lineplot(curves, x="epoch", y="test_error", hue="cell", errorbar="sd", marker="o", ax=ax)
    ax.set(ylabel="test error (%)", title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def final_figure(name: str, runs: pd.DataFrame, axis: str | None, paper: bool) -> Figure:
    """Two panels: the reported test error per cell (or along the swept `axis`, a line per
    variant; along `labels` with `paper`, the paper's M2 mean ± std at each label count it
    reports, in black) and the training speed (rows/s at the last epoch), each with its t
    interval over seeds; what an ablation weighs is accuracy against speed."""
    fig, (error_ax, speed_ax) = plt.subplots(1, 2, figsize=(13, 5))
    for ax, column in ((error_ax, "selected_test_error"), (speed_ax, "samples_per_sec")):
        if axis is not None and axis in runs:
            dodge = 0.3 if runs["variant"].nunique() > 1 else False  # seaborn: one hue, no dodge
            sns.pointplot(
                runs, x=axis, y=column, hue="variant", errorbar=nonnegative_interval, dodge=dodge,
                ax=ax,
            )  # fmt: skip
        else:
            sns.pointplot(
                runs,
                x="cell",
                y=column,
                errorbar=nonnegative_interval,
                linestyle="none",
                capsize=0.2,
                ax=ax,
            )
            plt.setp(ax.get_xticklabels(), rotation=30, ha="right", rotation_mode="anchor")
    if paper and axis == "labels":
        _draw_paper_errors(error_ax, m1m2=bool((runs["features"] == "m1").any()))
    error_ax.set(ylabel="test error (%)", title="reported test error")
    speed_ax.set(ylabel="training rows/s (last epoch)", title="speed")
    seeds = runs.groupby("cell")["seed"].nunique()
    interval = f"mean, {CONFIDENCE:.0%} t interval over seeds, cut at zero"
    if seeds.min() < 2:
        interval += "; one seed has no interval"
    fig.suptitle(f"{name}: error and speed per cell ({interval})")
    fig.tight_layout()
    return fig


def nonnegative_interval(values: Sequence[float]) -> tuple[float, float]:
    """The t interval of the mean of an error or a speed, which cannot be below zero: cut there
    (with few seeds and a wide spread the t interval reaches below it)."""
    low, high = t_interval(values)
    return max(0.0, low), high


def grid_figure(name: str, runs: pd.DataFrame, rows: str, columns: str) -> Figure:
    """A sweep over two settings as a grid per variant: each cell's mean test error (the colour)
    with its t interval over seeds written in it."""
    swept = runs[~runs["control"]]
    variants = list(dict.fromkeys(swept["variant"]))
    fig, axes = plt.subplots(1, len(variants), figsize=(5.5 * len(variants), 4.5), squeeze=False)
    for ax, variant in zip(axes[0], variants, strict=True):
        cells = swept[swept["variant"] == variant].groupby([rows, columns])["selected_test_error"]
        means = cells.mean().unstack(columns)
        intervals = cells.agg(t_interval).unstack(columns)
        text = means.copy().astype(object)
        for r in means.index:
            for c in means.columns:
                text.loc[r, c] = grid_label(means.loc[r, c], intervals.loc[r, c])
        sns.heatmap(means, annot=text, fmt="", cmap="viridis_r", ax=ax,
                    cbar_kws={"label": "test error (%)"})  # fmt: skip
        ax.set_title(variant)
    fig.suptitle(f"{name}\ntest error (%): mean, {CONFIDENCE:.0%} t interval over seeds")
    fig.tight_layout()
    return fig


def grid_label(mean: float, interval: Any) -> str:
    """A grid cell's text: its mean test error and t interval; one seed has no interval, and a
    cell without runs yet (a partly run ablation) is left blank."""
    if pd.isna(mean):
        return ""
    if not isinstance(interval, tuple) or any(pd.isna(v) for v in interval):
        return f"{mean:.2f}\n(one seed)"
    return f"{mean:.2f}\n[{interval[0]:.2f}, {interval[1]:.2f}]"


def corrected_interval(c: Comparison, comparisons: int) -> tuple[float, float]:
    """The paired difference's t interval at the family-wise level the verdicts hold
    (Bonferroni over the table's `comparisons`: 95% for all of them at once), from the 95%
    interval's half-width; an interval that leaves out zero is then a difference the
    Holm-corrected t test detects too (Holm rejects whatever Bonferroni does)."""
    n = len(c.seeds)
    if pd.isna(c.low) or n < 2:
        return c.difference, c.difference
    sem = (c.high - c.difference) / stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)
    half = sem * stats.t.ppf(1 - (1 - CONFIDENCE) / (2 * comparisons), n - 1)
    return c.difference - half, c.difference + half


def paired_figure(name: str, found: Sequence[Comparison]) -> Figure:
    """One row per comparison: the mean paired difference in error with its interval corrected
    as the verdicts are (bold; the uncorrected 95% interval thin behind it), against zero (left
    of it: the cell is better than its reference), the verdict at the right."""
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(found) + 1.6))
    rows = list(range(len(found))[::-1])
    for y, c in zip(rows, found, strict=True):
        color = "tab:green" if c.verdict.startswith("better") else "tab:red"
        if c.verdict.startswith("no difference"):
            color = "tab:gray"
        for (low, high), width in (
            ((c.low, c.high) if not pd.isna(c.low) else (c.difference,) * 2, 1.0),
            (corrected_interval(c, len(found)), 3.0),
        ):
            ax.errorbar(
                c.difference,
                y,
                xerr=[[c.difference - low], [high - c.difference]],
                fmt="o",
                color=color,
                elinewidth=width,
                alpha=1.0 if width > 1 else 0.5,
                capsize=4,
            )
    ax.axvline(0, color="black", linewidth=1)
    ax.set_yticks(rows, [f"{c.cell} - {c.reference} ({len(c.seeds)})" for c in found])
    verdicts = ax.twinx()  # the verdicts as right-hand tick labels: no margin is left empty
    verdicts.set_ylim(ax.get_ylim())
    verdicts.set_yticks(rows, [c.verdict for c in found])
    verdicts.grid(False)
    ax.set(
        xlabel="paired difference in test error (points; < 0: the cell is better)",
        title=f"{name}: paired differences; bold: {CONFIDENCE:.0%} for all {len(found)} at once "
        f"(Bonferroni), thin: {CONFIDENCE:.0%} each; verdicts Holm-corrected",
    )
    fig.tight_layout()
    return fig


def _draw_paper_errors(ax: Axes, m1m2: bool = False) -> None:
    """The paper's M2 mean ± std, in black (and with `m1m2`, its M1+M2 row in grey), at each
    label count on the categorical x axis that the paper reports (left of the variants' dodged
    points at that count's tick)."""
    ticks = zip(ax.get_xticks(), ax.get_xticklabels(), strict=True)
    at = {int(label.get_text()): x for x, label in ticks}
    rows = [(PAPER_M2_ERROR, "M2", "black", 0.3)]
    if m1m2:
        rows.append((PAPER_M1M2_ERROR, "M1+M2", "grey", 0.4))
    for errors, model, color, left in rows:
        reported = [n for n in at if n in errors]
        if not reported:
            continue
        ax.errorbar(
            [at[n] - left for n in reported],
            [errors[n][0] for n in reported],
            yerr=[errors[n][1] for n in reported],
            fmt="D",
            color=color,
            capsize=4,
            label=f"paper's {model} (Kingma et al. 2014)",
        )
    if any(n in PAPER_M2_ERROR for n in at):
        ax.legend(title="variant")
