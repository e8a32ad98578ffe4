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
    assert set(listed) >= {"ablate", "table", "plot", "load", "ui", "tests", "lint", "bench"}
    assert all(listed.values())


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
