"""One run end to end: data, trainer, checkpoint and resume, MLflow tracking, report lines."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from harness.config.identity import run_key
from harness.config.variants import Variant
from harness.files import ensure_writable, inside
from harness.training.checkpoint import CheckpointError, load_checkpoint
from harness.training.data import Splits, load_splits
from harness.training.progress import Progress, epoch_label
from harness.training.reports import EpochReport, run_summary
from harness.training.trainer import Trainer, resolve_device, settings_differing


class RunLog(Protocol):
    """What a run logs to, handed to it (`RunOptions.tracker`): MLflow's tracker
    (`harness.tracking.tracker.Tracker`) is one; the runner never imports it."""

    def run(
        self, name: str, tags: dict[str, str], parent_run_id: str | None, run_id: str | None
    ) -> AbstractContextManager[str]: ...

    def run_of_checkpoint(self, checkpoint: Path, parent_run_id: str | None) -> str | None: ...

    def remember_checkpoint(self, checkpoint: Path, run_id: str) -> None: ...

    def log_start(
        self, run_id: str, variant: Variant, device: torch.device, extra: dict[str, Any]
    ) -> None: ...

    def log_epoch(self, run_id: str, report: EpochReport) -> None: ...

    def log_missing_epochs(self, run_id: str, reports: list[EpochReport]) -> None: ...

    def log_m1(self, record: dict[str, Any]) -> None: ...

    def log_end(
        self,
        run_id: str,
        variant: Variant,
        reports: list[EpochReport],
        model: torch.nn.Module,
        test: tuple[torch.Tensor, torch.Tensor],
        checkpoint: Path | None,
    ) -> None: ...


DEFAULT_CHECKPOINT_DIR = Path("checkpoints")


@dataclass
class RunResult:
    variant: Variant
    reports: list[EpochReport]
    run_id: str | None

    @property
    def final(self) -> EpochReport:
        return self.reports[-1]


@dataclass(frozen=True)
class RunSite:
    """What every way of running (`m2h run`, an ablation's jobs, a search's trials, Slurm jobs)
    gives each of its runs alike, declared once and handed down whole: where the data is and
    whether it may be downloaded, the device, and the step cap per epoch."""

    data_root: str | Path | None = None
    download: bool = True
    device: str | None = None  # None: CUDA when present, else the CPU
    max_steps: int | None = None  # None: whole epochs


@dataclass(frozen=True)
class RunOptions:
    """How a run is carried out, apart from what it trains (its Variant): its site (the data,
    the device, the step cap), where its checkpoints live, the store, and the Trainer's speed
    options."""

    site: RunSite = RunSite()
    progress: Progress = True  # training/progress.py: a bar, lines, or nothing
    tracker: RunLog | None = None
    parent_run_id: str | None = None
    checkpoint_dir: str | Path | None = DEFAULT_CHECKPOINT_DIR
    resume: bool = False
    precision: str = "fp32"  # the speed options: bf16 autocast, a compiled loss, CUDA graphs
    compile: bool = False
    cuda_graphs: bool = False
    records_dir: str | Path | None = None  # where a finished run leaves its record (records.py)
    m1_dir: str | Path | None = None  # M1+M2's M1s (None: runs/m1.py's m1_folder)
    announce: Callable[[str], Any] | None = None  # told whether a run resumes, and from what


def run_variant(
    variant: Variant,
    options: RunOptions = RunOptions(),
    *,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    on_epoch_end: Iterable[Callable[[EpochReport], Any]] = (),
) -> RunResult:
    """`run_seeds` for the variant's own seed alone; each callback gets the epoch's report."""
    callbacks = [
        lambda reports, callback=callback: callback(reports[0]) for callback in on_epoch_end
    ]
    (result,) = run_seeds(
        variant,
        [variant.seed],
        options,
        run_name=None if run_name is None else lambda v: run_name,
        tags=None if tags is None else lambda v: tags,
        on_epoch_end=callbacks,
    )
    return result


def run_seeds(
    variant: Variant,
    seeds: Sequence[int],
    options: RunOptions = RunOptions(),
    *,
    run_name: Callable[[Variant], str] | None = None,
    tags: Callable[[Variant], dict[str, str]] | None = None,
    on_epoch_end: Iterable[Callable[[list[EpochReport | None]], Any]] = (),
) -> list[RunResult]:
    """Train the `seeds` of `variant`, one seed alone or several stacked in one step, each its own
    run: its own checkpoint (the one it would have alone), saved every epoch, and, when tracked,
    its own MLflow run (tagged with the stack's seeds when stacked). With `options.resume`,
    continue from the checkpoints (and into the same MLflow runs) if they exist. `run_name` and
    `tags` give a seed's run name and tags from its variant; the callbacks get every epoch's
    reports, one per seed (None for a seed the stop rule ended earlier)."""
    from harness.runs.provenance import environment_params, segment_provenance

    torch_device, splits = _prepare(variant, options)
    environment = environment_params(torch_device)
    m1_params: dict[str, Any] = {}
    if variant.features == "m1":
        splits, m1_params = _m1_features(variant, splits, torch_device, options, environment)
    trainer = Trainer(
        variant,
        splits,
        torch_device,
        options.site.max_steps,
        options.progress,
        seeds=seeds,
        precision=options.precision,
        compile=options.compile,
        cuda_graphs=options.cuda_graphs,
        made_by=segment_provenance(environment),
    )
    checkpoints = (
        None
        if options.checkpoint_dir is None
        else [
            checkpoint_path(options.checkpoint_dir, v, options.site.max_steps)
            for v in trainer.variants
        ]
    )
    paths: list[Path | None] = list(checkpoints) if checkpoints else [None] * len(trainer.seeds)
    resumed = options.resume and checkpoints is not None and trainer.resume_from(checkpoints)
    if options.announce and checkpoints is not None:
        for v, path in zip(trainer.variants, checkpoints, strict=True):
            options.announce(resume_note(v, path, options.resume, resumed, trainer.epoch))
    callbacks = list(on_epoch_end)
    tracker = options.tracker
    run_ids: list[str | None] = [None] * len(trainer.seeds)
    with ExitStack() as runs:  # one failure or interrupt ends every seed's run alike
        if tracker is not None:
            ids = [
                runs.enter_context(
                    _tracked_run(
                        tracker, options, trainer, i, paths[i], resumed, run_name, tags, m1_params
                    )
                )
                for i in range(len(trainer.seeds))
            ]
            run_ids = list(ids)

            def log_epoch(reports: list[EpochReport | None]) -> None:
                for run_id, report in zip(ids, reports, strict=True):
                    if report is not None:  # None: the seed ended before this epoch
                        tracker.log_epoch(run_id, report)

            callbacks.insert(0, log_epoch)
        histories = trainer.fit(callbacks, checkpoints)
        for i, (v, history) in enumerate(zip(trainer.variants, histories, strict=True)):
            made = {**environment, **m1_params}
            _write_record(options, v, history, made, trainer.seed_segments(i))
        if tracker is not None:
            test = (splits.test_x, splits.test_y)
            for i, (v, history) in enumerate(zip(trainer.variants, histories, strict=True)):
                tracker.log_end(ids[i], v, history, trainer.seed_model(i), test, paths[i])
    return [
        RunResult(v, history, run_id)
        for v, history, run_id in zip(trainer.variants, histories, run_ids, strict=True)
    ]


def _write_record(
    options: RunOptions,
    variant: Variant,
    reports: list[EpochReport],
    environment: dict[str, Any],
    segments: list[dict[str, Any]],
) -> None:
    """Leave the finished run's record in `options.records_dir`, if one is named."""
    if options.records_dir is None:
        return
    from harness.runs.records import make_record, write_record

    record = make_record(variant, reports, environment, options.site.max_steps, segments)
    write_record(options.records_dir, record)


def _m1_features(
    variant: Variant,
    splits: Splits,
    device: torch.device,
    options: RunOptions,
    environment: dict[str, Any],
) -> tuple[Splits, dict[str, Any]]:
    """M1+M2: the M1 `variant` reads (trained first if no process has), logged to the store
    once, and the splits of its features; with what a run says of it (`m1`, `m1_dims`)."""
    from harness.runs.m1 import ensure_m1, m1_folder
    from harness.runs.provenance import segment_provenance
    from harness.training.features import feature_splits

    folder = Path(options.m1_dir) if options.m1_dir else m1_folder(options.records_dir)
    made_by = segment_provenance(environment)
    m1 = ensure_m1(variant, splits, device, folder, made_by, options.announce or (lambda _: None))
    if options.tracker is not None:
        options.tracker.log_m1(m1.record)
    features = feature_splits(splits, m1.model, variant.m1_min_std)
    return features, {"m1": m1.key, "m1_dims": features.train_x.shape[1]}


def _prepare(variant: Variant, options: RunOptions) -> tuple[torch.device, Splits]:
    """The training device and the data on it; the checkpoint folder proven writable first."""
    torch_device = resolve_device(options.site.device)
    if options.checkpoint_dir is not None:
        ensure_writable(Path(options.checkpoint_dir), "checkpoint folder")
    splits = load_splits(
        variant.dataset,
        options.site.data_root,
        torch_device,
        variant.validation,
        options.site.download,
    )
    return torch_device, splits


CHECKPOINTS_NAMED = 3  # checkpoints of other settings a fresh start names, the closest first


def checkpoint_path(checkpoint_dir: str | Path, variant: Variant, max_steps: int | None) -> Path:
    """Where a run of `variant` keeps its checkpoint in `checkpoint_dir`."""
    return inside(checkpoint_dir, f"{run_key(variant, max_steps)}.pt")


def resume_note(variant: Variant, checkpoint: Path, resume: bool, resumed: bool, epoch: int) -> str:
    """What a run does with checkpoints: which one and which epoch it resumes from, or that it
    starts fresh and why (no checkpoint of these settings; those of the same variant with other
    settings are named, with what differs; or --resume was not asked for)."""
    if resumed:
        return f"resuming from {checkpoint} after epoch {epoch} of {variant.epochs}"
    if checkpoint.exists():
        return (
            f"starting fresh: {checkpoint} holds this run after epoch "
            f"{load_checkpoint(checkpoint)['epoch']} and will be overwritten "
            "(--resume continues it)"
        )
    note = f"starting fresh: no checkpoint of these settings in {checkpoint.parent}"
    if not resume:
        return note
    others: list[tuple[int, str]] = []  # (settings that differ, what is said of the file)
    for path in sorted(checkpoint.parent.glob(f"{variant.name}-*.pt")):
        try:
            changed = settings_differing(variant, load_checkpoint(path)) or ["--max-steps"]
        except CheckpointError:  # not this run's file: named, never loaded
            others.append((10**6, f"{path.name} (not read: not a plain m2h checkpoint)"))
            continue
        others.append((len(changed), f"{path.name} (differs in {', '.join(changed)})"))
    if others:  # the closest few, so the line stays short however many a folder holds
        closest = [said for _, said in sorted(others)[:CHECKPOINTS_NAMED]]
        more = len(others) - len(closest)
        note += f"; not resumed, being of other settings: {'; '.join(closest)}"
        note += f"; and {more} more of {variant.name}" if more else ""
    return note


@contextmanager
def _tracked_run(
    tracker: RunLog,
    options: RunOptions,
    trainer: Trainer,
    i: int,
    checkpoint: Path | None,
    resumed: bool,
    run_name: Callable[[Variant], str] | None,
    tags: Callable[[Variant], dict[str, str]] | None,
    m1_params: dict[str, Any],
) -> Iterator[str]:
    """Open (or, resuming, reopen) the MLflow run of the trainer's seed i and log its start; the
    epochs a resumed checkpoint holds but the run lacks are logged first. A seed of a stack is
    named for its seed by default and tagged with the stack's seeds."""
    parent_run_id = options.parent_run_id
    variant, stacked = trainer.variants[i], len(trainer.seeds) > 1
    previous = (
        tracker.run_of_checkpoint(checkpoint, parent_run_id)
        if options.resume and checkpoint
        else None
    )
    default_name = f"{variant.name} seed {variant.seed}" if stacked else variant.name
    name = run_name(variant) if run_name else default_name
    seed_tags = {
        **(tags(variant) if tags else {}),
        **({"stacked_seeds": ",".join(map(str, trainer.seeds))} if stacked else {}),
        **({"resumed": "true"} if previous else {}),
    }
    with tracker.run(name, seed_tags, parent_run_id, previous) as run_id:
        if checkpoint is not None:
            tracker.remember_checkpoint(checkpoint, run_id)
        speed = {
            "precision": trainer.precision,
            "compile": trainer.compiled,
            "cuda_graphs": trainer.cuda_graphs,
        }
        max_steps = options.site.max_steps or "none"
        extra = {"max_steps": max_steps, **speed, **m1_params}
        tracker.log_start(run_id, variant, trainer.device, extra)
        if resumed:
            tracker.log_missing_epochs(run_id, trainer.seed_history(i))
        yield run_id


def format_report(report: EpochReport, epochs: int) -> str:
    """One epoch's line, every figure in a field of fixed width, so that a run's lines (and
    those of the runs of one budget) have one length and their columns line up."""
    losses = "  ".join(f"{k} {v:>9.4g}" for k, v in report.losses.items())
    val = (
        ""
        if report.val_accuracy is None
        else f"  val error {100 * (1 - report.val_accuracy):6.2f}%"
    )
    return (
        f"{epoch_label(report.epoch, epochs)}  {losses}"
        f"  test acc {100 * report.test_accuracy:6.2f}%  error {report.test_error:6.2f}%{val}"
        f"  {report.samples_per_sec:>9,.0f} rows/s  {report.epoch_seconds:7.1f} s"
    )


def format_summary(variant: Variant, reports: list[EpochReport]) -> str:
    """One line: the reported test accuracy (at the best validation epoch when the run holds
    validation images out, else the last), how the run ended, the test-selected best beside it."""
    s = run_summary(variant, reports)
    error = s["selected_test_error"]
    where = (
        f"at the best validation epoch, {s['selected_epoch']} of {s['epochs_run']}"
        if s["selected_val_error"] is not None
        else f"after {s['epochs_run']} epochs"
    )
    ended = {"patience": "ended by the stop rule", "budget": "the epoch budget spent"}
    return (
        f"{variant.name} on {variant.dataset}, {variant.labels} labels, seed {variant.seed}: "
        f"test accuracy {100 - error:.2f}% (error {error:.2f}%) {where} "
        f"({ended.get(s['stopped_by'], 'unfinished')}); best "
        f"{100 - s['best_test_error_test_selected']:.2f}% (test-selected, for comparison); "
        f"{s['final_samples_per_sec']:,.0f} rows/s; {s['train_seconds']:.1f} s training"
    )
