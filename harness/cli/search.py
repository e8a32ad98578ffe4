"""`m2h search`: an Optuna study over a variant's search space, its best exported as a variant."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from harness.cli.common import (
    UsageError,
    add_run_options,
    site_from_args,
    variant_from_args,
    verify_data,
)
from harness.config.variants import (
    parse_overrides,
)

if TYPE_CHECKING:
    pass


def cmd_search(args: argparse.Namespace) -> int:
    from harness.config.names import check_name
    from harness.config.space import describe
    from harness.config.variants import check_export_name
    from harness.experiments.search import (
        SearchSpec,
        export_best,
        load_study,
        prepare,
        run_search,
        summary,
    )

    if args.show_space:
        space = prepare(args.name, args.space or [], args.validation)
        own = variant_from_args(args)
        print(f"search space of {args.name} (its own value in brackets):")
        for key, dim in space.items():
            print(f"  {describe({key: dim})}  [{getattr(own, key)}]")
        return 0
    if args.trials is None and not args.export:
        raise UsageError("say how many trials the study should hold (--trials T)")
    study_name = check_name(args.study or f"{args.name}-search", "study")
    if args.export:
        check_export_name(args.export)
    if args.trials is not None and args.trials < 1:
        raise UsageError(f"--trials must be >= 1, got {args.trials}")
    if args.jobs > 1 and (args.storage or "sqlite").startswith("sqlite"):
        raise UsageError(
            "several workers need a journal file or a database server: "
            "--storage journal:PATH (Optuna advises against SQLite for parallel work)"
        )
    space = prepare(args.name, args.space or [], args.validation)
    variant = variant_from_args(args)  # validates --set and the seed before anything runs
    verify_data(args, variant.dataset)
    spec = SearchSpec(
        variant=args.name,
        study=study_name,
        storage=args.storage,
        space=space,
        settings=parse_overrides(args.set or []),
        trials=args.trials or 0,
        epochs=args.epochs,
        site=site_from_args(args),
        validation=args.validation,
        seed=variant.seed,
        pruner=args.pruner,
        timeout=args.timeout,
        tracking_uri=args.tracking_uri,
        track=not args.no_track,
        checkpoint_dir=args.checkpoint_dir,
        threads=args.threads,
    )
    study = run_search(spec, jobs=args.jobs) if args.trials else load_study(spec)
    print(summary(study))
    if args.export:
        path = export_best(study, spec, args.export)
        print(
            f"registered the best trial as variant {args.export!r} in {path}; "
            f"see it with `m2h show {args.export}`"
        )
    return 0


def add_parsers(sub: Any) -> None:
    """The `search` subcommand."""
    search = sub.add_parser("search", help="an Optuna study over a variant's search space")
    search.add_argument("name")
    search.add_argument(
        "--trials",
        type=int,
        help="trials the study should hold in all, never one over however many processes share it",
    )
    search.add_argument(
        "--show-space",
        action="store_true",
        help="print the space (the variant's, or its base's, with --space applied) and the "
        "variant's own value of each knob, then stop; a fresh study's first trial is those values",
    )
    search.add_argument("--study", help="study name (default: NAME-search)")
    search.add_argument(
        "--storage",
        help="Optuna storage: an RDB URL (default: sqlite:///"
        "<cwd>/optuna.db) or journal:PATH for several worker processes",
    )
    search.add_argument("--timeout", type=float, help="stop starting trials after SEC seconds")
    search.add_argument("--jobs", type=int, default=1, help="worker processes")
    search.add_argument(
        "--space",
        action="append",
        metavar="KEY=RANGE",
        help="narrow the space: lr=1e-4:1e-3, hidden=256,512, temperature=0.5",
    )
    search.add_argument("--pruner", default="median", choices=["median", "hyperband", "none"])
    search.add_argument(
        "--validation",
        type=int,
        default=10_000,
        help="training images held out as the objective (default 10000)",
    )
    search.add_argument("--epochs", type=int)
    search.add_argument("--seed", type=int)
    search.add_argument("--set", action="append", metavar="KEY=VALUE")
    search.add_argument(
        "--export", metavar="NEW_NAME", help="register the best trial as a new variant"
    )
    add_run_options(search)
    search.set_defaults(func=cmd_search)
