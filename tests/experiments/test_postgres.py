"""PostgreSQL as the shared store a cluster uses: Optuna studies with several workers on it, and
an MLflow tracking server backed by it, each against a real PostgreSQL server the tests start
(Debian's `postgresql`; CI installs it), with concurrent writers and nothing lost."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness.cli.main import main
from harness.tracking.server import free_port, start_server, stop_server, wait_for_server
from tests.experiments.test_ablation import TINY
from tests.experiments.test_trial_budget import hold_out

BINARIES = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
pytestmark = pytest.mark.skipif(
    not BINARIES or shutil.which("runuser") is None,
    reason="needs Debian's postgresql (CI installs it)",
)


def _as_postgres(*command: str) -> list[str]:
    """Run as the `postgres` user where we are root (PostgreSQL refuses to run as root)."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server on a free local port; yields a function that creates a
    database and returns its SQLAlchemy URL. Its folder is outside pytest's (which only root
    may enter), so that the `postgres` user can own it."""
    pytest.importorskip("psycopg")
    import psycopg

    root = Path(tempfile.mkdtemp(prefix="m2h-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data, port, bin_dir = root / "data", free_port(), BINARIES[-1]
    subprocess.run(
        _as_postgres(f"{bin_dir}/initdb", "-D", str(data), "-A", "trust", "-U", "postgres"),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    pg_ctl = _as_postgres(f"{bin_dir}/pg_ctl", "-D", str(data))
    subprocess.run(
        [*pg_ctl, "-o", options, "-l", f"{root}/log", "-w", "start"],
        check=True,
        capture_output=True,
    )
    server = f"postgresql://postgres@127.0.0.1:{port}"

    def database(name: str) -> str:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://postgres@127.0.0.1:{port}/{name}"

    yield database
    subprocess.run([*pg_ctl, "-m", "fast", "stop"], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


QUICK = ["--epochs", "1", "--max-steps", "2", "--validation", "2000", "--no-track"]


@pytest.mark.e2e
def test_a_search_with_two_workers_on_postgresql_loses_no_trial(postgres, capfd):
    import optuna

    storage = postgres("optuna_study")
    space = ["--space", "hidden=256", "--space", "z_dim=16", "--space", "alpha_schedule=constant"]
    args = ["search", "exact", "--trials", "6", "--jobs", "2", "--storage", storage, "--study", "s"]
    assert main([*args, *space, *QUICK]) == 0
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert len(trials) == 6 and sorted(t.number for t in trials) == list(range(6))
    assert all(t.state.is_finished() and t.state.name != "FAIL" for t in trials)
    lines = capfd.readouterr().out.splitlines()  # printed by the worker processes
    assert len([line for line in lines if line.startswith("trial ")]) == 6


def test_the_budget_lock_on_postgresql_holds_a_second_holder_out(postgres):
    hold_out(postgres("budget_lock"))


@pytest.mark.e2e
def test_an_mlflow_server_on_postgresql_takes_two_ablations_at_once(postgres, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    backend = postgres("mlflow_store")
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend]
    command += ["--artifacts-destination", str(tmp_path / "artifacts"), "--port", str(port)]
    server = start_server([*command, "--workers", "2"], stdout=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(uri, server, timeout=180)
        procs = []
        for name in ("first", "second"):
            path = tmp_path / f"{name}.toml"
            path.write_text(TINY)
            command = [sys.executable, "-m", "harness", "ablate", str(path), "--max-steps", "2"]
            command += ["--jobs", "2", "--tracking-uri", uri, "--out", str(tmp_path / name)]
            command += ["--checkpoint-dir", str(tmp_path / name / "ckpt")]
            procs.append(
                subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            )
        for proc in procs:
            _, err = proc.communicate(timeout=900)
            assert proc.returncode == 0, err[-2000:]
        client = mlflow.MlflowClient(uri)
        for name in ("first", "second"):
            runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
            children = [r for r in runs if r.data.tags.get("m2h.role") != "ablation"]
            assert len(children) == 4 and {r.info.status for r in children} == {"FINISHED"}
            for run in children:
                assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 1
    finally:
        stop_server(server)
