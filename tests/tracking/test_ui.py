"""The MLflow UI, opened in a real (headless) browser on what `m2h ui` links to."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from harness.cli.main import main
from harness.tracking.server import free_port, wait_for_server
from tests.runs.test_records import TWO_CELLS, write_runs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.e2e
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (CI installs it)")
def test_an_ablation_opens_on_its_runs_table_in_a_browser(tmp_path):
    pytest.importorskip("mlflow")
    ablation = tmp_path / "two.toml"
    ablation.write_text(TWO_CELLS)
    write_runs(ablation, tmp_path / "results")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert (
        main(["load", str(ablation), "--out", str(tmp_path / "results"), "--tracking-uri", store])
        == 0
    )
    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "harness", "ui", "--port", str(port), "--tracking-uri", store],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert "MLflow UI for" in ui.stdout.readline()
        name, _, link = ui.stdout.readline().strip().partition(": ")
        assert name == "two" and "workflowType=machine_learning" in link
        wait_for_server(f"http://127.0.0.1:{port}", ui)
        page = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--virtual-time-budget=30000",
                "--dump-dom",
                link,
            ],
            capture_output=True,
            text=True,
            timeout=180,
        ).stdout
    finally:
        ui.terminate()
        ui.wait(timeout=60)
    assert "two (ablation)" in page  # the parent run's row in the runs table
    assert "matching runs" in page  # the table, counting the parent and its child runs
    assert "one estimator and the control" in page  # the experiment's description
    assert "Detect Issues" not in page  # not the GenAI view
