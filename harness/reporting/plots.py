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

from harness.files import write_all_atomically
from harness.reporting.statistics import CONFIDENCE, Comparison, t_interval
from harness.reporting.tables import PAPER_M1M2_ERROR, PAPER_M2_ERROR, PROBLEM_AXES

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


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
                runs, x=axis, y=column, hue="variant", errorbar=t_interval, dodge=dodge, ax=ax
            )
        else:
            sns.pointplot(
                runs,
                x="cell",
                y=column,
                errorbar=t_interval,
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
    interval = f"mean, {CONFIDENCE:.0%} t interval over seeds"
    if seeds.min() < 2:
        interval += "; one seed has no interval"
    fig.suptitle(f"{name}: error and speed per cell ({interval})")
    fig.tight_layout()
    return fig


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


def paired_figure(name: str, found: Sequence[Comparison]) -> Figure:
    """One row per comparison: the mean paired difference in error with its t interval, against
    zero (left of it: the cell is better than its reference), the verdict beside it."""
    fig, ax = plt.subplots(figsize=(12, 0.5 * len(found) + 1.6))
    rows = range(len(found))[::-1]
    for y, c in zip(rows, found, strict=True):
        low, high = (c.difference, c.difference) if pd.isna(c.low) else (c.low, c.high)
        color = "tab:green" if c.verdict.startswith("better") else "tab:red"
        if c.verdict.startswith("no difference"):
            color = "tab:gray"
        ax.errorbar(
            c.difference,
            y,
            xerr=[[c.difference - low], [high - c.difference]],
            fmt="o",
            color=color,
            capsize=4,
        )
        ax.annotate(c.verdict, (1.01, y), xycoords=("axes fraction", "data"), va="center")
    ax.axvline(0, color="black", linewidth=1)
    ax.set_yticks(list(rows), [f"{c.cell} - {c.reference} ({len(c.seeds)})" for c in found])
    ax.set(
        xlabel="paired difference in test error (points; < 0: the cell is better)",
        title=f"{name}: paired differences, {CONFIDENCE:.0%} t interval (pairs)",
    )
    fig.tight_layout(rect=(0, 0, 0.78, 1))  # the verdicts stand right of the axes
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
