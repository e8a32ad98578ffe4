"""`m2h bench`: the harness's step against a plain reference, side by side in one process."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from harness.cli.common import (
    UsageError,
    add_data_options,
    set_threads,
    variant_from_args,
)

if TYPE_CHECKING:
    pass


def cmd_bench(args: argparse.Namespace) -> int:
    from harness.experiments.machine import busy_note
    from harness.tools.bench import side_by_side, stacked_side_by_side
    from harness.training.data import load_splits
    from harness.training.trainer import resolve_device

    variant = variant_from_args(args)
    if args.seeds is None and variant.estimator != "exact":
        raise UsageError(
            "the side-by-side reference is the exact estimator's per-class loop; "
            "bench an exact variant (or stacked seeds with --seeds N)"
        )
    if args.seeds is not None and args.seeds < 2:
        raise UsageError("--seeds must be >= 2 (the stack is compared with one seed alone)")
    device = resolve_device(args.device)
    splits = load_splits(variant.dataset, args.data_root, device, download=not args.no_download)
    busy = busy_note()
    set_threads(args)
    if args.seeds is None:
        peak, ours, theirs = side_by_side(variant, splits, device, args.repeats)
    else:
        peak, theirs, ours = stacked_side_by_side(variant, splits, device, args.seeds, args.repeats)
    print(
        f"{variant.name} on {device} ({device_label(device)}), batch {variant.batch_size} "
        f"unlabelled + {min(variant.labelled_batch_size, variant.labels)} labelled rows; "
        f"matmul peak {peak / 1e9:,.1f} GFLOP/s"
    )
    for timing in (ours, theirs):
        print(
            f"  {timing.name:<42} {1e3 * timing.seconds:7.2f} ms/step  "
            f"{timing.rows_per_sec:9,.0f} rows/s  {timing.flop_rate / 1e9:7.1f} GFLOP/s "
            f"({100 * timing.flop_rate / peak:.0f}% of peak)"
        )
    busy = busy or busy_note()
    if busy:
        print(f"no ratio: {busy}")
    elif args.seeds is None:
        print(f"speed-up of the harness over the reference: {theirs.seconds / ours.seconds:.2f}x")
    else:
        print(
            f"stacked: {ours.rows_per_sec / args.seeds:,.0f} rows/s per seed, "
            f"{ours.rows_per_sec:,.0f} in all; speed-up over training the {args.seeds} seeds "
            f"one after another: {ours.rows_per_sec / theirs.rows_per_sec:.2f}x"
        )
    return 0


def device_label(device: Any) -> str:
    from harness.runs.provenance import environment_params

    return environment_params(device)["device_name"]


def add_parsers(sub: Any) -> None:
    """The `bench` subcommand."""
    bench = sub.add_parser(
        "bench", help="the harness's step against a plain reference, side by side in one process"
    )
    bench.add_argument("name", nargs="?", default="exact")
    bench.add_argument("--repeats", type=int, default=30)
    bench.add_argument(
        "--seeds", type=int, help="compare N seeds stacked in one step with one seed alone"
    )
    bench.add_argument("--set", action="append", metavar="KEY=VALUE")
    add_data_options(bench)
    bench.set_defaults(func=cmd_bench)
