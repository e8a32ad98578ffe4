"""The paper's table, reproduced side by side: Kingma et al. 2014's M2 and M1+M2 rows and the
published reimplementations' and successors' rows at 100/600/1000/3000 MNIST labels, beside this
harness's best validation-selected cell of each family at each label count.

A harness cell enters when it is a plain MNIST run held to the labels protocol's selection: the
full epochs (no step cap), validation images held out (the reported epoch is the validation-
selected one), each seed drawing its own labelled images (no fixed label seed), a model of the
family (the supervised-only control is none), and at least MIN_SEEDS seeds. The pick at each
label count is the cell of lowest mean validation error at the selected epochs, so the test set
never chooses it; its test error is reported with the standard deviation over seeds and the 95%
t interval of the mean. A run recorded under two names (a twin) counts once.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from harness.config.identity import twin_key
from harness.config.variants import Variant, get_variant, round_float
from harness.reporting.statistics import CONFIDENCE, t_interval
from harness.reporting.tables import PAPER_M1M2_ERROR, PAPER_M2_ERROR
from harness.runs.records import RUNS_FOLDER, RunRecord, all_records

LABEL_COUNTS = (100, 600, 1000, 3000)
MIN_SEEDS = 3  # an interval of the mean needs a few seeds; a pick from one seed says little
FAMILIES = ("M2", "M1+M2", "ADGM", "SDGM")

# (row, {labels: text}, source): published figures as their sources state them
PUBLISHED: list[tuple[str, dict[int, str], str]] = [
    (
        "M2, Kingma et al. 2014",
        {n: f"{m:.2f} ± {s:.2f}" for n, (m, s) in PAPER_M2_ERROR.items()},
        "Table 1 (mean ± std)",
    ),
    (
        "M1+M2, Kingma et al. 2014",
        {n: f"{m:.2f} ± {s:.2f}" for n, (m, s) in PAPER_M1M2_ERROR.items()},
        "Table 1 (mean ± std)",
    ),
    (
        "M2, Pyro's SS-VAE tutorial",
        {100: "6.81 ± 0.60", 600: "5.63 ± 0.70", 1000: "5.13 ± 0.38", 3000: "4.18 ± 0.12"},
        "enumerated y + classification loss, 5 label draws (± its 95% interval)",
    ),
    (
        "M2, jonemeth/generative-models",
        {100: "7.15", 600: "3.53", 1000: "3.28", 3000: "2.92"},
        "a faithful reimplementation, one seed, its last of 3000 epochs",
    ),
    (
        "M1+M2, jonemeth/generative-models",
        {100: "2.80", 600: "2.35", 1000: "2.45", 3000: "2.44"},
        "the same, one seed",
    ),
    ("ADGM, Maaløe et al. 2016", {100: "0.96 ± 0.02"}, "Table 2 (mean ± std)"),
    ("SDGM, Maaløe et al. 2016", {100: "1.32 ± 0.07"}, "Table 2 (mean ± std)"),
]

HEADER = (
    "# The paper's table, side by side\n\n"
    "MNIST test error (%) at 100, 600, 1000 and 3000 labels: the published rows as their "
    "sources state them (`../shared/ANCHORS.md`), then this harness's best cell of each family "
    "at each label count (`m2h answers` writes this page from `results/runs`). A harness cell: "
    "the full epochs, validation images held out, each seed drawing its own labelled images, at "
    f"least {MIN_SEEDS} seeds; the pick is the cell of lowest mean validation error at the "
    "validation-selected epochs (the test set never picks it), shown as its test error mean ± "
    f"standard deviation over seeds, the {CONFIDENCE:.0%} t interval of the mean and the seeds; "
    "below the table, each pick's variant and the settings it changes. A blank: no cell of the "
    "family at that label count has enough seeds yet.\n\n"
)


def family_of(variant: Variant) -> str | None:
    """The row a run belongs to, or None for a run the table leaves out."""
    if variant.estimator == "supervised":
        return None
    if variant.family in ("adgm", "sdgm"):
        return variant.family.upper()
    return "M1+M2" if variant.features == "m1" else "M2"


def _eligible(record: RunRecord) -> bool:
    v = record.variant
    own_draw = v.label_seed is None or v.label_seed == v.seed
    return (
        v.dataset == "mnist"
        and record.max_steps is None
        and v.validation > 0
        and own_draw
        and v.labels in LABEL_COUNTS
        and family_of(v) is not None
    )


def _cell_of(variant: Variant) -> str:
    """What makes runs one cell whatever the variant is called: every setting but the seed."""
    return twin_key(variant.replace(seed=0, label_seed=None), None)


def cells(records: list[RunRecord]) -> dict[tuple[str, int], list[list[RunRecord]]]:
    """The cells of every eligible run (twins once), by (family, labels)."""
    unique = {twin_key(r.variant, r.max_steps): r for r in records if _eligible(r)}
    grouped: dict[str, list[RunRecord]] = defaultdict(list)
    for record in unique.values():
        grouped[_cell_of(record.variant)].append(record)
    by_row: dict[tuple[str, int], list[list[RunRecord]]] = defaultdict(list)
    for runs in grouped.values():
        v = runs[0].variant
        by_row[(family_of(v) or "", v.labels)].append(sorted(runs, key=lambda r: r.variant.seed))
    return by_row


def pick(candidates: list[list[RunRecord]]) -> list[RunRecord] | None:
    """The cell of lowest mean validation error among those with MIN_SEEDS seeds or more."""
    enough = [runs for runs in candidates if len(runs) >= MIN_SEEDS]
    if not enough:
        return None

    def mean_val_error(runs: list[RunRecord]) -> float:
        return float(np.mean([r.outcome["selected_val_error"] for r in runs]))

    return min(enough, key=lambda runs: (mean_val_error(runs), _name(runs)))


def _name(runs: list[RunRecord]) -> str:
    """The cell's variant name: the one most of its records carry (then the first by name)."""
    names = pd.Series([r.variant.name for r in runs]).value_counts()
    return str(sorted(names[names == names.max()].index)[0])


def describe(runs: list[RunRecord]) -> str:
    """The pick's variant and the settings its runs change from that variant's own."""
    name = _name(runs)
    v = next(r.variant for r in runs if r.variant.name == name)
    try:
        own = get_variant(name).params()
    except ValueError:  # a variant no longer registered: its settings are in its records
        own = {}
    skip = {"name", "seed", "label_seed"}
    changed = {k: x for k, x in v.params().items() if k not in skip and own.get(k) != x}
    said = ", ".join(f"{k}={round_float(x)}" for k, x in sorted(changed.items()))
    return f"`{name}`" + (f" ({said})" if said else "")


def _figure(runs: list[RunRecord]) -> str:
    errors = [r.outcome["selected_test_error"] for r in runs]
    low, high = t_interval(errors)
    return (
        f"{np.mean(errors):.2f} ± {np.std(errors, ddof=1):.2f} [{low:.2f}, {high:.2f}], "
        f"{len(errors)} seeds"
    )


def paper_markdown(results_dir: str | Path) -> str:
    """The page: the published rows, the harness's picks, and what each pick is."""
    by_row = cells(all_records(Path(results_dir) / RUNS_FOLDER))
    rows = [
        {"row": name, **{f"{n} labels": said.get(n, "") for n in LABEL_COUNTS}, "source": source}
        for name, said, source in PUBLISHED
    ]
    notes = []
    for family in FAMILIES:
        row = {"row": f"{family}, this harness (best cell)"}
        for n in LABEL_COUNTS:
            runs = pick(by_row.get((family, n), []))
            row[f"{n} labels"] = _figure(runs) if runs else ""
            if runs:
                notes.append(f"- {family} at {n} labels: {describe(runs)}")
        row["source"] = "`results/runs` (validation-selected pick)"
        rows.append(row)
    return HEADER + pd.DataFrame(rows).to_markdown(index=False) + "\n\n" + "\n".join(notes) + "\n"
