"""What a run says while it runs: lines within a long epoch and epoch lines of one length (pure,
on generated data and made-up reports)."""

from __future__ import annotations

import harness.training.progress as progress
from harness.config.variants import create_variant
from harness.runs.runner import format_report
from harness.training.progress import epoch_label, epoch_steps
from harness.training.reports import EpochReport
from harness.training.trainer import Trainer


def test_a_long_epoch_says_its_step_and_time_left(monkeypatch):
    monkeypatch.setattr(progress, "LINE_EVERY", 0.0)  # every step counts as long
    lines: list[str] = []
    assert list(epoch_steps(4, epoch_label(2, 150), lines.append)) == [0, 1, 2, 3]
    assert lines and all(line.startswith("epoch   2/150: step ") for line in lines)
    assert any(line.startswith("epoch   2/150: step 3/4, ") for line in lines)
    assert all("left of the epoch" in line and "\r" not in line for line in lines)


def test_a_short_epoch_adds_no_line():
    lines: list[str] = []
    assert list(epoch_steps(50, epoch_label(1, 3), lines.append)) == list(range(50))
    assert lines == []  # it ran for far less than LINE_EVERY


def test_the_trainer_hands_its_lines_within_an_epoch_to_the_caller(generated, monkeypatch):
    monkeypatch.setattr(progress, "LINE_EVERY", 0.0)
    lines: list[str] = []
    variant = create_variant("exact", {"epochs": 2, "labels": 100})
    trainer = Trainer(variant, generated, "cpu", max_steps=3, progress=lines.append)
    trainer.run_epoch()
    assert lines and all(line.startswith("epoch   1/2: step ") for line in lines)
    assert not any("/2: step 4/3" in line for line in lines)


def _report(epoch: int, loss: float, error: float, rows: float, seconds: float) -> EpochReport:
    return EpochReport(
        epoch=epoch,
        steps=1,
        losses={"loss": loss, "labelled": loss / 3, "classification": loss / 1e4},
        test_accuracy=1 - error / 100,
        test_error=error,
        val_accuracy=1 - error / 100,
        samples_per_sec=rows,
        epoch_seconds=seconds,
        temperature=1.0,
        alpha=1.0,
    )


def test_epoch_lines_of_one_budget_have_one_length():
    first = format_report(_report(1, 39_990.0, 82.83, 1_920.0, 26.0), 1500)
    late = format_report(_report(1234, 20.5, 3.1, 124_000.5, 1234.5), 1500)
    assert len(first) == len(late), (first, late)
    assert first.index("test acc") == late.index("test acc")
    assert first.startswith("epoch    1/1500") and late.startswith("epoch 1234/1500")
