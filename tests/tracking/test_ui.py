"""The MLflow UI as a new user meets it, in a real (headless) browser: Debian's chromium driven
by Playwright, over what `m2h ui` serves and links to.

With M2H_UI_SHOTS=DIR the test browses the committed `labels` records instead of generated ones
and saves its screenshots in DIR (the README's are made so: docs/ui)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli.main import main
from harness.tracking.server import free_port
from tests.runs.test_records import TWO_CELLS, write_runs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = os.environ.get("M2H_UI_SHOTS") and Path(os.environ["M2H_UI_SHOTS"]).resolve()
REPO = Path(__file__).resolve().parents[2]


def _store(tmp_path: Path) -> tuple[str, str]:
    """A store holding one loaded ablation: (its URI, the ablation's name)."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    if SHOTS:
        name, load = "labels", ["load", "labels", "--out", str(REPO / "results")]
    else:
        ablation = tmp_path / "two.toml"
        ablation.write_text(TWO_CELLS)
        write_runs(ablation, tmp_path / "results")
        name, load = "two", ["load", str(ablation), "--out", str(tmp_path / "results")]
    assert main([*load, "--tracking-uri", store]) == 0
    return store, name


def _settle(page, shot: str | None = None, *, before_an_absence: bool = False) -> None:
    """Let the page finish rendering: 4 s before a screenshot or before asserting that something
    is absent (it would have had time to appear), 1.5 s otherwise."""
    page.wait_for_timeout(4000 if SHOTS or before_an_absence else 1500)
    if SHOTS and shot:
        page.screenshot(path=str(SHOTS / f"{shot}.png"))


def _arrive(page, shows: str, shot: str | None = None, *, before_an_absence: bool = False) -> None:
    """Wait until the page is on the runs table and shows `shows` (up to a minute: on a loaded
    machine the UI's redirects and its runs table take longer than the settling time), then
    settle."""
    page.wait_for_url(lambda url: "/runs" in url, timeout=60_000)
    page.get_by_text(shows).first.wait_for(timeout=60_000)
    _settle(page, shot, before_an_absence=before_an_absence)


def _assert_key_columns(page) -> None:
    """The page shows the m2h view's key columns."""
    page.get_by_test_id("sort-header-selected_test_error").first.wait_for(timeout=60_000)
    headers = page.locator("[data-testid^='sort-header-']").evaluate_all(
        "els => els.map(e => e.dataset.testid.slice('sort-header-'.length))"
    )
    for key in ("selected_test_error", "cell/ci_low", "cell/ci_high",
                "final_samples_per_sec", "labels" if SHOTS else "estimator"):  # fmt: skip
        assert key in headers, (key, headers)


def _compare_address(store: str, name: str) -> str:
    """The compare view's address of three of the ablation's runs."""
    import json
    import urllib.parse

    import mlflow

    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name(name).experiment_id
    runs = client.search_runs([experiment])
    ids = [r.info.run_id for r in runs if r.data.tags.get("m2h.role") != "ablation"][:3]
    quoted = (urllib.parse.quote(json.dumps(x)) for x in (ids, [experiment]))
    return "#/compare-runs?runs={}&experiments={}".format(*quoted)


@pytest.mark.e2e
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (CI installs it)")
def test_the_ui_opens_an_ablation_on_its_runs_table_with_the_key_columns(tmp_path):
    pytest.importorskip("mlflow")
    playwright = pytest.importorskip("playwright.sync_api")
    store, name = _store(tmp_path)
    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "harness", "ui", "--port", str(port), "--tracking-uri", store],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    address = f"http://127.0.0.1:{port}"
    try:
        assert "MLflow UI for" in ui.stdout.readline()
        assert ui.stdout.readline().startswith(f"ready: open {address}")  # it answers now
        experiment, _, link = ui.stdout.readline().strip().partition(": ")
        assert experiment == name and "viewStateShareKey=m2h-key-columns" in link
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1600, "height": 1000})

            # a new user: the home page, then the experiment list, then the experiment
            page.goto(f"{address}/")
            _settle(page, "home", before_an_absence=True)
            assert "Ask questions about your" not in page.inner_text("body")  # assistant shut
            page.get_by_role("link", name=name, exact=True).first.click()
            _arrive(page, "Group: ")  # the m2h view, from the home page
            assert "viewStateShareKey=m2h-key-columns" in page.url
            # from the experiment list, again: the view every time, not MLflow's default
            for shot in ("from-the-experiment-list", None):
                page.goto(f"{address}/#/experiments")
                page.get_by_test_id("experiment-list-item-link").get_by_text(
                    name, exact=True
                ).click()
                _arrive(page, "Group: ", shot, before_an_absence=True)
                assert "Detect Issues" not in page.content()
                _assert_key_columns(page)
            # inside the experiment the user's choice stands: sorting by another column
            page.get_by_test_id("sort-header-epochs_run").first.click()
            _settle(page)
            assert "epochs_run" in page.url and "viewStateShareKey" not in page.url.split("?")[0]

            # the link `m2h ui` printed: the same view at once
            page.goto(link)
            _arrive(page, "Group: ", "key-columns")
            table = page.inner_text("body")
            assert "selected_test_error" in table and "Group: " in table
            assert ("100 labels · exact" if SHOTS else "exact · seed 0") in table  # run names
            groups = [line for line in table.splitlines() if line.startswith("Group: ")]
            if SHOTS:  # a group's name, which the UI cuts shortest, says its label count
                assert "Group: 1000 la" in table and "Group: 100 lab" in table, table[:3000]
                # the groups in the table's order: 100 labels first, then 600, 1000, 3000
                assert [g.split(" labels")[0] for g in groups[:4]] == [
                    "Group: 100", "Group: 600", "Group: 1000", "Group: 3000"
                ], groups  # fmt: skip
            else:
                assert groups == ["Group: exact", "Group: supervised-only"], groups

            page.locator("label:has(input[value='CHART'])").first.click()
            _arrive(page, "cells side by side", "cells-side-by-side")
            charts = page.inner_text("body")
            assert "cells side by side" in charts and "final_samples_per_sec" in charts

            # the compare view of some runs opens its plot on the reported test error
            page.goto(f"{address}/{_compare_address(store, name)}")
            page.get_by_text("Parallel Coordinates Plot").first.wait_for(timeout=60_000)
            _settle(page, "compare")
            controls = page.inner_text("body").split("Metrics:", 1)[1].strip()
            assert controls.startswith("selected_test_error"), controls[:200]
            browser.close()
    finally:
        ui.terminate()
        ui.wait(timeout=60)
    assert "StarletteDeprecationWarning" not in ui.stderr.read()  # no noise in `m2h ui`
