"""Worker processes for ablations and searches: a pool started with `spawn` (a forked CUDA or
MLflow client state is not safe to share); on a machine with several GPUs, each worker gets one
of its own."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from typing import Any

from harness.tracking.tracker import RunInterrupted

_busy = False  # in a worker: whether it is running a job now


def pin_gpu(free: Any) -> None:
    """See only the GPU index taken from the queue `free` (before anything in the worker
    touches CUDA)."""
    os.environ["CUDA_VISIBLE_DEVICES"] = str(free.get())


def start_worker(free: Any = None) -> None:
    """A worker's initializer. A terminal's Ctrl-C goes to the whole process group: the worker
    leaves it to the parent, which stops its workers with SIGTERM once (`process_pool`); a SIGTERM
    interrupts the job running (its run ends KILLED, its last epoch checkpointed) and is ignored
    between jobs (the pool's shutdown ends the worker). With `free`, pin one GPU."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _interrupt_job)
    if free is not None:
        pin_gpu(free)


def _interrupt_job(signum: int, frame: Any) -> None:
    if _busy:
        raise RunInterrupted(f"signal {signum}")


def _run_busy(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    global _busy
    _busy = True
    try:
        return fn(*args, **kwargs)
    finally:
        _busy = False


class WorkerPool(ProcessPoolExecutor):
    """A process pool whose workers know when they are running a job (`start_worker`)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return super().submit(_run_busy, fn, *args, **kwargs)


@contextmanager
def process_pool(workers: int, gpus: Sequence[int] = ()) -> Iterator[WorkerPool]:
    """A pool of `workers` fresh Python processes; with `gpus` (at least one per worker), each
    worker is pinned to one of them. When the block leaves by an exception (an interrupt, a
    SIGTERM turned into one, a generator closed), the jobs not started are cancelled and each
    worker's running job is interrupted, then the pool waits for the workers to end."""
    context = get_context("spawn")
    if gpus and len(gpus) < workers:
        raise ValueError(f"{workers} workers need as many GPUs, this machine has {len(gpus)}")
    free = None
    if gpus:
        free = context.Queue()
        for gpu in gpus[:workers]:
            free.put(gpu)
    others = set(multiprocessing.active_children())  # a Manager, say: not this pool's
    with WorkerPool(
        workers, mp_context=context, initializer=start_worker, initargs=(free,)
    ) as pool:
        try:
            yield pool
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # (it no longer waits after this)
            workers_left = set(multiprocessing.active_children()) - others
            for worker in workers_left:
                if worker.pid is not None:
                    os.kill(worker.pid, signal.SIGTERM)
            for worker in workers_left:  # each ends its run (KILLED, checkpointed), then exits
                worker.join()
            raise


def visible_gpus(device: str | None) -> list[int]:
    """The GPUs to share between workers: all of this machine's when the runs go to CUDA and
    there are several, else none (the workers share the device as it is)."""
    if device not in (None, "auto", "cuda"):
        return []
    import torch

    count = torch.cuda.device_count()
    return list(range(count)) if count > 1 else []
