"""Search spaces: the knobs of a variant family that a search may tune, and their ranges.

Declared next to each variant's registration (`@register_variant(space=...)`); `--space` narrows
them (`lr=1e-4:1e-3`, `hidden=256,512`, or one value to fix a knob) or extends them with any other
setting (`classifier_layers=1,3`, `batch_size=64:256`). Nothing here imports optuna:
`suggest` asks any object with optuna's trial interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.config.variants import VariantError, parse_value


@dataclass(frozen=True)
class Range:
    """A float or int range; `log` samples on a log scale."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise VariantError(f"empty range {self.low}:{self.high} (low must be < high)")
        if self.log and self.low <= 0:
            raise VariantError(f"a log range needs low > 0, got {self.low}")


@dataclass(frozen=True)
class Choice:
    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        if not self.values:
            raise VariantError("an empty choice")


Dimension = Range | Choice
Space = dict[str, Dimension]


def suggest(trial: Any, space: Space) -> dict[str, Any]:
    """Draw one setting of every knob in `space` from an optuna trial."""
    drawn = {}
    for key, dim in space.items():
        if isinstance(dim, Choice):
            drawn[key] = trial.suggest_categorical(key, list(dim.values))
        elif dim.integer:
            drawn[key] = trial.suggest_int(key, int(dim.low), int(dim.high), log=dim.log)
        else:
            drawn[key] = trial.suggest_float(key, dim.low, dim.high, log=dim.log)
    return drawn


def narrow(space: Space, specs: list[str]) -> Space:
    """Apply `--space key=low:high`, `key=a,b,c` or `key=value` to `space`: a knob of the space
    narrowed, or any other variant setting added (`classifier_layers=1,3`), each value parsed
    and checked as `--set` checks it."""
    narrowed = dict(space)
    for spec in specs:
        key, sep, text = spec.partition("=")
        key = key.strip()
        if not sep:
            raise VariantError(
                f"a --space entry is key=low:high, key=a,b or key=value; got {spec!r}"
            )
        dim = space.get(key)  # a setting the variant's space lacks extends it
        if ":" in text:
            low, high = (parse_value(key, part) for part in text.split(":", 1))
            log = isinstance(dim, Range) and dim.log
            integer = isinstance(low, int) and isinstance(high, int)
            narrowed[key] = Range(low, high, log=log, integer=integer)
        else:
            narrowed[key] = Choice(tuple(parse_value(key, part) for part in text.split(",")))
    return narrowed


def describe(space: Space) -> str:
    parts = []
    for key, dim in space.items():
        if isinstance(dim, Choice):
            parts.append(f"{key} in {{{', '.join(map(str, dim.values))}}}")
        else:
            parts.append(f"{key} in [{dim.low:g}, {dim.high:g}]{' (log)' if dim.log else ''}")
    return "; ".join(parts)
