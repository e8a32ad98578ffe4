"""Every table in results/ either rebuilds byte for byte from the committed run records with the
command it names, or says plainly that it is a snapshot without records."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.cli.main import main

RESULTS = Path(__file__).resolve().parents[2] / "results"
TABLES = sorted(
    p.stem
    for p in RESULTS.glob("*.md")
    if p.stem not in ("README", "performance", "answers", "paper")
)
SNAPSHOT = "- snapshot without run records:"


def test_every_table_is_listed():
    assert {"labels", "paper-relu", "labels-5-epochs"} <= set(TABLES)


@pytest.mark.parametrize("name", TABLES)
def test_a_table_rebuilds_byte_for_byte_or_says_it_is_a_snapshot(
    name, tmp_path, capsys, monkeypatch
):
    committed = (RESULTS / f"{name}.md").read_text()
    if SNAPSHOT in committed:
        assert "(then `m2h table" not in committed  # names no command that would not rebuild it
        assert not (RESULTS / f"{name}_comparisons.csv").exists()
        return
    rebuild = committed.split("(then `", 1)[1].split("`", 1)[0]
    assert rebuild.startswith(f"m2h table {name}")
    out = tmp_path / "results"  # a fresh clone's results/, with the committed records alone
    shutil.copytree(RESULTS / "runs", out / "runs")
    for m1_record in (RESULTS / "m1").glob("*.json"):  # M1+M2 tables name their M1 from it
        (out / "m1").mkdir(exist_ok=True)
        shutil.copy(m1_record, out / "m1")
    monkeypatch.chdir(tmp_path)
    assert main(rebuild.split()[1:]) == 0  # the very command the table names
    capsys.readouterr()
    for suffix in (".md", ".csv", "_comparisons.csv"):
        ours, theirs = out / f"{name}{suffix}", RESULTS / f"{name}{suffix}"
        assert ours.exists() == theirs.exists(), suffix
        if theirs.exists():
            assert ours.read_bytes() == theirs.read_bytes(), f"{name}{suffix} differs"


def test_the_answers_page_rebuilds_byte_for_byte(tmp_path, capsys):
    shutil.copytree(RESULTS / "runs", tmp_path / "runs")
    assert main(["answers", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    for page in ("answers.md", "paper.md"):
        assert (tmp_path / page).read_bytes() == (RESULTS / page).read_bytes(), page
