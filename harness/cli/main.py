"""The `m2h` command line: list, show and run variants (and ablate, table, plot, search, ui)."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from harness.config.datasets import DATASETS
from harness.config.families import FAMILIES
from harness.config.networks import NETWORKS
from harness.config.variants import (
    USER_VARIANTS_ENV,
    Variant,
    applicable_params,
    create_variant,
    get_variant,
    list_variants,
    load_configured_variants,
    parse_overrides,
    round_float,
)
from harness.files import DATA_ROOT_ENV

if TYPE_CHECKING:
    import pandas as pd

    from harness.config.ablations import Ablation
    from harness.tracking.tracker import Tracker

LIST_COLUMNS = (
    "family",
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
    """A command-line mistake: printed as one line, like every error, exit status 1."""


def _table(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def _shown(value: Any) -> str:
    return str(round_float(value))


def cmd_list(args: argparse.Namespace) -> int:
    rows = [
        {"name": v.name, **{c: _shown(getattr(v, c)) for c in LIST_COLUMNS}}
        for v in list_variants()
    ]
    print(_table(rows))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    variant = get_variant(args.name)
    settings = variant.params() if args.all else applicable_params(variant)
    print(f"{variant.name}: {variant.description}\n")
    width = max(len(k) for k in settings)
    for key, value in settings.items():
        print(f"  {key.ljust(width)}  {_shown(value)}")
    if variant.batch_norm or variant.dropout:
        print(f"\n  batch_norm and dropout reach: {variant.regularised.replace(',', ', ')}")
    left_out = len(variant.params()) - len(settings)
    if left_out:
        print(
            f"\n({left_out} settings that do not apply to this variant left out; "
            f"`m2h show {variant.name} --all` lists every one)"
        )
    for names, what in (
        (FAMILIES, "families that family can name (`--set family=adgm`)"),
        (DATASETS, "datasets that dataset can name (`--set dataset=fashion-mnist`)"),
        (NETWORKS, "networks that classifier_net, encoder_net and decoder_net can name"),
    ):
        print(f"\n{what}:")
        width = max(len(name) for name in names)
        for name, description in names.items():
            print(f"  {name.ljust(width)}  {description}")
    return 0


def variant_from_args(args: argparse.Namespace) -> Variant:
    overrides = parse_overrides(args.set or [])
    for key in ("labels", "epochs", "seed", "patience", "min_delta", "validation"):
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
    return create_variant(args.name, overrides)


DEVICE_NAME = re.compile(r"cpu|cuda(:[0-9]+)?")


def device_name(text: str) -> str:
    """A --device the trainer runs on (cpu, cuda, cuda:N), refused while the flags are read,
    so nothing is written for a device that is not there."""
    if not DEVICE_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is no device m2h trains on: cpu, cuda or cuda:N"
        )
    if text.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r} asked for, but CUDA is not available here")
        if ":" in text and int(text.split(":")[1]) >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return text


def verify_data(args: argparse.Namespace, dataset: str) -> None:
    """Missing or corrupt data fails before anything (a tracking store included) is written."""
    from harness.training.data import ensure_dataset

    ensure_dataset(dataset, args.data_root, download=not args.no_download)


def make_tracker(args: argparse.Namespace, experiment: str) -> Tracker | None:
    """The MLflow store named by the flags, opened (and checked writable) before any training."""
    if args.no_track:
        return None
    from harness.tracking.tracker import Tracker

    return Tracker(args.tracking_uri, experiment)


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
        data_root=args.data_root,
        device=args.device,
        max_steps=args.max_steps,
        download=not args.no_download,
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


def variants_named() -> str | None:
    """The user's variants file as a command would name it (relative to here when it is below
    here), or None when none is in use."""
    named = os.environ.get(USER_VARIANTS_ENV)
    if not named:
        return None
    path = Path(named)
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def with_budget(args: argparse.Namespace, ablation: Ablation) -> Ablation:
    """`ablation`, with `args.max_steps` defaulting to the step cap its file names, so that
    ablate, status, table, plot, compare and load agree on the runs without repeating it."""
    if args.max_steps is None:
        args.max_steps = ablation.max_steps
    return ablation


def slurm_options(args: argparse.Namespace) -> Any:
    """The Slurm settings of `--launcher slurm` (None for the local launcher)."""
    if args.launcher != "slurm":
        return None
    from harness.experiments.launchers import SlurmOptions

    return SlurmOptions(
        folder=Path(args.slurm_folder).resolve(),
        partition=args.partition,
        time_limit_min=args.time_limit,
        gpus_per_job=args.gpus_per_job,
        cpus_per_job=args.cpus_per_job,
        array_parallelism=args.array_parallelism,
    )


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
        max_steps=args.max_steps,
        device=args.device,
        data_root=args.data_root,
        download=not args.no_download,
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
    from harness.reporting.plots import plot
    from harness.reporting.tables import compares_with_paper, comparisons

    ablation, runs, curves = _results_inputs(args)
    axis = next(iter(ablation.axes)) if len(ablation.axes) == 1 else None
    paper = compares_with_paper(ablation.axes, runs)
    found = comparisons(ablation, runs)
    grid = list(ablation.axes) if len(ablation.axes) == 2 else []
    paths = plot(ablation.name, runs, curves, Path(args.out), axis, paper, found, grid)
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
        max_steps=args.max_steps,
        validation=args.validation,
        seed=variant.seed,
        pruner=args.pruner,
        timeout=args.timeout,
        device=args.device,
        data_root=args.data_root,
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


def cmd_ui(args: argparse.Namespace) -> int:
    from harness.tracking.server import (
        experiment_links,
        server_command,
        start_server,
        stop_server,
        wait_for_server,
    )
    from harness.tracking.tracker import resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    address = f"http://{args.host}:{args.port}"
    print(f"MLflow UI for {uri} at {address}: starting (up to a minute)", flush=True)
    server = start_server(  # the server's own lines go to stderr: stdout is m2h's
        server_command(uri, args.host, args.port, ui_only=True), stderr=None, stdout=sys.stderr
    )
    try:
        wait_for_server(address, server)
        print(f"ready: open {address} (Ctrl-C stops it)", flush=True)
        for name, link in experiment_links(uri, address):
            print(f"  {name}: {link}", flush=True)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_server(server)


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device", type=device_name, help="cpu, cuda, cuda:N (default: CUDA when present)"
    )
    p.add_argument(
        "--data-root",
        help="folder holding MNIST/raw and FashionMNIST/raw (default: $M2_DATA_ROOT, else ./data)",
    )
    p.add_argument("--no-download", action="store_true", help="never download missing data")
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads per run (default: the cores not already busy, shared between --jobs)",
    )


def _add_run_options(p: argparse.ArgumentParser) -> None:
    _add_data_options(p)
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


def _add_launcher_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--launcher",
        choices=["local", "slurm"],
        default="local",
        help="local: processes here (--jobs); slurm: one Slurm job per run, through submitit",
    )
    p.add_argument(
        "--slurm-folder",
        default="submitit",
        help="slurm: submitit's logs, jobs and ledger, on a filesystem every node shares",
    )
    p.add_argument("--partition", help="slurm: the partition")
    p.add_argument("--time-limit", type=int, default=240, help="slurm: minutes per job (240)")
    p.add_argument("--gpus-per-job", type=int, default=0, help="slurm: GPUs per job (0)")
    p.add_argument("--cpus-per-job", type=int, default=2, help="slurm: CPUs per job (2)")
    p.add_argument(
        "--array-parallelism", type=int, default=64, help="slurm: jobs of the array at once (64)"
    )


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors (`--epochs abc`) in one line; the usage stays one `--help`
    away."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="m2h", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument(
        "--variants",
        metavar="FILE",
        help="your own variants and networks: a Python module (@register_variant, "
        "@register_network) or a TOML file (default: $M2H_VARIANTS, else ./m2h-variants.toml)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="the registered variants and their knobs").set_defaults(
        func=cmd_list
    )
    show = sub.add_parser("show", help="every setting of one variant")
    show.add_argument("name")
    show.add_argument("--all", action="store_true", help="also the settings that do not apply")
    show.set_defaults(func=cmd_show)

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
    _add_run_options(run)
    run.set_defaults(func=cmd_run)

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
    _add_run_options(ablate)
    ablate.set_defaults(func=cmd_ablate)

    ablate.add_argument(
        "--out",
        default="results",
        help="results folder: each finished run leaves its record in OUT/runs (default: results)",
    )
    _add_launcher_options(ablate)
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
    _add_launcher_options(status)
    status.set_defaults(func=cmd_status)
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
        p.add_argument("--epochs", type=int, help="the runs' epoch budget (default: the file's)")
        p.add_argument("--max-steps", type=int, help="the runs' step cap (default: none)")
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
    compare.add_argument("--epochs", type=int, help="the runs' epoch budget (default: the file's)")
    compare.add_argument("--max-steps", type=int, help="the runs' step cap (default: none)")
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
    _add_run_options(search)
    search.set_defaults(func=cmd_search)

    bench = sub.add_parser(
        "bench", help="the harness's step against a plain reference, side by side in one process"
    )
    bench.add_argument("name", nargs="?", default="exact")
    bench.add_argument("--repeats", type=int, default=30)
    bench.add_argument(
        "--seeds", type=int, help="compare N seeds stacked in one step with one seed alone"
    )
    bench.add_argument("--set", action="append", metavar="KEY=VALUE")
    _add_data_options(bench)
    bench.set_defaults(func=cmd_bench)

    ui = sub.add_parser("ui", help="the MLflow UI on localhost against the same store")
    ui.add_argument("--tracking-uri")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(func=cmd_ui)
    return parser


def _raise_interrupt(signum: int, frame: Any) -> None:
    from harness.tracking.tracker import RunInterrupted

    raise RunInterrupted(f"signal {signum}")


def pin_data_root() -> None:
    """A relative $M2_DATA_ROOT means the folder it names from where m2h was started, in this
    process and in every process it starts (workers, servers), wherever they run."""
    root = os.environ.get(DATA_ROOT_ENV)
    if root and not os.path.isabs(os.path.expanduser(root)):
        os.environ[DATA_ROOT_ENV] = os.path.abspath(os.path.expanduser(root))


def set_threads(args: argparse.Namespace) -> None:
    """This process's CPU threads: --threads, else the idle cores (machine.default_threads)."""
    import torch

    from harness.experiments.machine import default_threads, threads_note

    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    note = None if args.threads else threads_note(threads)
    if note:
        print(f"m2h: {note}", flush=True)  # a note, not an error: stdout


def check_counts(args: argparse.Namespace) -> None:
    """Counts that must be positive, refused before any data is touched."""
    for flag in (
        "threads",
        "max_steps",
        "jobs",
        "epochs",
        "repeats",
        "per_cell",
        "time_limit",
        "cpus_per_job",
        "array_parallelism",
    ):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")


# what an interrupted command leaves and how to continue it: `run` resumes on request, an
# ablation or a search skips its finished runs and resumes a cut-off one by itself
RESUME_HINTS = {
    "run": "the last finished epoch is checkpointed: run the same command with --resume "
    "to continue",
    "ablate": "each cut-off run's last finished epoch is checkpointed: run the same command "
    "to continue (finished runs are skipped, cut-off ones resume)",
    "search": "the cut-off trial's last finished epoch is checkpointed: run the same command "
    "to continue (the trial is retried from its checkpoint)",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    pin_data_root()
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        check_counts(args)
        if args.variants:  # for this process and every worker it starts
            if not Path(args.variants).is_file():
                raise UsageError(f"--variants {args.variants}: no such file")
            os.environ[USER_VARIANTS_ENV] = str(Path(args.variants).resolve())
        for warning in load_configured_variants():
            print(f"m2h: warning: {warning}", file=sys.stderr)
        return args.func(args)
    except BrokenPipeError:  # `m2h show x | head` closed the pipe: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        hint = RESUME_HINTS.get(args.command)
        print(f"m2h: interrupted; {hint}" if hint else "m2h: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            raise
        print(f"m2h: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
