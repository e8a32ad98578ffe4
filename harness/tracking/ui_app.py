"""MLflow's server as `m2h ui` serves it: an MLflow app plugin (the `mlflow.app` entry point
`m2h`, as MLflow's own `basic-auth`), so that a browser opening the UI for the first time lands
on the runs tables an ablation fills, not on MLflow 3's GenAI pages.

MLflow 3's UI (checked against 3.17) keeps two choices in the browser's local storage, with no
server setting for them: the GenAI / Model training switch (`mlflow.workflowType`), which every
experiment opened from the experiment list or the home page follows (the experiment's
`mlflow.experimentKind` tag is no longer read), and whether its assistant panel has opened
itself once. The page served here sets both before the UI starts, and only where the browser has
no choice of its own: a user who switches to GenAI keeps GenAI."""

from __future__ import annotations

import json
import os
from typing import Any

# MLflow's local-storage keys (`<key>_v<version>`) and the JSON values this UI starts with
BROWSER_DEFAULTS = {
    "mlflow.workflowType_v1": "machine_learning",
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True,
}


def defaults_script() -> str:
    """A script setting each of BROWSER_DEFAULTS that the browser has not set."""
    pairs = json.dumps([[key, json.dumps(value)] for key, value in BROWSER_DEFAULTS.items()])
    return (
        "<script>try{for(const [k,v] of "
        f"{pairs}"
        ")if(localStorage.getItem(k)===null)localStorage.setItem(k,v)}catch(e){}</script>"
    )


def with_defaults(index_html: str) -> str:
    """MLflow's index.html with the defaults script first in its head."""
    return index_html.replace("<head>", "<head>" + defaults_script(), 1)


def create_app() -> Any:
    """The app `mlflow ui --app-name m2h` serves: MLflow's own, its index page carrying the
    defaults (a FastAPI app around MLflow's Flask app under uvicorn, as MLflow builds it)."""
    from flask import Response
    from mlflow.server import app as flask_app

    def index() -> Response:
        assert flask_app.static_folder is not None
        with open(os.path.join(flask_app.static_folder, "index.html"), encoding="utf-8") as f:
            return Response(with_defaults(f.read()), mimetype="text/html")

    flask_app.view_functions["serve"] = index
    if os.environ.get("_MLFLOW_SGI_NAME") == "uvicorn":
        from mlflow.server.fastapi_app import create_fastapi_app

        return create_fastapi_app(flask_app)
    return flask_app
