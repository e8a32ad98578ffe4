"""What every `m2h` subcommand shares: its one-line usage errors, the checks of its flags, the
variant its flags name, and the option groups several subcommands take."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.config.variants import (
    USER_VARIANTS_ENV,
    Variant,
    create_variant,
    parse_overrides,
)

if TYPE_CHECKING:
    from harness.config.ablations import Ablation
    from harness.runs.runner import RunSite
    from harness.tracking.tracker import Tracker


class UsageError(Exception):
    """A command-line mistake: printed as one line, like every error, exit status 1."""


def text_table(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


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


def site_from_args(args: argparse.Namespace) -> RunSite:
    """The site the flags name (--data-root, --no-download, --device, --max-steps), handed
    whole to every run the command starts."""
    from harness.runs.runner import RunSite

    return RunSite(
        data_root=args.data_root,
        download=not args.no_download,
        device=args.device,
        max_steps=args.max_steps,
    )


def make_tracker(args: argparse.Namespace, experiment: str) -> Tracker | None:
    """The MLflow store named by the flags, opened (and checked writable) before any training."""
    if args.no_track:
        return None
    from harness.tracking.tracker import Tracker

    return Tracker(args.tracking_uri, experiment)


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


def set_threads(args: argparse.Namespace) -> None:
    """This process's CPU threads: --threads, else the idle cores (machine.default_threads)."""
    import torch

    from harness.experiments.machine import default_threads, threads_note

    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    note = None if args.threads else threads_note(threads)
    if note:
        print(f"m2h: {note}", flush=True)  # a note, not an error: stdout


def add_data_options(p: argparse.ArgumentParser) -> None:
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


def add_run_options(p: argparse.ArgumentParser) -> None:
    add_data_options(p)
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


def add_launcher_options(p: argparse.ArgumentParser) -> None:
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
