"""An ablation's overall line: runs done and the time left, on made-up outcomes and a made-up
clock (pure)."""

from __future__ import annotations

import pytest

import harness.experiments.ablate as ablate
from harness.experiments.jobs import CellOutcome


@pytest.mark.parametrize("workers, finish_at", [(2, [100, 100, 200, 200, 300, 300]), (1, [50] * 4)])
def test_the_time_left_holds_steady_while_runs_finish_side_by_side(monkeypatch, workers, finish_at):
    """Runs of 100 s each (50 s alone), finishing `workers` at a time: every estimate is the
    time that is really left (before, the first of a pair counted as the pair's time)."""
    per_run = 100.0 if workers == 2 else 50.0
    now = {"t": 0.0}
    monkeypatch.setattr(ablate.time, "monotonic", lambda: now["t"])
    meter = ablate.Progress(len(finish_at), workers, start=0.0)
    clock = 0.0
    for k, at in enumerate(finish_at):
        clock = at if workers == 2 else clock + at
        now["t"] = clock
        line = meter.line(CellOutcome("exact", k, "finished", "", per_run))
        truly_left = max(finish_at) - clock if workers == 2 else (len(finish_at) - k - 1) * 50
        if k + 1 < len(finish_at):
            assert f"about {truly_left / 60:.0f} min left" in line or (
                truly_left < 60 and "under 1 min left" in line
            ), (k, line)
        else:
            assert line == f"  [{len(finish_at)} of {len(finish_at)} runs done]"


def test_runs_finished_by_others_do_not_count_as_work():
    meter = ablate.Progress(3, 1)
    assert meter.line(CellOutcome("exact", 0, "skipped", "finished")) == "  [1 of 3 runs done]"
