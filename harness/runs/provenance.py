"""Where a run was made: the harness's git commit, the machine and device, the library versions."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from harness.training.numerics import NUMERICS_VERSION

REPO = Path(__file__).resolve().parents[2]


COMMIT_ENV = "M2H_GIT_COMMIT"  # the commit of a copy of the tree that is not a checkout


@functools.cache
def git_commit() -> tuple[str, bool]:
    """(commit, dirty) of the harness's checkout when this process first asks, kept for the
    process's life: the code it runs is what it loaded then, so every later run of a long-lived
    process (an ablation's runs in one process, a search's trials) names that commit, not one
    checked out while it ran. $M2H_GIT_COMMIT where the tree travelled without its repository
    (the GPU machine gets a copy of a committed, clean tree); else ("unknown", False)."""
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV], False

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def _cpuinfo(field: str) -> str | None:
    """The first value of `field` in Linux's /proc/cpuinfo, spaces collapsed; None elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return " ".join(line.partition(":")[2].split())
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The processor's model name (Linux), else its architecture."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_vendor() -> str:
    """The processor's vendor (Linux's vendor_id: GenuineIntel, AuthenticAMD), else unknown."""
    return _cpuinfo("vendor_id") or "unknown"


def environment_params(device: torch.device) -> dict[str, Any]:
    """The commit, versions and device a run is made with, as MLflow params and run records
    name them."""
    commit, dirty = git_commit()
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"cpu ({cpu_model()}, {os.cpu_count()} cores)"
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "torch_version": torch.__version__,
        "cuda_version": str(torch.version.cuda),
        "device": str(device),
        "device_name": device_name,
        # what decides the floating point beside the code: the numerics version, the CPU
        # instruction set torch's kernels use, and the vendor (the BLAS picks its own kernels)
        "numerics_version": NUMERICS_VERSION,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_vendor": cpu_vendor(),
    }


def segment_provenance(environment: dict[str, Any]) -> dict[str, Any]:
    """What a stretch of a run's training names of where it ran: the commit (and whether the
    tree had uncommitted changes), the host and the device."""
    keys = ("git_commit", "git_dirty", "device_name")
    return {**{k: environment[k] for k in keys}, "host": platform.node()}
