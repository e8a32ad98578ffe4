"""Result tables (pandas) and plots (seaborn) of an ablation, rebuilt from its run records.

`m2h table NAME` writes `results/NAME.md` and `results/NAME.csv` (and `NAME_comparisons.csv`);
it reads the records in `results/runs/` (records.py) and needs no MLflow store, so a fresh clone
rebuilds every table. The plots are `plots.py`.
Each table names the command, the commits and machines that made its runs and their time, and
`results/README.md` keeps one such line per table.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pandas as pd

from harness.files import write_all_atomically
from harness.reporting.statistics import (
    CONFIDENCE,
    LEVEL,
    POWER,
    RESOLVE_POINTS,
    Comparison,
    compare,
    holm,
    smallest_p,
    t_interval,
)
from harness.runs.records import RUNS_FOLDER, RunRecord, find_records, missing_records
from harness.runs.reproduce import segment_numerics
from harness.training.stopping import TARGET_PERCENTS

if TYPE_CHECKING:
    from harness.config.ablations import Ablation, Cell

PROBLEM_AXES = ("labels", "dataset")  # errors are not comparable across their values
# Kingma et al. 2014, Table 1: M2 test error (%) on MNIST, mean and +- over runs
PAPER_M2_ERROR = {100: (11.97, 1.71), 600: (4.94, 0.13), 1000: (3.60, 0.56), 3000: (3.92, 0.63)}
# and its M1+M2 row, beside the cells that model M1's features
PAPER_M1M2_ERROR = {100: (3.33, 0.14), 600: (2.59, 0.05), 1000: (2.40, 0.02), 3000: (2.18, 0.04)}


def compares_with_paper(axes: Iterable[str], runs: pd.DataFrame) -> bool:
    """Whether the paper's M2 errors belong beside these runs: MNIST alone, swept over labels."""
    return "labels" in axes and set(runs["dataset"]) == {"mnist"}


class ResultsError(RuntimeError):
    """No finished runs to build a table or plot from."""


def load_runs(
    ablation: Ablation,
    results_dir: str | Path,
    epochs: int | None = None,
    max_steps: int | None = None,
    every_seed: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ablation's finished runs at this budget, read from their records in
    `results_dir`/runs (the seeds the file plans for each cell, whichever machine and ablation
    made them; with `every_seed`, every seed found): one row per run, in the ablation's cell
    order and by seed, with a column for each swept setting; and the per-epoch curves of those
    runs."""
    runs_dir = Path(results_dir) / RUNS_FOLDER
    rows, curves = [], []
    for order, cell in enumerate(ablation.cells()):
        expected = ablation.variant(cell, 0, epochs)
        planned = set(ablation.seeds_of(cell))
        for record in find_records(runs_dir, expected, max_steps):
            if not every_seed and record.variant.seed not in planned:
                continue
            row = _row(record, cell, order, list(ablation.axes))
            rows.append(row)
            curves += [
                {
                    "cell": cell.name,
                    "variant": cell.variant,
                    "seed": record.variant.seed,
                    "epoch": r.epoch,
                    "test_error": r.test_error,
                    **{a: row[a] for a in ablation.axes},
                }
                for r in record.history
            ]
    if not rows:
        budget = epochs or ablation.epochs
        raise ResultsError(missing_records(ablation, runs_dir, budget, max_steps))
    frame = pd.DataFrame(rows).sort_values(["order", "seed"]).drop(columns="order")
    return frame.reset_index(drop=True), pd.DataFrame(curves)


def _row(record: RunRecord, cell: Cell, order: int, axes: Sequence[str]) -> dict:
    v, made, out = record.variant, record.made, record.outcome
    segments = made.get("segments") or [made]
    return {
        "cell": cell.name,
        "variant": cell.variant,
        "control": cell.control,
        "seed": v.seed,
        "label_seed": v.label_draw,
        "labels": v.labels,
        "dataset": v.dataset,
        "features": v.features,
        "order": order,
        **out,
        "selected_class_errors": next(
            r.test_class_errors for r in record.history if r.epoch == out["selected_epoch"]
        ),
        "samples_per_sec": out["final_samples_per_sec"],
        "git_commit": " & ".join(sorted({_commit(s) for s in segments})),
        "machine": " & ".join(sorted({s.get("device_name") or "unknown" for s in segments})),
        "numerics": " & ".join(sorted({_numerics(s, made) for s in segments})),
        "instruction_set": made.get("cpu_capability", "unrecorded"),
        "finished": made.get("finished", ""),
        "load_15min": float(made["load_average"].split()[2]) if "load_average" in made else None,
        # controls are not swept along an axis that does not change the problem
        **{
            axis: getattr(v, axis) if axis in PROBLEM_AXES or not cell.control else "control"
            for axis in axes
        },
    }


def _numerics(segment: dict, made: dict) -> str:
    """The numerics version a segment trained under: the record's own (the last segment's,
    where it names one), else the one its commit had (training/numerics.py's starts)."""
    version = segment_numerics(segment, made)
    return f"version {version}" if version is not None else "version unknown (commit not here)"


def _commit(segment: dict) -> str:
    """A segment's commit, marked when its tree had uncommitted changes."""
    dirty = segment.get("git_dirty") in (True, "True")
    return segment.get("git_commit", "unknown") + (" (uncommitted changes)" if dirty else "")


def summarize(
    runs: pd.DataFrame, paper_column: bool = False, axes: Sequence[str] = ()
) -> pd.DataFrame:
    """Per cell, over seeds: the reported test error (at the best validation epoch when the runs
    hold validation images out, else the last epoch) as mean and standard deviation, the
    test-selected best beside it, epochs run and how the runs ended, time to each of
    ACCURACY_TARGETS (the mean over the runs that reached it, and how many did), throughput and
    seed count; with `axes`, a column per swept setting beside the cell's name; with
    `paper_column`, the paper's M2 error beside each M2 cell, and on MNIST its M1+M2 error beside
    each cell on M1's features always (its target at any label count)."""
    grouped = runs.groupby("cell", sort=False)
    to_targets = {}
    for pct in TARGET_PERCENTS:
        to_targets[f"seconds_to_{pct}"] = (f"seconds_to_{pct}", "mean")
        to_targets[f"reached_{pct}"] = (f"seconds_to_{pct}", "count")
    swept = {a: (a, "first") for a in axes if a not in ("variant", "labels")}
    table = grouped.agg(
        variant=("variant", "first"),
        labels=("labels", "first"),
        **swept,  # a column per swept setting
        test_error_mean=("selected_test_error", "mean"),
        test_error_std=("selected_test_error", "std"),
        test_selected_best=("best_test_error_test_selected", "mean"),
        epochs_mean=("epochs_run", "mean"),
        epochs_min=("epochs_run", "min"),
        epochs_max=("epochs_run", "max"),
        stopped_by_rule=("stopped_by", lambda s: int((s == "patience").sum())),
        **to_targets,
        samples_per_sec=("samples_per_sec", "mean"),
        seeds=("seed", "nunique"),
    ).reset_index()
    table["test_error_std"] = table["test_error_std"].fillna(0.0)
    intervals = grouped["selected_test_error"].agg(t_interval)
    table["ci_low"] = [intervals[c][0] for c in table["cell"]]
    table["ci_high"] = [intervals[c][1] for c in table["cell"]]
    m1_cells = set(runs.loc[runs["features"] == "m1", "cell"])
    if paper_column:  # the paper's M2 row beside the M2 cells, along the label counts
        table["paper_m2_error"] = [
            "" if cell in m1_cells else _paper(PAPER_M2_ERROR, n)
            for cell, n in zip(table["cell"], table["labels"], strict=True)
        ]
    if m1_cells and set(runs["dataset"]) == {"mnist"}:  # M1+M2's target, at any label count
        table["paper_m1m2_error"] = [
            _paper(PAPER_M1M2_ERROR, n) if cell in m1_cells else ""
            for cell, n in zip(table["cell"], table["labels"], strict=True)
        ]
    return table


def _paper(row: dict[int, tuple[float, float]], labels: int) -> str:
    return f"{row[labels][0]:.2f} ± {row[labels][1]:.2f}" if labels in row else ""


class Pair(NamedTuple):
    """What pairs two cells' runs: the seed (initialisation, batches, noise) and the seed that drew
    the labelled subset; written as the seed alone where they agree (every run without a label
    seed of its own), else as "seed/label seed"."""

    seed: int
    label_seed: int

    def __str__(self) -> str:
        return str(self.seed) if self.seed == self.label_seed else f"{self.seed}/{self.label_seed}"


def errors_by_pair(runs: pd.DataFrame, cell: str) -> dict[Pair, float]:
    """A cell's reported test error by run, keyed by what pairs it with another cell's runs."""
    rows = runs[runs["cell"] == cell]
    keys = [Pair(int(s), int(d)) for s, d in zip(rows["seed"], rows["label_seed"], strict=True)]
    return dict(zip(keys, rows["selected_test_error"], strict=True))


def comparisons(ablation: Ablation, runs: pd.DataFrame) -> list[Comparison]:
    """Every cell with runs against its reference cell (`Ablation.reference_of`), paired by
    seed and labelled subset over the runs both have (`Pair`), Holm-corrected together; cells
    that share fewer than two such pairs with their reference are left out."""
    found = set(runs["cell"])
    pairs = [
        (cell.name, reference.name)
        for cell in ablation.cells()
        if cell.name in found
        and (reference := ablation.reference_of(cell)) is not None
        and reference.name in found
    ]
    made = []
    for name, against in pairs:
        errors, reference_errors = errors_by_pair(runs, name), errors_by_pair(runs, against)
        if len(set(errors) & set(reference_errors)) >= 2:
            made.append(compare(name, errors, against, reference_errors))
    return holm(made)


def comparison_frame(found: Sequence[Comparison]) -> pd.DataFrame:
    """The comparisons as a table, one row each (every number, for the CSV and MLflow)."""
    return pd.DataFrame(
        [
            {
                "cell": c.cell,
                "reference": c.reference,
                "seeds": " ".join(map(str, c.seeds)),
                "pairs": len(c.seeds),
                "difference": c.difference,
                "ci_low": c.low,
                "ci_high": c.high,
                "probability_of_improvement": c.probability_of_improvement,
                "p_exact": c.p_value,
                "p_exact_holm": c.p_holm,
                "smallest_p": c.smallest_p,
                "p_t": c.p_t,
                "p_t_holm": c.p_t_holm,
                "verdict": c.verdict,
                "seeds_for_resolve": c.seeds_for_resolve,
                "seeds_for_observed": c.seeds_for_observed,
            }
            for c in found
        ],
        columns=[
            "cell",
            "reference",
            "seeds",
            "pairs",
            "difference",
            "ci_low",
            "ci_high",
            "probability_of_improvement",
            "p_exact",
            "p_exact_holm",
            "smallest_p",
            "p_t",
            "p_t_holm",
            "verdict",
            "seeds_for_resolve",
            "seeds_for_observed",
        ],
    )


def reference_label(ablation: Ablation) -> str:
    """How a table names what its cells are compared with."""
    if isinstance(ablation.reference, dict):
        settings = ", ".join(f"{k} = {v}" for k, v in ablation.reference.items())
        return f"the cell with {settings} that shares most with each"
    return f"`{ablation.reference or ablation.variants[0]}`"


def interval_text(low: float, high: float) -> str:
    """An interval as the tables write it; none from one seed."""
    return "n < 2" if pd.isna(low) else f"[{low:.2f}, {high:.2f}]"


def spread_text(mean: float, std: float, seeds: int) -> str:
    """A cell's mean error and standard deviation as the tables write them: no spread from
    one seed."""
    return f"{mean:.2f} ± {std:.2f}" if seeds > 1 else f"{mean:.2f} (one seed)"


def comparisons_markdown(found: Sequence[Comparison], reference_label: str) -> list[str]:
    """The paired comparisons section of a table: what is compared and how, the table, and the
    seeds-needed line."""
    if not found:
        return []
    shown = pd.DataFrame(
        {
            "cell": [c.cell for c in found],
            "against": [c.reference for c in found],
            "pairs": [len(c.seeds) for c in found],
            "difference (points)": [f"{c.difference:+.2f}" for c in found],
            f"{CONFIDENCE:.0%} CI (t)": [interval_text(c.low, c.high) for c in found],
            "P(improvement)": [f"{c.probability_of_improvement:.2f}" for c in found],
            "p exact (Holm)": [f"{c.p_value:.3g} ({c.p_holm:.3g})" for c in found],
            "smallest p": [f"{c.smallest_p:.3g}" for c in found],
            "p t-test (Holm)": [f"{c.p_t:.2g} ({c.p_t_holm:.2g})" for c in found],
            "verdict": [c.verdict for c in found],
            f"seeds for {RESOLVE_POINTS:g} pt": [_seeds(c.seeds_for_resolve) for c in found],
            "seeds for observed": [_seeds(c.seeds_for_observed) for c in found],
        }
    )
    resolve = [c.seeds_for_resolve for c in found if c.seeds_for_resolve]
    observed = [c.seeds_for_observed for c in found if c.seeds_for_observed]
    return [
        f"## Paired comparisons against {reference_label}",
        "",
        "Each cell against its reference at the same label count and dataset, over the seeds "
        "both have (a seed fixes the labelled images and the initialisation, so runs of one seed "
        "are paired): the mean of error(cell) - error(reference) in points (negative: the cell is "
        f"better) with its paired t interval ({CONFIDENCE:.0%}, normal differences assumed); "
        "the probability of improvement (rliable: P(cell's error < reference's) over every pair "
        "of their runs, ties one half); the two-sided p-value of the exact paired permutation "
        "test (every sign flip of the differences), with the smallest p it can give with that "
        "many pairs; the paired t-test's p; both corrected by Holm across this table's "
        f"comparisons. Verdict: better or worse where the corrected exact p is below {LEVEL:g}; "
        '"(t test)" where only the corrected t-test p is (it assumes normal differences); '
        "else no difference detected with that many seeds. The exact test cannot reject with "
        f"fewer than 6 pairs (smallest p {smallest_p(5):g} with 5, {smallest_p(3):g} with 3).",
        "",
        shown.to_markdown(index=False, disable_numparse=True),
        "",
        f"Seeds needed (pairs for a paired t-test at {LEVEL:g} with power {POWER:g} against "
        "each comparison's observed spread of differences, and at least the 6 the exact test "
        f"needs): to resolve {RESOLVE_POINTS:g} points, "
        + _range(resolve)
        + "; to resolve the observed difference, "
        + _range(observed)
        + ".",
        "",
    ]


def _seeds(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _range(values: Sequence[int]) -> str:
    if not values:
        return "none (no difference observed)"
    lo, hi = min(values), max(values)
    return f"{lo:,}" if lo == hi else f"{lo:,} to {hi:,}"


def counted_noun(n: int, noun: str) -> str:
    """'1 run', '2 runs': a count with its noun in the number it takes."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def provenance(
    ablation: Ablation,
    runs: pd.DataFrame,
    epochs: int,
    max_steps: int | None,
    out: str = "results",
    variants: str | None = None,
) -> dict:
    """The command that makes these runs (the table holds the seeds the file plans), with every
    option it needs beyond the ablation file (the user's `variants` file, a budget the file does
    not hold, a results folder `out` other than results/), and which commits and machines made
    how many of them, with their summed time (they may have run in several sessions, on several
    machines)."""
    m2h = f"m2h --variants {variants}" if variants else "m2h"
    budget = ""
    if epochs != ablation.epochs:
        budget += f" --epochs {epochs}"
    if max_steps and max_steps != ablation.max_steps:
        budget += f" --max-steps {max_steps}"
    if Path(out) != Path("results"):
        budget += f" --out {out}"
    command = f"{m2h} ablate {ablation.name}"

    def counted(column: str) -> str:
        """How many runs trained under each value (a run resumed under another commit or
        machine counts under each, and the resumed runs are counted apart)."""
        values = [v.split(" & ") for v in runs[column]]
        counts = pd.Series([x for v in values for x in v]).value_counts().sort_index()
        line = "; ".join(f"{value} ({counted_noun(n, 'run')})" for value, n in counts.items())
        across = sum(len(v) > 1 for v in values)
        both = f"; {across} of the runs trained under two or more of these" if across else ""
        return line + both

    planned = sum(len(ablation.seeds_of(cell)) for cell in ablation.cells())
    return {
        "progress": f"{len(runs)} of the {planned} runs the ablation file plans have finished"
        + ("" if len(runs) >= planned else "; cells without a row have none yet"),
        "command": command + budget,
        "rebuild": f"{m2h} table {ablation.name}{budget}",
        "commit": counted("git_commit"),
        "machine": counted("machine"),
        "numerics": counted("numerics") + _mixed(runs, "numerics"),
        "instruction_set": counted("instruction_set") + _mixed(runs, "instruction_set"),
        **({"load": load_note(runs)} if runs["load_15min"].notna().any() else {}),
        "wall_time": f"{runs['wall_seconds'].sum() / 3600:.2f} h summed over {len(runs)} runs "
        f"(finished {runs['finished'].min()} to {runs['finished'].max()})",
    }


def load_note(runs: pd.DataFrame) -> str:
    """The machines' 15-minute load when the runs finished, so that a rows/s column is read for
    what it is: a speed beside whatever else ran, not the machine's (`m2h bench` measures that)."""
    named = runs["load_15min"].dropna()
    span = (
        f"{named.min():.1f}"
        if named.min() == named.max()
        else f"{named.min():.1f}-{named.max():.1f}"
    )
    return (
        f"15-minute load average {span} when the runs finished ({len(named)} of {len(runs)} runs "
        "name it; compare it with the cores in the machine's name): their rows/s were measured "
        "beside that load, not alone"
    )


def _mixed(runs: pd.DataFrame, column: str) -> str:
    """The cells whose runs trained under more than one value of `column` (a numerics version,
    an instruction set), said, so that nobody reads one arithmetic into them."""
    spans = runs.groupby("cell", sort=False)[column].agg(
        lambda v: len({*" & ".join(v).split(" & ")})
    )
    mixed = [str(cell) for cell, n in spans.items() if n > 1]
    return f" (cells whose runs mix them: {', '.join(mixed)})" if mixed else ""


def m1_note(
    ablation: Ablation, results_dir: str | Path, epochs: int | None, max_steps: int | None
) -> str:
    """What the M1+M2 cells' M1s cost, once each and apart from M2's times: each M1 with the
    runs that read it, its epochs, how it ended and its training time (from its record in
    `results_dir`/m1); empty when no cell reads M1's features."""
    from harness.runs.m1 import read_m1_record

    readers: dict[str, int] = {}
    for cell in ablation.cells():
        variant = ablation.variant(cell, 0, epochs)
        if variant.features != "m1":
            continue
        for record in find_records(Path(results_dir) / RUNS_FOLDER, variant, max_steps):
            key = record.made.get("m1", "unknown")
            readers[key] = readers.get(key, 0) + 1
    notes = []
    for key, n in sorted(readers.items()):
        found = read_m1_record(Path(results_dir) / "m1", key)
        if found is None:
            notes.append(
                f"{key} (read by {counted_noun(n, 'run')}; its record is not in {results_dir}/m1)"
            )
            continue
        o, made = found["outcome"], found["made"]
        ended = "its stop rule" if o["stopped_by"] == "patience" else "its epoch budget"
        notes.append(
            f"{key}, read by {counted_noun(n, 'run')}, trained once: "
            f"{counted_noun(o['epochs_run'], 'epoch')} (ended by {ended};"
            f" validation -ELBO {o['best_val_neg_elbo']:.2f} nats at epoch {o['best_epoch']}), "
            f"{o['train_seconds']:,.0f} s of training on {made.get('device_name')} at commit "
            f"{made.get('git_commit')}; not in the times to 90% and 95% below, which are M2's"
        )
    return "; ".join(notes)


def _cells_shown(table: pd.DataFrame) -> pd.DataFrame:
    """The table's first columns as a reader sees them: the cell, its labels and the settings
    swept (summarize's `axes`); a sweep of one variant names its cells by what varies only."""
    shown = pd.DataFrame({"cell": table["cell"], "labels": table["labels"]})
    columns = list(table.columns)
    swept = columns[columns.index("labels") + 1 : columns.index("test_error_mean")]
    for column in swept:
        shown[column] = table[column]
    if swept and table["variant"].nunique() == 1:
        shown["cell"] = [
            ", ".join(f"{c}={getattr(row, c)}" for c in swept) for row in table.itertuples()
        ]
    return shown


def shown_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The table as its Markdown shows it: each figure formatted, intervals and counts said."""
    shown = _cells_shown(table)
    shown["test error (%)"] = [
        spread_text(m, s, n)
        for m, s, n in zip(
            table["test_error_mean"], table["test_error_std"], table["seeds"], strict=True
        )
    ]
    shown[f"{CONFIDENCE:.0%} CI (t)"] = [
        interval_text(lo, hi) for lo, hi in zip(table["ci_low"], table["ci_high"], strict=True)
    ]
    for column, header in (("paper_m2_error", "M2"), ("paper_m1m2_error", "M1+M2")):
        if column in table:
            shown[f"paper {header} error (%)"] = table[column]
    shown["best, test-selected (%)"] = table["test_selected_best"].map(lambda v: f"{v:.2f}")
    shown["epochs"] = [
        f"{mean:.0f} ({lo}-{hi})" if lo != hi else f"{lo}"
        for mean, lo, hi in zip(
            table["epochs_mean"], table["epochs_min"], table["epochs_max"], strict=True
        )
    ]
    shown["stopped by rule"] = [
        f"{n}/{seeds}" for n, seeds in zip(table["stopped_by_rule"], table["seeds"], strict=True)
    ]
    for pct in TARGET_PERCENTS:
        shown[f"time to {pct}% (s)"] = [
            f"{t:,.0f} ({n}/{seeds})" if n else f"never (0/{seeds})"
            for t, n, seeds in zip(
                table[f"seconds_to_{pct}"], table[f"reached_{pct}"], table["seeds"], strict=True
            )
        ]
    shown["samples/s"] = table["samples_per_sec"].map(lambda v: f"{v:,.0f}")
    shown["seeds"] = table["seeds"]
    return shown


def write_table(
    name: str,
    table: pd.DataFrame,
    meta: dict[str, str],
    out_dir: Path,
    description: str = "",
    found: Sequence[Comparison] = (),
    reference_label: str = "the reference",
    sections: Sequence[str] = (),
) -> tuple[Path, Path]:
    """results/NAME.csv (every column), NAME_comparisons.csv (the paired comparisons, where
    there are any) and NAME.md (the table as a reader wants it, under its provenance, then
    the comparisons, then any further `sections`' lines); the index in results/README.md keeps
    the provenance line."""
    csv, md = out_dir / f"{name}.csv", out_dir / f"{name}.md"
    shown = shown_frame(table)
    lines = [
        f"# Ablation `{name}`",
        "",
        description,
        "",
        f"- command: `{meta['command']}` (then `{meta['rebuild']}`)",
        f"- commit: {meta['commit']}",
        f"- machine: {meta['machine']}",
        f"- numerics: {meta['numerics']}; instruction set: {meta['instruction_set']}",
        f"- time: {meta['wall_time']}",
        f"- progress: {meta['progress']}",
        *([f"- M1: {meta['m1']}"] if meta.get("m1") else []),
        *([f"- load: {meta['load']}"] if meta.get("load") else []),
        "",
        "Test error (%) on the 10,000 test images, mean ± standard deviation over seeds and the "
        f"{CONFIDENCE:.0%} t interval of the mean, at the epoch the stop rule selects: the last "
        "epoch whose validation error (held-out training images) improved on the best before it "
        "by more than the rule's min_delta points, so a later epoch may be lower by up to "
        "min_delta (the last epoch where a run holds no images out). Beside it: the best test "
        "error over training, selected on the test set (for comparison only); epochs run (mean,"
        " range); how many runs the stop rule ended (the others spent their epoch budget); "
        "training seconds to 90% and 95% test accuracy (mean over the runs that reached it, and"
        " how many did); the last epoch's training rows/s (labelled + unlabelled).",
        "",
        shown.to_markdown(index=False),
        "",
        *comparisons_markdown(found, reference_label),
        *sections,
    ]
    index = out_dir / "README.md"
    writers: dict[Path, Callable[[Path], object]] = {
        csv: partial(table.to_csv, index=False),
        md: partial(Path.write_text, data="\n".join(lines)),
        index: partial(Path.write_text, data=indexed(index, name, meta)),
    }
    if found:
        comparisons = comparison_frame(found)
        writers[out_dir / f"{name}_comparisons.csv"] = partial(comparisons.to_csv, index=False)
    write_all_atomically(writers)  # all written, or none replaced
    return md, csv


def indexed(index: Path, name: str, meta: dict[str, str]) -> str:
    """results/README.md (`index`) with one provenance entry for table `name`, kept or added."""
    text = index.read_text() if index.exists() else "# Results\n\n"
    block = (
        f"<!-- table:{name} -->\n- [`{name}`]({name}.md): `{meta['command']}`; commit "
        f"{meta['commit']}; {meta['machine']}; {meta['wall_time']}\n<!-- /table:{name} -->"
    )
    pattern = re.compile(
        rf"<!-- table:{re.escape(name)} -->.*?<!-- /table:{re.escape(name)} -->", re.S
    )
    text = pattern.sub(block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block
    return text.rstrip() + "\n"
