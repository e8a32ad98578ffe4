"""The `m2h` command line: list, show and run variants (and ablate, table, plot, search, ui)."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from typing import Any

from harness.variants import Variant, create_variant, get_variant, list_variants, parse_overrides

LIST_COLUMNS = (
    "estimator",
    "y_term",
    "temperature",
    "temperature_schedule",
    "alpha",
    "alpha_scaling",
    "alpha_schedule",
    "hidden",
    "activation",
    "z_dim",
    "lr",
    "batch_size",
    "labelled_batch_size",
    "epochs",
)


class UsageError(Exception):
    """A command-line mistake: printed as one line, exit status 2."""


def _table(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def cmd_list(args: argparse.Namespace) -> int:
    rows = [{"name": v.name, **{c: getattr(v, c) for c in LIST_COLUMNS}} for v in list_variants()]
    print(_table(rows))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    variant = get_variant(args.name)
    print(f"{variant.name}: {variant.description}\n")
    width = max(len(k) for k in variant.params())
    for key, value in variant.params().items():
        print(f"  {key.ljust(width)}  {value}")
    return 0


def variant_from_args(args: argparse.Namespace) -> Variant:
    overrides = parse_overrides(args.set or [])
    for key in ("labels", "epochs", "seed"):
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
    return create_variant(args.name, overrides)


def make_tracker(args: argparse.Namespace, experiment: str):
    """The MLflow store named by the flags, opened (and checked writable) before any training."""
    if args.no_track:
        return None
    from harness.tracking import Tracker

    return Tracker(args.tracking_uri, experiment)


def cmd_run(args: argparse.Namespace) -> int:
    from harness.runner import format_report, format_summary, run_variant

    variant = variant_from_args(args)
    tracker = make_tracker(args, args.experiment)
    result = run_variant(
        variant,
        data_root=args.data_root,
        device=args.device,
        max_steps=args.max_steps,
        download=not args.no_download,
        tracker=tracker,
        checkpoint_dir=args.checkpoint_dir,
        resume=args.resume,
        on_epoch_end=[lambda r: print(format_report(r, variant.epochs), flush=True)],
    )
    print(format_summary(variant, result.reports))
    if result.run_id:
        print(f"MLflow run {result.run_id} in experiment {args.experiment!r} at {tracker.uri}")
    return 0


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: CUDA when present)")
    p.add_argument(
        "--data-root",
        help="folder holding MNIST/raw and FashionMNIST/raw (default: $M2_DATA_ROOT, else ./data)",
    )
    p.add_argument("--no-download", action="store_true", help="never download missing data")
    p.add_argument("--max-steps", type=int, help="cap the steps per epoch (quick checks)")
    p.add_argument(
        "--tracking-uri",
        help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)",
    )
    p.add_argument("--no-track", action="store_true", help="log nothing to MLflow")
    p.add_argument(
        "--checkpoint-dir",
        default="checkpoints",
        help="where each run's checkpoint is kept (default: ./checkpoints)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="m2h", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="the registered variants and their knobs").set_defaults(
        func=cmd_list
    )
    show = sub.add_parser("show", help="every setting of one variant")
    show.add_argument("name")
    show.set_defaults(func=cmd_show)

    run = sub.add_parser("run", help="train one variant")
    run.add_argument("name")
    run.add_argument("--labels", type=int, help="number of labelled images (multiple of 10)")
    run.add_argument("--epochs", type=int)
    run.add_argument("--seed", type=int)
    run.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override any variant setting (repeatable)",
    )
    run.add_argument("--experiment", default="runs", help="MLflow experiment (default: runs)")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue from this run's checkpoint, into the same MLflow run",
    )
    _add_run_options(run)
    run.set_defaults(func=cmd_run)
    return parser


def _raise_interrupt(signum: int, frame: Any) -> None:
    from harness.tracking import RunInterrupted

    raise RunInterrupted(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "max_steps", None) is not None and args.max_steps < 1:
        parser.error("--max-steps must be >= 1")
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(
            "m2h: interrupted; the last finished epoch is checkpointed: run the same command "
            "with --resume to continue",
            file=sys.stderr,
        )
        return 130
    except Exception as err:
        if args.debug:
            raise
        print(f"m2h: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
