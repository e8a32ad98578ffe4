"""A local MLflow server: the UI (`m2h ui`), and the one writer that lets several processes log
to a SQLite store at once (SQLite takes one writer at a time)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from typing import Any

from harness.files import sqlite_path
from harness.tracking.tracker import TrackingError

UI_APP = "m2h"  # the `mlflow.app` entry point in pyproject.toml: harness/tracking/ui_app.py


def server_command(
    uri: str, host: str = "127.0.0.1", port: int = 5000, ui_only: bool = False, workers: int = 1
) -> list[str]:
    """`mlflow server` (or `mlflow ui`, through m2h's app plugin when it is installed: ui_app.py)
    over the store at `uri`, artifacts beside a SQLite file, with `workers` processes (MLflow's
    default of 4 is for a shared server; one browser needs one, and each costs seconds of
    start-up importing MLflow)."""
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui" if ui_only else "server",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    if ui_only and entry_points(group="mlflow.app", name=UI_APP):
        command += ["--app-name", UI_APP]
    path = sqlite_path(uri)
    if path is not None:
        command += ["--artifacts-destination", str(path.parent / "mlartifacts")]
    return command


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# MLflow's own server imports Starlette's deprecated WSGI middleware: a warning per worker that
# says nothing to an m2h user
QUIET = "ignore:starlette.middleware.wsgi is deprecated"


def start_server(command: list[str], **popen: Any) -> subprocess.Popen:
    """Start an MLflow server in a process group of its own (it spawns workers), so that
    `stop_server` ends all of it. MLflow 3's job execution (a job runner and queue consumers,
    for its GenAI features) is off unless the environment turns it on: nothing here uses it, and
    it starts processes of its own before the server answers."""
    warnings = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), QUIET]))
    env = {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        **os.environ,
        "PYTHONWARNINGS": warnings,
    }
    return subprocess.Popen(
        command, start_new_session=True, **{"stderr": subprocess.PIPE, "env": env, **popen}
    )


def stop_server(server: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(server.pid, sig)
            server.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def wait_for_server(address: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    """Poll `address`/health until an MLflow server answers; a clear error if it died or hung."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{address}/health", timeout=2)
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                stderr = process.stderr if process.poll() else None
                detail = stderr.read().decode()[-500:] if stderr is not None else ""
                raise TrackingError(
                    f"the MLflow server at {address} did not start. {detail}"
                ) from None
            time.sleep(0.3)


@contextmanager
def local_server(uri: str, timeout: float = 120.0) -> Iterator[str]:
    """An MLflow server on localhost over a SQLite store, so that several processes log at once
    (SQLite refuses concurrent writers); an HTTP store is used as it is."""
    if uri.startswith(("http://", "https://")):
        yield uri
        return
    port = free_port()
    server = start_server(server_command(uri, port=port, workers=2), stdout=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(address, server, timeout)
        yield address
    finally:
        stop_server(server)


def experiment_links(uri: str, address: str) -> list[tuple[str, str]]:
    """Each experiment's page in the UI: its runs table in the m2h view where it has one
    (views.py), else its runs table (the link says `workflowType=machine_learning`, which
    MLflow 3 needs to open the runs table rather than its GenAI pages)."""
    from mlflow import MlflowClient

    from harness.tracking.views import VIEW_TAG, view_link

    return [
        (
            e.name,
            view_link(address, e.experiment_id)
            if VIEW_TAG in e.tags
            else f"{address}/#/experiments/{e.experiment_id}/runs?workflowType=machine_learning",
        )
        for e in MlflowClient(tracking_uri=uri).search_experiments()
        if e.name != "Default"
    ]
