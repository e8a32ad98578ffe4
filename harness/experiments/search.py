"""Optuna searches over a variant's search space, on one process, several, or several machines.

The objective is validation accuracy on images held out from the end of the training file (never
the test set); each trial reports it every epoch, and a median (or Hyperband) pruner stops hopeless
trials. Every trial is a child MLflow run under the study's parent run. The storage is a SQLite
file by default; `journal:PATH` (a journal file, for several processes on one machine) or any
RDB URL (PostgreSQL for several machines) lets many `m2h search` processes share one study.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import optuna

from harness.config.space import Choice, Space, describe, narrow, suggest
from harness.config.variants import (
    create_variant,
    load_configured_variants,
    round_float,
    save_user_variant,
    search_space,
)
from harness.experiments.machine import default_threads
from harness.experiments.trial_budget import counted_trials, run_to_budget, study_lock
from harness.experiments.workers import process_pool, visible_gpus
from harness.files import inside, store_creation_lock
from harness.runs.runner import RunOptions, RunSite, run_variant
from harness.tracking.server import local_server
from harness.tracking.tracker import RunStopped, Tracker

optuna.logging.set_verbosity(optuna.logging.WARNING)
DEFAULT_VALIDATION = 10_000
PRUNERS = ("median", "hyperband", "none")


class SearchError(RuntimeError):
    """A search that cannot start: bad space, storage or arguments."""


class TrialPruned(RunStopped):
    """Raised from a trial's epoch callback when the pruner says stop."""


def default_storage() -> str:
    return f"sqlite:///{(Path.cwd() / 'optuna.db').resolve()}"


def open_storage(spec: str | None) -> optuna.storages.BaseStorage:
    """`journal:PATH` -> a journal file; any other text -> an RDB URL (SQLite by default)."""
    spec = spec or default_storage()
    try:
        if spec.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend

            path = Path(spec[len("journal:") :]).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        # heartbeats let a restart see the trials of a killed process as failed, and retry them
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(spec, heartbeat_interval=60, grace_period=180)
    except Exception as err:
        raise SearchError(
            f"cannot open the Optuna storage {spec!r}: {str(err).splitlines()[0]}"
        ) from None


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise SearchError(f"pruner must be one of {', '.join(PRUNERS)}, got {name!r}")


@dataclass
class SearchSpec:
    """Everything a worker process needs to run trials of one study."""

    variant: str
    study: str
    storage: str | None
    space: Space
    trials: int
    settings: dict[str, Any] = field(default_factory=dict)  # fixed --set overrides
    epochs: int | None = None
    site: RunSite = RunSite()  # the data, the device and the step cap, for every trial
    validation: int = DEFAULT_VALIDATION
    seed: int = 0
    pruner: str = "median"
    timeout: float | None = None
    tracking_uri: str | None = None
    track: bool = True
    checkpoint_dir: str = "checkpoints"
    store: str | None = None  # the store behind tracking_uri, when that is a local server
    parent_run_id: str | None = None
    threads: int | None = None
    enqueue: list[dict[str, Any]] = field(default_factory=list)


OBJECTIVE = "validation accuracy"
OWN_SETTINGS = "own_settings"  # the user attribute of the trial of the variant's own settings


def load_study(spec: SearchSpec) -> optuna.Study:
    """Open (or create) the study; its objective is named, so optuna-dashboard labels it. A
    SQLite store is created (or its study made) by one process at a time: several started
    together on a fresh file would race on its schema."""
    with store_creation_lock(spec.storage or default_storage()):
        study = optuna.create_study(
            storage=open_storage(spec.storage),
            study_name=spec.study,
            direction="maximize",
            pruner=make_pruner(spec.pruner),
            load_if_exists=True,
        )
    if study.metric_names != [OBJECTIVE]:
        with warnings.catch_warnings():  # experimental in Optuna, stable in use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([OBJECTIVE])
    return study


def trial_line(trial: optuna.trial.FrozenTrial) -> str:
    """One line for a finished trial: its number, state, value and parameters."""
    params = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items()
    )
    state = trial.state.name.lower()
    value = f" {OBJECTIVE} {100 * trial.value:.2f}%" if trial.value is not None else ""
    if trial.state == optuna.trial.TrialState.PRUNED and trial.last_step is not None:
        value = f" after epoch {trial.last_step}"
    return f"trial {trial.number} {state}:{value} ({params})"


def print_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    print(trial_line(trial), flush=True)


def objective(spec: SearchSpec, tracker: Tracker | None) -> Callable[[optuna.Trial], float]:
    def run_trial(trial: optuna.Trial) -> float:
        settings = suggest(trial, spec.space)
        overrides = {**spec.settings, **settings, "validation": spec.validation, "seed": spec.seed}
        if spec.epochs:
            overrides["epochs"] = spec.epochs
        variant = create_variant(spec.variant, overrides)

        def report(epoch_report: Any) -> None:
            trial.set_user_attr("test_accuracy", epoch_report.test_accuracy)
            trial.report(epoch_report.val_accuracy, epoch_report.epoch)
            if trial.should_prune():
                raise TrialPruned(f"pruned at epoch {epoch_report.epoch}")

        tags = {"optuna_study": spec.study, "optuna_trial": str(trial.number), "m2h.role": "trial"}
        # a retried trial resumes the checkpoint (and MLflow run) of the trial it retries
        first = trial.user_attrs.get("checkpoint_of", trial.number)
        trial.set_user_attr("checkpoint_of", first)
        try:
            options = RunOptions(
                site=spec.site,
                progress=False,
                tracker=tracker,
                parent_run_id=spec.parent_run_id,
                checkpoint_dir=inside(spec.checkpoint_dir, spec.study) / f"trial-{first}",
                resume="retry_of" in trial.user_attrs,
            )
            result = run_variant(
                variant, options, run_name=f"trial {trial.number}", tags=tags, on_epoch_end=[report]
            )
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)  # retried when the search runs again
            raise
        except TrialPruned as stop:
            if stop.run_id and tracker is not None:
                trial.set_user_attr("mlflow_run_id", stop.run_id)
                tracker.client.set_tag(stop.run_id, "optuna_state", "PRUNED")
            raise optuna.TrialPruned(str(stop)) from None
        except Exception as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:1000])
            raise
        if result.run_id and tracker is not None:
            trial.set_user_attr("mlflow_run_id", result.run_id)
            tracker.client.set_tag(result.run_id, "optuna_state", "COMPLETE")
        accuracy = result.final.val_accuracy
        assert accuracy is not None  # a search always holds validation images out
        return accuracy

    return run_trial


def work(spec: SearchSpec) -> None:
    """Run trials until the study holds `spec.trials` (or the timeout passes); trials run here.
    A worker process loads the user variants as the command did (a search may tune one)."""
    load_configured_variants()
    if spec.threads:
        import torch

        torch.set_num_threads(spec.threads)
    study = load_study(spec)
    tracker = Tracker(spec.tracking_uri, spec.study, spec.store) if spec.track else None
    run_trial = objective(spec, tracker)
    deadline = None if spec.timeout is None else time.monotonic() + spec.timeout
    lock = partial(study_lock, spec.storage or default_storage(), spec.study)
    run_to_budget(study, spec.trials, run_trial, lock, deadline, callbacks=[print_trial])


def retry_interrupted(study: optuna.Study) -> int:
    """Enqueue, once, a retry of every trial that was interrupted (Ctrl-C, SIGTERM) or went
    stale (its process killed, seen by the storage's heartbeat): same parameters, resuming its
    checkpoint. Trials that failed on their own (a NaN loss) are not retried."""
    with warnings.catch_warnings():  # a no-op on storages without heartbeats
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    count = 0
    for trial in trials:
        if trial.state != optuna.trial.TrialState.FAIL or trial.number in retried:
            continue
        if "error" not in trial.user_attrs:  # interrupted, or its process killed
            first = trial.user_attrs.get("checkpoint_of", trial.number)
            study.enqueue_trial(
                trial.params, user_attrs={"retry_of": trial.number, "checkpoint_of": first}
            )
            count += 1
    return count


def prepare(variant: str, space_specs: Sequence[str], validation: int) -> Space:
    """The variant's space (its own, else its base's) narrowed or extended by `--space`."""
    space = narrow(search_space(variant), list(space_specs))
    if not space:
        raise SearchError(
            f"variant {variant!r} has no search space: give one with --space KEY=LOW:HIGH "
            "(or KEY=A,B), or declare it with register_variant(..., space={...})"
        )
    if validation <= 0:
        raise SearchError(
            "a search needs a validation split (--validation > 0); "
            "the test set is never its objective"
        )
    return space


def own_settings(spec: SearchSpec) -> dict[str, Any] | None:
    """The variant's own value of every knob of the space (what a search must beat, enqueued
    as a fresh study's first trial), or None where one lies outside the space (a value the
    space does not offer cannot be a trial of it)."""
    variant = create_variant(spec.variant, spec.settings)
    values = {key: getattr(variant, key) for key in spec.space}
    for key, dim in spec.space.items():
        inside_dim = (
            values[key] in dim.values
            if isinstance(dim, Choice)
            else dim.low <= values[key] <= dim.high
        )
        if not inside_dim:
            return None
    return values


def run_search(spec: SearchSpec, jobs: int = 1, echo: Callable[[str], Any] = print) -> optuna.Study:
    """Open the study (checking the storage before any trial), then run its trials here or in
    `jobs` worker processes; returns the study."""
    study = load_study(spec)  # a bad storage fails here, before any trial
    study.set_user_attr("budget", budget_of(spec))  # what an export says it was tuned at
    retried = retry_interrupted(study)
    own = own_settings(spec)
    if not study.trials and not spec.enqueue and own is not None:
        study.enqueue_trial(own, user_attrs={OWN_SETTINGS: True})  # a fresh study's first
    for params in spec.enqueue:
        study.enqueue_trial(params)
    echo(
        f"study {spec.study!r}: {counted_trials(study)} of {spec.trials} trials already"
        + (f", {retried} interrupted trial(s) to resume" if retried else "")
        + f"; space: {describe(spec.space)}"
    )
    tracker = Tracker(spec.tracking_uri, spec.study) if spec.track else None
    if tracker is None:
        _run_workers(spec, jobs)
        return study
    parent = tracker.find_run({"m2h.role": "search", "optuna_study": spec.study})
    tags = {"m2h.role": "search", "optuna_study": spec.study, "variant": spec.variant}
    with tracker.run(f"{spec.study} (search)", tags, run_id=parent) as parent_id:
        tracked = replace(spec, parent_run_id=parent_id, tracking_uri=tracker.uri)
        if jobs > 1 and tracker.uri.startswith("sqlite:"):
            with local_server(tracker.uri) as uri:
                _run_workers(replace(tracked, tracking_uri=uri, store=tracker.uri), jobs)
        else:
            _run_workers(tracked, jobs)
        if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
            best = study.best_trial
            tracker.client.log_dict(
                parent_id,
                {
                    "best_trial": best.number,
                    "val_accuracy": best.value,
                    "test_accuracy": best.user_attrs.get("test_accuracy"),
                    "params": best.params,
                },
                "best_trial.json",
            )
    return study


def _run_workers(spec: SearchSpec, jobs: int) -> None:
    spec = replace(spec, threads=spec.threads or default_threads(jobs))
    if jobs <= 1:
        work(spec)
        return
    gpus = visible_gpus(spec.site.device)[:jobs]  # each worker a GPU of its own, where there are
    with process_pool(jobs, gpus if len(gpus) == jobs else ()) as pool:
        for future in [pool.submit(work, spec) for _ in range(jobs)]:
            future.result()


def summary(study: optuna.Study) -> str:
    states: dict[str, int] = {}
    for trial in study.trials:
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))
    lines = [f"study {study.study_name!r}: {len(study.trials)} trials ({counts})"]
    if states.get("COMPLETE"):
        best = study.best_trial
        assert best.value is not None  # a complete trial has its value
        test = best.user_attrs.get("test_accuracy")
        lines.append(
            f"best trial {best.number}: validation accuracy {100 * best.value:.2f}%, "
            f"test accuracy {100 * test:.2f}% (reported apart; never the objective)"
            if test is not None
            else f"best trial {best.number}: validation accuracy {100 * best.value:.2f}%"
        )
        lines.append(
            "  "
            + ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in best.params.items()
            )
        )
        lines += against_own_settings(study, best)
    return "\n".join(lines)


def against_own_settings(study: optuna.Study, best: optuna.trial.FrozenTrial) -> list[str]:
    """Whether the best trial beats the variant's own settings: both ran the same seed (every
    trial of a study does: the same labelled images and initialisation), so the difference is
    paired, but over one seed; `m2h compare` over seeds says whether it holds."""
    own = [
        t
        for t in study.trials
        if t.user_attrs.get(OWN_SETTINGS) and t.state == optuna.trial.TrialState.COMPLETE
    ]
    if not own:
        return ["the variant's own settings are no complete trial of this study (outside "
                "its space, or not yet run): the best is not compared with them"]  # fmt: skip
    assert own[0].value is not None and best.value is not None
    gain = 100 * (best.value - own[0].value)
    seed = study.user_attrs.get("budget", {}).get("seed")
    on = f"on seed {seed}, " if seed is not None else ""
    if own[0].number == best.number:
        return [f"the variant's own settings (trial {best.number}) are the best: no trial beat "
                "them"]  # fmt: skip
    return [
        f"against the variant's own settings (trial {own[0].number}, validation "
        f"{100 * own[0].value:.2f}%): {gain:+.2f} points {on}the one seed every trial runs; "
        "export it and `m2h compare` over seeds to know whether it holds"
    ]


def export_best(study: optuna.Study, spec: SearchSpec, name: str, path: Path | None = None) -> Path:
    """Register the best trial's settings as variant `name`, written to the exports file with
    the study and the budget it was tuned at (a variant tuned at 3 epochs says so)."""
    base = spec.variant
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise SearchError(f"study {study.study_name!r} has no complete trial to export")
    best = study.best_trial
    assert best.value is not None  # a complete trial has its value
    description = (
        f"Best trial {best.number} of Optuna study {study.study_name!r} over {base}: "
        f"validation accuracy {100 * best.value:.2f}%."
    )
    settings = {k: round_float(v) for k, v in best.params.items()}
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    budget = study.user_attrs.get("budget") or budget_of(spec)
    tuned = {
        "study": study.study_name,
        "storage": spec.storage or "in memory",
        "trial": best.number,
        "complete_trials": len(complete),
        "val_accuracy": round(best.value, 4),
        **{k: v for k, v in budget.items() if k != "settings"},
    }
    fixed = budget.get("settings", {})
    return save_user_variant(name, base, {**fixed, **settings}, description, tuned, path)


def budget_of(spec: SearchSpec) -> dict[str, Any]:
    """The budget a study's trials ran at: epochs, step cap, validation images, fixed settings."""
    return {
        "epochs": spec.epochs or create_variant(spec.variant, spec.settings).epochs,
        "seed": spec.seed,
        "max_steps": spec.site.max_steps or "none",
        "validation": spec.validation,
        "settings": {k: round_float(v) for k, v in spec.settings.items()},
    }
