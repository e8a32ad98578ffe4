"""Names a user gives (variants, ablations, studies, exports), checked once where they are given.

Each becomes part of a file or folder name (a run's record and checkpoint carry their variant's
name, a sweep is `ablations/NAME.toml`, a study's trials keep their checkpoints in a folder named
by it), so a name is what every file system takes as one plain component: 1 to 100 letters,
digits, '.', '_', '+' or '-', starting with a letter or a digit. No '/' or '\\' (no folders
made on the way), no '..' or absolute path (nothing written outside its folder), no spaces or
control characters (nothing a shell or a URL misreads).
"""

from __future__ import annotations

import re

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")
NAME_RULE = "1-100 letters, digits, '.', '_', '+' or '-', starting with a letter or a digit"


class InvalidNameError(ValueError):
    """A name that cannot name a file."""


def check_name(name: object, what: str) -> str:
    """`name` when it can name a file; else InvalidNameError in one line saying what it names."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidNameError(f"{what} name {name!r} cannot name a file: a name is {NAME_RULE}")
    return name
