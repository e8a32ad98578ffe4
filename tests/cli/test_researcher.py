"""A researcher's own question, as issue 29 puts it: from a folder outside the repository, with
only a variants file of their own, a variant with a two-layer classifier and z 128 is listed,
run, swept ad hoc over two temperatures x 2 seeds, tabled with a column per setting and plotted
as a grid."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.config.ablations import AblationError, sweep_spec
from harness.config.variants import (
    get_variant,
    load_user_variants,
    register_variant,
    save_user_variant,
    search_space,
)
from tests.m2h_process import run_m2h

VARIANTS = '''
from harness.config.variants import get_variant, register_variant


@register_variant
def gumbel_bigz():
    """Gumbel-softmax at 0.5 with a two-layer classifier and z of 128."""
    return get_variant("gumbel-0.5").replace(classifier_layers=2, z_dim=128)
'''
QUICK = ["--epochs", "1", "--max-steps", "3", "--no-track"]


def _m2h(folder: Path, *args: str) -> str:
    return run_m2h(folder, "my_variants.py", *args)


@pytest.mark.e2e
def test_a_researchers_own_variant_is_listed_run_swept_tabled_and_plotted(tmp_path, data_root):
    (tmp_path / "my_variants.py").write_text(VARIANTS)
    assert "gumbel-bigz" in _m2h(tmp_path, "list")
    shown = _m2h(tmp_path, "show", "gumbel-bigz")
    assert "classifier_layers" in shown and "128" in shown
    assert "record: " in _m2h(tmp_path, "run", "gumbel-bigz", *QUICK)

    sweep = ["--base", "gumbel-bigz", "--sweep", "temperature=0.2,1.0", "--seeds", "0", "1"]
    out = _m2h(tmp_path, "ablate", *sweep, *QUICK, "--jobs", "2")
    name = "gumbel-bigz-temperature"
    assert (tmp_path / "ablations" / f"{name}.toml").exists() and f"m2h table {name}" in out
    assert "4 finished" in out

    budget = ["--epochs", "1", "--max-steps", "3"]
    _m2h(tmp_path, "table", name, *budget)
    table = pd.read_csv(tmp_path / "results" / f"{name}.csv")
    assert sorted(table["temperature"]) == [0.2, 1.0] and set(table["seeds"]) == {2}

    # two swept settings: a grid
    grid = ["--base", "gumbel-bigz", "--sweep", "temperature=0.2,1.0", "z_dim=32,128"]
    _m2h(tmp_path, "ablate", *grid, *QUICK)
    _m2h(tmp_path, "table", "gumbel-bigz-temperature-z_dim", *budget)
    plotted = _m2h(tmp_path, "plot", "gumbel-bigz-temperature-z_dim", *budget)
    assert "gumbel-bigz-temperature-z_dim_grid.png" in plotted
    table = pd.read_csv(tmp_path / "results" / "gumbel-bigz-temperature-z_dim.csv")
    assert {"temperature", "z_dim"} <= set(table.columns)
    shown = (tmp_path / "results" / "gumbel-bigz-temperature-z_dim.md").read_text()
    assert "| temperature=0.2, z_dim=32 " in shown  # the name says what varies, and only that
    assert sorted(zip(table["temperature"], table["z_dim"], strict=True)) == [
        (0.2, 32), (0.2, 128), (1.0, 32), (1.0, 128),
    ]  # fmt: skip


def test_a_sweep_is_an_ablation_file_and_bad_ones_are_refused():
    name, text = sweep_spec("gumbel-0.5", ["temperature=0.2,1.0"], {"labels": 600}, [0, 1], 3)
    assert name == "gumbel-0.5-temperature"
    assert "[axes]\ntemperature = [0.2, 1.0]" in text and "labels = 600" in text
    for sweep, settings, message in [
        (["temperature=0.2", "temperature=1.0"], {}, "temperature is swept twice"),
        (["temperature=0.2,1.0"], {"temperature": 0.3}, "both swept and --set"),
        (["temprature=0.2"], {}, "did you mean 'temperature'"),
        (["temperature"], {}, "a --sweep entry is key=a,b"),
    ]:
        with pytest.raises((AblationError, ValueError), match=message):
            sweep_spec("gumbel-0.5", sweep, settings, None, None)


def _plain_m2h(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """m2h in `folder` with no --variants and no $M2H_VARIANTS: what a later command sees."""
    env = {k: v for k, v in os.environ.items() if k not in ("M2H_VARIANTS", "M2H_EXPORTS")}
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def test_an_export_of_a_researchers_variant_loads_without_naming_their_file(tmp_path):
    """Issue 53's first finding: an export whose base is a variant of the user's file broke every
    later command in the folder; it names that file and loads it first."""
    (tmp_path / "my_variants.py").write_text(VARIANTS)
    load_user_variants(tmp_path / "my_variants.py")
    exports = tmp_path / "m2h-exports.toml"
    save_user_variant("bigz-tuned", "gumbel-bigz", {"alpha": 0.3}, "tuned", {}, exports)
    assert f'variants = "{tmp_path / "my_variants.py"}"' in exports.read_text()
    shown = _plain_m2h(tmp_path, "show", "bigz-tuned")
    assert shown.returncode == 0, shown.stderr
    assert "128" in shown.stdout and "0.3" in shown.stdout  # the base's z and the tuned alpha
    assert shown.stderr == ""


def test_a_stale_export_is_a_warning_naming_it_not_a_failure_of_other_commands(tmp_path):
    (tmp_path / "m2h-exports.toml").write_text('[stale]\nbase = "gone-variant"\n')
    listed = _plain_m2h(tmp_path, "list")
    assert listed.returncode == 0 and "exact" in listed.stdout
    warning = listed.stderr.strip()
    assert warning.startswith("m2h: warning: ") and "\n" not in warning
    assert "m2h-exports.toml: variant [stale] not loaded" in warning and "gone-variant" in warning


def test_a_variant_made_from_another_searches_its_bases_space(tmp_path):
    (tmp_path / "my_variants.py").write_text(VARIANTS)
    load_user_variants(tmp_path / "my_variants.py")
    assert search_space("gumbel-bigz") == search_space("gumbel-0.5") != {}
    register_variant("own-space", get_variant("exact"), space={"alpha": [0.1, 1.0]})
    assert search_space("own-space") == {"alpha": [0.1, 1.0]}
