"""Result tables (pandas) and plots (seaborn) of an ablation, read back from MLflow.

`m2h table NAME` writes `results/NAME.md` and `results/NAME.csv`; `m2h plot NAME` writes
`results/NAME_curves.png` and `results/NAME_final.png`. Each table names the command, commits,
machine and wall time that produced it, and `results/README.md` keeps one such line per table.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

if TYPE_CHECKING:
    from harness.tracking import Tracker

# Kingma et al. 2014, Table 1: M2 test error (%) on MNIST, mean and +- over runs
PAPER_M2_ERROR = {100: (11.97, 1.71), 600: (4.94, 0.13), 1000: (3.60, 0.56), 3000: (3.92, 0.63)}


class ResultsError(RuntimeError):
    """No finished runs to build a table or plot from."""


def ablation_parent(tracker: Tracker, ablation: str) -> str:
    parent = tracker.find_run({"m2h.role": "ablation", "ablation": ablation})
    if parent is None:
        raise ResultsError(
            f"no runs of ablation {ablation!r} in {tracker.uri} "
            f"(experiment {ablation!r}); run `m2h ablate {ablation}` first"
        )
    return parent


def load_runs(
    tracker: Tracker, ablation: str, cell_order: list[str] | None = None, axes: Sequence[str] = ()
) -> pd.DataFrame:
    """One row per finished child run of the newest parent run of `ablation`, in `cell_order`
    (the ablation's own order) and by seed, with a column for each swept setting in `axes`."""
    parent = ablation_parent(tracker, ablation)
    rows = []
    for run in tracker.child_runs(parent, status="FINISHED"):
        params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
        rows.append(
            {
                "cell": tags["cell"],
                "variant": tags["variant"],
                "control": tags.get("control"),
                "seed": int(tags["seed"]),
                "labels": int(params["labels"]),
                "dataset": params["dataset"],
                "epochs": int(metrics["epochs_done"]),
                "test_error": metrics["final_test_error"],
                "test_accuracy": metrics["final_test_accuracy"],
                "samples_per_sec": metrics["final_samples_per_sec"],
                "train_seconds": metrics["train_seconds"],
                "started": run.info.start_time / 1000.0,
                "ended": run.info.end_time / 1000.0,
                "git_commit": params.get("git_commit", "unknown")
                + (" (uncommitted changes)" if params.get("git_dirty") == "True" else ""),
                "device_name": params.get("device_name", "unknown"),
                "run_id": run.info.run_id,
            }
            | {  # controls are not swept along these axes: they get a place of their own
                axis: "control" if tags.get("control") == "true" else params.get(axis)
                for axis in axes
                if axis not in ("labels", "dataset")
            }
        )
    if not rows:
        raise ResultsError(f"ablation {ablation!r} has no finished runs yet")
    order = {cell: i for i, cell in enumerate(cell_order or sorted({r["cell"] for r in rows}))}
    frame = pd.DataFrame(rows)
    frame["order"] = frame["cell"].map(order)
    return frame.sort_values(["order", "seed"]).drop(columns="order").reset_index(drop=True)


def summarize(runs: pd.DataFrame, paper_column: bool = False) -> pd.DataFrame:
    """Mean and standard deviation over seeds of each cell's final test error."""
    grouped = runs.groupby("cell", sort=False)
    table = grouped.agg(
        variant=("variant", "first"),
        labels=("labels", "first"),
        test_error_mean=("test_error", "mean"),
        test_error_std=("test_error", "std"),
        samples_per_sec=("samples_per_sec", "mean"),
        epochs=("epochs", "max"),
        seeds=("seed", "nunique"),
    ).reset_index()
    table["test_error_std"] = table["test_error_std"].fillna(0.0)
    if paper_column:
        table["paper_m2_error"] = table["labels"].map(
            lambda n: (
                f"{PAPER_M2_ERROR[n][0]:.2f} ± {PAPER_M2_ERROR[n][1]:.2f}"
                if n in PAPER_M2_ERROR
                else ""
            )
        )
    return table


def wall_time(runs: pd.DataFrame) -> str:
    """From the first run's start to the last run's end, and the runs' own times summed (more
    than the wall time when runs went in parallel)."""
    span = runs["ended"].max() - runs["started"].min()
    summed = (runs["ended"] - runs["started"]).sum()
    return f"{span / 60:.1f} min wall, {summed / 60:.1f} min summed over {len(runs)} runs"


def provenance(tracker: Tracker, ablation: str, runs: pd.DataFrame) -> dict[str, str]:
    tags = tracker.client.get_run(ablation_parent(tracker, ablation)).data.tags
    seeds = " ".join(map(str, sorted(runs["seed"].unique())))  # the seeds the table holds
    command = f"m2h ablate {ablation} --seeds {seeds} --epochs {tags['epochs']}"
    if tags.get("max_steps", "none") != "none":
        command += f" --max-steps {tags['max_steps']}"
    if int(tags.get("jobs", "1")) > 1:
        command += f" --jobs {tags['jobs']}"
    return {
        "command": command,
        "commit": ", ".join(sorted(runs["git_commit"].unique())),
        "machine": "; ".join(sorted(runs["device_name"].unique())),
        "wall_time": wall_time(runs),
        "made": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_table(
    name: str, table: pd.DataFrame, meta: dict[str, str], out_dir: Path, description: str = ""
) -> tuple[Path, Path]:
    csv, md = out_dir / f"{name}.csv", out_dir / f"{name}.md"
    table.to_csv(csv, index=False)
    shown = table.copy()
    shown["test error (%)"] = [
        f"{m:.2f} ± {s:.2f}"
        for m, s in zip(shown.pop("test_error_mean"), shown.pop("test_error_std"), strict=True)
    ]
    shown["samples/s"] = shown.pop("samples_per_sec").map(lambda v: f"{v:,.0f}")
    if "paper_m2_error" in shown:
        shown["paper M2 error (%)"] = shown.pop("paper_m2_error")
    lines = [
        f"# Ablation `{name}`",
        "",
        description,
        "",
        f"- command: `{meta['command']}` (then `m2h table {name}`)",
        f"- commit: {meta['commit']}",
        f"- machine: {meta['machine']}",
        f"- time: {meta['wall_time']}",
        f"- table made: {meta['made']}",
        "",
        "Test error on the 10,000 test images after the last epoch: mean ± standard "
        "deviation over seeds; samples/s is the last epoch's training throughput "
        "(labelled + unlabelled rows).",
        "",
        shown.to_markdown(index=False),
        "",
    ]
    md.write_text("\n".join(lines))
    update_index(out_dir, name, meta)
    return md, csv


def update_index(out_dir: Path, name: str, meta: dict[str, str]) -> None:
    """Keep one provenance entry per table in results/README.md."""
    index = out_dir / "README.md"
    text = index.read_text() if index.exists() else "# Results\n\n"
    block = (
        f"<!-- table:{name} -->\n- [`{name}`]({name}.md): `{meta['command']}`; commit "
        f"{meta['commit']}; {meta['machine']}; {meta['wall_time']}\n<!-- /table:{name} -->"
    )
    pattern = re.compile(
        rf"<!-- table:{re.escape(name)} -->.*?<!-- /table:{re.escape(name)} -->", re.S
    )
    text = pattern.sub(block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block
    index.write_text(text.rstrip() + "\n")


PROBLEM_AXES = ("labels", "dataset")  # errors are not comparable across their values


def epoch_curves(tracker: Tracker, runs: pd.DataFrame, axes: Sequence[str] = ()) -> pd.DataFrame:
    """Test error at every epoch of every run, with its cell, variant, seed and `axes` values."""
    rows = []
    for run in runs.itertuples():
        for metric in tracker.client.get_metric_history(run.run_id, "test_error"):
            rows.append(
                {
                    "cell": run.cell,
                    "variant": run.variant,
                    "seed": run.seed,
                    "epoch": metric.step,
                    "test_error": metric.value,
                    **{axis: getattr(run, axis) for axis in axes},
                }
            )
    return pd.DataFrame(rows)


def plot(
    name: str, tracker: Tracker, runs: pd.DataFrame, out_dir: Path, axis: str | None = None
) -> list[Path]:
    """Test error by epoch per cell (mean and band over seeds; when the swept `axis` changes the
    problem, labels or dataset, one panel per value of it and a line per variant), and final
    error per cell (or by the swept `axis`, one line per variant)."""
    sns.set_theme(style="whitegrid", context="notebook")
    paths = [out_dir / f"{name}_curves.png", out_dir / f"{name}_final.png"]
    title = f"{name}: test error by epoch (mean ± sd over seeds)"
    if axis in PROBLEM_AXES and axis in runs:
        curves = epoch_curves(tracker, runs, [axis])
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
        grid.savefig(paths[0], dpi=120)
        plt.close(grid.figure)
    else:
        curves = epoch_curves(tracker, runs)
        fig, ax = plt.subplots(figsize=(8, 5))
        sns.lineplot(
            curves, x="epoch", y="test_error", hue="cell", errorbar="sd", marker="o", ax=ax
        )
        ax.set(ylabel="test error (%)", title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(paths[0], dpi=120)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5))
    if axis is not None and axis in runs:
        sns.pointplot(runs, x=axis, y="test_error", hue="variant", errorbar="sd", dodge=0.3, ax=ax)
    else:
        sns.pointplot(
            runs, x="cell", y="test_error", errorbar="sd", linestyle="none", capsize=0.2, ax=ax
        )
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right", rotation_mode="anchor")
    ax.set(ylabel="final test error (%)", title=f"{name}: final test error (mean ± sd)")
    fig.tight_layout()
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)
    return paths
