from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.cli import main

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def m2h(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def test_list_shows_every_variant_with_its_knobs(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header[:3] == ["name", "estimator", "y_term"] and "temperature" in header
    for name in [
        "tutorial-gumbel",
        "paper-exact",
        "exact",
        "gumbel-0.5",
        "gumbel-anneal",
        "gumbel-st",
        "supervised-only",
    ]:
        assert any(line.split()[0] == name for line in out.splitlines()[1:]), name


def test_show_prints_every_setting(capsys):
    assert main(["show", "paper-exact"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("paper-exact: Kingma et al. 2014")
    assert any(line.split() == ["activation", "softplus"] for line in out.splitlines())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "exat"], "unknown variant 'exat' (did you mean 'exact'?)"),
        (["run", "exact", "--set", "temperature=0"], "temperature must be > 0"),
        (["run", "exact", "--set", "bogus=1"], "unknown setting 'bogus'"),
        (["run", "exact", "--labels", "55"], "positive multiple of the 10 classes"),
        (["run", "exact", "--labels", "60000"], "but the training split holds 5923"),
        (
            ["run", "exact", "--data-root", "/nonexistent/m2", "--no-download"],
            "not under /nonexistent/m2/MNIST/raw",
        ),
    ],
)
def test_bad_input_is_one_clear_line_and_a_failure(capsys, args, message):
    assert main(args) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_core_runs_without_mlflow_or_optuna(tmp_path):
    code = (
        "import sys; sys.modules['mlflow'] = None; sys.modules['optuna'] = None\n"
        "from harness.cli import main\n"
        "raise SystemExit(main(['run', 'exact', '--epochs', '1', '--max-steps', '2',"
        " '--no-track']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "exact on mnist, 100 labels, seed 0: test accuracy" in done.stdout


@pytest.mark.e2e
def test_one_epoch_run_on_real_mnist_with_100_labels():
    """One real epoch of `exact` (468 steps) from the command line: at least 75% test accuracy."""
    done = m2h("run", "exact", "--labels", "100", "--epochs", "1", "--no-track")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("epoch   1/1") and "rows/s" in lines[0]
    accuracy = float(lines[-1].split("test accuracy ")[1].split("%")[0])
    assert accuracy >= 75.0, lines[-1]
