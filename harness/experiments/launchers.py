"""Slurm as an ablation's launcher, through submitit (the library research teams use to send
PyTorch jobs to Slurm): one job per ablation job (a cell's seed, or its seeds stacked), in a job
array.

A job runs `ablation.run_job` on a compute node; it logs to a tracking server over HTTP (or to
nothing, records alone) and keeps its checkpoint and record in folders the submitting and the
running nodes share. Preempted, or near its time limit (Slurm's USR2), a job is requeued by
submitit and resumes from its last checkpoint. The ledger (a JSON file in the submitit folder)
remembers which Slurm job runs which run, so re-running the command skips runs queued or running
already, and `m2h status NAME` says which runs are done, running, queued, failed or still to run.
"""

from __future__ import annotations

import json
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import submitit

from harness.files import FileFormatError, read_json, write_atomically

if TYPE_CHECKING:
    from harness.experiments.jobs import CellOutcome, Job, Setting


@dataclass(frozen=True)
class SlurmOptions:
    folder: Path  # submitit's folder: logs, pickled jobs, the ledger; shared by all nodes
    partition: str | None = None
    time_limit_min: int = 240
    gpus_per_job: int = 0
    cpus_per_job: int = 2
    array_parallelism: int = 64


class AblationJob(submitit.helpers.Checkpointable):
    """One ablation job on a compute node. On preemption or near the time limit, submitit
    calls `checkpoint`, which resubmits this same job: it resumes from its checkpoint."""

    def __init__(self, job: Job, where: Setting) -> None:
        self.job, self.where = job, where

    def __call__(self) -> list[CellOutcome]:
        from harness.experiments.jobs import run_job

        return run_job(self.job, self.where)


def _ledger_path(options: SlurmOptions, ablation: str) -> Path:
    return options.folder / f"{ablation}-ledger.json"


def read_ledger(options: SlurmOptions, ablation: str) -> dict[str, dict[str, str]]:
    """run key -> {"job": Slurm job id, "cell": cell name, "seed": seed}."""
    path = _ledger_path(options, ablation)
    if not path.exists():
        return {}
    remedy = "delete it if no job of this ablation is queued or running (m2h then resubmits)"
    ledger = read_json(path, "Slurm ledger", remedy)
    if not isinstance(ledger, dict) or not all(isinstance(v, dict) for v in ledger.values()):
        raise FileFormatError(f"{path} is not a Slurm ledger (run key -> job); {remedy}")
    return ledger


def queue_states(job_ids: list[str]) -> dict[str, str]:
    """Slurm's state (PENDING, RUNNING, REQUEUED, ...) of each job id still in its queue."""
    if not job_ids:
        return {}
    done = subprocess.run(
        ["squeue", "-h", "-o", "%i %T", "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
    )
    states = {}
    for line in done.stdout.splitlines():
        job, _, state = line.partition(" ")
        states[job.split("_")[0]] = state
    return states


def in_queue(options: SlurmOptions, ablation: str) -> dict[str, str]:
    """run key -> Slurm state, for the runs whose job is queued or running now."""
    ledger = read_ledger(options, ablation)
    states = queue_states(sorted({entry["job"] for entry in ledger.values()}))
    return {key: states[entry["job"]] for key, entry in ledger.items() if entry["job"] in states}


def check_owner_only(folder: Path) -> None:
    """Refuse a submitit folder that others can write: submitit unpickles the jobs it holds on
    every node, so whoever can write there could run code as this user."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = folder.stat().st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(
            f"{folder} is writable by its group or by others ({stat.filemode(mode)}): submitit "
            f"unpickles the jobs kept there on every node, so anyone who can write there can "
            f"run code as you; `chmod go-w {folder}` (or choose a folder only you can write)"
        )


def submit(
    ablation: str, todo: list[Job], where: Setting, options: SlurmOptions
) -> list[tuple[Job, Any]]:
    """Send each job of `todo` whose runs are not queued or running already as one Slurm job
    (a job array); returns the jobs sent with their submitit jobs, and records them in the
    ledger."""
    check_owner_only(options.folder)
    waiting = in_queue(options, ablation)
    fresh = [job for job in todo if not any(t["m2h.record_key"] in waiting for t in job.tags)]
    if not fresh:
        return []
    executor = submitit.AutoExecutor(folder=options.folder / "%j", cluster="slurm")
    executor.update_parameters(
        name=f"m2h-{ablation}",
        timeout_min=options.time_limit_min,
        slurm_partition=options.partition,
        cpus_per_task=options.cpus_per_job,
        gpus_per_node=options.gpus_per_job,
        slurm_array_parallelism=options.array_parallelism,
    )
    with executor.batch():
        submitted = [executor.submit(AblationJob(job, where)) for job in fresh]
    ledger = read_ledger(options, ablation)
    for job, slurm_job in zip(fresh, submitted, strict=True):
        for variant, tags in zip(job.variants, job.tags, strict=True):
            ledger[tags["m2h.record_key"]] = {
                "job": str(slurm_job.job_id).split("_")[0],
                "array_job": str(slurm_job.job_id),
                "cell": job.cell.name,
                "seed": str(variant.seed),
            }
    text = json.dumps(ledger, indent=1) + "\n"
    write_atomically(_ledger_path(options, ablation), lambda tmp: tmp.write_text(text))
    return list(zip(fresh, submitted, strict=True))
