"""An ablation's overall line: runs done and the time left, on made-up outcomes and a made-up
clock (pure)."""

from __future__ import annotations

import pytest

import harness.experiments.ablate as ablate
from harness.experiments.jobs import CellOutcome


def _said(line: str, seconds: float) -> bool:
    """Whether the line gives `seconds` as the time left, as the line rounds it."""
    if seconds < 60:
        return "under 1 min left" in line
    return f"about {seconds / 60:.0f} min left" in line


def _replay(monkeypatch, runs, workers):
    """Feed the outcomes of `runs` ((cell, seconds) in the order the workers take them, each
    worker taking the next run when it is free) to a Progress; each line and the time really
    left when it was said."""
    monkeypatch.setattr(ablate.time, "monotonic", lambda: now)
    free = [0.0] * workers
    ends = []
    for cell, seconds in runs:
        k = free.index(min(free))
        free[k] += seconds
        ends.append((free[k], cell, seconds))
    ends.sort(key=lambda end: end[0])
    meter = ablate.Progress(len(runs), [cell for cell, _ in runs], workers, start=0.0)
    said = []
    for at, cell, seconds in ends:
        now = at
        line = meter.line(CellOutcome(cell, 0, "finished", "", seconds))
        said.append((line, ends[-1][0] - at))
    return said


@pytest.mark.parametrize("workers", [1, 2])
def test_the_time_left_holds_steady_while_runs_finish_side_by_side(monkeypatch, workers):
    """Six runs of 100 s: every estimate is the time really left (the first of a pair of
    runs once counted as the pair's time, and the estimate then halved)."""
    said = _replay(monkeypatch, [("exact", 100.0)] * 6, workers)
    for line, left in said[:-1]:
        assert _said(line, left), (line, left)
    assert said[-1][0] == "  [6 of 6 runs done]"


def test_a_run_still_to_train_is_guessed_at_its_own_cells_pace(monkeypatch):
    """The quickstart's shape: a slow cell, a fast one and a control, two seeds one after the
    other: once each cell has run, the time left is right."""
    seed = [("exact", 300.0), ("gumbel-st", 120.0), ("supervised-only", 20.0)]
    said = _replay(monkeypatch, seed + seed, 1)
    for line, left in said[2:-1]:
        assert _said(line, left), (line, left)


def test_runs_finished_by_others_do_not_count_as_work():
    meter = ablate.Progress(3, ["exact"] * 3, 1)
    assert meter.line(CellOutcome("exact", 0, "skipped", "finished")) == "  [1 of 3 runs done]"


def test_a_run_resumed_near_its_end_is_guessed_at_its_whole_length(monkeypatch):
    """A run resumed from a checkpoint at epoch 361 of 495 took its worker 30 min here, but
    2.3 h in all: the runs of its cell still to train are guessed at 2.3 h each, not 30 min
    (the campaign of 2026-12-08 said 'about 79 min left' for eight runs of 2.5 h)."""
    monkeypatch.setattr(ablate.time, "monotonic", lambda: 1800.0)
    meter = ablate.Progress(3, ["m1m2"] * 3, 1, start=0.0)
    line = meter.line(CellOutcome("m1m2", 1, "finished", "", 1800.0, run_seconds=8400.0))
    assert _said(line, 2 * 8400.0), line
    fresh = ablate.Progress(3, ["m1m2"] * 3, 1, start=0.0)  # a run trained whole here
    assert _said(fresh.line(CellOutcome("m1m2", 1, "finished", "", 1800.0)), 2 * 1800.0)
