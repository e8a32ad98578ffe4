"""Issue 50's test for datasets: a dataset of generated arrays registered in one file outside
the package (tests/training/generated_dataset.py) goes through `m2h run` (tracked in MLflow, its
figures drawn at its own image size), an ablation, `m2h table` and `m2h compare`, with no data
root and no other file changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from tests.m2h_process import run_m2h

ABLATION = """description = "exact against Gumbel on generated 8x8 images"
variants = ["exact-blobs", "gumbel-blobs"]
seeds = [0, 1]
epochs = 1

[set]
labels = 100
"""
BUDGET = ["--epochs", "1", "--max-steps", "3"]
DATASET = Path(__file__).parents[1] / "training" / "generated_dataset.py"


def _m2h(folder: Path, *args: str) -> str:
    return run_m2h(
        folder, "my_dataset.py", *args, env={"M2_DATA_ROOT": str(folder / "no-data-here")}
    )


def test_a_dataset_in_one_outside_file_runs_ablates_tables_and_compares(tmp_path):
    shutil.copy(DATASET, tmp_path / "my_dataset.py")
    (tmp_path / "ablations").mkdir()
    (tmp_path / "ablations" / "blobs.toml").write_text(ABLATION)
    ran = _m2h(tmp_path, "run", "exact-blobs", *BUDGET)
    assert "exact-blobs on blobs, 100 labels" in ran and "MLflow run " in ran
    out = _m2h(tmp_path, "ablate", "blobs", *BUDGET, "--no-track", "--jobs", "2")
    assert "1 skipped, 3 finished" in out
    _m2h(tmp_path, "table", "blobs", *BUDGET)
    table = pd.read_csv(tmp_path / "results" / "blobs.csv")
    assert set(table["variant"]) == {"exact-blobs", "gumbel-blobs"}
    assert set(table["seeds"]) == {2}
    compared = _m2h(tmp_path, "compare", "blobs:gumbel-blobs", "blobs:exact-blobs", *BUDGET)
    assert "paired over seeds 0 1" in compared and "verdict: " in compared
    assert not (tmp_path / "no-data-here").exists()


def test_a_budget_in_the_ablation_file_holds_for_every_command_and_its_provenance(tmp_path):
    """Issue 53: the step cap lives in the ablation file, so ablate, status, table and compare
    agree without repeating it, and the table's command reproduces it with the variants file
    and results folder it needs."""
    shutil.copy(DATASET, tmp_path / "my_dataset.py")
    (tmp_path / "ablations").mkdir()
    (tmp_path / "ablations" / "blobs.toml").write_text("max_steps = 3\n" + ABLATION)
    out_dir = ["--out", "mine"]
    _m2h(tmp_path, "ablate", "blobs", "--no-track", *out_dir)
    assert list((tmp_path / "mine" / "runs").glob("*-s1.json"))  # trained at the file's cap
    status = _m2h(tmp_path, "status", "blobs", *out_dir)
    assert status.strip().endswith("blobs: 4 done"), status
    _m2h(tmp_path, "table", "blobs", *out_dir)
    shown = (tmp_path / "mine" / "blobs.md").read_text()
    assert "- command: `m2h --variants my_dataset.py ablate blobs --out mine`" in shown
    compared = _m2h(tmp_path, "compare", "blobs:gumbel-blobs", "blobs:exact-blobs", *out_dir)
    assert "paired over seeds 0 1" in compared
