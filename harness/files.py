"""Files and folders: where the data lives, a folder proven writable before anything is written,
atomic replacement that several writers can make at once, and the lock under which a SQLite store
(MLflow's, Optuna's) is created or migrated by one process at a time."""

from __future__ import annotations

import errno
import json
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock

DATA_ROOT_ENV = "M2_DATA_ROOT"  # where the datasets live, unless --data-root says


class OutputError(OSError):
    """A folder the harness must write to cannot be written."""


def ensure_writable(folder: Path, what: str) -> None:
    """Prove `folder` writable, or raise one clear error, creating nothing: the probe is a file
    of this call's own (removed when closed) in the folder, or where the folder does not exist
    yet in its nearest existing parent, so a command refused later leaves no empty folder
    behind (the folder is made by the first write into it), and processes checking one folder
    at once never remove each other's probes."""
    existing = Path(folder).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "a file is in the way", str(existing))
        with tempfile.TemporaryFile(dir=existing, prefix=".m2h-write-test-"):
            pass
    except OSError as err:
        raise OutputError(f"the {what} {folder} cannot be written: {err.strerror}") from None


def inside(folder: str | os.PathLike, name: str) -> Path:
    """`folder/name` for a name that is one plain component, so the path stays in `folder`;
    OutputError otherwise (names are checked where they are given, `config/names.py`: this
    holds for any other way a name could arrive)."""
    part = Path(name)
    if part.is_absolute() or len(part.parts) != 1 or part.name in ("", ".", ".."):
        raise OutputError(f"{name!r} would be written outside {folder}: refused")
    return Path(folder) / part


def write_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` for a temporary file beside `path` whose name is this writer's own
    (its pid and a random part), then rename it over `path`: two writers of one file never
    collide, and a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    write_all_atomically({path: write})
    return path


def write_all_atomically(writers: Mapping[Path, Callable[[Path], object]]) -> list[Path]:
    """Write each file of a set (`write(tmp)` to a temporary file of this writer's beside it)
    and only when every one is written, rename them all over their paths: a failure (a full
    disk, an error in any writer) removes the temporary files and leaves every earlier file of
    the set as it was."""
    temporary: dict[Path, Path] = {}
    try:
        for path, write in writers.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
            temporary[path] = tmp
            write(tmp)
        for path, tmp in temporary.items():
            os.replace(tmp, path)
    except BaseException:
        for tmp in temporary.values():
            tmp.unlink(missing_ok=True)
        raise
    return list(writers)


class FileFormatError(ValueError):
    """A file the harness wrote that no longer reads as what it was."""


def read_json(path: Path, what: str, remedy: str) -> Any:
    """The JSON in `path`, or FileFormatError in one line naming the file, the `what` it should
    be and the `remedy` (unreadable, not UTF-8, truncated or not JSON)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileFormatError(f"{path}: no such file (a {what} expected)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FileFormatError(f"{path} is not a readable {what} ({err}); {remedy}") from None


def sqlite_path(uri: str) -> Path | None:
    """The file behind a `sqlite:///PATH` URI (None for any other store)."""
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


@contextmanager
def store_creation_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock beside a SQLite store (`PATH.lock`) while it is created or
    migrated: processes starting together on a fresh file would race on its schema ("table
    studies already exists"). Any other store needs none."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_name(path.name + ".lock")):
        yield
