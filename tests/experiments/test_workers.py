from __future__ import annotations

import os

import pytest

from harness.experiments.workers import process_pool


def _visible(barrier) -> str:
    barrier.wait(timeout=120)  # both workers at once: each answers for itself
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")


def test_each_worker_sees_a_gpu_of_its_own():
    from multiprocessing import get_context

    with get_context("spawn").Manager() as manager:
        barrier = manager.Barrier(2)
        with process_pool(2, gpus=[3, 5]) as pool:
            seen = sorted(f.result() for f in [pool.submit(_visible, barrier) for _ in range(2)])
    assert seen == ["3", "5"]


def test_too_few_gpus_for_the_workers_is_a_clear_error():
    with pytest.raises(ValueError, match="2 workers need as many GPUs"):
        process_pool(2, gpus=[0])
