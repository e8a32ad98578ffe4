from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("M2_DATA_ROOT") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not (DATA_ROOT / "MNIST" / "raw").is_dir():
        pytest.fail(f"real MNIST expected under {DATA_ROOT} (set M2_DATA_ROOT)")
    return DATA_ROOT


@pytest.fixture(scope="session")
def mnist(data_root):
    from harness.data import load_splits

    return load_splits("mnist", data_root, "cpu", download=False)


@pytest.fixture(autouse=True)
def _data_root_env(monkeypatch, data_root):
    monkeypatch.setenv("M2_DATA_ROOT", str(data_root))
