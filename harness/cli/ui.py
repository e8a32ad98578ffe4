"""`m2h ui`: the MLflow UI on localhost against the same store."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def cmd_ui(args: argparse.Namespace) -> int:
    from harness.tracking.server import (
        experiment_links,
        server_command,
        start_server,
        stop_server,
        wait_for_server,
    )
    from harness.tracking.tracker import resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    address = f"http://{args.host}:{args.port}"
    print(f"MLflow UI for {uri} at {address}: starting (up to a minute)", flush=True)
    server = start_server(  # the server's own lines go to stderr: stdout is m2h's
        server_command(uri, args.host, args.port, ui_only=True), stderr=None, stdout=sys.stderr
    )
    try:
        wait_for_server(address, server)
        print(f"ready: open {address} (Ctrl-C stops it)", flush=True)
        for name, link in experiment_links(uri, address):
            print(f"  {name}: {link}", flush=True)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_server(server)


def add_parsers(sub: Any) -> None:
    """The `ui` subcommand."""
    ui = sub.add_parser("ui", help="the MLflow UI on localhost against the same store")
    ui.add_argument("--tracking-uri")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(func=cmd_ui)
