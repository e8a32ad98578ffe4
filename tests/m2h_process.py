"""`m2h` as a user runs it: a process of its own in a folder of its own, with a variants file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_m2h(folder: Path, variants: str, *args: str, env: dict[str, str] | None = None) -> str:
    """`m2h --variants VARIANTS ARGS...` run in `folder`; its output, or the test fails with it."""
    done = subprocess.run(
        [sys.executable, "-m", "harness", "--variants", variants, *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout
