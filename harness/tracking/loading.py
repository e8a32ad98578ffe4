"""Run records and ablation summaries into an MLflow store: `m2h load` puts a finished run's
record in as a FINISHED run; an ablation's parent run gets each cell's figures and its paired
comparisons, so its collapsed row in the UI says something."""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from harness.tracking.views import CELL_ORDER, MADE_PARAMS, PRIMARY_METRIC, provenance_tags, shown

if TYPE_CHECKING:
    import pandas as pd

    from harness.runs.records import RunRecord
    from harness.tracking.tracker import Tracker


def record_span(record: RunRecord) -> tuple[int, int]:
    """When a recorded run started and finished, in ms since the epoch: its record's finish
    time, less its wall time."""
    finished = datetime.strptime(record.made["finished"], "%Y-%m-%dT%H:%M:%SZ")
    end = int(finished.replace(tzinfo=UTC).timestamp() * 1000)
    return end - int(1000 * record.outcome["wall_seconds"]), end


def log_record(
    tracker: Tracker, record: RunRecord, name: str, tags: dict[str, str], parent_run_id: str | None
) -> str:
    """A finished run from its record (records.py): its settings as params, its provenance as
    tags, its epochs as metrics, its outcome, FINISHED at the time the record names."""
    from mlflow.entities import Metric, Param

    start, end = record_span(record)
    outcome = record.outcome
    v = record.variant
    all_tags = {
        **provenance_tags(record.made),
        **tags,
        "variant": v.name,
        "estimator": v.estimator,
        "dataset": v.dataset,
        "labels": str(v.labels),
        "seed": str(v.seed),
        "epochs": str(v.epochs),
        "stopped_by": outcome["stopped_by"],
        "m2h.loaded_from": record.path.name if record.path else "",
    }
    if parent_run_id is not None:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = tracker.client.create_run(tracker.experiment_id, start, all_tags, name)
    run_id = run.info.run_id
    made = {k: record.made[k] for k in MADE_PARAMS if k in record.made}
    params = {**v.params(), **made, "max_steps": record.max_steps or "none"}
    tracker.client.log_batch(run_id, params=[Param(k, str(p)) for k, p in params.items()])
    # the outcome first, the reported error leading: MLflow's compare view opens on the metric
    # a run logged first
    ended = sorted(outcome, key=lambda k: k != PRIMARY_METRIC)
    metrics = [
        Metric(k, shown(k, outcome[k]), end, record.history[-1].epoch)
        for k in ended
        if isinstance(outcome[k], int | float)
    ]
    metrics += [
        Metric(k, float(value), start, r.epoch)
        for r in record.history
        for k, value in r.metrics().items()
    ]
    for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics a batch
        tracker.client.log_batch(run_id, metrics=metrics[i : i + 1000])
    tracker.client.set_terminated(run_id, status="FINISHED", end_time=end)
    return run_id


def log_summary(
    tracker: Tracker, parent_id: str, cells: pd.DataFrame, comparisons: pd.DataFrame
) -> None:
    """An ablation's summary on its parent run, so its collapsed row in the UI says
    something: each cell's mean, sd, t interval and seeds (`CELL/test_error_mean`, ...) and
    each comparison with its reference (`CELL/vs_reference_difference`, ...) as metrics, and
    both tables as `cells.csv` and `comparisons.csv`; each child run gets its cell's mean and
    interval (`cell/test_error_mean`, `cell/ci_low`, `cell/ci_high`) beside its own error, and
    its cell's place in the table (`cell/order`, 0 first), which the UI's view sorts by."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    columns = [
        (cells, "", ("test_error_mean", "test_error_std", "ci_low", "ci_high", "seeds")),
        (comparisons, "vs_reference_", ("difference", "ci_low", "ci_high", "p_exact_holm",
                                        "p_t_holm")),
    ]  # fmt: skip
    metrics = [
        Metric(
            f"{metric_name(str(row.cell))}/{prefix}{column}", float(getattr(row, column)), now, 0
        )
        for frame, prefix, names in columns
        for row in frame.itertuples()
        for column in names
        if not math.isnan(getattr(row, column))
    ]
    tracker.client.log_batch(parent_id, metrics=metrics)
    by_cell = {str(row.cell): (order, row) for order, row in enumerate(cells.itertuples())}
    for child in tracker.child_runs(parent_id):  # each run's row shows its cell's interval
        order, row = by_cell.get(child.data.tags.get("cell", ""), (-1, None))
        if row is not None:
            values = {f"cell/{c}": round(float(getattr(row, c)), 3) for c in CELL_METRICS}
            values[CELL_ORDER] = float(order)  # the UI's groups in the table's order
            tracker.client.log_batch(
                child.info.run_id,
                metrics=[Metric(k, v, now, 0) for k, v in values.items() if not math.isnan(v)],
            )
    tracker.client.log_text(parent_id, cells.to_csv(index=False), "cells.csv")
    if len(comparisons):
        tracker.client.log_text(parent_id, comparisons.to_csv(index=False), "comparisons.csv")


CELL_METRICS = ("test_error_mean", "ci_low", "ci_high", "seeds")


def metric_name(cell: str) -> str:
    """A cell's name in the characters MLflow allows in a metric name: exact[labels=100] ->
    exact labels:100."""
    return re.sub(r"[^\w.\- :/]", "", cell.replace("[", " ").replace("=", ":").replace(",", " "))
