"""The view an ablation's experiment opens on in MLflow's UI: a saved view (MLflow 3's "Views"
menu over the runs table, kept as the experiment tag `mlflow.sharedViewState.<id>` and opened by
the link `...?viewStateShareKey=<id>`) with the key columns, the runs grouped by cell with each
cell's mean, and charts that set the cells side by side.

The state's fields are those MLflow's UI saves itself (checked against 3.17; a browser test holds
them): search facets, then the runs table's and charts' UI state."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

VIEW_ID = "m2h-key-columns"
VIEW_NAME = "m2h: key columns"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_ID}"
PRIMARY_METRIC_TAG = "mlflow.experiment.primaryMetric.name"

PRIMARY_METRIC = "selected_test_error"
CELL_ORDER = "cell/order"  # a run's cell's place in its ablation's table, 0 first
RUN_NAME = "attributes.`Run Name`"  # the run-name column's id in the UI's table
# a run's row: its reported error, its cell's mean and 95% t interval over seeds, its speed
KEY_METRICS = (
    PRIMARY_METRIC,
    "cell/test_error_mean",
    "cell/ci_low",
    "cell/ci_high",
    "final_samples_per_sec",
    "seconds_to_95",
    "epochs_run",
)
# side by side per cell (bars), and the validation error over epochs (lines)
BAR_CHARTS = (PRIMARY_METRIC, "final_samples_per_sec", "seconds_to_95")
LINE_CHARTS = ("val_error", "test_error")


def shown(name: str, value: float) -> float:
    """A run's outcome `name` as the UI shows it, to the tables' precision: rows/s and seconds
    whole (so a group's average has one decimal at most), errors (%) to a hundredth, anything
    else as it is. The run's record keeps every digit; this is what the runs table shows."""
    if name.endswith("samples_per_sec") or name.endswith("_seconds") or "seconds_to_" in name:
        return float(round(value))
    if "error" in name:
        return round(value, 2)
    return float(value)


# what a run was made with beside its settings, which MLflow params keep (the M1 it read, and
# how it ran: precision, compile, CUDA graphs); the rest of a record's `made` is provenance
MADE_PARAMS = ("m1", "m1_dims", "precision", "compile", "cuda_graphs")


def provenance_tags(made: dict[str, Any]) -> dict[str, str]:
    """Where and with what a run was made (commit, versions, device, host, its segments), as
    run tags rather than params: then the params are the settings alone, so what differs
    between runs (MLflow's compare view, which opens on the first three params that differ) is
    what the cells vary, and a resumed run's tags can name where it trained last. MLflow's own
    `mlflow.source.git.commit` names the commit too."""
    tags = {
        k: json.dumps(v) if isinstance(v, list | dict) else str(v)
        for k, v in made.items()
        if k not in MADE_PARAMS
    }
    if "git_commit" in made:
        tags["mlflow.source.git.commit"] = str(made["git_commit"])
    return tags


def column(kind: str, key: str) -> str:
    """A runs-table column as the UI names it: metrics.`selected_test_error`."""
    return f"{kind}.`{key}`"


def _chart(kind: str, metric: str, section: str) -> dict[str, Any]:
    return {
        "uuid": f"m2h-{kind.lower()}-{metric}",
        "type": kind,
        "runsCountToCompare": 100,
        "metricSectionId": section,
        "deleted": False,
        "isGenerated": False,
        "metricKey": metric,
        "displayName": metric,
        **({"selectedMetricKeys": [metric], "xAxisKey": "step"} if kind == "LINE" else {}),
    }


def view_state(varied: Sequence[str]) -> dict[str, Any]:
    """The saved view: runs grouped by cell (the group row shows the cell's mean), the groups
    in the ablation table's order (the runs sorted by their cell's place in it), the key metric
    columns, the settings the cells vary and the seed; charts of the key metrics per cell and of
    the errors over epochs."""
    section = "m2h-cells"
    columns = [
        *(column("metrics", m) for m in KEY_METRICS),
        *(column("params", p) for p in varied),
        column("tags", "seed"),
    ]
    return {
        # search facets
        "searchFilter": "",
        "orderByKey": column("metrics", CELL_ORDER),
        "orderByAsc": True,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "datasetsFilter": [],
        "modelVersionFilter": "All Runs",
        # the runs table and the charts
        "selectedColumns": columns,
        "columnOrder": columns,
        "columnWidths": {RUN_NAME: 300},
        "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": [
            *(_chart("BAR", m, section) for m in BAR_CHARTS),
            *(_chart("LINE", m, section) for m in LINE_CHARTS),
        ],
        "compareRunSections": [
            {
                "uuid": section,
                "name": "cells side by side",
                "display": True,
                "isReordered": False,
                "deleted": False,
                "isGenerated": False,
            }
        ],
        "viewMaximized": False,
        "runListHidden": False,
        "isAccordionReordered": True,
        "groupBy": {
            "aggregateFunction": "average",
            "groupByKeys": [{"mode": "tag", "groupByData": "cell_title"}],
        },
        "groupsExpanded": {},
        "useGroupedValuesInCharts": True,
        "hideEmptyCharts": True,
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0,
                                  "selectedXAxisMetricKey": ""},
        "chartsSearchFilter": "",
    }  # fmt: skip


def view_tag_value(varied: Sequence[str], now_ms: int | None = None) -> str:
    """The experiment tag's value, in the envelope the UI's saved views use."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    state = json.dumps(view_state(varied), separators=(",", ":"))
    return json.dumps({"name": VIEW_NAME, "createdAt": now_ms, "updatedAt": now_ms, "state": state})


def save_view(client: Any, experiment_id: str, varied: Sequence[str]) -> None:
    """Save (or update) the experiment's m2h view and name its primary metric, unless the same
    view is there already."""
    experiment = client.get_experiment(experiment_id)
    old = experiment.tags.get(VIEW_TAG)
    if old is None or json.loads(json.loads(old)["state"]) != view_state(varied):
        client.set_experiment_tag(experiment_id, VIEW_TAG, view_tag_value(varied))
    if experiment.tags.get(PRIMARY_METRIC_TAG) != PRIMARY_METRIC:
        client.set_experiment_tag(experiment_id, PRIMARY_METRIC_TAG, PRIMARY_METRIC)


def view_link(address: str, experiment_id: str) -> str:
    """The experiment's runs table in its m2h view (the model-training side of the UI)."""
    return (
        f"{address}/#/experiments/{experiment_id}/runs"
        f"?viewStateShareKey={VIEW_ID}&workflowType=machine_learning"
    )
