"""The answers page: one row per ablation that compares cells, generated from the run records.

Each row: the ablation's question (its description's first clause), the cell it compares every
other with, the cell with the lowest mean test error and that error with its interval, what the
table's rule concludes against the reference (how many cells are worse, better, or not told
apart with the seeds there are), the largest detected difference with its 95% interval, the
seeds and the CPU time its runs took. Every figure comes from the same functions as the tables
(`tables.summarize`, `tables.comparisons`), so the page rebuilds byte for byte with them.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pandas as pd

from harness.config.ablations import ABLATIONS_DIR, Ablation, load_ablation
from harness.files import write_all_atomically
from harness.reporting.paper_table import paper_markdown
from harness.reporting.statistics import Comparison
from harness.reporting.tables import (
    ResultsError,
    comparisons,
    interval_text,
    load_runs,
    reference_label,
    spread_text,
    summarize,
)

HEADER = (
    "# Answers\n\n"
    "One row per ablation that compares cells, from its run records (`m2h answers` writes it; "
    "each table is behind its link): the question; the cell every other is compared with; the "
    "cell with the lowest mean test error (%) (at each label count, where there are several), "
    "mean ± standard deviation over its seeds and the 95% t interval; the table's verdicts "
    "against the reference (paired by seed, Holm-corrected within the table: cells worse, "
    "better, or not told apart with the seeds there are; the controls apart); the largest "
    "detected difference in points with its 95% interval (negative: lower error than the "
    "reference); the seeds per cell; the runs finished of those its file plans; and the "
    "training time of all its runs (their records' wall seconds, summed, on whichever machines "
    "made them).\n\n"
)


def question(ablation: Ablation) -> str:
    """The ablation's description up to its first colon or full stop outside brackets."""
    depth = 0
    text = ablation.description
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and text[i : i + 2] in (": ", ". "):
            return text[:i]
    return text.rstrip(".")


def _verdicts(found: list[Comparison], controls: set[str]) -> str:
    """How many cells the rule finds worse, better or not told apart (the controls apart)."""
    counts = {"worse": 0, "better": 0, "no difference": 0}
    for c in found:
        if c.cell not in controls:
            key = c.verdict.split(" (")[0]
            counts["no difference" if key.startswith("no difference") else key] += 1
    said = ", ".join(f"{n} {what}" for what, n in counts.items() if n) or "only controls"
    beside = sorted({c.verdict.split(" (")[0] for c in found if c.cell in controls})
    return said + (f"; the controls: {', '.join(beside)}" if beside else "")


def _detected(found: list[Comparison], controls: set[str]) -> str:
    detected = [
        c for c in found if c.cell not in controls and not c.verdict.startswith("no difference")
    ]
    if not detected:
        return "none"
    c = max(detected, key=lambda c: abs(c.difference))
    return f"{c.cell}: {c.difference:+.2f} [{c.low:.2f}, {c.high:.2f}]"


def _lowest(table: pd.DataFrame) -> str:
    """The cell of lowest mean error with its mean, std and interval; at each label count,
    where the table has several (a lower error at more labels answers nothing)."""
    picks = []
    for labels, cells in table.groupby("labels", sort=True):
        best = cells.sort_values("test_error_mean", kind="stable").iloc[0]
        where = f"{labels} labels: " if table["labels"].nunique() > 1 else ""
        picks.append(
            f"{where}{best['cell']}: "
            f"{spread_text(best['test_error_mean'], best['test_error_std'], best['seeds'])} "
            f"{interval_text(best['ci_low'], best['ci_high'])}"
        )
    return "; ".join(picks)


def answer_row(ablation: Ablation, runs: pd.DataFrame) -> dict[str, str] | None:
    """The ablation's row, or None where it compares nothing yet."""
    found = comparisons(ablation, runs)
    if not found:
        return None
    controls = {cell.name for cell in ablation.cells() if cell.control}
    table = summarize(runs, False, list(ablation.axes))
    seeds = sorted(set(table["seeds"]))
    return {
        "question": f"[`{ablation.name}`]({ablation.name}.md): {question(ablation)}",
        "reference": reference_label(ablation),
        "lowest error": _lowest(table[~table["cell"].isin(controls)]),
        "verdicts": _verdicts(found, controls),
        "largest detected difference": _detected(found, controls),
        "seeds": "-".join(map(str, dict.fromkeys([seeds[0], seeds[-1]]))),
        "runs": f"{len(runs)} of {sum(len(ablation.seeds_of(c)) for c in ablation.cells())}",
        "CPU-hours": f"{runs['wall_seconds'].sum() / 3600:.1f}",
    }


def answers_markdown(results_dir: str | Path, names: list[str] | None = None) -> str:
    """The page, over the named ablations (default: every file in ablations/, by name)."""
    names = names or sorted(p.stem for p in ABLATIONS_DIR.glob("*.toml"))
    rows = []
    for name in names:
        ablation = load_ablation(name)
        try:
            runs, _ = load_runs(ablation, results_dir)
        except ResultsError:  # no records at its budget (a snapshot's, or not yet run)
            continue
        if (row := answer_row(ablation, runs)) is not None:
            rows.append(row)
    return HEADER + pd.DataFrame(rows).to_markdown(index=False) + "\n"


def write_answers(results_dir: str | Path) -> list[Path]:
    """results/answers.md and results/paper.md (the paper's table side by side,
    `paper_table.py`), written together."""
    pages = {"answers.md": answers_markdown(results_dir), "paper.md": paper_markdown(results_dir)}
    folder = Path(results_dir)
    return write_all_atomically(
        {folder / name: partial(Path.write_text, data=text) for name, text in pages.items()}
    )
