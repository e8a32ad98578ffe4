"""`m2h reproduce` (harness/runs/reproduce.py): a record made here reproduces; a changed number
is found at its epoch and quantity; the causes name what differs from where it was made (the
numerics version a commit trained under, the processor, the instruction set)."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from harness.config.variants import create_variant, load_user_variants
from harness.runs.provenance import REPO, environment_params
from harness.runs.records import make_record
from harness.runs.reproduce import Reproduction, causes, numerics_version_at, reproduce
from harness.training.data import load_splits
from harness.training.numerics import NUMERICS_STARTS, NUMERICS_VERSION
from harness.training.trainer import Trainer

DATASET = Path(__file__).parents[1] / "training" / "generated_dataset.py"


@pytest.fixture
def record():
    """Two epochs of exact M2 on the generated dataset, recorded as a run would be."""
    load_user_variants(DATASET)
    variant = create_variant("exact-blobs", {"epochs": 2})
    torch.set_num_threads(1)
    trainer = Trainer(variant, load_splits("blobs"), "cpu", max_steps=4, progress=False)
    reports = [trainer.run_epoch()[0] for _ in range(2)]
    return make_record(variant, reports, environment_params(torch.device("cpu")), max_steps=4)


def test_a_record_made_here_reproduces(record):
    outcome = reproduce(record, epochs=2)
    assert outcome.difference is None and outcome.summary().startswith("reproduces")


def test_a_changed_number_is_named_with_its_epoch(record):
    history = list(record.history)
    history[1] = replace(history[1], test_accuracy=history[1].test_accuracy + 0.01)
    outcome = reproduce(replace(record, history=history), epochs=2)
    assert outcome.difference is not None
    assert outcome.difference.startswith("epoch 2, test_accuracy: ")
    # made in this process: only uncommitted changes, if any, can differ
    assert all(c.startswith("made at") and "(dirty)" in c for c in outcome.causes)
    assert "nothing the record names differs" in Reproduction(2, "x", []).summary()


def test_the_causes_name_another_processor_and_instruction_set(record):
    # a processor no machine here has, so the test holds on whichever one runs it
    made = {**record.made, "device_name": "cpu (Example Processor 9000, 2 cores)"}
    made["segments"] = [{**made["segments"][0], "device_name": made["device_name"]}]
    assert any("Example Processor 9000" in c and "here" in c for c in causes(made, 1))
    made = {**record.made, "cpu_capability": "AVX2"}
    if record.made["cpu_capability"] != "AVX2":
        assert any("instruction set AVX2 there" in c for c in causes(made, 1))
    older = {k: v for k, v in record.made.items() if k != "cpu_capability"}
    assert any("predates the instruction set" in c for c in causes(older, 1))


def test_a_commit_before_a_numerics_change_is_named_with_its_version(record):
    start = NUMERICS_STARTS[NUMERICS_VERSION]
    parent = subprocess.run(
        ["git", "rev-parse", f"{start}~1"], cwd=REPO, capture_output=True, text=True
    )
    if parent.returncode:
        pytest.skip("this checkout lacks the history of the numerics change")
    assert numerics_version_at(parent.stdout.strip()) == NUMERICS_VERSION - 1
    assert numerics_version_at(start) == NUMERICS_VERSION
    made = {k: v for k, v in record.made.items() if k != "numerics_version"}
    made["git_commit"] = parent.stdout.strip()
    made["segments"] = [{**made["segments"][0], "git_commit": made["git_commit"]}]
    (cause, *_) = causes(made, 1)
    assert f"under numerics version {NUMERICS_VERSION - 1}" in cause and start in cause


def test_an_ablations_records_are_sampled_per_cell_and_each_reproduces(tmp_path, monkeypatch):
    """`m2h reproduce --all ABLATION`: the first --per-cell records of each cell, made here,
    each reproduce; the exit status says whether all did."""
    from harness.cli.main import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ablations").mkdir()
    (tmp_path / "ablations" / "blobs.toml").write_text(
        'max_steps = 3\nvariants = ["exact-blobs", "gumbel-blobs"]\nseeds = [0, 1]\nepochs = 1\n'
    )
    load_user_variants(DATASET)
    assert main(["ablate", "blobs", "--no-track"]) == 0
    assert main(["reproduce", "--all", "blobs", "--per-cell", "1"]) == 0
    assert main(["reproduce", "--all", "blobs", "--per-cell", "0"]) == 1  # a count below 1
    assert main(["reproduce"]) == 1  # neither a record nor --all
