"""Claims: a run is trained by one process at a time, whichever ablation or command wants it.

Before training a run, a process claims it by holding an exclusive lock (`filelock`, an OS file
lock) on `<records>/.claims/<record name>.lock`. The name is the run's record name (its cell key
and seed), so two ablations that share a cell claim the same file, and a process that finds the
claim held moves on to its other runs and comes back to wait for it. The operating system
releases the lock when its process dies (killed, machine restarted), so a dead claim is simply
taken over and the run resumes from its checkpoint: a claim never outlives its process. Beside
the lock, `<record name>.json` says who holds it (pid, host, since), for messages and `m2h
status`. Lock files are left in place (deleting one would let two processes lock two files).
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

from harness.config.variants import Variant
from harness.files import write_atomically
from harness.runs.records import record_path

CLAIMS_FOLDER = ".claims"  # in a records folder


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    since: str

    def describe(self) -> str:
        where = "this machine" if self.host == platform.node() else self.host
        return f"pid {self.pid} on {where} since {self.since}"


def claim_path(records_dir: str | Path, variant: Variant, max_steps: int | None) -> Path:
    """The lock that claims `variant`'s run (its seed included)."""
    record = record_path(records_dir, variant, max_steps)
    return record.parent / CLAIMS_FOLDER / f"{record.stem}.lock"


class Claim:
    """The claim on one run: `acquire` it (now, or waiting for its holder), then `release`."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.lock = FileLock(path)
        self.info = path.with_suffix(".json")

    def acquire(self, wait: bool = False) -> bool:
        """Take the claim: at once (False when another process holds it), or with `wait`,
        when its holder releases it or dies."""
        try:
            self.lock.acquire(timeout=-1 if wait else 0)
        except Timeout:
            return False
        holder = Holder(os.getpid(), platform.node(), datetime.now(UTC).strftime("%H:%M:%SZ"))
        write_atomically(self.info, lambda tmp: tmp.write_text(json.dumps(asdict(holder))))
        return True

    def release(self) -> None:
        if self.lock.is_locked:
            self.info.unlink(missing_ok=True)
            self.lock.release()


def holder(path: Path) -> Holder | None:
    """Who holds the claim at `path` now; None when nobody does (the note a dead process left
    names no holder: its lock went with it)."""
    if not path.exists():
        return None
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            return Holder(**json.loads(path.with_suffix(".json").read_text()))
        except (OSError, ValueError, TypeError):  # claimed this instant, note not yet written
            return Holder(0, "unknown", "now")
    lock.release()
    return None
