from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import optuna
import pytest

from harness.cli.main import main
from harness.config.space import Range
from harness.config.variants import get_variant, register_variant
from harness.experiments.search import SearchError, SearchSpec, open_storage, run_search
from harness.runs.runner import RunSite

mlflow = pytest.importorskip("mlflow")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICK = ["--epochs", "2", "--max-steps", "4", "--validation", "2000"]


def _trials(storage, study):
    return optuna.load_study(study_name=study, storage=open_storage(storage)).trials


def test_a_small_study_end_to_end_in_optuna_and_mlflow(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("M2H_EXPORTS", str(tmp_path / "exports.toml"))
    mine = '# my own variants, with my comments\n[mine]\nbase = "exact"\n[mine.set]\nlr = 0.0005\n'
    (tmp_path / "m2h-variants.toml").write_text(mine)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = [
        "search",
        "gumbel-0.5",
        "--trials",
        "3",
        "--storage",
        storage,
        "--study",
        "s",
        "--tracking-uri",
        store,
        "--space",
        "hidden=256",
        "--space",
        "z_dim=16",
        *QUICK,
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "best trial" in out and "test accuracy" in out
    trials = _trials(storage, "s")
    assert len(trials) == 3 and all(t.params["hidden"] == 256 for t in trials)
    lines = [line for line in out.splitlines() if line.startswith("trial ")]
    assert len(lines) == 3  # one line per finished trial, as it finishes
    assert any("complete: validation accuracy" in line and "lr=" in line for line in lines)
    study = optuna.load_study(study_name="s", storage=open_storage(storage))
    assert study.metric_names == ["validation accuracy"]  # what optuna-dashboard shows
    client = mlflow.MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("s").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("m2h.role") == "search"]
    children = [r for r in runs if r.data.tags.get("m2h.role") == "trial"]
    assert sorted(int(r.data.tags["optuna_trial"]) for r in children) == [0, 1, 2]
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        trial = trials[int(run.data.tags["optuna_trial"])]
        assert run.data.tags["optuna_state"] == trial.state.name
        assert float(run.data.params["lr"]) == pytest.approx(trial.params["lr"])
        assert run.data.params["validation"] == "2000"
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id

    # continuing after a restart, then exporting the best trial as a variant
    assert main([*args[:3], "4", *args[4:]]) == 0
    again = _trials(storage, "s")
    assert len(again) == 4 and [t.params for t in again[:3]] == [t.params for t in trials]
    assert (
        main(
            [
                "search",
                "gumbel-0.5",
                "--storage",
                storage,
                "--study",
                "s",
                "--export",
                "tuned-gumbel",
                "--no-track",
            ]
        )
        == 0
    )
    shown = subprocess.run(
        [sys.executable, "-m", "harness", "show", "tuned-gumbel"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": REPO_ROOT},
    )
    assert shown.returncode == 0, shown.stderr
    # the study's best as Optuna chooses it (ties of chance-level trials included)
    best = optuna.load_study(study_name="s", storage=open_storage(storage)).best_trial
    assert f"Best trial {best.number} of Optuna study 's'" in shown.stdout
    lr_line = next(line for line in shown.stdout.splitlines() if line.split()[:1] == ["lr"])
    # exported to 4 significant digits, not 17
    assert float(lr_line.split()[1]) == pytest.approx(best.params["lr"], rel=1e-3)
    exported = (tmp_path / "exports.toml").read_text()
    rounded = float("{:.4g}".format(best.params["lr"]))
    assert f"lr = {rounded}" in exported
    # the export says the study and the budget it was tuned at, in a file of its own
    tuned = tomllib.loads(exported)["tuned-gumbel"]["tuned"]
    complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in again)
    assert tuned["study"] == "s" and tuned["complete_trials"] == complete
    assert tuned["trial"] == best.number
    assert tuned["epochs"] == int(QUICK[QUICK.index("--epochs") + 1])
    assert (tmp_path / "m2h-variants.toml").read_text() == mine  # the user's file untouched


def _lr_search(tmp_path, study, **settings) -> SearchSpec:
    """A study of `exact` over the learning rate alone: 3 short epochs a trial."""
    return SearchSpec(
        variant="exact",
        study=study,
        storage=f"sqlite:///{tmp_path / 'o.db'}",
        space={"lr": Range(1e-7, 1e-2, log=True)},
        epochs=3,
        validation=2000,
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        **settings,
    )


def test_pruning_stops_a_trial_that_reports_poorly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = _lr_search(
        tmp_path,
        "prune",
        trials=3,
        site=RunSite(max_steps=4),
        enqueue=[{"lr": 1e-3}, {"lr": 1e-3}, {"lr": 1e-7}],
    )
    study = run_search(spec, echo=lambda *a: None)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2 + [optuna.trial.TrialState.PRUNED]
    assert max(study.trials[2].intermediate_values) == 1  # stopped after its first epoch
    client = mlflow.MlflowClient(store)
    run = client.get_run(study.trials[2].user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["optuna_state"] == "PRUNED"


@pytest.mark.e2e
def test_two_worker_processes_share_one_study(tmp_path):
    storage = f"journal:{tmp_path / 'journal.log'}"
    command = [
        sys.executable,
        "-m",
        "harness",
        "search",
        "supervised-only",
        "--trials",
        "6",
        "--storage",
        storage,
        "--study",
        "shared",
        "--no-track",
        "--pruner",
        "none",
        *QUICK,
    ]
    procs = [
        subprocess.Popen(
            command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    trials = _trials(storage, "shared")
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(6))  # two commands share the budget, never one over
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--space", "bogus=1:2"], "unknown setting 'bogus'"),
        (["--space", "lr=0.01:0.001"], "empty range"),
        (["--storage", "postgresql://nobody@127.0.0.1:1/none"], "cannot open the Optuna storage"),
        (["--validation", "0"], "needs a validation split"),
        (["--jobs", "2"], "several workers need a journal file"),
    ],
)
def test_bad_search_input_fails_before_any_trial(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(["search", "exact", "--trials", "2", "--no-track", *args]) == 1
    assert message in capsys.readouterr().err
    if (tmp_path / "optuna.db").exists():
        assert optuna.get_all_study_names(f"sqlite:///{tmp_path / 'optuna.db'}") == []


def test_open_storage_refuses_a_bad_url():
    with pytest.raises(SearchError, match="cannot open the Optuna storage"):
        open_storage("notadb://x")


def test_an_interrupted_trial_resumes_from_its_checkpoint_when_the_search_runs_again(
    tmp_path, monkeypatch
):
    from dataclasses import replace

    from harness.experiments import search as search_module

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = _lr_search(
        tmp_path,
        "resume",
        trials=1,
        site=RunSite(max_steps=3),
        pruner="none",
        checkpoint_dir=str(tmp_path / "ckpt"),
        enqueue=[{"lr": 1e-3}],
    )
    real_run = search_module.run_variant

    def interrupted_after_epoch_1(*args, on_epoch_end=(), **kwargs):
        def stop(report):
            if report.epoch == 1:
                raise KeyboardInterrupt

        return real_run(*args, on_epoch_end=[*on_epoch_end, stop], **kwargs)

    monkeypatch.setattr(search_module, "run_variant", interrupted_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        run_search(spec, echo=lambda *a: None)
    monkeypatch.setattr(search_module, "run_variant", real_run)
    study = run_search(replace(spec, enqueue=[]), echo=lambda *a: None)

    first, retry = study.trials
    assert first.state == optuna.trial.TrialState.FAIL and first.user_attrs["interrupted"]
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.user_attrs["retry_of"] == 0
    assert retry.params == first.params
    assert sorted(retry.intermediate_values) == [2, 3]  # epoch 1 came from the checkpoint
    client = mlflow.MlflowClient(store)
    runs = client.search_runs(
        [client.get_experiment_by_name("resume").experiment_id], "tags.`m2h.role` = 'trial'"
    )
    (run,) = runs  # the retry continued the interrupted trial's MLflow run
    assert run.info.status == "FINISHED" and retry.user_attrs["mlflow_run_id"] == run.info.run_id
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")) == [
        1,
        2,
        3,
    ]
    straight = run_search(
        replace(spec, study="straight", checkpoint_dir=str(tmp_path / "s")), echo=lambda *a: None
    )
    assert straight.trials[0].value == retry.value


def test_a_fresh_study_tries_the_variants_own_settings_first_and_weighs_the_best_against_them(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    space = ["--space", "lr=5e-4:2e-3", "--space", "hidden=256,512"]
    args = ["search", "exact", "--trials", "2", "--storage", storage, "--no-track", *space]
    assert main([*args, *QUICK]) == 0
    out = capsys.readouterr().out
    first, second = _trials(storage, "exact-search")
    exact = get_variant("exact")
    assert first.params == {key: getattr(exact, key) for key in first.params}  # exact's own
    assert (first.params["lr"], first.params["hidden"]) == (1e-3, 512)
    assert first.user_attrs["own_settings"] and "own_settings" not in second.user_attrs
    assert "against the variant's own settings (trial 0" in out or "are the best" in out
    assert main([*args, "--trials", "3", *QUICK]) == 0  # a study that has trials: none enqueued
    assert sum("own_settings" in t.user_attrs for t in _trials(storage, "exact-search")) == 1


def test_the_space_is_shown_with_the_variants_own_values_and_an_empty_one_can_be_given(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert main(["search", "exact", "--show-space", "--space", "classifier_layers=1,3"]) == 0
    out = capsys.readouterr().out
    assert "lr in [0.0001, 0.003] (log)  [0.001]" in out
    assert "classifier_layers in {1, 3}  [1]" in out
    assert list(tmp_path.iterdir()) == []  # showing writes nothing
    register_variant("spaceless", get_variant("exact"), space={})
    assert main(["search", "spaceless", "--show-space"]) == 1
    assert "give one with --space" in capsys.readouterr().err
    assert main(["search", "spaceless", "--show-space", "--space", "alpha=0.1:1"]) == 0
    assert "alpha in [0.1, 1]  [1.0]" in capsys.readouterr().out
