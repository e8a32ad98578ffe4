"""One job of an ablation (a cell's seed, or its seeds stacked), and how it runs: here, in a
worker process, or on a Slurm node."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.config.variants import Variant, load_configured_variants

if TYPE_CHECKING:
    from harness.config.ablations import Cell
    from harness.runs.runner import RunSite
    from harness.training.reports import EpochReport


@dataclass
class CellOutcome:
    cell: str
    seed: int
    status: str  # finished, skipped, failed
    detail: str = ""
    seconds: float = 0.0  # the worker's time on this run (trained runs only)
    run_seconds: float | None = None  # the whole run's, epochs before a resume included


@dataclass(frozen=True)
class Job:
    """One cell's run for one seed, or for several seeds stacked in one process."""

    cell: Cell
    variants: tuple[Variant, ...]
    tags: tuple[dict[str, str], ...]


@dataclass(frozen=True)
class Setting:
    """Where and how an ablation's jobs run (the same for every job)."""

    experiment: str
    parent: str | None  # the parent MLflow run; None (and no tracking URI): records alone
    tracking_uri: str | None
    store: str | None
    site: RunSite  # the data, the device and the step cap, for every job alike
    checkpoint_dir: str
    records_dir: str
    threads: int  # CPU threads for each job
    wait_for_claims: bool = False  # wait for a run another process has claimed, or move on


def run_job(job: Job, where: Setting) -> list[CellOutcome]:
    """Run one job (in a worker process when --jobs > 1), each of its runs claimed first
    (claims.py): a run another process is training is left to it ("claimed", or, with
    `where.wait_for_claims`, waited for), and one whose record appeared meanwhile is reused."""
    from harness.runs.claims import Claim, claim_path, holder
    from harness.runs.records import record_path

    load_configured_variants()  # a worker process (or Slurm job) starts bare
    outcomes, mine, held = [], [], []
    try:
        for variant in job.variants:
            claim = Claim(claim_path(where.records_dir, variant, where.site.max_steps))
            if not claim.acquire(wait=where.wait_for_claims):
                who = holder(claim.path)
                detail = f"being trained by {who.describe()}" if who else "being trained"
                outcomes.append(CellOutcome(job.cell.name, variant.seed, "claimed", detail))
                continue
            held.append(claim)
            record = record_path(where.records_dir, variant, where.site.max_steps)
            if record.exists():  # finished by another process since the plan was made
                outcomes.append(
                    CellOutcome(job.cell.name, variant.seed, "skipped", f"finished ({record})")
                )
            else:
                mine.append(variant)
        if mine:
            outcomes += _train(job, tuple(mine), where)
    finally:
        for claim in held:
            claim.release()
    return outcomes


def _train(job: Job, variants: tuple[Variant, ...], where: Setting) -> list[CellOutcome]:
    """Train the claimed runs of one job, their seeds stacked where there are several."""
    import torch

    from harness.runs.runner import RunOptions, format_report, run_seeds

    torch.set_num_threads(where.threads)
    tags = {v.seed: t for v, t in zip(job.variants, job.tags, strict=True)}
    seeds = [v.seed for v in variants]
    who = f"{job.cell.name} seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}"
    options = RunOptions(
        site=where.site,
        progress=lambda line: print(f"  {who}: {line}", flush=True),  # within long epochs
        tracker=(
            _tracker(where.tracking_uri, where.experiment, store=where.store)
            if where.tracking_uri
            else None
        ),
        parent_run_id=where.parent,
        checkpoint_dir=where.checkpoint_dir,
        resume=True,
        records_dir=where.records_dir,
        announce=lambda note: print(f"  {job.cell.name}: {note}", flush=True),
    )

    def progress(reports: list[EpochReport | None]) -> None:
        """One line per epoch of every seed this job trains, with its cell and seed."""
        for seed, report in zip(seeds, reports, strict=True):
            if report is not None:
                line = format_report(report, variants[0].epochs)
                print(f"  {job.cell.name} seed {seed}: {line}", flush=True)

    start = time.monotonic()
    try:
        results = run_seeds(
            variants[0],
            seeds,
            options,
            run_name=lambda v: job.cell.run_name(v.seed),
            tags=lambda v: tags[v.seed],
            on_epoch_end=[progress],
        )
    except Exception as err:  # a failed cell is logged FAILED; the ablation goes on
        reason = f"{type(err).__name__}: {err}"
        share = (time.monotonic() - start) / len(variants)
        return [CellOutcome(job.cell.name, v.seed, "failed", reason, share) for v in variants]
    share = (time.monotonic() - start) / len(variants)  # stacked seeds share one worker's time
    return [
        CellOutcome(
            job.cell.name, r.variant.seed, "finished", _describe(r), share,
            sum(e.epoch_seconds + e.eval_seconds for e in r.reports) / len(variants),
        )
        for r in results
    ]  # fmt: skip


def _tracker(uri: str, experiment: str, store: str | None) -> Any:
    from harness.tracking.tracker import Tracker

    return Tracker(uri, experiment, store=store)


def _describe(result: Any) -> str:
    from harness.training.reports import run_summary

    s = run_summary(result.variant, result.reports)
    return (
        f"test error {s['selected_test_error']:.2f}% (epoch {s['selected_epoch']} of "
        f"{s['epochs_run']}), {s['final_samples_per_sec']:,.0f} rows/s"
    )
