"""How an epoch's steps show while they run (tqdm): its bar on a terminal; for a log, or a worker
whose lines share one output with other workers, one line of the same figures every
`LINE_EVERY` seconds once the epoch has run that long, so that a long epoch is never silent and a
short one adds nothing."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

from tqdm import tqdm
from tqdm.auto import tqdm as terminal_tqdm

LINE_EVERY = 30.0  # seconds: the first line after this long in an epoch, then one this often

# True: tqdm's bar on a terminal, lines on standard error elsewhere (standard output keeps the
# epochs' own lines); False: nothing; a callable:
# each line handed to it (a worker's, which puts its cell and seed before it).
Progress = bool | Callable[[str], Any]


class _Lines:
    """A file for tqdm that hands each status it writes to `say` as one line."""

    def __init__(self, say: Callable[[str], Any]) -> None:
        self.say = say

    def write(self, text: str) -> None:
        for status in text.replace("\n", "\r").split("\r"):
            if status.strip():
                self.say(status.rstrip())

    def flush(self) -> None:
        pass


def epoch_label(epoch: int, epochs: int) -> str:
    """ "epoch   3/150": the epoch right-aligned in the width of the budget (at least 3)."""
    return f"epoch {epoch:>{max(3, len(str(epochs)))}}/{epochs}"


def _print(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)  # indented: within an epoch, not an epoch's own


def epoch_steps(steps: int, label: str, progress: Progress) -> Iterable[int]:
    """range(steps), shown as `progress` says; `label` names the epoch (`epoch_label`)."""
    if progress is True and sys.stderr.isatty():
        return terminal_tqdm(range(steps), desc=label, leave=False)
    if not progress:
        return range(steps)
    say = progress if callable(progress) else _print
    width = len(str(steps))
    return tqdm(
        range(steps),
        desc=label,
        file=_Lines(say),
        delay=LINE_EVERY,
        mininterval=LINE_EVERY,
        leave=False,
        bar_format=(
            f"{{desc}}: step {{n:>{width}}}/{{total}}, {{elapsed}} in, about {{remaining}} "
            "left of the epoch"
        ),
    )
