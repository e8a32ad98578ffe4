"""One run end to end: data, trainer, checkpoint and resume, MLflow tracking, report lines."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.data import load_splits
from harness.trainer import EpochReport, Trainer, resolve_device, run_summary
from harness.variants import Variant, resumable_settings

if TYPE_CHECKING:
    from harness.tracking import Tracker

DEFAULT_CHECKPOINT_DIR = Path("checkpoints")


@dataclass
class RunResult:
    variant: Variant
    reports: list[EpochReport]
    trainer: Trainer
    run_id: str | None

    @property
    def final(self) -> EpochReport:
        return self.reports[-1]


def run_key(variant: Variant, max_steps: int | None) -> str:
    """A stable name for a run's checkpoint: the variant and a hash of what it can resume on."""
    settings = resumable_settings(variant.params())
    digest = hashlib.sha1(json.dumps([settings, max_steps], sort_keys=True).encode()).hexdigest()
    return f"{variant.name}-{digest[:12]}"


class OutputError(OSError):
    """A folder the harness must write to cannot be written."""


def ensure_writable(folder: Path, what: str) -> None:
    """Create `folder` and prove it writable, or raise one clear error."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".m2h-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise OutputError(f"the {what} {folder} cannot be written: {err.strerror}") from None


def run_variant(
    variant: Variant,
    *,
    data_root: str | Path | None = None,
    device: str | None = None,
    max_steps: int | None = None,
    download: bool = True,
    progress: bool = True,
    tracker: Tracker | None = None,
    parent_run_id: str | None = None,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    checkpoint_dir: str | Path | None = DEFAULT_CHECKPOINT_DIR,
    resume: bool = False,
    on_epoch_end: Iterable[Callable[[EpochReport], Any]] = (),
) -> RunResult:
    """Train `variant`, checkpointing every epoch; with `resume`, continue from the checkpoint
    (and, when tracked, into the same MLflow run) if one exists."""
    torch_device = resolve_device(device)
    if checkpoint_dir is not None:
        ensure_writable(Path(checkpoint_dir), "checkpoint folder")
    splits = load_splits(variant.dataset, data_root, torch_device, variant.validation, download)
    trainer = Trainer(variant, splits, torch_device, max_steps=max_steps, progress=progress)
    checkpoint = (
        Path(checkpoint_dir) / f"{run_key(variant, max_steps)}.pt"
        if checkpoint_dir is not None
        else None
    )
    resumed = resume and checkpoint is not None and trainer.resume_from(checkpoint)
    callbacks = list(on_epoch_end)
    if tracker is None:
        return RunResult(variant, trainer.fit(callbacks, checkpoint), trainer, None)

    from harness.tracking import read_run_pointer, write_run_pointer

    previous = (
        read_run_pointer(checkpoint, tracker, parent_run_id) if resume and checkpoint else None
    )
    tags = {**(tags or {}), **({"resumed": "true"} if previous else {})}
    with tracker.run(run_name or variant.name, tags, parent_run_id, previous) as run_id:
        if checkpoint is not None:
            write_run_pointer(checkpoint, tracker, run_id)
        tracker.log_start(run_id, variant, torch_device, {"max_steps": max_steps or "none"})
        if resumed:
            tracker.log_missing_epochs(run_id, trainer.history)
        reports = trainer.fit([lambda r: tracker.log_epoch(run_id, r), *callbacks], checkpoint)
        tracker.log_end(run_id, trainer, checkpoint)
    return RunResult(variant, reports, trainer, run_id)


def format_report(report: EpochReport, epochs: int) -> str:
    losses = "  ".join(f"{k} {v:.4g}" for k, v in report.losses.items())
    return (
        f"epoch {report.epoch:>3}/{epochs}  {losses}  test acc {100 * report.test_accuracy:.2f}%"
        f"  error {report.test_error:.2f}%  {report.samples_per_sec:,.0f} rows/s"
        f"  {report.epoch_seconds:.1f} s"
    )


def format_summary(variant: Variant, reports: list[EpochReport]) -> str:
    s = run_summary(reports)
    return (
        f"{variant.name} on {variant.dataset}, {variant.labels} labels, seed {variant.seed}: "
        f"test accuracy {100 * s['final_test_accuracy']:.2f}% "
        f"(error {s['final_test_error']:.2f}%, best {100 * s['best_test_accuracy']:.2f}%) "
        f"after {s['epochs_done']} epochs; {s['final_samples_per_sec']:,.0f} rows/s; "
        f"{s['train_seconds']:.1f} s training"
    )
