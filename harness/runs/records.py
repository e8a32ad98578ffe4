"""Run records: one small JSON text file per finished run, committed under `results/runs/`.

A record holds what a table or plot needs and what a reader needs to trust it: the run's resolved
settings (its variant, seed included), the step cap, the commit, machine and versions that made
it, its outcome under the stop rule, and one line per epoch. Tables and plots are rebuilt from
records alone (no MLflow store), records from different machines and sessions merge into one
table, and `m2h load` puts them into an MLflow store for the UI.

A record's name carries its cell key (every setting but the seed, with the step cap) and its
seed, so a finished cell is found, and reused by any ablation that lists it, without training it
again.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from harness.config.identity import cell_key, record_key, record_name, twin_key
from harness.config.variants import Variant, recorded_params
from harness.files import FileFormatError, inside, read_json, write_atomically
from harness.training.reports import EpochReport, run_summary

if TYPE_CHECKING:
    from harness.config.ablations import Ablation

FORMAT = 1
RUNS_FOLDER = "runs"  # under a results folder


class RecordError(ValueError):
    """A run record that cannot be read."""


def record_path(runs_dir: str | Path, variant: Variant, max_steps: int | None) -> Path:
    """Where the record of `variant`'s run (its seed included) lives in `runs_dir`."""
    return inside(runs_dir, f"{record_name(variant, max_steps)}.json")


@dataclass(frozen=True)
class RunRecord:
    variant: Variant
    max_steps: int | None
    made: dict[str, Any]  # commit, machine, versions, threads, when it finished
    history: list[EpochReport]
    path: Path | None = None

    @cached_property
    def outcome(self) -> dict[str, Any]:
        return run_summary(self.variant, self.history)

    @property
    def key(self) -> str:
        return record_key(self.variant, self.max_steps)


def _rounded(value: Any) -> Any:
    """A float to 6 significant digits, and each float of a list (the errors per class)."""
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return float(f"{value:.6g}") if isinstance(value, float) else value


def _epoch_line(report: EpochReport) -> dict[str, Any]:
    flat = asdict(report)
    flat["losses"] = {k: _rounded(v) for k, v in flat["losses"].items()}
    return {k: _rounded(v) for k, v in flat.items()}


def make_record(
    variant: Variant,
    history: Sequence[EpochReport],
    environment: dict[str, Any],
    max_steps: int | None = None,
    segments: Sequence[dict[str, Any]] | None = None,
) -> RunRecord:
    """The record of a finished run, its epoch figures rounded to 6 significant digits as the
    file stores them. `made` names where it finished and, in `segments`, every commit and
    machine it trained under with the epochs each trained (a resumed run has several)."""
    made = {
        **environment,
        "host": platform.node(),
        "threads": torch.get_num_threads(),
        # the machine's 1-, 5- and 15-minute load when the run finished: whether its rows/s
        # were measured alone or beside other work
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),  # as /proc/loadavg
        "finished": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    made["segments"] = (
        list(segments)
        if segments is not None
        else [
            {
                **{k: environment.get(k) for k in ("git_commit", "git_dirty", "device_name")},
                "host": made["host"],
                "epochs": [1, len(history)],
            }
        ]
    )
    rounded = [EpochReport(**_epoch_line(r)) for r in history]
    return RunRecord(variant.replace(description=""), max_steps, made, rounded)


def write_record(runs_dir: str | Path, record: RunRecord) -> Path:
    """Write `record` as JSON text (one line per epoch, so a diff reads by epoch), atomically."""
    path = record_path(runs_dir, record.variant, record.max_steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = {
        "format": FORMAT,
        "variant": recorded_params(record.variant),
        "max_steps": record.max_steps,
        "made": record.made,
        "outcome": {k: _rounded(v) for k, v in record.outcome.items()},
    }
    text = json.dumps(head, indent=1)[:-2] + ',\n "epochs": [\n'
    text += ",\n".join("  " + json.dumps(_epoch_line(r)) for r in record.history)
    text += "\n ]\n}\n"
    return write_atomically(path, lambda tmp: tmp.write_text(text))


REMEDY = "move it out of the runs folder (or delete it) to go on"


def read_record(path: str | Path) -> RunRecord:
    """The run record in `path`, checked against its schema (types, ranges, finite figures);
    RecordError in one line naming the file for anything else. A file read before and not
    changed since (the same inode, size and modification time) is not read again: a table or the
    answers page reads each record once, not once for every ablation that looks for it."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return _read_record(path, None)
    return _read_record(path, (stat.st_ino, stat.st_size, stat.st_mtime_ns))


@lru_cache(maxsize=4096)
def _read_record(path: Path, version: tuple[int, int, int] | None) -> RunRecord:
    try:
        data = read_json(path, "run record", REMEDY)
    except FileFormatError as err:
        raise RecordError(str(err)) from None
    try:
        return _parsed(data, path)
    except (ValueError, KeyError, TypeError) as err:
        reason = f"missing {err}" if isinstance(err, KeyError) else str(err)
        raise RecordError(f"{path} is not a valid run record: {reason}; {REMEDY}") from None


def _parsed(data: Any, path: Path) -> RunRecord:
    if not isinstance(data, dict):
        raise ValueError(f"it holds a JSON {type(data).__name__}, not a record's object")
    if data.get("format") != FORMAT:
        raise ValueError(f"record format {data.get('format')!r}, expected {FORMAT}")
    for key, kind in (("variant", dict), ("made", dict), ("epochs", list)):
        if not isinstance(data[key], kind):
            raise ValueError(f"{key} is a {type(data[key]).__name__}, not a {kind.__name__}")
    max_steps = data["max_steps"]
    if max_steps is not None and not (type(max_steps) is int and max_steps >= 1):
        raise ValueError(f"max_steps must be a positive whole number or null, got {max_steps!r}")
    if not data["epochs"]:
        raise ValueError("it records no epoch")
    history = [EpochReport(**e) if isinstance(e, dict) else e for e in data["epochs"]]
    for number, report in enumerate(history, start=1):
        _check_epoch(report, number)
    return RunRecord(Variant(**data["variant"]), max_steps, data["made"], history, path)


def _check_epoch(report: Any, number: int) -> None:
    """An epoch's figures: its number in order, every figure a finite number in its range."""
    if not isinstance(report, EpochReport):
        raise ValueError(f"epoch line {number} is a {type(report).__name__}, not an object")
    if report.epoch != number:
        raise ValueError(f"epoch line {number} says epoch {report.epoch!r}")
    figures = {
        "test_accuracy": report.test_accuracy,
        "test_error": report.test_error,
        "samples_per_sec": report.samples_per_sec,
        "epoch_seconds": report.epoch_seconds,
        **({"val_accuracy": report.val_accuracy} if report.val_accuracy is not None else {}),
        **{f"losses.{k}": v for k, v in report.losses.items()},
    }
    for key, value in figures.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"epoch {number}: {key} is {value!r}, not a finite number")
    ranges = {"test_accuracy": 1.0, "val_accuracy": 1.0, "test_error": 100.0}
    for key, top in ranges.items():
        if key in figures and not 0 <= figures[key] <= top:
            raise ValueError(f"epoch {number}: {key} {figures[key]!r} is outside [0, {top:g}]")


def find_records(runs_dir: str | Path, variant: Variant, max_steps: int | None) -> list[RunRecord]:
    """Every record of `variant`'s cell in `runs_dir`, whatever its seed, by seed."""
    pattern = f"{variant.name}-{cell_key(variant, max_steps)}-s*.json"
    records = [read_record(p) for p in Path(runs_dir).glob(pattern)]
    return sorted(records, key=lambda r: r.variant.seed)


def twin_index(runs_dir: str | Path) -> dict[str, RunRecord]:
    """Every record in `runs_dir` by its twin key (identity.twin_key)."""
    return {twin_key(r.variant, r.max_steps): r for r in all_records(runs_dir)}


def adopt_twin(runs_dir: str | Path, variant: Variant, twin: RunRecord) -> RunRecord:
    """`twin`'s run recorded again as `variant`'s (the same settings and seed under another
    name), saying whose record it copies, so the cell that lists `variant` reads it and nothing
    trains it a second time."""
    made = {**twin.made, "twin_of": twin.path.name if twin.path else twin.key}
    copy = RunRecord(variant, twin.max_steps, made, twin.history)
    return read_record(write_record(runs_dir, copy))


def all_records(runs_dir: str | Path) -> list[RunRecord]:
    return [read_record(p) for p in sorted(Path(runs_dir).glob("*.json"))]


def missing_records(ablation: Ablation, runs_dir: Path, epochs: int, max_steps: int | None) -> str:
    """Why an ablation has no records to show: none at all, or only at other budgets (named)."""
    names = {c.variant for c in ablation.cells()}
    budgets = {
        (r.variant.epochs, r.max_steps) for r in all_records(runs_dir) if r.variant.name in names
    } - {(epochs, max_steps)}
    budget = f"--epochs {epochs}" + (f" --max-steps {max_steps}" if max_steps else "")
    elsewhere = folders_holding(names, epochs, max_steps, runs_dir)
    if elsewhere:
        hint = f"; records of its variants at {budget} are in " + " and ".join(
            f"{folder / RUNS_FOLDER} (add `--out {folder}`)" for folder in elsewhere
        )
    elif budgets:
        hint = "; its variants have records at " + ", ".join(
            f"--epochs {e}" + (f" --max-steps {m}" if m else "")
            for e, m in sorted(budgets, key=str)
        )
    else:
        hint = f"; run `m2h ablate {ablation.name}` first"
    return f"ablation {ablation.name!r} has no run records at {budget} in {runs_dir}{hint}"


def folders_holding(
    names: set[str], epochs: int, max_steps: int | None, searched: Path, depth: int = 3
) -> list[Path]:
    """The results folders below the working folder (`depth` levels at most, hidden ones left
    out), other than `searched`'s, whose runs/ hold a record of one of `names` at this budget:
    where the records are when a table was asked of the wrong `--out`."""
    here, found = Path.cwd(), []
    for level in range(depth):
        for runs in sorted(here.glob("*/" * level + RUNS_FOLDER)):
            folder = runs.parent.relative_to(here)
            if any(part.startswith(".") for part in folder.parts) or not runs.is_dir():
                continue
            if runs.resolve() == Path(searched).resolve():
                continue
            for name in names:
                try:
                    if any(
                        (r.variant.name, r.variant.epochs, r.max_steps) == (name, epochs, max_steps)
                        for r in map(read_record, runs.glob(f"{name}-*.json"))
                    ):
                        found.append(folder)
                        break
                except RecordError:  # a folder of bad files: not these
                    break
    return found
