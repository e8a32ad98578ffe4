"""The stop rule and what a finished run reports, as pure functions of its epoch history.

A run with `patience` P > 0 ends when its validation error (held-out labelled training images,
never the test set) has not improved on its best by more than `min_delta` percentage points for
P epochs, or at its epoch budget (`epochs`), whichever comes first. Everything the rule needs is in
the history, so a resumed run keeps the rule's state with no extra bookkeeping.

What a table reports is the test error at the epoch the rule selects (the best validation epoch,
as Kingma et al. select by validation); the final and the best test error are kept beside it, the
latter marked as test-selected (for comparison only, as some SSL benchmarks report it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

ACCURACY_TARGETS = (0.90, 0.95)
# how outcomes and tables name them: epochs_to_90, seconds_to_95, "time to 95%"
TARGET_PERCENTS = tuple(round(100 * target) for target in ACCURACY_TARGETS)
TIE = 1e-9  # points of error below which two differences are the same (float rounding)


class Epoch(Protocol):
    epoch: int
    test_accuracy: float
    test_error: float
    val_accuracy: float | None
    epoch_seconds: float
    eval_seconds: float


def val_error(report: Epoch) -> float:
    """Validation error in percent, from the accuracy at the six significant digits a run
    record keeps (so the rule decides the same during a run and when its record is read back,
    also where an improvement is exactly `min_delta`)."""
    if report.val_accuracy is None:
        raise ValueError("the stop rule needs validation images; this run holds none out")
    return round(100.0 * (1.0 - float(f"{report.val_accuracy:.6g}")), 6)


def best_position(values: Sequence[float], min_delta: float) -> int:
    """Index of the best of `values` (lower is better) under the rule: a value is the new best
    when it is below the best so far by more than `min_delta` (the first is the first best)."""
    best = 0
    for i in range(1, len(values)):  # a change of exactly min_delta is no improvement
        if values[i] < values[best] - min_delta - TIE:
            best = i
    return best


def no_improvement_for(values: Sequence[float], patience: int, min_delta: float) -> bool:
    """True when `patience` > 0 and the last `patience` values did not improve on the best."""
    if patience <= 0 or not values:
        return False
    return len(values) - 1 - best_position(values, min_delta) >= patience


def best_index(history: Sequence[Epoch], min_delta: float) -> int:
    """Index of the best validation epoch under the rule (`best_position` of the validation
    errors, in points)."""
    return best_position([val_error(r) for r in history], min_delta)


def should_stop(history: Sequence[Epoch], patience: int, min_delta: float) -> bool:
    """True when `patience` > 0 and the last `patience` epochs did not improve on the best."""
    if patience <= 0 or not history:
        return False
    return no_improvement_for([val_error(r) for r in history], patience, min_delta)


def time_to_accuracy(history: Sequence[Epoch], target: float) -> tuple[int, float] | None:
    """(epochs, training seconds) until the test accuracy first reached `target`, or None."""
    seconds = 0.0
    for report in history:
        seconds += report.epoch_seconds
        if report.test_accuracy >= target:
            return report.epoch, seconds
    return None


def outcome(
    history: Sequence[Epoch], epochs: int, patience: int, min_delta: float
) -> dict[str, Any]:
    """What a finished run reports: the test error at the selected epoch (the best validation
    epoch when the run holds validation images out, else the last), the final and the
    test-selected best test error, how the run ended, its time, and the epochs and training
    seconds it took to reach each accuracy in ACCURACY_TARGETS (None where it never did)."""
    has_val = history[-1].val_accuracy is not None
    selected = history[best_index(history, min_delta)] if has_val else history[-1]
    stopped = should_stop(history, patience, min_delta)
    result: dict[str, Any] = {
        "selected_epoch": selected.epoch,
        "selected_test_error": selected.test_error,
        "selected_val_error": val_error(selected) if has_val else None,
        "final_test_error": history[-1].test_error,
        "best_test_error_test_selected": min(r.test_error for r in history),
        "epochs_run": history[-1].epoch,
        "stopped_by": "patience" if stopped else ("budget" if history[-1].epoch >= epochs else ""),
        "train_seconds": sum(r.epoch_seconds for r in history),
        "wall_seconds": sum(r.epoch_seconds + r.eval_seconds for r in history),
    }
    for target, pct in zip(ACCURACY_TARGETS, TARGET_PERCENTS, strict=True):
        reached = time_to_accuracy(history, target)
        result[f"epochs_to_{pct}"] = reached[0] if reached else None
        result[f"seconds_to_{pct}"] = reached[1] if reached else None
    return result
