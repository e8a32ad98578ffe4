from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# compiled kernels of this test session alone: Inductor's shared cache (/tmp/torchinductor_USER)
# keys its kernels by code, not by the instruction set torch and oneDNN are limited to
# (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA), so a kernel built under one was reused under
# another and gave wrong values (a compiled softplus 18 off, a compiled loss NaN)
# (one per process: each pytest-xdist worker makes its own, not the one its parent made)
if os.environ.get("M2H_OWN_INDUCTOR_CACHE") or "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="m2h-inductor-")
    os.environ["M2H_OWN_INDUCTOR_CACHE"] = "1"
INDUCTOR_CACHE = os.environ["TORCHINDUCTOR_CACHE_DIR"]
# resolved now, from the folder pytest starts in: tests run in temporary folders of their own
DATA_ROOT = Path(os.environ.get("M2_DATA_ROOT") or REPO.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not (DATA_ROOT / "MNIST" / "raw").is_dir():
        pytest.fail(f"real MNIST expected under {DATA_ROOT} (set M2_DATA_ROOT)")
    return DATA_ROOT


@pytest.fixture(scope="session")
def mnist(data_root):
    from harness.training.data import load_splits

    return load_splits("mnist", data_root, "cpu", download=False)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path_factory):
    """Every test runs in a temporary folder of its own (a run's checkpoints, store and records
    land there, never in the repository), and sees the data root as an absolute path, so every
    m2h it starts finds the data wherever it runs; tests that need the files ask for
    `data_root` or `mnist`, the others run without them."""
    monkeypatch.setenv("M2_DATA_ROOT", str(DATA_ROOT.resolve()))
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(autouse=True)
def _registry_as_found():
    """Every test leaves the registries as it found them: variants (a test may register some,
    or load exported ones, or a researcher's file, which loads once per process), families,
    datasets and their names."""
    from harness.config import datasets, families, variants
    from harness.training import data, family

    kept = [
        variants._REGISTRY,
        variants._SPACES,
        variants._LOADED,
        variants._SOURCES,
        families.FAMILIES,
        datasets.DATASETS,
        family.REGISTERED,
        data.DATASETS,
    ]
    copies = [type(registry)(registry) for registry in kept]
    yield
    for registry, copy in zip(kept, copies, strict=True):
        registry.clear()
        registry.update(copy)


def _tree_state() -> set[str]:
    """The repository's changed, untracked and ignored paths, build caches left out."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout
    except OSError:  # no git (the GPU machine): nothing to compare
        return set()
    caches = ("__pycache__", ".pytest_cache", ".egg-info", ".ruff_cache", ".benchmarks", ".nox")
    return {line for line in out.splitlines() if not any(c in line for c in caches)}


def pytest_sessionstart(session):
    session.config.stash[_TREE] = _tree_state()


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if the tests left anything in the working tree (where every test has
    ended: not in a pytest-xdist worker, whose neighbour may still be running); remove the
    process's own compiled kernels."""
    if Path(INDUCTOR_CACHE).name.startswith("m2h-inductor-"):
        shutil.rmtree(INDUCTOR_CACHE, ignore_errors=True)
    if hasattr(session.config, "workerinput"):
        return
    left = _tree_state() - session.config.stash.get(_TREE, set())
    if left:
        print("\ntests left these in the working tree:\n  " + "\n  ".join(sorted(left)))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_TREE = pytest.StashKey[set]()


@pytest.fixture(scope="session")
def generated():
    """Generated MNIST-shaped splits with a validation split (no files needed)."""
    from harness.training.data import synthetic_splits

    return synthetic_splits(torch.device("cpu"), train=1200, test=200, validation=200)
