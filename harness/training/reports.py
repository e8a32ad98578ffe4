"""What an epoch of training reports for one seed, and what a finished run reports (its outcome
under the stop rule and its last throughput): plain data, read by the loop, the records, the
tracker and the tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.config.variants import Variant
from harness.training.stopping import outcome


@dataclass
class EpochReport:
    epoch: int  # 1-based
    steps: int
    losses: dict[str, float]  # mean of each term over the epoch's steps
    test_accuracy: float  # 0-1
    test_error: float  # percent, as the paper reports it
    val_accuracy: float | None
    samples_per_sec: float  # labelled + unlabelled training rows per second
    epoch_seconds: float
    temperature: float
    alpha: float
    eval_seconds: float = 0.0  # evaluating the test and validation images after the epoch
    # percent of each class's test images misclassified, by class (absent in older records)
    test_class_errors: list[float] | None = None

    def metrics(self) -> dict[str, float]:
        """Flat metric names for logging, the test error first: MLflow's compare view opens its
        parallel-coordinates plot on the metric a run logged first."""
        out = {"test_error": self.test_error, "test_accuracy": self.test_accuracy}
        out.update(
            {
                f"train_{term}" if term != "loss" else "train_loss": value
                for term, value in self.losses.items()
            }
        )
        out.update(
            samples_per_sec=self.samples_per_sec,
            epoch_seconds=self.epoch_seconds,
            eval_seconds=self.eval_seconds,
            temperature=self.temperature,
            alpha=self.alpha,
        )
        for k, error in enumerate(self.test_class_errors or []):
            out[f"test_error_class_{k}"] = error
        if self.val_accuracy is not None:
            out["val_accuracy"] = self.val_accuracy
            out["val_error"] = 100.0 * (1.0 - self.val_accuracy)
        return out


def run_summary(variant: Variant, reports: list[EpochReport]) -> dict[str, Any]:
    """The figures a run ends with (`stopping.outcome`: the selected, final and test-selected
    test errors, how it ended, its time and time to accuracy) and its last throughput."""
    return {
        **outcome(reports, variant.epochs, variant.patience, variant.min_delta),
        "final_samples_per_sec": reports[-1].samples_per_sec,
    }
