"""The labelled subset drawn apart from the initialisation: `label_seed`, its identity (a label
seed equal to the seed is the run without one) and how runs pair on it."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from harness.config import identity
from harness.config.ablations import load_ablation
from harness.config.variants import VariantError, create_variant, parse_overrides
from harness.experiments.ablate import plan, run_states
from harness.reporting.tables import Pair, comparisons, errors_by_pair, load_runs
from harness.runs.records import make_record, read_record, record_path, write_record
from harness.training.data import synthetic_splits
from harness.training.stacked import StackedSeeds
from harness.training.step import OneSeed, labelled_split
from tests.runs.test_records import MACHINE
from tests.training.test_stopping import history

SPREAD = """
variants = ["exact"]
seeds = [0, 1]
epochs = 4
[set]
labels = 100
[axes]
label_seed = [0, 1]
"""


def test_label_seed_parses_as_a_seed_or_none():
    assert parse_overrides(["label_seed=3"]) == {"label_seed": 3}
    assert parse_overrides(["label_seed=none"]) == {"label_seed": None}
    with pytest.raises(VariantError, match="label_seed must be int, got 'x'"):
        parse_overrides(["label_seed=x"])
    with pytest.raises(VariantError, match="label_seed must be >= 0 or none, got -1"):
        create_variant("exact", {"label_seed": -1})


def test_the_label_seed_draws_the_labelled_images_and_the_seed_the_rest():
    splits = synthetic_splits(torch.device("cpu"), train=2_000, test=100)
    alone = OneSeed(create_variant("exact", {"seed": 0, "label_seed": 3}), splits, "cpu")
    drawn_by_3 = labelled_split(splits, 100, 3, torch.device("cpu"))
    assert torch.equal(alone.x_l, drawn_by_3.x_l) and torch.equal(alone.y_l, drawn_by_3.y_l)
    default = OneSeed(create_variant("exact", {"seed": 0}), splits, "cpu")
    assert not torch.equal(alone.x_l, default.x_l)  # seed 0's own draw is another subset
    for a, b in zip(alone.model.parameters(), default.model.parameters(), strict=True):
        assert torch.equal(a, b)  # the initialisation is the seed's either way
    stack = StackedSeeds(create_variant("exact", {"label_seed": 3}), [0, 1], splits, "cpu")
    assert torch.equal(stack.x_l[0], drawn_by_3.x_l) and torch.equal(stack.x_l[1], drawn_by_3.x_l)


def test_a_label_seed_equal_to_the_seed_is_the_same_run():
    default = create_variant("exact", {"seed": 1})
    same = create_variant("exact", {"seed": 1, "label_seed": 1})
    other = create_variant("exact", {"seed": 1, "label_seed": 2})
    assert identity.twin_key(same, None) == identity.twin_key(default, None)
    assert identity.twin_key(other, None) != identity.twin_key(default, None)
    # a cell holds one labelled subset over its seeds, so its key names the label seed
    assert identity.cell_key(same, None) != identity.cell_key(default, None)
    # and a record without one keeps the key it had before the setting existed
    assert identity.cell_key(default, None) == identity.cell_key(
        dataclasses.replace(default, label_seed=None), None
    )


SOURCES = ("labelled subset", "initialisation", "residual")


def _record(variant, test_error):
    errors = [30.0, test_error, test_error + 1.0, test_error + 2.0]
    return make_record(variant, history([30.0, 20.0, 21.0, 22.0], errors), MACHINE)


def test_the_runs_whose_seeds_agree_are_reused_and_the_others_train(tmp_path):
    runs = tmp_path / "runs"
    for seed in (0, 1):  # the labels campaign's runs: no label seed of their own
        write_record(runs, _record(create_variant("exact", {"seed": seed, "epochs": 4}), 20.0))
    path = tmp_path / "spread.toml"
    path.write_text(SPREAD)
    ablation = load_ablation(str(path))
    states = {(s.cell, s.seed): s for s in run_states(ablation, None, 4, None, tmp_path)}
    assert states["exact[label_seed=1]", 1].status == "done"
    assert states["exact[label_seed=1]", 1].detail.startswith("as exact-")
    assert states["exact[label_seed=1]", 0].status == "to run"
    jobs, reused = plan(ablation, None, 4, None, runs, False, tmp_path / "ckpt")
    assert sorted((c.name, r.variant.seed) for c, r in reused) == [
        ("exact[label_seed=0]", 0),
        ("exact[label_seed=1]", 1),
    ]
    assert sorted((j.cell.name, j.variants[0].seed) for j in jobs) == [
        ("exact[label_seed=0]", 1),
        ("exact[label_seed=1]", 0),
    ]
    adopted = read_record(record_path(runs, ablation.variant(ablation.cells()[1], 1, 4), None))
    assert adopted.variant.label_seed == 1 and adopted.made["twin_of"].startswith("exact-")


def test_runs_pair_on_their_seed_and_their_labelled_subset(tmp_path):
    path = tmp_path / "pairs.toml"
    path.write_text(
        'variants = ["exact", "paper-relu"]\nseeds = [0, 1, 2]\nepochs = 4\n'
        "[set]\nlabels = 100\nvalidation = 200\n"
    )
    ablation = load_ablation(str(path))
    runs = tmp_path / "runs"
    for seed in (0, 1, 2):
        write_record(runs, _record(ablation.variant(ablation.cells()[0], seed, 4), 20.0 + seed))
        relu = ablation.variant(ablation.cells()[1], seed, 4)
        if seed == 2:  # another labelled subset: no pair for exact's seed 2
            relu = relu.replace(label_seed=0)
        write_record(runs, _record(relu, 18.0 + seed))
    frame, _ = load_runs(ablation, tmp_path)
    assert errors_by_pair(frame, "exact") == {Pair(0, 0): 20.0, Pair(1, 1): 21.0, Pair(2, 2): 22.0}
    assert set(errors_by_pair(frame, "paper-relu")) == {Pair(0, 0), Pair(1, 1)}
    (found,) = comparisons(ablation, frame)
    assert found.seeds == (Pair(0, 0), Pair(1, 1)) and found.difference == -2.0
    assert [str(p) for p in (Pair(0, 0), Pair(2, 0))] == ["0", "2/0"]


def test_a_spread_table_shows_the_grid_its_decomposition_and_the_hard_digits(tmp_path, capsys):
    from harness.cli.main import main

    path = tmp_path / "spread.toml"
    path.write_text(SPREAD)
    ablation = load_ablation(str(path))
    for cell in ablation.cells():
        for seed in (0, 1):
            variant = ablation.variant(cell, seed, 4)
            bump = 0.2 if variant.label_draw == seed else 0.0  # a residual to estimate
            record = _record(variant, 20.0 + 3 * variant.label_draw + seed + bump)
            for report in record.history:  # digit 7 is the hard one of label draw 1
                report.test_class_errors = [10.0] * 7 + [10.0 + 30 * variant.label_draw, 10, 10]
            write_record(tmp_path / "runs", record)
    assert main(["table", str(path), "--out", str(tmp_path)]) == 0
    text = (tmp_path / "spread.md").read_text()
    capsys.readouterr()
    assert "## Where the spread comes from" in text
    row = next(line for line in text.splitlines() if line.startswith("| label seed 1 "))
    assert [cell.strip() for cell in row.split("|")[2:5]] == ["23.00", "24.20", "23.60"]
    # by hand: MS_L = 2 ((20.6 - 22.1)^2 + (23.6 - 22.1)^2) = 9, MS_I = 1, MS_e = 0.04 on 1 df
    # each; s2_L = (9 - 0.04) / 2, s2_I = (1 - 0.04) / 2
    rows = [line.split("|") for line in text.splitlines() if line.startswith("| ")]
    variances = {r[1].strip(): r[4].strip() for r in rows if r[1].strip() in SOURCES}
    assert variances == {"labelled subset": "4.48", "initialisation": "0.48", "residual": "0.04"}
    hard = next(
        line for line in text.splitlines() if line.startswith("| label seed 1") and "digit" in line
    )
    assert hard.split("|")[9].strip() == "40.0" and hard.split("|")[12].strip() == "digit 7"


def test_a_spread_table_with_holes_says_which_runs_are_missing(tmp_path):
    from harness.reporting.spread import spread_markdown

    frame = pd.DataFrame(
        {"label_seed": [0, 0, 1], "seed": [0, 1, 0], "selected_test_error": [1.0, 2.0, 3.0]}
    )
    (_, _, line, _) = spread_markdown(frame)
    assert line == (
        "Not yet: the grid of label draws by seeds is not complete: no single run at "
        "label seed 1 seed 1."
    )
