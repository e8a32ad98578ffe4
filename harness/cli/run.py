"""`m2h run`: train one variant (one seed, or several stacked in one step)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.cli.common import (
    UsageError,
    add_run_options,
    make_tracker,
    set_threads,
    site_from_args,
    variant_from_args,
    verify_data,
)
from harness.config.variants import (
    Variant,
)

if TYPE_CHECKING:
    pass


def refuse_finished_runs(
    records_dir: Path, variant: Variant, seeds: list[int], max_steps: int | None
) -> None:
    """A run whose record exists has finished: `m2h run` does not train it twice (an ablation
    skips it the same way), unless asked to with --again."""
    from harness.runs.records import record_path

    for seed in seeds:
        path = record_path(records_dir, variant.replace(seed=seed), max_steps)
        if path.exists():
            raise UsageError(
                f"seed {seed} of this run has finished (its record is {path}); a finished run "
                "is not trained twice: pass --again to train it anew and replace its record"
            )


def cmd_run(args: argparse.Namespace) -> int:
    from harness.files import ensure_writable
    from harness.runs.records import RUNS_FOLDER, record_path
    from harness.runs.runner import (
        RunOptions,
        format_report,
        format_summary,
        run_seeds,
    )

    if args.seeds is not None and args.seed is not None:
        raise UsageError("give --seed or --seeds, not both")
    if args.seeds is not None and len(args.seeds) > 1 and (args.compile or args.cuda_graphs):
        raise UsageError("--compile and --cuda-graphs are for one seed; stacked seeds run eagerly")
    variant = variant_from_args(args)
    verify_data(args, variant.dataset)
    set_threads(args)
    records_dir = Path(args.out) / RUNS_FOLDER
    seeds = [variant.seed] if args.seeds is None else args.seeds
    if not args.again:
        refuse_finished_runs(records_dir, variant, seeds, args.max_steps)
    ensure_writable(records_dir, "records folder")
    tracker = make_tracker(args, args.experiment)
    options = RunOptions(
        site=site_from_args(args),
        tracker=tracker,
        checkpoint_dir=Path(args.checkpoint_dir) / args.experiment,
        resume=args.resume,
        precision=args.precision,
        compile=args.compile,
        cuda_graphs=args.cuda_graphs,
        announce=lambda note: print(note, flush=True),
        records_dir=records_dir,  # an ablation listing this run reuses it
    )

    def print_reports(reports: list) -> None:
        for seed, report in zip(seeds, reports, strict=True):
            if report is not None:  # None: the stop rule ended this seed earlier
                where = f"seed {seed}  " if args.seeds is not None else ""
                print(f"{where}{format_report(report, variant.epochs)}", flush=True)

    results = run_seeds(variant, seeds, options, on_epoch_end=[print_reports])
    for result in results:
        print(format_summary(result.variant, result.reports))
        print(f"record: {record_path(records_dir, result.variant, args.max_steps)}")
        if result.run_id and tracker is not None:
            print(f"MLflow run {result.run_id} in experiment {args.experiment!r} at {tracker.uri}")
    return 0


def add_parsers(sub: Any) -> None:
    """The `run` subcommand."""
    run = sub.add_parser("run", help="train one variant")
    run.add_argument("name")
    run.add_argument("--labels", type=int, help="number of labelled images (multiple of 10)")
    run.add_argument("--epochs", type=int)
    run.add_argument("--seed", type=int)
    run.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="train these seeds at once, stacked in one step (each its own run)",
    )
    run.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override any variant setting (repeatable)",
    )
    run.add_argument(
        "--patience",
        type=int,
        help="stop rule: end when the validation error has not improved for this many epochs "
        "(needs --validation; --epochs is then the most it trains)",
    )
    run.add_argument(
        "--min-delta",
        type=float,
        help="stop rule: the improvement, in points of validation error, that counts (0.1)",
    )
    run.add_argument("--validation", type=int, help="training images held out for validation")
    run.add_argument("--experiment", default="runs", help="MLflow experiment (default: runs)")
    run.add_argument(
        "--out",
        default="results",
        help="results folder: the run's record goes to OUT/runs, where every ablation finds it "
        "(default: results)",
    )
    run.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="bf16: autocast the matrix products to bfloat16, the loss kept in float32",
    )
    run.add_argument(
        "--compile", action="store_true", help="torch.compile the loss (off by default)"
    )
    run.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="capture the whole training step as a CUDA graph and replay it (CUDA only)",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue from this run's checkpoint, into the same MLflow run",
    )
    run.add_argument(
        "--again",
        action="store_true",
        help="train a run whose record exists (a finished run) anew, replacing its record",
    )
    add_run_options(run)
    run.set_defaults(func=cmd_run)
