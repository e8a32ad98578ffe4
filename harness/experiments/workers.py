"""Worker processes for ablations and searches: a pool started with `spawn` (a forked CUDA or
MLflow client state is not safe to share); on a machine with several GPUs, each worker gets one
of its own."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any


def pin_gpu(free: Any) -> None:
    """A worker's initializer: take one GPU index from the queue `free` and see only that GPU
    (before anything in the worker touches CUDA)."""
    os.environ["CUDA_VISIBLE_DEVICES"] = str(free.get())


def process_pool(workers: int, gpus: Sequence[int] = ()) -> ProcessPoolExecutor:
    """A pool of `workers` fresh Python processes; with `gpus` (at least one per worker), each
    worker is pinned to one of them."""
    context = get_context("spawn")
    if not gpus:
        return ProcessPoolExecutor(workers, mp_context=context)
    if len(gpus) < workers:
        raise ValueError(f"{workers} workers need as many GPUs, this machine has {len(gpus)}")
    free = context.Queue()
    for gpu in gpus[:workers]:
        free.put(gpu)
    return ProcessPoolExecutor(workers, mp_context=context, initializer=pin_gpu, initargs=(free,))


def visible_gpus(device: str | None) -> list[int]:
    """The GPUs to share between workers: all of this machine's when the runs go to CUDA and
    there are several, else none (the workers share the device as it is)."""
    if device not in (None, "auto", "cuda"):
        return []
    import torch

    count = torch.cuda.device_count()
    return list(range(count)) if count > 1 else []
