"""Does a run record reproduce? Its first epochs trained again with every setting it holds,
compared epoch by epoch at the precision the record keeps, and, where they differ, what differs
between where the record was made and here: the commit (and whether a numerics change lies
between), torch, the device, the processor and its instruction set, the threads.
"""

from __future__ import annotations

import functools
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from harness.runs.provenance import REPO, environment_params, git_commit
from harness.runs.records import RunRecord, make_record
from harness.training.data import load_splits
from harness.training.numerics import NUMERICS_STARTS, NUMERICS_VERSION
from harness.training.reports import EpochReport
from harness.training.trainer import Trainer

# what an epoch's rerun must give as the record holds it (times and rows/s aside)
COMPARED = ("losses", "test_accuracy", "val_accuracy", "test_class_errors", "temperature", "alpha")


@dataclass(frozen=True)
class Reproduction:
    """The outcome: the epochs compared, the first difference (None: it reproduces) and what
    differs between the record's making and this process."""

    epochs: int
    difference: str | None
    causes: list[str]

    def summary(self) -> str:
        if self.difference is None:
            return f"reproduces: epochs 1-{self.epochs} identical to the record's precision"
        causes = "; ".join(self.causes) or (
            "nothing the record names differs from here (commit, numerics version, torch, "
            "device, processor, threads): a nondeterministic kernel, or a setting the record "
            "does not hold"
        )
        return f"does not reproduce: {self.difference}\nlikely cause: {causes}"


def rerun(record: RunRecord, epochs: int, data_root: str | Path | None = None) -> list[EpochReport]:
    """The record's first `epochs` epochs trained again here on the CPU, with its threads,
    rounded as a record stores them."""
    variant = record.variant
    if variant.features == "m1":
        raise ValueError(
            "an M1+M2 record trains its M1 first; m2h reproduce reruns M2 on pixels only so far"
        )
    if not 1 <= epochs <= len(record.history):
        raise ValueError(f"--epochs must be in [1, {len(record.history)}] (the record's epochs)")
    torch.set_num_threads(int(record.made.get("threads") or 1))
    splits = load_splits(variant.dataset, data_root, "cpu", variant.validation, download=False)
    trainer = Trainer(variant, splits, "cpu", max_steps=record.max_steps, progress=False)
    reports = [trainer.run_epoch()[0] for _ in range(epochs)]
    return make_record(variant, reports, {}, record.max_steps).history


def first_difference(recorded: list[EpochReport], rerun: list[EpochReport]) -> str | None:
    """The first epoch and quantity where `rerun` differs from `recorded`, with both values."""
    for mine, theirs in zip(rerun, recorded, strict=False):
        a, b = asdict(mine), asdict(theirs)
        for key in COMPARED:
            if a[key] == b[key]:
                continue
            if isinstance(a[key], dict):
                term = next(k for k in a[key] if a[key][k] != b[key].get(k))
                here, there = a[key][term], b[key].get(term)
                return f"epoch {mine.epoch}, loss term {term}: {here} here, record {there}"
            return f"epoch {mine.epoch}, {key}: {a[key]} here, record {b[key]}"
    return None


@functools.cache
def numerics_version_at(commit: str) -> int | None:
    """The numerics version a commit trained under: the last version whose first commit is it
    or one of its ancestors (None where git cannot say)."""
    version = 0
    for number, start in sorted(NUMERICS_STARTS.items()):
        done = subprocess.run(
            ["git", "merge-base", "--is-ancestor", start, commit],
            cwd=REPO,
            capture_output=True,
            timeout=10,
        )
        if done.returncode not in (0, 1):
            return None
        if done.returncode == 0:
            version = number
    return version


def segment_numerics(segment: dict[str, Any], made: dict[str, Any]) -> int | None:
    """The numerics version one of a record's segments trained under: the record's own for its
    last segment, where it names one, else the one the segment's commit had (None where git
    cannot say: a commit not in this history)."""
    if segment is (made.get("segments") or [made])[-1] and "numerics_version" in made:
        return int(made["numerics_version"])
    return numerics_version_at(str(segment.get("git_commit", "")))


def record_numerics(made: dict[str, Any]) -> set[int | None]:
    """Every numerics version a record's segments trained under."""
    return {segment_numerics(segment, made) for segment in made.get("segments") or [made]}


def causes(made: dict[str, Any], epochs: int) -> list[str]:
    """What differs between where the record's first `epochs` epochs were trained and here."""
    first = (made.get("segments") or [made])[0]
    if first.get("epochs", [1, epochs])[1] < epochs:
        first = made  # the epochs span segments: compare with the record's last
    here = environment_params(torch.device("cpu"))
    found = []
    commit, (head, dirty) = first.get("git_commit", made.get("git_commit")), git_commit()
    if commit != head or dirty:
        theirs = made.get("numerics_version", numerics_version_at(commit or ""))
        if theirs is not None and theirs != NUMERICS_VERSION:
            start = NUMERICS_STARTS.get(NUMERICS_VERSION, "?")
            found.append(
                f"made at {str(commit)[:7]} under numerics version {theirs}, here {head[:7]} "
                f"under {NUMERICS_VERSION} (which began at {start}: see training/numerics.py)"
            )
        else:
            found.append(f"made at {str(commit)[:7]}, here {head[:7]}{' (dirty)' if dirty else ''}")
    for key, what in (("torch_version", "torch"), ("device", "device")):
        if made.get(key) and made[key] != here[key]:
            found.append(f"{what} {made[key]} there, {here[key]} here")
    if first.get("device_name", made.get("device_name")) != here["device_name"]:
        found.append(f"{first.get('device_name')} there, {here['device_name']} here")
    elif "cpu_capability" not in made:
        found.append(
            "the record predates the instruction set's being recorded: the same processor "
            "model may run other kernels (AVX2 or AVX-512)"
        )
    elif made["cpu_capability"] != here["cpu_capability"]:
        found.append(
            f"instruction set {made['cpu_capability']} there, {here['cpu_capability']} here"
        )
    return found


def reproduce(
    record: RunRecord, epochs: int = 1, data_root: str | Path | None = None
) -> Reproduction:
    """Rerun `record`'s first `epochs` epochs and say whether they match, and if not, why."""
    difference = first_difference(record.history[:epochs], rerun(record, epochs, data_root))
    return Reproduction(epochs, difference, causes(record.made, epochs) if difference else [])
