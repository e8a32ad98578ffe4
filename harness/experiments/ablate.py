"""Running an ablation (its file's schema is `config/ablations.py`): the grid of cells, each run
per seed, as child MLflow runs under one parent run, or as records alone; locally in worker
processes or on Slurm; each run claimed before it trains (`runs/claims.py`).

Every finished run leaves a record in `<results>/runs/` (records.py); a run whose record is
there already, made by this ablation or by any other that lists the same cell, is not trained
again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import shutil
import statistics
import tempfile
import time
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED
from concurrent.futures import wait as wait_for_any
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.config import identity
from harness.config.ablations import Ablation, AblationError, Cell
from harness.experiments.jobs import CellOutcome, Job, Setting, run_job
from harness.runs.records import (
    RUNS_FOLDER,
    RunRecord,
    adopt_twin,
    find_records,
    missing_records,
    read_record,
    record_path,
    twin_index,
)
from harness.runs.reproduce import record_numerics
from harness.runs.runner import RunSite, checkpoint_path
from harness.training.numerics import NUMERICS_VERSION

if TYPE_CHECKING:
    from harness.experiments.launchers import SlurmOptions
from harness.config.variants import Variant

# the checkpoint folder (under --checkpoint-dir) of every ablation's runs: a run two ablations
# share keeps one checkpoint, so whichever takes it up resumes it
SHARED_CHECKPOINTS = "ablations"


def _stacks(variants: list[Variant], checkpoint_dir: Path, max_steps: int | None) -> list[list]:
    """The seeds of one cell grouped into stacks that can train together: those at the same
    checkpointed epoch (0: no checkpoint yet)."""
    from harness.training.checkpoint import load_checkpoint

    groups: dict[int, list[Variant]] = {}
    for variant in variants:
        path = checkpoint_path(checkpoint_dir, variant, max_steps)
        epoch = load_checkpoint(path)["epoch"] if path.exists() else 0
        groups.setdefault(epoch, []).append(variant)
    return list(groups.values())


def run_tags(ablation: Ablation, cell: Cell, variant: Variant, max_steps: int | None) -> dict:
    """The tags of a cell's run, by which any MLflow view can group an ablation's runs."""
    return {
        "m2h.record_key": identity.record_key(variant, max_steps),
        "cell": cell.name,
        "cell_title": cell.title,  # what the UI groups runs by (tracking/views.py)
        "ablation": ablation.name,
        "control": str(cell.control).lower(),
    }


def varied_settings(ablation: Ablation, epochs: int) -> list[str]:
    """The settings (variant parameters) whose values differ between the ablation's cells."""
    params = [ablation.variant(cell, 0, epochs).params() for cell in ablation.cells()]
    keys = dict.fromkeys(k for p in params for k in p)
    return [k for k in keys if k != "seed" and len({str(p.get(k)) for p in params}) > 1]


def plan(
    ablation: Ablation,
    seeds: Sequence[int] | None,
    epochs: int,
    max_steps: int | None,
    records_dir: Path,
    stack: bool,
    checkpoint_dir: Path,
    cells: Sequence[Cell] | None = None,
) -> tuple[list[Job], list[tuple[Cell, RunRecord]]]:
    """The jobs still to run of `cells` (default: all the ablation's) and the runs whose record
    exists already (reused). Jobs go seed by seed (every cell's first seed, then every cell's
    second), so a table takes shape early; with `stack`, a cell's pending seeds are one job
    (one per checkpointed epoch)."""
    cells = list(cells) if cells is not None else ablation.cells()
    pending: list[list[Variant]] = [[] for _ in cells]
    reused = []
    twinned: list[tuple[Cell, Variant, RunRecord]] = []  # adopted once their numerics pass
    twins = functools.cache(lambda: twin_index(records_dir))  # read once, if ever needed
    seeds_of = [ablation.seeds_of(cell, seeds) for cell in cells]
    for rank in range(max(len(s) for s in seeds_of)):
        for cell, cell_seeds, waiting in zip(cells, seeds_of, pending, strict=True):
            if rank >= len(cell_seeds):
                continue
            variant = ablation.variant(cell, cell_seeds[rank], epochs)
            path = record_path(records_dir, variant, max_steps)
            if path.exists():
                reused.append((cell, read_record(path)))
                continue
            twin = twins().get(identity.twin_key(variant, max_steps))
            if twin is not None:  # the same run under another variant's name: recorded again
                twinned.append((cell, variant, twin))
            else:
                waiting.append(variant)
    check_numerics(ablation, [r for _, r in reused] + [twin for _, _, twin in twinned])
    reused += [(cell, adopt_twin(records_dir, v, twin)) for cell, v, twin in twinned]
    if stack:
        groups = [
            (cell, group)
            for cell, waiting in zip(cells, pending, strict=True)
            for group in _stacks(waiting, checkpoint_dir, max_steps)
        ]
    else:  # seed-major: every cell's first pending seed, then every cell's second
        flat = [
            (rank, i, cell, [v])
            for i, (cell, waiting) in enumerate(zip(cells, pending, strict=True))
            for rank, v in enumerate(waiting)
        ]
        groups = [(cell, g) for _, _, cell, g in sorted(flat, key=lambda f: f[:2])]
    jobs = [
        Job(cell, tuple(g), tuple(run_tags(ablation, cell, v, max_steps) for v in g))
        for cell, g in groups
    ]
    return jobs, reused


@dataclass(frozen=True)
class AblationOptions:
    """How an ablation runs: `m2h ablate`'s options, one typed object."""

    tracking_uri: str | None = None
    track: bool = True  # False: records alone, where mlflow is not installed
    seeds: Sequence[int] | None = None  # None: the file's
    cells: Sequence[str] | None = None  # None: every cell; else only these train (by name)
    epochs: int | None = None  # None: the file's budget
    site: RunSite = RunSite()  # the data, the device and the step cap, for every run
    jobs: int = 1
    stack: bool = False  # a cell's seeds train at once in one process (`StackedSeeds`)
    checkpoint_dir: str | Path = "checkpoints"
    results_dir: str | Path = "results"
    threads: int | None = None
    slurm: SlurmOptions | None = None  # send the jobs to Slurm instead of local processes
    wait: bool = True  # with Slurm: wait for the jobs, or return once they are queued


def checked(ablation: Ablation, options: AblationOptions) -> AblationOptions:
    """The options with the budget filled in and, for Slurm, every path absolute; bad data, a
    Slurm setup that cannot work and unwritable folders fail here, before anything is written."""
    from harness.files import ensure_writable
    from harness.training.data import ensure_dataset

    for seed in options.seeds or ():  # a seed no run can take fails here, named
        ablation.variant(ablation.cells()[0], seed)
    for dataset in {ablation.variant(cell, 0).dataset for cell in ablation.cells()}:
        ensure_dataset(dataset, options.site.data_root, options.site.download)
    options = dataclasses.replace(options, epochs=options.epochs or ablation.epochs)
    if options.slurm is not None:
        check_slurm(options.track, options.tracking_uri)
        options = dataclasses.replace(
            options,
            results_dir=Path(options.results_dir).resolve(),
            checkpoint_dir=Path(options.checkpoint_dir).resolve(),
            site=dataclasses.replace(options.site, data_root=_absolute(options.site.data_root)),
        )
    ensure_writable(Path(options.checkpoint_dir), "checkpoint folder")
    ensure_writable(Path(options.results_dir) / RUNS_FOLDER, "results folder")
    return options


def _absolute(folder: str | Path | None) -> str | None:
    return str(Path(folder).resolve()) if folder else None


def run_ablation(
    ablation: Ablation, options: AblationOptions | None = None, echo: Any = print
) -> list[CellOutcome]:
    """Run every cell and seed whose record is not yet in the results folder's runs/, each
    claimed first (a run another process holds is waited for after the others), under one parent
    MLflow run (a reused record is logged under it too), or with records alone."""
    from harness.experiments.machine import default_threads, threads_note

    options = options or AblationOptions()
    cells = ablation.pick(options.cells) if options.cells else ablation.cells()  # fails first
    o = checked(ablation, options)
    epochs = o.epochs or ablation.epochs
    records_dir = Path(o.results_dir) / RUNS_FOLDER
    cell_folder = Path(o.checkpoint_dir) / SHARED_CHECKPOINTS
    adopt_checkpoints(
        ablation, cells, o.seeds, epochs, o.site.max_steps, Path(o.checkpoint_dir), cell_folder
    )
    todo, reused = plan(
        ablation, o.seeds, epochs, o.site.max_steps, records_dir, o.stack, cell_folder, cells
    )
    outcomes = _announce(ablation, todo, reused, records_dir, o.stack, echo)
    where = Setting(
        experiment=ablation.name,
        parent=None,
        tracking_uri=None,
        store=None,
        site=o.site,
        checkpoint_dir=str(cell_folder),
        records_dir=str(records_dir),
        threads=o.threads or default_threads(min(o.jobs, max(1, len(todo)))),
    )
    note = None if o.threads else threads_note(where.threads, min(o.jobs, max(1, len(todo))))
    if note and todo:
        echo(f"  {note}")
    with contextlib.ExitStack() as tracked:
        if o.track:
            from harness.tracking.tracker import Tracker

            tracker = Tracker(o.tracking_uri, ablation.name, description=ablation.description)
            parent_id = tracked.enter_context(
                parent_run(tracker, ablation, o.results_dir, epochs, o.site.max_steps, o.jobs)
            )
            for cell, record in reused:
                _log_once(tracker, ablation, parent_id, cell, record, o.site.max_steps)
            where = dataclasses.replace(
                where, parent=parent_id, tracking_uri=tracker.uri, store=tracker.uri
            )
        launched = (
            run_jobs(todo, where, o.jobs)
            if o.slurm is None
            else slurm_jobs(todo, where, o.slurm, ablation.name, o.wait)
        )
        progress = Progress(
            len(outcomes) + sum(len(j.variants) for j in todo),
            [j.cell.name for j in todo for _ in j.variants],
            min(o.jobs, max(1, len(todo))),
        )
        progress.done += len(outcomes)
        outcomes += _report(launched, echo, progress)
        claimed = [c for c in outcomes if c.status == "claimed"]
        if claimed and o.slurm is None:  # come back to them: wait for each, reuse its record
            waiting = dataclasses.replace(where, wait_for_claims=True)
            outcomes = [c for c in outcomes if c.status != "claimed"]
            again = run_jobs(claimed_jobs(todo, claimed), waiting, o.jobs)
            outcomes += _report(again, echo, progress)
    return outcomes


@dataclass
class Progress:
    """The overall line of an ablation: runs done of planned, and the time left. Each trained
    run says how long it took in all (a resumed run's epochs before its checkpoint included) and
    how long its worker spent on it here; a run still to train is guessed at its cell's mean
    whole-run time (runs of one cell take alike), else at the mean of every run trained. The
    time left is those guesses summed, less the work the busy workers have done on the runs they
    hold (the workers' time so far, less that spent here on the runs finished), shared between
    the workers that still have runs: it holds steady while runs finish side by side, instead of
    counting the first of a batch of `workers` runs as the whole batch's time, and a run resumed
    near its end does not make the runs after it look as short."""

    planned: int
    to_train: list[str]  # the cell of every run still to train
    workers: int = 1
    done: int = 0
    spent: dict[str, list[float]] = field(default_factory=dict)  # each cell's runs' whole time
    worked: float = 0.0  # the workers' time here on the runs finished
    start: float = field(default_factory=time.monotonic)

    def line(self, outcome: CellOutcome) -> str:
        if outcome.status != "claimed":
            self.done += 1
            if outcome.cell in self.to_train:
                self.to_train.remove(outcome.cell)
        if outcome.status in ("finished", "failed"):
            whole = outcome.run_seconds
            self.spent.setdefault(outcome.cell, []).append(
                outcome.seconds if whole is None else max(whole, outcome.seconds)
            )
            self.worked += outcome.seconds
        runs = [t for times in self.spent.values() for t in times]
        left = ""
        if runs and self.to_train:
            mean = statistics.fmean(runs)
            work = sum(statistics.fmean(self.spent.get(c, [mean])) for c in self.to_train)
            busy = min(self.workers, len(self.to_train))
            elapsed = time.monotonic() - self.start
            under_way = min(max(elapsed * self.workers - self.worked, 0.0), mean * busy)
            minutes = max(work - under_way, 0.0) / busy / 60
            left = f", about {minutes:.0f} min left" if minutes >= 1 else ", under 1 min left"
        return f"  [{self.done} of {self.planned} runs done{left}]"


def _report(
    launched: Generator[CellOutcome, None, None], echo: Any, progress: Progress
) -> list[CellOutcome]:
    """Say each outcome as it comes, with the overall line; the outcomes. `launched` is closed
    on the way out, so that an interrupt between two outcomes stops its workers at once."""
    outcomes = []
    with contextlib.closing(launched):
        for outcome in launched:
            then = ", waiting for it after the others" if outcome.status == "claimed" else ""
            echo(f"  {outcome.cell} seed {outcome.seed}: {outcome.status} {outcome.detail}{then}")
            echo(progress.line(outcome))
            outcomes.append(outcome)
    return outcomes


def claimed_jobs(todo: list[Job], claimed: list[CellOutcome]) -> list[Job]:
    """The jobs of `todo` cut to the runs another process had claimed."""
    wanted = {(o.cell, o.seed) for o in claimed}
    jobs = []
    for job in todo:
        keep = [i for i, v in enumerate(job.variants) if (job.cell.name, v.seed) in wanted]
        if keep:
            jobs.append(
                Job(
                    job.cell, tuple(job.variants[i] for i in keep), tuple(job.tags[i] for i in keep)
                )
            )
    return jobs


def other_numerics(record: RunRecord) -> set[int | str]:
    """The numerics versions other than this code's that `record` trained under."""
    versions = record_numerics(record.made)
    return {"unknown" if v is None else v for v in versions if v != NUMERICS_VERSION}


def _other_versions(records: Sequence[RunRecord]) -> list[str]:
    """The other numerics versions `records` trained under, in order, as the messages name
    them."""
    return sorted({str(v) for r in records for v in other_numerics(r)})


def check_numerics(ablation: Ablation, records: Sequence[RunRecord]) -> None:
    """Refuse, in one line and before anything is written, to reuse a record made under a
    numerics version the ablation's file does not list (`numerics`): its numbers would not be
    what this code gives (issue 57), so reusing it is the file's decision, never silent."""
    refused = [r for r in records if other_numerics(r) - set(ablation.numerics)]
    if not refused:
        return
    versions = _other_versions(refused)
    where = ablation.source or f"ablations/{ablation.name}.toml"
    names = ", ".join(r.path.name if r.path else r.key for r in refused[:3])
    more = f" and {len(refused) - 3} more" if len(refused) > 3 else ""
    listed = ", ".join(f'"{v}"' if v == "unknown" else v for v in versions)  # as TOML
    noun = "run record" if len(refused) == 1 else "run records"
    raise AblationError(
        f"ablation {ablation.name!r} would reuse {len(refused)} {noun} made under numerics "
        f"version {', '.join(versions)} (this code: version {NUMERICS_VERSION}), {names}{more}: "
        f"add `numerics = [{listed}]` "
        f"to {where} to reuse them (its table says which cells mix versions), or move them out "
        "of the runs folder to train them again"
    )


def adopt_checkpoints(
    ablation: Ablation,
    cells: Sequence[Cell],
    seeds: Sequence[int] | None,
    epochs: int,
    max_steps: int | None,
    root: Path,
    shared: Path,
) -> None:
    """Move the checkpoints (and MLflow run pointers) of `cells` that an older harness kept in
    the ablation's own folder under `root` into the folder every ablation shares, `shared`, so
    a run cut off then resumes, whichever ablation takes it up."""
    for cell in cells:
        for seed in ablation.seeds_of(cell, seeds):
            variant = ablation.variant(cell, seed, epochs)
            old = checkpoint_path(root / ablation.name, variant, max_steps)
            new = checkpoint_path(shared, variant, max_steps)
            if old.exists() and not new.exists():
                new.parent.mkdir(parents=True, exist_ok=True)
                for suffix in (".run.json", ".pt"):  # the checkpoint last: it decides
                    if old.with_suffix(suffix).exists():
                        old.with_suffix(suffix).replace(new.with_suffix(suffix))


def _announce(
    ablation: Ablation,
    todo: list[Job],
    reused: list[tuple[Cell, RunRecord]],
    records_dir: Path,
    stack: bool,
    echo: Any,
) -> list[CellOutcome]:
    """Say what an ablation will train; the runs it reuses, as outcomes."""
    runs = sum(len(job.variants) for job in todo)
    echo(
        f"ablation {ablation.name}: {len(ablation.cells())} cells, {runs} runs to train"
        + (f" in {len(todo)} stacks" if stack else "")
        + f", {len(reused)} finished already (records in {records_dir})"
    )
    other = [r for _, r in reused if other_numerics(r)]
    if other:
        versions = _other_versions(other)
        echo(
            f"  {len(other)} of them made under numerics version {', '.join(versions)}, not this "
            f"code's {NUMERICS_VERSION}: reused, as the file's `numerics` allows"
        )
    return [
        CellOutcome(cell.name, record.variant.seed, "skipped", f"finished already ({record.path})")
        for cell, record in reused
    ]


def run_states(
    ablation: Ablation,
    seeds: Sequence[int] | None,
    epochs: int | None,
    max_steps: int | None,
    results_dir: str | Path,
    slurm: SlurmOptions | None = None,
) -> list[CellOutcome]:
    """Each run of the ablation: done (its record is there), claimed (a process is training it:
    which, since when), running or queued (its Slurm job is in the queue), failed (its Slurm
    job left the queue without a record), or to run."""
    from harness.experiments.launchers import in_queue, read_ledger
    from harness.runs.claims import claim_path, holder

    records_dir = Path(results_dir) / RUNS_FOLDER
    ledger = read_ledger(slurm, ablation.name) if slurm else {}
    queued = in_queue(slurm, ablation.name) if slurm else {}
    states = []
    twins = functools.cache(lambda: twin_index(records_dir))  # read once, if ever needed
    for cell in ablation.cells():
        for seed in ablation.seeds_of(cell, seeds):
            variant = ablation.variant(cell, seed, epochs)
            key = identity.record_key(variant, max_steps)
            entry = ledger.get(key, {})
            if record_path(records_dir, variant, max_steps).exists():
                state, detail = "done", ""
            elif twin := twins().get(identity.twin_key(variant, max_steps)):
                name = twin.path.name if twin.path else twin.key
                state, detail = "done", f"as {name} (the same run; ablate records it here too)"
            elif who := holder(claim_path(records_dir, variant, max_steps)):
                state, detail = "claimed", f"being trained by {who.describe()}"
            elif key in queued:
                state = "running" if queued[key] == "RUNNING" else "queued"
                detail = f"Slurm job {entry['array_job']} ({queued[key]})"
            elif entry and slurm is not None:
                state = "failed"
                detail = f"Slurm job {entry['array_job']} ended without a record; its log: "
                detail += str(slurm.folder / entry["array_job"])
            else:
                state, detail = "to run", ""
            states.append(CellOutcome(cell.name, seed, state, detail))
    return states


def check_slurm(track: bool, tracking_uri: str | None) -> None:
    """Slurm jobs are sent with sbatch, and log to a tracking server or to nothing: refuse a
    machine without sbatch, and a SQLite or local file store, which only the submitting machine
    can write."""
    from harness.tracking.tracker import resolve_tracking_uri

    if shutil.which("sbatch") is None:
        raise AblationError(
            "--launcher slurm needs Slurm's sbatch here: run it on a login node of the cluster"
        )
    uri = resolve_tracking_uri(tracking_uri)
    if track and not uri.startswith(("http://", "https://")):
        raise AblationError(
            f"jobs on other nodes cannot write the local store {uri}: start a tracking server "
            "on a host they reach (`mlflow server --backend-store-uri postgresql+psycopg://...`) "
            "and pass --tracking-uri http://HOST:PORT, or --no-track to keep run records alone"
        )


def slurm_jobs(
    todo: list[Job], where: Setting, options: SlurmOptions, ablation: str, wait: bool
) -> Generator[CellOutcome, None, None]:
    """Send `todo` to Slurm (runs queued or running already are not sent again); yield each
    run as queued, or, with `wait`, as its job ends."""
    from harness.experiments.launchers import submit

    def job_key(job: Job) -> str:
        return identity.job_key([tags["m2h.record_key"] for tags in job.tags])

    sent = submit(ablation, todo, where, options)
    ids = {job_key(job): slurm_job for job, slurm_job in sent}
    for job in todo:
        slurm_job = ids.get(job_key(job))
        status = "queued" if slurm_job else "queued already"
        for variant in job.variants:
            if slurm_job is None or not wait:
                detail = f"(Slurm job {slurm_job.job_id})" if slurm_job else "(see m2h status)"
                yield CellOutcome(job.cell.name, variant.seed, status, detail)
    if not wait:
        return
    for job, slurm_job in sent:
        try:
            yield from slurm_job.result()
        except Exception as err:  # the job failed on its node: its log says why
            reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            for variant in job.variants:
                yield CellOutcome(job.cell.name, variant.seed, "failed", reason)


@contextmanager
def parent_run(
    tracker: Any,
    ablation: Ablation,
    results_dir: str | Path,
    epochs: int,
    max_steps: int | None,
    jobs: int = 1,
    span: tuple[int, int] | None = None,
) -> Iterator[str]:
    """The ablation's parent MLflow run for this budget, opened again if it exists; when its
    block ends, the parent gets each cell's mean and standard deviation over the records so far
    (so the collapsed row of the ablation in the UI already says something), and the plots
    `m2h plot` draws of them (artifacts under `plots/`, intervals as the tables'). The experiment
    gets its m2h view (tracking/views.py) over the settings its cells vary. `span`: the
    times of the runs loaded from records (tracker.run)."""
    from harness.tracking.views import save_view

    save_view(tracker.client, tracker.experiment_id, varied_settings(ablation, epochs))
    key = identity.ablation_key(ablation, epochs, max_steps)
    parent = tracker.find_run({"m2h.ablation_key": key, "m2h.role": "ablation"})
    tags = {
        "m2h.ablation_key": key,
        "m2h.role": "ablation",
        "ablation": ablation.name,
        "epochs": str(epochs),
        "max_steps": str(max_steps or "none"),
    }
    name = f"{ablation.name} (ablation)"
    with tracker.run(name, tags, run_id=parent, span=span) as parent_id:
        tracker.client.set_tag(parent_id, "jobs", str(jobs))  # this invocation's
        tracker.client.log_dict(
            parent_id,
            {"description": ablation.description, "cells": [c.name for c in ablation.cells()]},
            "ablation.json",
        )
        yield parent_id
        _log_cell_summary(tracker, parent_id, ablation, results_dir, epochs, max_steps)


def _log_cell_summary(
    tracker: Any,
    parent_id: str,
    ablation: Ablation,
    results_dir: str | Path,
    epochs: int,
    max_steps: int | None,
) -> None:
    from harness.reporting.plots import ablation_plots
    from harness.reporting.tables import (
        ResultsError,
        comparison_frame,
        comparisons,
        load_runs,
        summarize,
    )
    from harness.tracking.loading import log_summary

    try:
        runs, curves = load_runs(ablation, results_dir, epochs, max_steps)
    except ResultsError:  # nothing finished yet
        return
    log_summary(tracker, parent_id, summarize(runs), comparison_frame(comparisons(ablation, runs)))
    with tempfile.TemporaryDirectory() as folder:  # the plots of `m2h plot`, on the parent run
        for path in ablation_plots(ablation, runs, curves, Path(folder)):
            tracker.client.log_artifact(parent_id, str(path), "plots")


def _log_once(
    tracker: Any,
    ablation: Ablation,
    parent_id: str,
    cell: Cell,
    record: RunRecord,
    max_steps: int | None,
) -> bool:
    """Log a finished run's record under the ablation's parent run unless it is there; True
    when it was logged now."""
    tags = run_tags(ablation, cell, record.variant, max_steps)
    if tracker.find_run({"m2h.record_key": tags["m2h.record_key"]}, parent_id) is not None:
        return False
    from harness.tracking.loading import log_record

    log_record(tracker, record, cell.run_name(record.variant.seed), tags, parent_id)
    return True


def log_records(
    ablation: Ablation,
    results_dir: str | Path,
    epochs: int | None = None,
    max_steps: int | None = None,
    tracking_uri: str | None = None,
) -> tuple[int, int, str]:
    """Load the ablation's run records (at this budget) into an MLflow store, under its parent
    run, each once: (records loaded now, records there already, the store's URI)."""
    from harness.tracking.tracker import Tracker

    epochs = epochs or ablation.epochs
    runs_dir = Path(results_dir) / RUNS_FOLDER
    found = [
        (cell, record)
        for cell in ablation.cells()
        for record in find_records(runs_dir, ablation.variant(cell, 0, epochs), max_steps)
    ]
    if not found:
        raise AblationError(missing_records(ablation, runs_dir, epochs, max_steps))
    from harness.tracking.loading import record_span

    tracker = Tracker(tracking_uri, ablation.name, description=ablation.description)
    spans = [record_span(record) for _, record in found]
    span = (min(s for s, _ in spans), max(e for _, e in spans))
    with parent_run(tracker, ablation, results_dir, epochs, max_steps, span=span) as parent_id:
        loaded = sum(
            _log_once(tracker, ablation, parent_id, cell, record, max_steps)
            for cell, record in found
        )
    return loaded, len(found) - loaded, tracker.uri


def run_jobs(todo: list[Job], where: Setting, jobs: int) -> Generator[CellOutcome, None, None]:
    """Yield the outcomes of `todo`, in this process or, with `jobs` > 1, in `jobs` worker
    processes logging through a local MLflow server (a SQLite store takes one writer)."""
    from harness.experiments.workers import process_pool, visible_gpus
    from harness.tracking.server import local_server

    if jobs <= 1 or len(todo) <= 1:
        for job in todo:
            yield from run_job(job, where)
        return
    gpus = visible_gpus(where.site.device)[:jobs]  # each job a GPU of its own, where there are
    with (
        contextlib.ExitStack() as serving,
        process_pool(jobs, gpus if len(gpus) == jobs else ()) as pool,
    ):
        served = where
        if where.tracking_uri is not None:
            uri = serving.enter_context(local_server(where.tracking_uri))
            served = dataclasses.replace(where, tracking_uri=uri)
        queued = iter(todo)  # a job is handed to a worker when one is free, none waits in line
        running = {pool.submit(run_job, job, served) for job in itertools.islice(queued, jobs)}
        while running:
            done, running = wait_for_any(running, return_when=FIRST_COMPLETED)
            for future in done:
                yield from future.result()
            refill = itertools.islice(queued, len(done))
            running |= {pool.submit(run_job, job, served) for job in refill}
