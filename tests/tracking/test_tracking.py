from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from harness.cli.main import main
from harness.config.variants import create_variant
from harness.runs import runner
from harness.tracking.server import local_server
from harness.tracking.tracker import Tracker, TrackingError

mlflow = pytest.importorskip("mlflow")


@pytest.fixture
def store(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _runs(uri, experiment):
    client = mlflow.MlflowClient(uri)
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def test_a_run_is_logged_and_found_again(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [
        "run",
        "exact",
        "--epochs",
        "2",
        "--max-steps",
        "3",
        "--tracking-uri",
        store,
        "--experiment",
        "found-again",
        "--set",
        "temperature=0.3",
    ]
    assert main(args) == 0
    mlflow.set_tracking_uri(store)
    frame = mlflow.search_runs(experiment_names=["found-again"])
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row["status"] == "FINISHED"
    assert row["params.estimator"] == "exact" and row["params.temperature"] == "0.3"
    assert row["params.labels"] == "100" and row["params.max_steps"] == "3"
    assert len(row["tags.git_commit"]) in (40, len("unknown"))
    assert row["tags.torch_version"] and row["tags.device"] == "cpu"
    assert row["tags.variant"] == "exact" and row["tags.seed"] == "0"
    assert row["tags.dataset"] == "mnist" and row["tags.labels"] == "100"
    assert 0 < row["metrics.test_accuracy"] <= 1
    assert row["metrics.test_error"] == pytest.approx(100 * (1 - row["metrics.test_accuracy"]))
    client = mlflow.MlflowClient(store)
    history = client.get_metric_history(row["run_id"], "test_accuracy")
    assert sorted(m.step for m in history) == [1, 2]
    for metric in [
        "train_loss",
        "train_labelled",
        "train_unlabelled",
        "train_classification",
        "samples_per_sec",
        "epoch_seconds",
    ]:
        assert len(client.get_metric_history(row["run_id"], metric)) == 2, metric
    artifacts = {a.path for a in client.list_artifacts(row["run_id"])}
    assert {"confusion_matrix.png", "analogies.png", "config.json"} <= artifacts
    assert "checkpoint" not in artifacts  # named by a tag, not stored a second time
    assert Path(row["tags.checkpoint"]).exists()
    experiment = client.get_experiment_by_name("found-again")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # runs view
    config = mlflow.artifacts.load_dict(f"runs:/{row['run_id']}/config.json")
    assert config["temperature"] == 0.3 and config["estimator"] == "exact"
    png = client.download_artifacts(row["run_id"], "confusion_matrix.png", str(tmp_path))
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_store_that_cannot_be_opened_fails_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    uri = f"sqlite:///{blocker / 'mlflow.db'}"
    with pytest.raises(TrackingError, match="cannot create the tracking store's folder"):
        Tracker(uri, "x")
    assert main(["run", "exact", "--epochs", "1", "--tracking-uri", uri]) == 1
    assert "tracking store" in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()  # nothing trained, nothing written


def test_interrupted_run_is_killed_then_resumed_into_the_same_run(store, tmp_path, mnist):
    tracker = Tracker(store, "interrupt")
    variant = create_variant("exact", {"epochs": 3})

    def interrupt_after_first_epoch(report):
        if report.epoch == 1:
            raise KeyboardInterrupt

    options = runner.RunOptions(
        site=runner.RunSite(max_steps=3),
        tracker=tracker,
        checkpoint_dir=tmp_path / "ckpt",
        progress=False,
    )
    with pytest.raises(KeyboardInterrupt):
        runner.run_variant(variant, options, on_epoch_end=[interrupt_after_first_epoch])
    resuming = replace(options, resume=True)
    (run,) = _runs(store, "interrupt")
    assert run.info.status == "KILLED"
    result = runner.run_variant(variant, resuming)
    assert result.run_id == run.info.run_id
    assert tracker.run_status(result.run_id) == "FINISHED"
    steps = [m.step for m in tracker.client.get_metric_history(result.run_id, "test_accuracy")]
    assert sorted(steps) == [1, 2, 3]
    longer = runner.run_variant(variant.replace(epochs=4), resuming)
    assert longer.run_id == result.run_id and longer.final.epoch == 4
    assert tracker.client.get_run(result.run_id).data.tags["epochs"] == "4"
    straight = runner.run_variant(
        variant,
        runner.RunOptions(site=runner.RunSite(max_steps=3), checkpoint_dir=None, progress=False),
    )
    assert straight.final.losses == result.final.losses


def test_stacked_seeds_are_each_their_own_run(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["--max-steps", "2", "--tracking-uri", store, "--experiment", "stacked"]
    assert main(["run", "exact", "--seeds", "3", "5", "--epochs", "1", *common]) == 0
    runs = {run.data.tags["seed"]: run for run in _runs(store, "stacked")}
    assert set(runs) == {"3", "5"}
    client = mlflow.MlflowClient(store)
    for seed, run in runs.items():
        assert run.info.status == "FINISHED" and run.info.run_name == f"exact seed {seed}"
        assert run.data.params["seed"] == seed and run.data.tags["stacked_seeds"] == "3,5"
        assert 0 < run.data.metrics["test_accuracy"] <= 1
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"confusion_matrix.png", "analogies.png", "config.json"} <= artifacts
    assert runs["3"].data.metrics["train_loss"] != runs["5"].data.metrics["train_loss"]

    assert main(["run", "exact", "--seeds", "3", "5", "--epochs", "2", "--resume", *common]) == 0
    again = {run.data.tags["seed"]: run for run in _runs(store, "stacked")}
    assert {s: r.info.run_id for s, r in again.items()} == {
        s: r.info.run_id for s, r in runs.items()
    }  # continued into the same runs
    for run in again.values():
        steps = client.get_metric_history(run.info.run_id, "test_accuracy")
        assert sorted(m.step for m in steps) == [1, 2]


def test_a_stack_that_only_partly_has_checkpoints_is_refused(store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    common = ["--max-steps", "2", "--epochs", "1", "--tracking-uri", store]
    assert main(["run", "exact", "--seed", "3", *common]) == 0
    assert main(["run", "exact", "--seeds", "3", "5", "--resume", *common]) == 1
    assert "seed 3 of this run has finished" in capsys.readouterr().err  # its record is there
    assert main(["run", "exact", "--seeds", "3", "5", "--resume", "--again", *common]) == 1
    assert "seeds 3 have checkpoints and seeds 5 do not" in capsys.readouterr().err
    assert main(["run", "exact", "--seed", "3", "--seeds", "3", "5", *common]) == 1
    assert "give --seed or --seeds, not both" in capsys.readouterr().err


def test_a_non_finite_loss_marks_the_run_failed_with_the_reason(store, tmp_path, monkeypatch):
    from dataclasses import replace

    import torch

    from harness.training import family as family_module
    from harness.training.trainer import NonFiniteLossError

    m2 = family_module.get_family("m2")
    real_loss = m2.objective

    def nan_loss(*args, **kwargs):
        terms = real_loss(*args, **kwargs)
        terms["unlabelled"] = terms["unlabelled"] * torch.tensor(float("nan"))
        return terms

    monkeypatch.setitem(family_module.REGISTERED, "m2", replace(m2, objective=nan_loss))
    tracker = Tracker(store, "nan")
    with pytest.raises(NonFiniteLossError):
        runner.run_variant(
            create_variant("exact", {"epochs": 1}),
            runner.RunOptions(
                site=runner.RunSite(max_steps=2),
                tracker=tracker,
                checkpoint_dir=tmp_path,
                progress=False,
            ),
        )
    (run,) = _runs(store, "nan")
    assert run.info.status == "FAILED"
    assert "'unlabelled' is nan at step 0" in run.data.tags["failure"]


@pytest.mark.e2e
def test_a_tracking_server_on_localhost_receives_a_run_over_http(tmp_path):
    store = f"sqlite:///{tmp_path / 'server.db'}"
    with local_server(store) as uri:
        assert uri.startswith("http://127.0.0.1:")
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "harness",
                "run",
                "gumbel-st",
                "--epochs",
                "1",
                "--max-steps",
                "2",
                "--tracking-uri",
                uri,
                "--experiment",
                "over-http",
                "--checkpoint-dir",
                str(tmp_path / "ckpt"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        (run,) = _runs(uri, "over-http")
        assert run.info.status == "FINISHED" and run.data.params["estimator"] == "gumbel-st"
        assert "test_accuracy" in run.data.metrics
    (stored,) = _runs(store, "over-http")  # the server wrote into the SQLite store
    assert stored.info.run_id == run.info.run_id


def test_a_run_pointer_follows_the_store_not_the_server_address(store, tmp_path):
    run_id = Tracker(store, "pointer").create_run("r")
    checkpoint = tmp_path / "cell.pt"
    worker = Tracker(store, "pointer", store=store)  # as behind a local server (--jobs)
    worker.uri = "http://127.0.0.1:40001"
    worker.remember_checkpoint(checkpoint, run_id)
    worker.uri = "http://127.0.0.1:40002"  # the next launch's server has another port
    assert worker.run_of_checkpoint(checkpoint) == run_id
    assert Tracker(f"sqlite:///{tmp_path / 'other.db'}").run_of_checkpoint(checkpoint) is None


@pytest.mark.parametrize("text", ['{"tracking_uri": "sqlite:///x.db", "run_', "[1, 2]", "\xff"])
def test_a_damaged_run_pointer_is_one_line_naming_it(store, tmp_path, text):
    """Issue 54: a truncated `*.run.json` gave a bare JSON error."""
    from harness.files import FileFormatError

    checkpoint = tmp_path / "cell.pt"
    checkpoint.with_suffix(".run.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(FileFormatError) as err:
        Tracker(store, "pointer").run_of_checkpoint(checkpoint)
    assert "\n" not in str(err.value) and "cell.run.json" in str(err.value)
    assert "delete it" in str(err.value)


def test_a_local_server_starts_lean_unless_the_user_asks_otherwise(monkeypatch):
    """One worker for a browser, two for an ablation's writers (not MLflow's 4), and MLflow 3's
    job execution off, which nothing here uses: fewer processes to start before the first
    answer. A user's own MLFLOW_SERVER_ENABLE_JOB_EXECUTION stands."""
    import subprocess

    from harness.tracking import server

    ui = server.server_command("sqlite:///m.db", ui_only=True)
    assert ui[ui.index("--workers") + 1] == "1"
    seen = {}
    monkeypatch.setattr(subprocess, "Popen", lambda command, **kw: seen.update(kw))
    monkeypatch.delenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", raising=False)
    server.start_server(ui)
    assert seen["env"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "true")
    server.start_server(ui)
    assert seen["env"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"
