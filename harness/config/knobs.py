"""A setting declared once, with its rules: `knob(default, part, rule, applies=, later=)` is the
dataclass field of one `Variant` setting, and carries what the rest of the harness reads about
it, so a new knob touches one line:

- `part`: the shared settings every family reads (`DATA`, `OPTIMISATION`, `STOP`) or the
  family's own (`MODEL`, and `M1` for M1+M2's features); `m2h show` groups by it;
- `rule`: what a value must be (`positive`, `non_negative`, ...), a one-line complaint otherwise;
- `applies`: when the setting changes what a variant does (a temperature under Gumbel-softmax
  only); elsewhere it is left out of `m2h show` and of the cell a run belongs to;
- `later`: added after checkpoints began, so left out of records and checkpoints at its default
  (those written before it still resume and read alike)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

MAX_SEED = 2**32 - 1  # the largest seed every generator the harness seeds takes
NUM_CLASSES = 10

# the parts of a variant: the shared settings, then the family's own
DATA, OPTIMISATION, STOP = "data", "optimisation", "stop rule"
MODEL, M1 = "model", "M1"
SHARED_PARTS = (DATA, OPTIMISATION, STOP)
FAMILY_PARTS = (MODEL, M1)

# a value's rule: what is wrong with it ("must be > 0"), or None where nothing is
Rule = Callable[[Any], str | None]


def positive(value: Any) -> str | None:
    return None if value > 0 else "must be > 0"


def non_negative(value: Any) -> str | None:
    return None if value >= 0 else "must be >= 0"


def fraction(value: float) -> str | None:
    """A share that may be nothing but not everything (a dropout rate)."""
    return None if 0 <= value < 1 else "must be in [0, 1)"


def factor(value: float) -> str | None:
    """A multiplier that shrinks or keeps (a learning-rate decay)."""
    return None if 0 < value <= 1 else "must be in (0, 1]"


def seed(value: int) -> str | None:
    if value < 0:
        return "must be >= 0"
    return None if value <= MAX_SEED else f"must be at most {MAX_SEED} (2**32 - 1)"


def optional_seed(value: int | None) -> str | None:
    if value is None:
        return None
    return "must be >= 0 or none" if value < 0 else seed(value)


def whole_classes(value: int) -> str | None:
    """A label count the balanced subset can draw: the same number of every class."""
    ok = value > 0 and value % NUM_CLASSES == 0
    return None if ok else f"must be a positive multiple of the {NUM_CLASSES} classes"


def knob(
    default: Any,
    part: str,
    rule: Rule | None = None,
    *,
    applies: Callable[[Any], bool] | None = None,
    later: bool = False,
) -> Any:
    """The field of one setting, with its part, rule, reach and age (the module's docstring)."""
    return dataclasses.field(
        default=default,
        metadata={"part": part, "rule": rule, "applies": applies, "later": later},
    )


def complaint(f: dataclasses.Field, value: Any) -> str | None:
    """The one line a value of setting `f` gets when its rule refuses it, else None."""
    rule = f.metadata.get("rule")
    said = rule(value) if rule is not None else None
    return None if said is None else f"{f.name} {said}, got {value!r}"


def part_of(f: dataclasses.Field) -> str | None:
    return f.metadata.get("part")


def applies_to(f: dataclasses.Field, variant: Any) -> bool:
    test = f.metadata.get("applies")
    return test is None or bool(test(variant))


def is_later(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("later"))
