"""MLflow's server as `m2h ui` serves it: an MLflow app plugin (the `mlflow.app` entry point
`m2h`, as MLflow's own `basic-auth`), so that a browser opening the UI for the first time lands
on the runs tables an ablation fills, not on MLflow 3's GenAI pages.

MLflow 3's UI (checked against 3.17) keeps two choices in the browser's local storage, with no
server setting for them: the GenAI / Model training switch (`mlflow.workflowType`), which every
experiment opened from the experiment list or the home page follows (the experiment's
`mlflow.experimentKind` tag is no longer read), and whether its assistant panel has opened
itself once. The page served here sets both before the UI starts, and only where the browser has
no choice of its own: a user who switches to GenAI keeps GenAI.

An experiment an ablation fills opens on its m2h view (harness/tracking/views.py) whichever way
the browser comes into it (the home page, the experiment list, a bare address): MLflow's UI
opens a saved view only from a link carrying its share key, and comes back to its own default
view on the next visit, so the page served here follows such a link itself when the browser
comes into an experiment that has the view. Inside the experiment the user's choices stand."""

from __future__ import annotations

import json
import os
from typing import Any

from harness.tracking.views import VIEW_ID, VIEW_TAG

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


def view_script() -> str:
    """A script that opens an experiment's m2h view, where it has one, whenever the browser
    comes into the experiment: from another page of the UI, or as a bare address (no share key
    and no settings of its own in it). Moving about inside the experiment (sorting, another
    view, a chart) is left alone, and so is an address that carries its own settings (a reload).
    The UI moves between pages by the History API, which fires no event, so the script wraps
    `history.pushState` and `replaceState` to see every address the UI goes to."""
    view, tag = json.dumps(VIEW_ID), json.dumps(VIEW_TAG)
    return (
        "<script>(()=>{const page=/^#\\/experiments\\/(\\d+)(?:\\/runs)?\\/?(\\?.*)?$/;"
        "const id=h=>{const m=h.match(page);return m?m[1]:null};let last=null;"
        "const open=()=>{const h=location.hash;if(h===last)return;const before=last;last=h;"
        "const m=h.match(page);if(!m||h.includes('viewStateShareKey='))return;"
        "if(before===null?m[2]:id(before)===m[1])return;"
        "fetch('ajax-api/2.0/mlflow/experiments/get?experiment_id='+m[1]).then(r=>r.json())"
        ".then(d=>{const tags=(d.experiment&&d.experiment.tags)||[];"
        f"if(!tags.some(t=>t.key==={tag})||id(location.hash)!==m[1])return;"
        f"location.replace('#/experiments/'+m[1]+'/runs?viewStateShareKey='+{view}"
        "+'&workflowType=machine_learning')}).catch(()=>{})};"
        "for(const f of ['pushState','replaceState']){const o=history[f];"
        "history[f]=function(...a){const r=o.apply(this,a);open();return r}}"
        "addEventListener('hashchange',open);addEventListener('popstate',open);open()})()"
        "</script>"
    )


def with_defaults(index_html: str) -> str:
    """MLflow's index.html with the defaults and view scripts first in its head."""
    return index_html.replace("<head>", "<head>" + defaults_script() + view_script(), 1)


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
