"""`m2h table`, `plot`, `load`, `compare`, `answers` and `reproduce`: what the run records say,
as tables, plots, an MLflow store, paired comparisons, the answers page and reruns."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.cli.common import (
    UsageError,
    variants_named,
    verify_data,
    with_budget,
)
from harness.config.variants import (
    parse_overrides,
)

if TYPE_CHECKING:
    import pandas as pd

    from harness.config.ablations import Ablation


def _results_inputs(args: argparse.Namespace) -> tuple[Ablation, pd.DataFrame, pd.DataFrame]:
    from harness.config.ablations import load_ablation
    from harness.files import ensure_writable
    from harness.reporting.tables import load_runs

    ablation = with_budget(args, load_ablation(args.name))
    ensure_writable(Path(args.out), "results folder")
    runs, curves = load_runs(ablation, args.out, args.epochs, args.max_steps)
    return ablation, runs, curves


def cmd_table(args: argparse.Namespace) -> int:
    from harness.reporting.spread import LABELS, spread_markdown
    from harness.reporting.tables import (
        compares_with_paper,
        comparisons,
        m1_note,
        provenance,
        reference_label,
        summarize,
        write_table,
    )

    ablation, runs, _ = _results_inputs(args)
    table = summarize(runs, compares_with_paper(ablation.axes, runs), list(ablation.axes))
    meta = provenance(
        ablation, runs, args.epochs or ablation.epochs, args.max_steps, args.out, variants_named()
    )
    meta["m1"] = m1_note(ablation, args.out, args.epochs, args.max_steps)
    md, csv = write_table(
        ablation.name,
        table,
        meta,
        Path(args.out),
        ablation.description,
        comparisons(ablation, runs),
        reference_label(ablation),
        spread_markdown(runs) if LABELS in ablation.axes else (),
    )
    print(md.read_text())
    print(f"wrote {md} and {csv}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from harness.reporting.plots import ablation_plots

    ablation, runs, curves = _results_inputs(args)
    paths = ablation_plots(ablation, runs, curves, Path(args.out))
    for path in paths:
        print(f"wrote {path}")
    if not any(p.name.endswith("_curves.png") for p in paths):
        print("no curves: the runs have one epoch each, and a curve needs two")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.config.ablations import find_cell
    from harness.reporting.statistics import compare
    from harness.reporting.tables import errors_by_pair, load_runs

    where = parse_overrides(args.where or [])
    found = [find_cell(spec, args.ablation, where) for spec in (args.cell, args.reference)]
    (_, cell), (_, reference_cell) = found
    if (cell.variant, cell.overrides) == (reference_cell.variant, reference_cell.overrides):
        raise UsageError(
            f"{args.cell} and {args.reference} are one cell (the same variant and settings): "
            "a comparison needs two"
        )
    picked = []
    for ablation, cell in found:
        steps = args.max_steps or ablation.max_steps
        runs, _ = load_runs(ablation, args.out, args.epochs, steps, every_seed=True)
        picked.append((f"{ablation.name}:{cell.name}", errors_by_pair(runs, cell.name)))
    (name, errors), (reference, reference_errors) = picked
    c = compare(name, errors, reference, reference_errors)
    print(f"{name} against {reference}, paired over seeds {' '.join(map(str, c.seeds))}:")
    print(
        f"  error(cell) - error(reference): {c.difference:+.2f} points, 95% t interval "
        f"[{c.low:.2f}, {c.high:.2f}] (normal differences assumed)"
    )
    print(f"  probability of improvement: {c.probability_of_improvement:.2f}")
    print(
        f"  exact paired permutation test: p = {c.p_value:.3g} (the smallest possible with "
        f"{len(c.seeds)} pairs: {c.smallest_p:.3g}); paired t-test: p = {c.p_t:.2g}"
    )
    print(f"  verdict: {c.verdict}")
    print(
        f"  seeds to resolve 0.5 points: {c.seeds_for_resolve}; the observed difference: "
        f"{c.seeds_for_observed if c.seeds_for_observed else '-'}"
    )
    return 0


def cmd_answers(args: argparse.Namespace) -> int:
    from harness.reporting.answers import write_answers
    from harness.runs.records import RUNS_FOLDER

    if not (Path(args.out) / RUNS_FOLDER).is_dir():
        raise UsageError(f"{args.out} holds no {RUNS_FOLDER}/ of run records to answer from")
    paths = write_answers(args.out)
    for path in paths:
        print(path.read_text())
    print(f"wrote {' and '.join(map(str, paths))}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from harness.runs.records import read_record
    from harness.runs.reproduce import reproduce

    if (args.record is None) == (args.all is None):
        raise UsageError("name a RECORD, or an ablation's records with --all ABLATION")
    records = [read_record(args.record)] if args.record else sampled_records(args)
    for dataset in {r.variant.dataset for r in records}:
        verify_data(args, dataset)
    differ = 0
    for record in records:
        print(f"{record.path}: rerunning its first {args.epochs} epochs here", flush=True)
        outcome = reproduce(record, args.epochs, args.data_root)
        print(outcome.summary(), flush=True)
        differ += outcome.difference is not None
    if args.all:
        print(f"{len(records) - differ} of {len(records)} records of {args.all} reproduce")
    return 0 if not differ else 1


def sampled_records(args: argparse.Namespace) -> list:
    """`--all ABLATION`: the first --per-cell records (by seed) of each of its cells."""
    from harness.config.ablations import load_ablation
    from harness.runs.records import RUNS_FOLDER, find_records

    ablation = with_budget(args, load_ablation(args.all))
    runs_dir, picked = Path(args.out) / RUNS_FOLDER, []
    for cell in ablation.cells():
        picked += find_records(runs_dir, ablation.variant(cell, 0), args.max_steps)[: args.per_cell]
    if not picked:
        raise UsageError(f"ablation {ablation.name} has no records in {runs_dir}")
    return picked


def cmd_load(args: argparse.Namespace) -> int:
    from harness.config.ablations import load_ablation
    from harness.experiments.ablate import log_records

    ablation = with_budget(args, load_ablation(args.name))
    loaded, present, uri = log_records(
        ablation, args.out, args.epochs, args.max_steps, args.tracking_uri
    )
    print(
        f"{ablation.name}: {loaded} run records loaded into experiment {ablation.name!r} at "
        f"{uri} ({present} there already); browse them with `m2h ui`"
    )
    return 0


def _add_budget_options(p: argparse.ArgumentParser) -> None:
    """The budget the records were made at, where the ablation file does not say it."""
    p.add_argument("--epochs", type=int, help="the runs' epoch budget (default: the file's)")
    p.add_argument("--max-steps", type=int, help="the runs' step cap (default: none)")


def add_parsers(sub: Any) -> None:
    """The `table`, `plot`, `load`, `compare`, `answers` and `reproduce` subcommands."""
    for name, func, what in [
        ("table", cmd_table, "results/NAME.md and .csv from the run records"),
        ("plot", cmd_plot, "results/NAME_*.png from the run records"),
        ("load", cmd_load, "load an ablation's run records into an MLflow store, for the UI"),
    ]:
        p = sub.add_parser(name, help=what)
        p.add_argument("name")
        p.add_argument(
            "--out",
            default="results",
            help="results folder holding runs/ (and the tables; default: results)",
        )
        _add_budget_options(p)
        if name == "load":
            p.add_argument("--tracking-uri")
        p.set_defaults(func=func)

    compare = sub.add_parser(
        "compare",
        help="two cells from their run records, paired by seed: is the difference real?",
        description="Compare CELL with REFERENCE over the seeds both have (a seed fixes the "
        "labelled images and the initialisation). A cell is ABLATION:CELL (exact[labels=600] "
        "or a variant with one cell there), or CELL with --ablation; --where picks among a "
        "variant's cells.",
    )
    compare.add_argument("cell", help="e.g. labels:gumbel-st[labels=600]")
    compare.add_argument("reference", help="e.g. labels:exact[labels=600]")
    compare.add_argument("--ablation", help="the ablation of cells named without one")
    compare.add_argument(
        "--where",
        action="append",
        metavar="KEY=VALUE",
        help="pick the variant's cell with this setting (labels=600); repeatable",
    )
    compare.add_argument("--out", default="results", help="results folder holding runs/")
    _add_budget_options(compare)
    compare.set_defaults(func=cmd_compare)

    answers = sub.add_parser(
        "answers",
        help="results/answers.md: one row per ablation, its question, pick and verdicts",
    )
    answers.add_argument("--out", default="results", help="results folder holding runs/")
    answers.set_defaults(func=cmd_answers)

    reproduce = sub.add_parser(
        "reproduce",
        help="rerun a run record's first epochs: does it reproduce, and if not, why?",
        description="Train RECORD's first epochs again with every setting it holds, on the "
        "CPU with its threads, and compare them epoch by epoch at the record's precision; exit "
        "1 with the first difference and what differs from where it was made (commit and "
        "numerics version, torch, device, processor, instruction set) if they differ.",
    )
    reproduce.add_argument(
        "record", nargs="?", help="a run record, e.g. results/runs/exact-...-s0.json"
    )
    reproduce.add_argument(
        "--all", metavar="ABLATION", help="instead of one record: a few of each cell's of ABLATION"
    )
    reproduce.add_argument(
        "--per-cell", type=int, default=1, help="with --all: records per cell (lowest seeds first)"
    )
    reproduce.add_argument("--out", default="results", help="with --all: results folder")
    reproduce.add_argument("--max-steps", type=int, help="with --all: the runs' step cap")
    reproduce.add_argument("--epochs", type=int, default=1, help="epochs to rerun (default 1)")
    reproduce.add_argument("--data-root", help="folder holding MNIST/raw (default: $M2_DATA_ROOT)")
    reproduce.add_argument("--no-download", action="store_true", help="never download data")
    reproduce.set_defaults(func=cmd_reproduce)
