from __future__ import annotations

import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_nox_lists_every_session_with_its_description():
    done = subprocess.run(
        [sys.executable, "-m", "nox", "-l"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    listed = {
        line.split()[1]: line.split("->", 1)[1].strip()
        for line in done.stdout.splitlines()
        if "->" in line
    }
    assert set(listed) >= {"ablate", "table", "plot", "load", "ui", "tests", "quick", "lint"}
    assert all(d.endswith(".") for d in listed.values()), listed  # whole, not cut at a line
    # plain `nox` runs the lint and the quick tests, not the 15-minute suite
    selected = {line.split()[1] for line in done.stdout.splitlines() if line.startswith("* ")}
    assert selected == {"lint", "quick"}


def test_nox_table_passes_options_through_and_says_nothing_of_uv(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "nox", "-s", "table", "--", "quickstart", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0 and f"in {tmp_path}/runs" in output  # --out reached m2h
    assert "uv binary not found" not in output


def test_nox_ablate_without_a_name_is_a_clear_error():
    done = subprocess.run(
        [sys.executable, "-m", "nox", "-s", "ablate"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert done.returncode != 0
    assert "name an ablation" in done.stderr + done.stdout
