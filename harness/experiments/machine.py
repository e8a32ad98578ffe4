"""How busy this machine is, and how many threads a run should take from it.

PyTorch starts one thread per core. On a machine where other processes already keep cores busy
that oversubscribes it, and a small M2 step then runs several times slower than on a quiet one.
The harness chooses its thread count deliberately instead: the usable cores less those the load
average says are taken, at least one.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load() -> float:
    """The one-minute load average (runnable processes), 0 where there is none."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def default_threads(jobs: int = 1) -> int:
    """Threads for each of `jobs` runs at once: the idle cores shared between them."""
    idle = usable_cores() - round(load())
    return max(1, idle // max(1, jobs))


def busy_note() -> str | None:
    """A line saying the machine is busy (so timings taken now mislead), or None."""
    taken, cores = load(), usable_cores()
    if taken < 0.5:
        return None
    return (
        f"the machine is busy (load {taken:.1f} on {cores} cores): timings and ratios taken now "
        "are not reliable; measure on a quiet machine"
    )


def threads_note(threads: int, jobs: int = 1) -> str | None:
    """A line saying that the runs take fewer threads than the machine's cores, why (the load
    average), and how to choose otherwise; None where they take them all."""
    cores = usable_cores()
    if threads * max(1, jobs) >= cores:
        return None
    plural = "s" * (threads > 1)
    return (
        f"each run takes {threads} thread{plural} of {cores} cores: the load average says "
        f"{round(load())} of them are busy (--threads N sets it)"
    )
