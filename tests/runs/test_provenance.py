"""Provenance: the commit a process names is the one whose code it loaded."""

from __future__ import annotations

import subprocess

import pytest
import torch

from harness.runs import provenance


def _git(repo, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(command, cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    _git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    _git(tmp_path, "add", "code.py")
    _git(tmp_path, "commit", "-qm", "first")
    monkeypatch.setattr(provenance, "REPO", tmp_path)
    monkeypatch.delenv(provenance.COMMIT_ENV, raising=False)
    provenance.git_commit.cache_clear()
    yield tmp_path
    provenance.git_commit.cache_clear()  # the next test asks of the harness's own checkout


def test_a_process_names_the_commit_it_started_with_after_a_pull(checkout):
    first = _git(checkout, "rev-parse", "HEAD").strip()
    assert provenance.git_commit() == (first, False)
    (checkout / "code.py").write_text("x = 2\n")
    _git(checkout, "commit", "-qam", "second: pulled while the process runs")
    assert provenance.git_commit() == (first, False)  # its code is still the first commit's
    assert provenance.environment_params(torch.device("cpu"))["git_commit"] == first
    provenance.git_commit.cache_clear()  # a new process
    assert provenance.git_commit()[0] == _git(checkout, "rev-parse", "HEAD").strip() != first
