"""Worker processes for ablations and searches: a pool started with `spawn` (a forked CUDA or
MLflow client state is not safe to share)."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of `workers` fresh Python processes."""
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
