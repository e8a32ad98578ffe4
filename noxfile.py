"""nox sessions for m2-harness. `nox -l` lists them; `nox -s ablate -- estimator --seeds 0 1`.

Sessions run in the environment nox itself runs in (`pip install -e '.[dev]'` first): the CUDA
torch wheels are several GB, too heavy to install again per session.
"""

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "tests"]


@nox.session
def ablate(session: nox.Session) -> None:
    """Run a named ablation: nox -s ablate -- NAME [--seeds ...] [--epochs E] [--max-steps K]."""
    if not session.posargs:
        session.error("name an ablation: nox -s ablate -- estimator")
    session.run("m2h", "ablate", *session.posargs)


@nox.session
def table(session: nox.Session) -> None:
    """Write results/NAME.md and .csv from the run records of each named ablation (default:
    labels)."""
    for name in session.posargs or ["labels"]:
        session.run("m2h", "table", name)


@nox.session
def plot(session: nox.Session) -> None:
    """Draw results/NAME_*.png from the run records of each named ablation (default: labels)."""
    for name in session.posargs or ["labels"]:
        session.run("m2h", "plot", name)


@nox.session
def load(session: nox.Session) -> None:
    """Load the named ablations' run records into the MLflow store (default: labels)."""
    for name in session.posargs or ["labels"]:
        session.run("m2h", "load", name)


@nox.session
def ui(session: nox.Session) -> None:
    """Start the MLflow UI on localhost against the harness's store."""
    session.run("m2h", "ui", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (the e2e checks included) against $M2_DATA_ROOT."""
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, the layers' import contracts (lint-imports), mypy."""
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """The pytest-benchmark speed suite in benchmarks/ (CPU, and CUDA where present)."""
    session.run(
        "python",
        "-m",
        "pytest",
        "benchmarks",
        "--benchmark-only",
        "--benchmark-autosave",
        *session.posargs,
    )
