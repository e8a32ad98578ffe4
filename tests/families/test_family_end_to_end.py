"""Issue 50's test: a new model family in one file outside the package (tiny_family.py: softmax
regression) goes through `m2h run`, an ablation, `m2h table` and `m2h compare` with no other
file changed."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.m2h_process import run_m2h

ABLATION = """description = "softmax regression, a family of its own, against supervised-only"
variants = ["softmax-regression"]
controls = ["supervised-only"]
seeds = [0, 1]
epochs = 1

[set]
labels = 100
"""
BUDGET = ["--epochs", "1", "--max-steps", "3"]


def _m2h(folder: Path, *args: str) -> str:
    return run_m2h(folder, "my_family.py", *args)


@pytest.mark.e2e
def test_a_family_in_one_outside_file_runs_ablates_tables_and_compares(tmp_path, data_root):
    shutil.copy(Path(__file__).with_name("tiny_family.py"), tmp_path / "my_family.py")
    (tmp_path / "ablations").mkdir()
    (tmp_path / "ablations" / "tiny.toml").write_text(ABLATION)
    shown = _m2h(tmp_path, "show", "softmax-regression")
    assert re.search(r"^\s+family\s+softmax-regression$", shown, re.M)
    assert "record: " in _m2h(tmp_path, "run", "softmax-regression", *BUDGET, "--no-track")
    out = _m2h(tmp_path, "ablate", "tiny", *BUDGET, "--no-track", "--jobs", "2")
    assert "1 skipped, 3 finished" in out  # the run above is reused, not trained again
    _m2h(tmp_path, "table", "tiny", *BUDGET)
    table = pd.read_csv(tmp_path / "results" / "tiny.csv")
    assert set(table["variant"]) == {"softmax-regression", "supervised-only"}
    assert set(table["seeds"]) == {2}
    compared = _m2h(tmp_path, "compare", "tiny:softmax-regression", "tiny:supervised-only", *BUDGET)
    assert "paired over seeds 0 1" in compared and "verdict: " in compared
