"""Ablations through Slurm (submitit), against a real single-node cluster that
tests/experiments/slurm_cluster.sh configures and starts (Debian's slurm-wlm and munge; CI
installs them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from harness.cli.main import main
from harness.config.ablations import load_ablation
from harness.experiments.ablate import run_states
from harness.experiments.launchers import SlurmOptions, read_ledger

SCRIPT = Path(__file__).with_name("slurm_cluster.sh")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("slurmctld") is None or os.geteuid() != 0,
        reason="needs Debian's slurm-wlm and munge, as root (CI installs them)",
    ),
]

TWO_RUNS = """
description = "exact and the control, one seed, long enough to be requeued mid-run"
variants = ["exact"]
controls = ["supervised-only"]
seeds = [0]
epochs = 4

[set]
labels = 100
"""
COMMON = ["--max-steps", "40", "--threads", "1", "--no-track"]


@pytest.fixture(scope="module")
def slurm_cluster():
    pytest.importorskip("submitit")
    folder = Path(tempfile.mkdtemp(prefix="m2h-slurm-"))
    started = subprocess.run(
        ["bash", str(SCRIPT), "start", str(folder)], capture_output=True, text=True, timeout=120
    )
    assert started.returncode == 0, started.stderr
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(folder / "slurm.conf")
    yield folder
    subprocess.run(["bash", str(SCRIPT), "stop", str(folder)], capture_output=True)
    if before is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = before
    shutil.rmtree(folder, ignore_errors=True)


def _until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_slurm_refuses_a_store_other_nodes_cannot_write(tmp_path, capsys, slurm_cluster):
    path = tmp_path / "two.toml"
    path.write_text(TWO_RUNS)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["ablate", str(path), "--launcher", "slurm", "--tracking-uri", store]) == 1
    assert "cannot write the local store" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "submitit").exists()


def test_an_ablation_through_slurm_survives_a_requeue_and_matches_the_local_table(
    slurm_cluster, tmp_path, capsys
):
    path = tmp_path / "two.toml"
    path.write_text(TWO_RUNS)
    ablation = load_ablation(str(path))
    slurm = ["--launcher", "slurm", "--slurm-folder", str(tmp_path / "submitit")]
    remote = [*slurm, "--out", str(tmp_path / "slurm"), "--checkpoint-dir", str(tmp_path / "c1")]
    assert main(["ablate", str(path), *remote, *COMMON]) == 0
    assert "2 queued" in capsys.readouterr().out
    assert main(["ablate", str(path), *remote, *COMMON]) == 0  # nothing sent twice
    assert "2 queued already" in capsys.readouterr().out
    options = SlurmOptions(folder=tmp_path / "submitit")
    ledger = read_ledger(options, "two")
    assert len(ledger) == 2 and len({e["job"] for e in ledger.values()}) == 1  # one array
    exact = next(e for e in ledger.values() if e["cell"] == "exact")

    # cut the exact run off mid-run as Slurm does before a preemption or a time limit
    checkpoints = tmp_path / "c1" / "ablations"  # every ablation's runs share one folder

    def first_epoch_or_failure() -> bool:
        states = run_states(ablation, None, None, 40, tmp_path / "slurm", options)
        assert "failed" not in [s.status for s in states], states
        return any(checkpoints.glob("exact-*.pt"))

    _until(first_epoch_or_failure, 300, "the exact run's first epoch")
    subprocess.run(["scancel", "--signal=USR2", exact["array_job"]], check=True)

    def states() -> list[str]:
        return [s.status for s in run_states(ablation, None, None, 40, tmp_path / "slurm", options)]

    _until(lambda: states() == ["done", "done"], 600, "both runs to finish")
    shown = subprocess.run(
        ["scontrol", "show", "job", exact["array_job"]], capture_output=True, text=True
    ).stdout
    assert "Restarts=1" in shown  # requeued once, then resumed from its checkpoint
    assert (
        main(["status", str(path), *slurm, "--out", str(tmp_path / "slurm"), "--max-steps", "40"])
        == 0
    )
    assert "two: 2 done" in capsys.readouterr().out

    local = ["--out", str(tmp_path / "local"), "--checkpoint-dir", str(tmp_path / "c2")]
    assert main(["ablate", str(path), *local, *COMMON]) == 0
    tables = []
    for folder in ("slurm", "local"):
        assert main(["table", str(path), "--out", str(tmp_path / folder), "--max-steps", "40"]) == 0
        tables.append(pd.read_csv(tmp_path / folder / "two.csv"))
    assert tables[0]["test_error_mean"].tolist() == tables[1]["test_error_mean"].tolist()
