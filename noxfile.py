"""nox sessions for m2-harness. `nox -l` lists them; plain `nox` runs `lint` and `quick` (the
tests without the end-to-end runs, a few minutes); `nox -s ablate -- estimator --seeds 0 1`.

Sessions run in the environment nox itself runs in (`pip install -e '.[dev]'` first): the CUDA
torch wheels are several GB, too heavy to install again per session.
"""

import logging

import nox
from nox.logger import logger

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "quick"]


class _NoUvNote(logging.Filter):
    """nox looks for uv before every session, and says it did not find it; these sessions
    create no environment, so uv has nothing to do here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "uv binary not found."


logger.addFilter(_NoUvNote())


def _names_and_options(posargs: list[str], default: str) -> tuple[list[str], list[str]]:
    """`NAME [NAME ...] [--option ...]`: the ablations named (default: `default`) and the
    options m2h gets for each."""
    cut = next((i for i, a in enumerate(posargs) if a.startswith("-")), len(posargs))
    return posargs[:cut] or [default], posargs[cut:]


@nox.session
def ablate(session: nox.Session) -> None:
    """Run a named ablation: nox -s ablate -- NAME [--seeds ...] [--epochs E] [--max-steps K]."""
    if not session.posargs:
        session.error("name an ablation: nox -s ablate -- estimator")
    session.run("m2h", "ablate", *session.posargs)


@nox.session
def table(session: nox.Session) -> None:
    """Tables: nox -s table -- NAME [NAME ...] [--out DIR] [--epochs E] (default: labels)."""
    names, options = _names_and_options(session.posargs, "labels")
    for name in names:
        session.run("m2h", "table", name, *options)


@nox.session
def plot(session: nox.Session) -> None:
    """Plots: nox -s plot -- NAME [NAME ...] [--out DIR] [--epochs E] (default: labels)."""
    names, options = _names_and_options(session.posargs, "labels")
    for name in names:
        session.run("m2h", "plot", name, *options)


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
    """The whole test suite, e2e checks on $M2_DATA_ROOT included, in two pytest workers."""
    session.run("python", "-m", "pytest", "-n", "2", "--dist", "loadfile", *session.posargs)


@nox.session
def quick(session: nox.Session) -> None:
    """The tests without the end-to-end runs (a few minutes): pytest -m "not e2e"."""
    session.run("python", "-m", "pytest", "-m", "not e2e", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, the layers' import contracts (lint-imports) and mypy."""
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
