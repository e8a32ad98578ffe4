from __future__ import annotations

import os
import time

import pytest

from harness.experiments.workers import process_pool
from harness.tracking.tracker import RunInterrupted


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
    with pytest.raises(ValueError, match="2 workers need as many GPUs"), process_pool(2, gpus=[0]):
        pass


def _train_until_interrupted(started) -> str:
    try:
        started.set()
        while True:  # a job that would never end on its own
            time.sleep(0.05)
    except RunInterrupted as stop:
        return f"interrupted by {stop}"


def test_an_interrupt_stops_the_running_jobs():
    """SIGTERM to an ablation's parent (a KeyboardInterrupt there) must not leave the pool
    waiting for workers that train on: each running job is interrupted, once, and the pool ends."""
    from multiprocessing import get_context

    with get_context("spawn").Manager() as manager:
        started = [manager.Event() for _ in range(2)]
        futures = []
        begun = time.monotonic()
        with pytest.raises(KeyboardInterrupt), process_pool(2) as pool:
            futures = [pool.submit(_train_until_interrupted, event) for event in started]
            assert all(event.wait(120) for event in started)
            raise KeyboardInterrupt
        assert time.monotonic() - begun < 120
        assert manager.Event() is not None  # the Manager, a process too, was not signalled
    assert [f.result() for f in futures] == ["interrupted by signal 15"] * 2
