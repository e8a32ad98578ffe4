"""One run end to end: load the data, build the trainer, resume, train, report."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.data import load_splits
from harness.trainer import EpochReport, Trainer, resolve_device
from harness.variants import Variant


@dataclass
class RunResult:
    variant: Variant
    reports: list[EpochReport]
    trainer: Trainer

    @property
    def final(self) -> EpochReport:
        return self.reports[-1]


def run_variant(
    variant: Variant,
    *,
    data_root: str | Path | None = None,
    device: str | None = None,
    max_steps: int | None = None,
    download: bool = True,
    progress: bool = True,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    on_epoch_end: Iterable[Callable[[EpochReport], Any]] = (),
    on_start: Callable[[Trainer], Any] | None = None,
) -> RunResult:
    """Train `variant`; with `resume`, continue from `checkpoint` if it exists."""
    torch_device = resolve_device(device)
    splits = load_splits(variant.dataset, data_root, torch_device, variant.validation, download)
    trainer = Trainer(variant, splits, torch_device, max_steps=max_steps, progress=progress)
    if resume and checkpoint is not None:
        trainer.resume_from(checkpoint)
    if on_start is not None:
        on_start(trainer)
    reports = trainer.fit(on_epoch_end, checkpoint=checkpoint)
    return RunResult(variant, reports, trainer)


def format_report(report: EpochReport, epochs: int) -> str:
    losses = "  ".join(f"{k} {v:.4g}" for k, v in report.losses.items())
    return (f"epoch {report.epoch:>3}/{epochs}  {losses}  test acc {100 * report.test_accuracy:.2f}%"
            f"  error {report.test_error:.2f}%  {report.samples_per_sec:,.0f} rows/s"
            f"  {report.epoch_seconds:.1f} s")


def format_summary(variant: Variant, reports: list[EpochReport]) -> str:
    last = reports[-1]
    best = max(r.test_accuracy for r in reports)
    seconds = sum(r.epoch_seconds for r in reports)
    return (f"{variant.name} on {variant.dataset}, {variant.labels} labels, seed {variant.seed}: "
            f"test accuracy {100 * last.test_accuracy:.2f}% (error {last.test_error:.2f}%, "
            f"best {100 * best:.2f}%) after {last.epoch} epochs; "
            f"{last.samples_per_sec:,.0f} rows/s; {seconds:.1f} s training")
