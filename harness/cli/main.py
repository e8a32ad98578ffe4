"""The `m2h` command line: list, show and run variants (and ablate, table, plot, search, ui).
Each subcommand is in a module of its own (variants, run, ablate, results, search, bench, ui),
which adds its parser (`add_parsers`) and carries it out (`cmd_NAME`); this one puts them
together and runs one, every error a line."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from harness.cli import ablate, bench, results, run, search, ui, variants
from harness.cli.common import UsageError
from harness.config.variants import USER_VARIANTS_ENV, load_configured_variants
from harness.files import DATA_ROOT_ENV

SUBCOMMANDS = (variants, run, ablate, results, search, bench, ui)  # in --help's order


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors (`--epochs abc`) in one line; the usage stays one `--help`
    away."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="m2h", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument(
        "--variants",
        metavar="FILE",
        help="your own variants and networks: a Python module (@register_variant, "
        "@register_network) or a TOML file (default: $M2H_VARIANTS, else ./m2h-variants.toml)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add_parsers(sub)
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
