"""Atomic checkpoints: model, optimiser, random-generator state, epoch and history.

A checkpoint holds only tensors and plain containers of numbers and strings (the variant's
settings, the state dicts, the generator state as a tensor, the history as plain dicts), and is
read with `torch.load(weights_only=True)`: no pickled object is ever built, so a file that
someone else could write into a shared checkpoint folder cannot run code as the reader. A file
that is not such a checkpoint (another program's, truncated, corrupt, or holding objects that
would run code when unpickled) is refused with one line naming it, and nothing is overwritten:
the user deletes or moves it to start afresh.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch

from harness.files import OutputError, write_atomically

# what every checkpoint holds, with the type each must have
FIELDS: dict[str, type | tuple[type, ...]] = {
    "variant": dict,
    "model": dict,
    "optimizer": dict,
    "generator": torch.Tensor,
    "epoch": int,
    "step": int,
    "history": list,
}


class CheckpointError(ValueError):
    """A checkpoint that is not read: unsafe, foreign, truncated or corrupt."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write `state` atomically (a temporary file of this writer's, renamed over `path`)."""
    save_tensor_file(path, state, "checkpoint")


def save_tensor_file(path: str | os.PathLike, state: dict[str, Any], what: str) -> None:
    """Write a file of tensors atomically; a write that fails (a full disk: torch says only
    "enforce fail at inline_container.cc") is OutputError in one line naming the file, and the
    file written before it stays as it was."""
    path = Path(path)
    try:
        write_atomically(path, lambda tmp: torch.save(state, tmp))
    except (RuntimeError, OSError) as err:
        free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
        cause = "the disk is full" if free < 1 << 20 else str(err).strip().splitlines()[0][:200]
        raise OutputError(
            f"{path}: the {what} could not be written ({cause}); any earlier one is kept"
        ) from None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint without unpickling anything but tensors and plain containers; raise
    CheckpointError (one line naming the file) for anything else."""
    return load_tensor_file(
        path, FIELDS, "checkpoint", "delete or move it to start this run afresh"
    )


def load_tensor_file(
    path: str | os.PathLike, fields: dict[str, type | tuple[type, ...]], what: str, remedy: str
) -> dict[str, Any]:
    """Read any file of tensors the harness wrote (a checkpoint, an M1's weights) with
    `torch.load(weights_only=True)` and check it holds `fields` with their types; any failure,
    whatever torch raises on a truncated, random or foreign file, is CheckpointError in one
    line naming the file, the `what` it should be and the `remedy`."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch names the global it would not build ("GLOBAL posix.system"); no global named:
        # not a pickle at all (text, another format)
        unsafe = next((line.strip() for line in str(err).splitlines() if "GLOBAL" in line), "")
        if not unsafe:
            raise CheckpointError(
                f"{path}: not a readable {what} (truncated or corrupt: not a torch.save "
                f"file); {remedy}"
            ) from None
        reason = "it names " + unsafe[unsafe.index("GLOBAL") :].split()[1]
        raise CheckpointError(
            f"{path}: refused, not loaded: it is not a plain {what} of tensors and numbers "
            f"and loading it could run code ({reason.rstrip('.')}); {remedy}"
        ) from None
    except Exception as err:  # torch.load raises many kinds on bytes it did not write
        text = str(err).strip()
        first = f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__
        raise CheckpointError(
            f"{path}: not a readable {what} (truncated or corrupt: {first[:200]}); {remedy}"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path}: not an m2h {what} (it holds a {type(state).__name__}); {remedy}"
        )
    wrong = [k for k, kind in fields.items() if not isinstance(state.get(k), kind)]
    if wrong:
        raise CheckpointError(
            f"{path}: not an m2h {what} (missing or malformed: {', '.join(wrong)}); {remedy}"
        )
    return state
