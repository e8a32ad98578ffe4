"""`m2h ablate` and `m2h status`: run a named ablation (or an ad-hoc sweep written as one) and
say which of its runs are done."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.cli.common import (
    UsageError,
    add_launcher_options,
    add_run_options,
    site_from_args,
    slurm_options,
    with_budget,
)
from harness.config.variants import (
    parse_overrides,
)

if TYPE_CHECKING:
    pass


def write_sweep(args: argparse.Namespace) -> str:
    """An ad-hoc sweep written as ./ablations/NAME.toml (NAME: the positional name, else the
    base and the swept keys), so that it runs, tables and plots by its name like any ablation;
    a different file of that name is never overwritten."""
    from harness.config.ablations import sweep_spec
    from harness.config.names import check_name
    from harness.files import ensure_writable, write_atomically

    if not args.base:
        raise UsageError("--sweep needs --base VARIANT (the variant whose settings it sweeps)")
    default, text = sweep_spec(
        args.base,
        args.sweep,
        parse_overrides(args.set or []),
        args.seeds,
        args.epochs,
        args.max_steps,
    )
    name = check_name(args.name or default, "ablation")
    path = Path("ablations") / f"{name}.toml"
    if path.exists() and path.read_text() != text:
        raise UsageError(f"{path} exists with other settings; name this sweep: m2h ablate NAME ...")
    if not path.exists():
        ensure_writable(path.parent, "ablations folder")
        write_atomically(path, lambda tmp: tmp.write_text(text))
    print(f"ablation {name}: the sweep is {path}; `m2h table {name}` and `m2h plot {name}` "
          "table and plot it", flush=True)  # fmt: skip
    return name


def cmd_status(args: argparse.Namespace) -> int:
    from harness.config.ablations import load_ablation
    from harness.experiments.ablate import run_states

    ablation = with_budget(args, load_ablation(args.name))
    states = run_states(
        ablation, args.seeds, args.epochs, args.max_steps, args.out, slurm_options(args)
    )
    for state in states:
        print(f"  {state.cell} seed {state.seed}: {state.status} {state.detail}".rstrip())
    counts: dict[str, int] = {}
    for state in states:
        counts[state.status] = counts.get(state.status, 0) + 1
    print(f"{ablation.name}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from harness.config.ablations import load_ablation
    from harness.experiments.ablate import AblationOptions, run_ablation

    if args.sweep:
        args.name = write_sweep(args)
    elif args.name is None:
        raise UsageError("name an ablation, or sweep one: --base VARIANT --sweep KEY=A,B ...")
    elif args.base or args.set:
        raise UsageError("--base and --set go with --sweep")
    ablation = with_budget(args, load_ablation(args.name))
    print(f"ablation {ablation.name}: read {ablation.source}", flush=True)
    options = AblationOptions(
        tracking_uri=args.tracking_uri,
        track=not args.no_track,
        seeds=args.seeds,
        cells=args.cells,
        epochs=args.epochs,
        site=site_from_args(args),
        jobs=args.jobs,
        stack=args.stack,
        checkpoint_dir=args.checkpoint_dir,
        results_dir=args.out,
        threads=args.threads,
        slurm=slurm_options(args),
        wait=args.launcher == "local" or args.wait,
    )
    outcomes = run_ablation(ablation, options)
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    print(f"ablation {ablation.name}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    if args.launcher == "slurm" and not args.wait:
        print(f"follow it with `m2h status {ablation.name} --launcher slurm`")
    return 1 if counts.get("failed") else 0


def add_parsers(sub: Any) -> None:
    """The `ablate` and `status` subcommands."""
    ablate = sub.add_parser("ablate", help="run a named ablation from ablations/")
    ablate.add_argument(
        "name",
        nargs="?",
        help="an ablation in ./ablations or the package's (or a path to a .toml file); with "
        "--sweep, the name the sweep gets",
    )
    ablate.add_argument(
        "--sweep",
        nargs="+",
        metavar="KEY=A,B",
        help="an ad-hoc sweep of --base over these settings (a grid), written as "
        "./ablations/NAME.toml and run like any ablation",
    )
    ablate.add_argument("--base", help="with --sweep: the variant swept")
    ablate.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="with --sweep: a fixed setting"
    )
    ablate.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the file's)")
    ablate.add_argument(
        "--cells",
        nargs="+",
        metavar="CELL",
        help='train only these cells, named as the tables name them ("exact[alpha=0.1]"); '
        "the ablation's parent run and tables stay whole",
    )
    ablate.add_argument("--epochs", type=int, help="epochs per run (default: the file's)")
    ablate.add_argument("--jobs", type=int, default=1, help="runs at once, in processes")
    ablate.add_argument(
        "--stack",
        action="store_true",
        help="train each cell's seeds at once, stacked in one step (one process per cell)",
    )
    add_run_options(ablate)
    ablate.set_defaults(func=cmd_ablate)

    ablate.add_argument(
        "--out",
        default="results",
        help="results folder: each finished run leaves its record in OUT/runs (default: results)",
    )
    add_launcher_options(ablate)
    ablate.add_argument(
        "--wait", action="store_true", help="slurm: wait for the jobs (default: return queued)"
    )
    status = sub.add_parser(
        "status", help="which runs of an ablation are done, running, queued, failed or to run"
    )
    status.add_argument("name")
    status.add_argument("--seeds", type=int, nargs="+")
    status.add_argument("--epochs", type=int)
    status.add_argument("--max-steps", type=int)
    status.add_argument("--out", default="results")
    add_launcher_options(status)
    status.set_defaults(func=cmd_status)
