"""MLflow tracking: every run, ablation cell and search trial is an MLflow run.

The store is a local SQLite database by default (`sqlite:///<cwd>/mlflow.db`, artifacts beside it
in `mlartifacts/`), or whatever `--tracking-uri` / $MLFLOW_TRACKING_URI names (a tracking server
over HTTP included). The client API is used throughout (no global active run), so parents and
children can be open at once. mlflow is imported here only: the trainer never needs it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from harness.files import (
    FileFormatError,
    read_json,
    sqlite_path,
    store_creation_lock,
    write_atomically,
)
from harness.tracking.views import provenance_tags, shown

if TYPE_CHECKING:
    from torch import Tensor, nn

    from harness.config.variants import Variant
    from harness.training.reports import EpochReport


EXPERIMENT_KIND = "mlflow.experimentKind"  # the UI's view of an experiment (MLflow 3)


class TrackingError(RuntimeError):
    """A tracking store that cannot be opened or written."""


class RunStopped(Exception):
    """A run stopped on purpose (a pruned search trial): it ends KILLED, the reason in the tag
    `stopped`; `run_id` names the run."""

    run_id: str | None = None


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a run."""


def default_tracking_uri() -> str:
    return f"sqlite:///{(Path.cwd() / 'mlflow.db').resolve()}"


def resolve_tracking_uri(flag: str | None = None) -> str:
    """`--tracking-uri`, else $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db. A bare path
    to a .db file is taken as a SQLite store."""
    uri = flag or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    if "://" not in uri:
        uri = f"sqlite:///{Path(uri).expanduser().resolve()}"
    return uri


class Tracker:
    """A handle on one MLflow store and experiment."""

    def __init__(
        self,
        uri: str | None = None,
        experiment: str = "runs",
        store: str | None = None,
        description: str = "",
    ) -> None:
        """`store` names the store behind `uri` when `uri` is a local server in front of it
        (so checkpoints still find their runs when the server's port changes); `description`
        is the experiment's, shown above its runs in the UI."""
        import mlflow  # noqa: F401  (a clear ImportError here, not in the trainer)
        from mlflow import MlflowClient

        for noisy in ("mlflow", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        # the harness prints its own line per run; MLflow's per-run links would drown it
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

        self.uri = resolve_tracking_uri(uri)
        self.store = store or self.uri
        self.experiment_name = experiment
        path = sqlite_path(self.uri)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise TrackingError(
                    f"cannot create the tracking store's folder {path.parent}: {err.strerror}"
                ) from None
            if not os.access(path.parent, os.W_OK) or (
                path.exists() and not os.access(path, os.W_OK)
            ):
                raise TrackingError(f"tracking store {path} cannot be written (permission denied)")
        artifacts = (path.parent / "mlartifacts").as_uri() if path is not None else None
        try:
            with store_creation_lock(self.uri):  # processes starting together race on its schema
                self.client = MlflowClient(tracking_uri=self.uri)
                found = self.client.get_experiment_by_name(experiment)
                self.experiment_id = (
                    found.experiment_id
                    if found is not None
                    else self.client.create_experiment(experiment, artifact_location=artifacts)
                )
                self._tag_experiment(found.tags if found is not None else {}, description)
        except Exception as err:
            raise TrackingError(
                f"cannot open or write the tracking store {self.uri}: {str(err).splitlines()[0]}"
            ) from None

    def _tag_experiment(self, tags: dict[str, str], description: str) -> None:
        """Open the experiment on MLflow's runs table (its machine-learning view, not the GenAI
        one MLflow 3 picks for an experiment of unknown kind), with its description."""
        wanted = {EXPERIMENT_KIND: "custom_model_development"}
        if description:
            wanted["mlflow.note.content"] = description
        for key, value in wanted.items():
            if tags.get(key) != value:
                self.client.set_experiment_tag(self.experiment_id, key, value)

    # runs -----------------------------------------------------------------------------------
    def create_run(
        self,
        name: str,
        tags: dict[str, str] | None = None,
        parent_run_id: str | None = None,
        start_time: int | None = None,
    ) -> str:
        tags = dict(tags or {})
        if parent_run_id is not None:
            tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(
            self.experiment_id, start_time=start_time, run_name=name, tags=tags
        )
        return run.info.run_id

    @contextmanager
    def run(
        self,
        name: str,
        tags: dict[str, str] | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
        span: tuple[int, int] | None = None,
    ) -> Iterator[str]:
        """Open (or, with `run_id`, reopen) a run; it ends FINISHED, KILLED on an interrupt,
        or FAILED with the reason in the tag `failure`. `span` (start and end, ms since the
        epoch) gives a run made from records the times its runs trained, not the load's."""
        start_time, end_time = span or (None, None)
        if run_id is None:
            run_id = self.create_run(name, tags, parent_run_id, start_time)
        else:
            self.client.update_run(run_id, status="RUNNING")
        try:
            yield run_id
        except KeyboardInterrupt:
            self.client.set_terminated(run_id, status="KILLED")
            raise
        except RunStopped as stop:
            stop.run_id = run_id
            self.client.set_tag(run_id, "stopped", str(stop))
            self.client.set_terminated(run_id, status="KILLED")
            raise
        except Exception as err:
            self.client.set_tag(run_id, "failure", f"{type(err).__name__}: {err}"[:5000])
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED", end_time=end_time)

    def run_status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    def find_run(self, tags: dict[str, str], parent_run_id: str | None = None) -> str | None:
        """The newest run of this experiment carrying all of `tags` (under `parent_run_id`,
        if given)."""
        if parent_run_id is not None:
            tags = {**tags, "mlflow.parentRunId": parent_run_id}
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs(
            [self.experiment_id], query, max_results=1, order_by=["attributes.start_time DESC"]
        )
        return runs[0].info.run_id if runs else None

    def child_runs(self, parent_run_id: str, status: str | None = None) -> list[Any]:
        query = f"tags.mlflow.parentRunId = '{parent_run_id}'"
        if status:
            query += f" and attributes.status = '{status}'"
        return list(self.client.search_runs([self.experiment_id], query, max_results=50_000))

    # what a training run logs ---------------------------------------------------------------
    def log_start(
        self,
        run_id: str,
        variant: Variant,
        device: torch.device,
        extra: dict[str, Any] | None = None,
    ) -> None:
        from mlflow.entities import Param, RunTag

        from harness.runs.provenance import environment_params

        params = {**variant.params(), **(extra or {})}
        existing = self.client.get_run(run_id).data.params
        new = [Param(k, str(v)) for k, v in params.items() if k not in existing]
        tags = {
            **provenance_tags(environment_params(device)),  # a resumed run names where it is now
            "variant": variant.name,
            "estimator": variant.estimator,
            "dataset": variant.dataset,
            "labels": str(variant.labels),
            "seed": str(variant.seed),
            "epochs": str(variant.epochs),  # a tag: a resumed run may train longer
        }
        self.client.log_batch(run_id, params=new, tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.log_dict(
            run_id, {**variant.params(), "description": variant.description}, "config.json"
        )

    def log_epoch(self, run_id: str, report: EpochReport) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, report.epoch) for k, v in report.metrics().items()]
        self.client.log_batch(run_id, metrics=metrics)

    def log_missing_epochs(self, run_id: str, reports: list[EpochReport]) -> None:
        """Log the epochs a checkpoint holds that the run lacks (an interrupt between the
        checkpoint and the logging), so a resumed run's curves have no gap."""
        logged = {m.step for m in self.client.get_metric_history(run_id, "test_accuracy")}
        for report in reports:
            if report.epoch not in logged:
                self.log_epoch(run_id, report)

    def log_end(
        self,
        run_id: str,
        variant: Variant,
        reports: list[EpochReport],
        model: nn.Module,
        test: tuple[Tensor, Tensor],
        checkpoint: Path | None,
    ) -> None:
        """A finished run's outcome (metrics, and the tag `stopped_by`), its figures of `model`
        on the test images `test` (closed once logged) and where its checkpoint is (named, not
        copied: it is tens of MB)."""
        import matplotlib.pyplot as plt
        from mlflow.entities import Metric

        from harness.tracking.figures import run_figures
        from harness.training.family import get_family

        figures = run_figures(get_family(variant.family), model, test[0], test[1], variant.name)

        from harness.training.reports import run_summary

        now, epoch = int(time.time() * 1000), reports[-1].epoch
        summary = run_summary(variant, reports)
        metrics = [
            Metric(k, shown(k, v), now, epoch)
            for k, v in summary.items()
            if isinstance(v, int | float)
        ]
        self.client.set_tag(run_id, "stopped_by", summary["stopped_by"])
        self.client.log_batch(run_id, metrics=metrics)
        for name, figure in figures.items():
            self.client.log_figure(run_id, figure, name)
            plt.close(figure)
        if checkpoint is not None:
            self.client.set_tag(run_id, "checkpoint", str(checkpoint.resolve()))

    def log_m1(self, record: dict[str, Any]) -> None:
        """M1+M2's M1 as its own run (tag `m1_key`), from its record, once per experiment: its
        settings, provenance and outcome, and its -ELBO curves by epoch."""
        from mlflow.entities import Metric, Param, RunTag

        key = record["key"]
        if self.find_run({"m1_key": key}) is not None:
            return
        made = record["made"]
        now = int(time.time() * 1000)
        with self.run(f"M1 {key}", {"m1_key": key, "kind": "m1"}) as run_id:
            params = {
                **{f"m1_{k}": v for k, v in record["settings"].items()},
                **{k: made[k] for k in ("git_commit", "device_name", "host") if k in made},
            }
            metrics = [
                Metric(name, float(e[field]), now, e["epoch"])
                for e in record["epochs"]
                for name, field in (
                    ("train_neg_elbo", "train_neg_elbo"),
                    ("val_neg_elbo", "val_neg_elbo"),
                    ("epoch_seconds", "epoch_seconds"),
                )
                if e[field] is not None
            ]
            outcome = record["outcome"]
            metrics += [
                Metric(k, float(v), now, outcome["epochs_run"])
                for k, v in outcome.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            ]
            for i in range(0, len(metrics), 1000):  # MLflow takes 1000 metrics a batch
                self.client.log_batch(
                    run_id,
                    metrics=metrics[i : i + 1000],
                    params=[Param(k, str(v)) for k, v in params.items()] if i == 0 else [],
                    tags=[RunTag("stopped_by", outcome["stopped_by"])] if i == 0 else [],
                )

    def remember_checkpoint(self, checkpoint: Path, run_id: str) -> None:
        """Remember which MLflow run a checkpoint belongs to, so a resume continues that run."""
        pointer = checkpoint.with_suffix(".run.json")
        pointer.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"tracking_uri": self.store, "run_id": run_id})
        write_atomically(pointer, lambda tmp: tmp.write_text(text))

    def run_of_checkpoint(self, checkpoint: Path, parent_run_id: str | None = None) -> str | None:
        """The run a checkpoint was logged to, if it is in this store and experiment, under the
        same parent run: a checkpoint never continues another ablation's or search's run."""
        pointer = checkpoint.with_suffix(".run.json")
        if not pointer.exists():
            return None
        remedy = "delete it: the run then logs to a new MLflow run"
        saved = read_json(pointer, "pointer to a checkpoint's MLflow run", remedy)
        if not (isinstance(saved, dict) and isinstance(saved.get("run_id"), str)):
            raise FileFormatError(f"{pointer} names no MLflow run; {remedy}")
        if saved.get("tracking_uri") != self.store:
            return None
        try:
            run = self.client.get_run(saved["run_id"])
        except Exception:  # deleted from the store
            return None
        same_place = run.info.experiment_id == self.experiment_id
        if not same_place or run.data.tags.get("mlflow.parentRunId") != parent_run_id:
            return None
        return saved["run_id"]
