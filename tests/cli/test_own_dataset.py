"""Issue 50's test for datasets: a dataset of generated arrays registered in one file outside
the package (tests/training/generated_dataset.py) goes through `m2h run` (tracked in MLflow, its
figures drawn at its own image size), an ablation, `m2h table` and `m2h compare`, with no data
root and no other file changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

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


RESEARCHER = (
    DATASET.read_text()
    + '''

@register_variant
def exact_blobs_bn():
    """The blobs M2 with dropout in the classifier alone: the researcher's own question."""
    return exact_blobs().replace(dropout=0.2, regularised="classifier")
'''
)
QUESTION = """max_steps = 3
description = "does dropout in the classifier alone help exact M2 on the blobs"
variants = ["exact-blobs-bn", "exact-blobs"]
reference = "exact-blobs"
seeds = [0, 1]
epochs = 2

[set]
validation = 200
"""


@pytest.mark.e2e
def test_a_researchers_question_goes_through_every_command_without_repeating_a_budget(tmp_path):
    """Issue 53's path: a variants file and an ablation file of one's own, then run, ablate,
    status, table, plot, compare, a search exported, and the export checked against its base
    over seeds, with no budget flag repeated and no file the harness writes edited."""
    (tmp_path / "my_dataset.py").write_text(RESEARCHER)
    (tmp_path / "ablations").mkdir()
    (tmp_path / "ablations" / "bn.toml").write_text(QUESTION)
    assert "record: " in _m2h(tmp_path, "run", "exact-blobs-bn", "--epochs", "1", "--no-track")
    _m2h(tmp_path, "ablate", "bn", "--no-track")
    assert _m2h(tmp_path, "status", "bn").strip().endswith("bn: 4 done")
    _m2h(tmp_path, "table", "bn")
    assert "m2h --variants my_dataset.py ablate bn`" in (tmp_path / "results" / "bn.md").read_text()
    assert "bn_final.png" in _m2h(tmp_path, "plot", "bn")
    compared = _m2h(tmp_path, "compare", "bn:exact-blobs-bn", "bn:exact-blobs")
    assert "paired over seeds 0 1" in compared
    search = ["search", "exact-blobs-bn", "--trials", "2", "--epochs", "1", "--max-steps", "3"]
    search += ["--space", "hidden=64", "--space", "z_dim=8"]  # its own sizes, for the blobs
    searched = _m2h(tmp_path, *search, "--validation", "200", "--no-track", "--export", "bn-tuned")
    assert "against the variant's own settings" in searched or "are the best" in searched
    (tmp_path / "ablations" / "tuned.toml").write_text(
        QUESTION.replace('"exact-blobs-bn", "exact-blobs"', '"bn-tuned", "exact-blobs-bn"').replace(
            'reference = "exact-blobs"', 'reference = "exact-blobs-bn"'
        )
    )
    _m2h(tmp_path, "ablate", "tuned", "--no-track")
    checked = _m2h(tmp_path, "compare", "tuned:bn-tuned", "tuned:exact-blobs-bn")
    assert "paired over seeds 0 1" in checked and "verdict: " in checked
