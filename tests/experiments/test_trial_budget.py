"""A study's trial budget under concurrent workers: exactly N trials, never one over, and the
lock that makes it so holds one process out while another has it."""

from __future__ import annotations

import threading
import time

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend

from harness.experiments.trial_budget import counted_trials, run_to_budget, study_lock


def _objective(trial: optuna.Trial) -> float:
    time.sleep(0.2 - time.monotonic() % 0.2)  # every running trial ends on the same tick
    return trial.suggest_float("x", 0.0, 1.0)


def test_workers_that_finish_together_run_exactly_the_budget(tmp_path):
    path = str(tmp_path / "journal.log")
    storage = optuna.storages.JournalStorage(JournalFileBackend(path))
    study = optuna.create_study(storage=storage, study_name="s")
    study.enqueue_trial({"x": 0.5})  # an enqueued trial is part of the budget, not on top of it

    def worker() -> None:
        mine = optuna.load_study(storage=storage, study_name="s")
        run_to_budget(mine, 15, _objective, lambda: study_lock(f"journal:{path}", "s"))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(15))
    assert [t.state.name for t in trials] == ["COMPLETE"] * 15
    assert trials[0].params == {"x": 0.5}  # the waiting trial ran first
    assert counted_trials(study) == 15


def test_a_met_budget_runs_nothing_more_and_a_waiting_trial_counts(tmp_path):
    study = optuna.create_study()
    study.enqueue_trial({"x": 0.1})
    run_to_budget(study, 1, _objective, lambda: study_lock("sqlite:///x", "t"))
    assert [t.params for t in study.trials] == [{"x": 0.1}]
    run_to_budget(study, 1, _objective, lambda: study_lock("sqlite:///x", "t"))
    assert len(study.trials) == 1


def test_a_deadline_passed_starts_no_trial():
    study = optuna.create_study()
    run_to_budget(study, 5, _objective, lambda: study_lock("sqlite:///x", "u"), deadline=0.0)
    assert study.trials == []


def hold_out(storage: str) -> None:
    """While one holder has the study's lock, another waits; it gets the lock once released."""
    taken = threading.Event()

    def take() -> None:
        with study_lock(storage, "s"):
            taken.set()

    with study_lock(storage, "s"):
        other = threading.Thread(target=take)
        other.start()
        assert not taken.wait(1.0)
    assert taken.wait(10.0)
    other.join()


@pytest.mark.parametrize("storage", ["sqlite:///optuna.db", "journal:/tmp/j.log"])
def test_the_file_lock_holds_a_second_holder_out(storage):
    hold_out(storage)
