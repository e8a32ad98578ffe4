"""A study's trial budget, taken one trial at a time by however many processes share the study.

`m2h search --trials N` runs until the study holds N trials. Counting the study's trials and
starting one are two steps, so two workers that finish together would both count N - 1 and both
start the last trial. Each worker therefore counts under a lock shared by every process on the
study and holds it until its next trial is in the study (running), then releases it and goes on
with the trial. On PostgreSQL the lock is an advisory lock in the database, shared by processes
on any machine; on any other storage it is a file lock, shared by the processes of this machine.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

import optuna
from filelock import FileLock

BUDGETED = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.RUNNING,
)


def counted_trials(study: optuna.Study) -> int:
    """Trials finished or under way (failed ones are retried, so not counted; waiting ones, such
    as those retries, run before any new trial and count once they start)."""
    return len(study.get_trials(deepcopy=False, states=BUDGETED))


def _lock_key(storage: str, study: str) -> bytes:
    return hashlib.blake2b(f"{storage}\n{study}".encode(), digest_size=8).digest()


@contextmanager
def study_lock(storage: str, study: str) -> Iterator[None]:
    """Hold the lock on `study`'s budget: a PostgreSQL advisory lock (any machine), else a file
    lock in this machine's temporary folder."""
    key = _lock_key(storage, study)
    if not storage.startswith("postgresql"):
        folder = Path(tempfile.gettempdir()) / "m2h-study-locks"
        folder.mkdir(exist_ok=True)
        with FileLock(folder / f"{key.hex()}.lock"):
            yield
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(storage, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            number = int.from_bytes(key, "big", signed=True)
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": number})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": number})
    finally:
        engine.dispose()


def run_next_trial(
    study: optuna.Study,
    trials: int,
    objective: Callable[[optuna.Trial], float],
    lock: Callable[[], AbstractContextManager[None]],
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
) -> bool:
    """Count the study's trials under `lock`; below `trials`, start one (a waiting trial first,
    as `study.optimize` does), release the lock once it is running, and run it to its end.
    False when the budget was already met."""
    with ExitStack() as held:
        held.enter_context(lock())
        if counted_trials(study) >= trials:
            return False

        def started(trial: optuna.Trial) -> float:
            held.close()  # the trial is in the study, running: the next worker counts it
            return objective(trial)

        study.optimize(started, n_trials=1, callbacks=list(callbacks))
    return True


def run_to_budget(
    study: optuna.Study,
    trials: int,
    objective: Callable[[optuna.Trial], float],
    lock: Callable[[], AbstractContextManager[None]],
    deadline: float | None = None,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
) -> None:
    """Run trials here, one at a time, until the study holds `trials` or `deadline` (a
    `time.monotonic()` instant) passes."""
    while deadline is None or time.monotonic() <= deadline:
        if not run_next_trial(study, trials, objective, lock, callbacks):
            return
