"""Run records: written by finished runs, read back into tables with no MLflow store, merged
across machines, reused across ablations, loaded into MLflow."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd
import pytest

from harness.cli.main import main
from harness.config.ablations import load_ablation
from harness.config.variants import create_variant, resumable_settings
from harness.runs.records import (
    RecordError,
    cell_key,
    find_records,
    make_record,
    read_record,
    write_record,
)
from harness.runs.runner import RunSite
from harness.tracking.loading import record_span
from harness.tracking.views import VIEW_TAG
from harness.training.numerics import NUMERICS_VERSION
from tests.training.test_stopping import history

TWO_CELLS = """
description = "one estimator and the control, stop rule on"
variants = ["exact"]
controls = ["supervised-only"]
seeds = [0, 1]
epochs = 4

[seeds_by_variant]
supervised-only = [0]

[set]
labels = 100
validation = 200
patience = 2
"""

# made by this code's numerics (a record of another version is reused only where the file
# allows: tests/experiments/test_ablation.py)
MACHINE = {
    "git_commit": "a" * 40,
    "git_dirty": "False",
    "device_name": "cpu (test, 2 cores)",
    "numerics_version": NUMERICS_VERSION,
}


@pytest.fixture
def ablation_file(tmp_path):
    path = tmp_path / "two.toml"
    path.write_text(TWO_CELLS)
    return path


def write_runs(ablation_file, results, machine=MACHINE, seeds=None):
    """Records of made-up runs for every cell and seed of the ablation."""
    ablation = load_ablation(str(ablation_file))
    for cell in ablation.cells():
        for seed in seeds or ablation.seeds_of(cell):
            variant = ablation.variant(cell, seed)
            errors = [30.0, 20.0 - seed, 21.0, 22.0] if not cell.control else [30.0, 29.0, 31.0]
            record = make_record(variant, history(errors), machine)
            write_record(results / "runs", record)


def test_a_record_reads_back_as_written(tmp_path):
    variant = create_variant("exact", {"validation": 100, "patience": 3, "seed": 4})
    record = make_record(variant, history([30.0, 20.123456789, 25.0]), MACHINE, max_steps=7)
    path = write_record(tmp_path, record)
    assert path.name == f"exact-{cell_key(variant, 7)}-s4.json"
    again = read_record(path)
    assert again.variant == variant and again.max_steps == 7
    assert again.made["git_commit"] == "a" * 40 and "finished" in again.made
    assert again.history == record.history
    assert again.history[1].test_error == 20.1235  # six significant digits, as stored
    stored = json.loads(path.read_text())
    assert stored["outcome"]["selected_epoch"] == again.outcome["selected_epoch"] == 2
    assert len(path.read_text().splitlines()) < 80  # one line per epoch: a diff reads by epoch


def test_a_record_is_read_once_until_its_file_changes(tmp_path):
    variant = create_variant("exact", {"seed": 1})
    path = write_record(tmp_path, make_record(variant, history([30.0, 20.0]), MACHINE))
    first = read_record(path)
    assert read_record(path) is first  # not parsed again for the next table that looks
    write_record(tmp_path, make_record(variant, history([30.0, 20.0, 10.0]), MACHINE))
    again = read_record(path)
    assert len(again.history) == 3 and again.outcome["selected_test_error"] == 10.0
    path.write_text("{")  # damaged in place: still a one-line error, never the old record
    with pytest.raises(RecordError, match="is not a readable run record"):
        read_record(path)


COMMITTED_RUNS = Path(__file__).resolve().parents[2] / "results" / "runs"


@pytest.mark.parametrize("path", sorted(COMMITTED_RUNS.glob("*.json")), ids=lambda p: p.stem)
def test_a_committed_record_states_the_outcome_its_epochs_give(path, tmp_path):
    """Tables recompute each run's outcome from its epochs under the current stop rule; the
    outcome a committed record states must be that one, or a reader of the file is misled."""
    rewritten = write_record(tmp_path, read_record(path))
    stored, recomputed = (json.loads(p.read_text())["outcome"] for p in (path, rewritten))
    assert stored == recomputed


def test_the_cell_key_holds_every_setting_but_the_seed():
    base = create_variant("exact", {"validation": 100, "patience": 5})
    assert cell_key(base, None) == cell_key(base.replace(seed=3), None)
    for change in [
        {"epochs": 11},
        {"patience": 4},
        {"min_delta": 0.5},
        {"lr": 3e-4},
        {"weight_decay": 2e-5},
    ]:
        assert cell_key(base.replace(**change), None) != cell_key(base, None)
    assert cell_key(base, 5) != cell_key(base, None)


def test_a_later_setting_at_its_default_keeps_the_checkpoints_name():
    """Settings added to Variant after checkpoints began (weight_decay among them) leave a run's
    checkpoint name as it was at their defaults, so a run cut off before they existed resumes;
    set, they name another checkpoint."""
    from harness.config.identity import run_key

    base = create_variant("m1m2-paper", {"lr": 1e-3})
    assert "weight_decay" not in resumable_settings(base.params())
    assert resumable_settings(base.replace(weight_decay=2e-5).params())["weight_decay"] == 2e-5
    assert run_key(base.replace(weight_decay=2e-5), None) != run_key(base, None)


def test_a_setting_without_effect_does_not_split_a_cell_from_its_twin():
    base = create_variant("exact", {"validation": 100, "patience": 5})
    for change in [{"alpha_warmup_epochs": 2.0}, {"temperature": 0.7}, {"anneal_rate": 1e-4}]:
        assert cell_key(base.replace(**change), None) == cell_key(base, None)
    warm = base.replace(alpha_schedule="linear")
    assert cell_key(warm.replace(alpha_warmup_epochs=2.0), None) != cell_key(warm, None)
    no_rule = create_variant("exact", {"validation": 100})
    assert cell_key(no_rule.replace(min_delta=0.5), None) == cell_key(no_rule, None)


def test_a_table_is_rebuilt_from_records_alone_and_merges_machines(ablation_file, tmp_path):
    results = tmp_path / "results"
    write_runs(ablation_file, results, seeds=[0])
    other = {**MACHINE, "git_commit": "b" * 40, "device_name": "NVIDIA H100"}
    write_runs(ablation_file, results, machine=other, seeds=[1])
    assert not list(tmp_path.glob("*.db"))
    assert main(["table", str(ablation_file), "--out", str(results)]) == 0
    table = pd.read_csv(results / "two.csv")
    assert table["cell"].tolist() == ["exact", "supervised-only"]
    exact = table.iloc[0]
    # best validation epoch 2 for both seeds: test errors 20 and 19
    assert exact.test_error_mean == pytest.approx(19.5)
    assert exact.test_error_std == pytest.approx(pd.Series([20.0, 19.0]).std())
    assert exact.seeds == 2 and exact.stopped_by_rule == 2  # patience 2 after epoch 2
    md = (results / "two.md").read_text()
    # the file plans seed 0 alone for the control: its seed 1 is not this table's
    assert f"{'a' * 40} (2 runs); {'b' * 40} (1 run)" in md
    assert "NVIDIA H100 (1 run)" in md and "cpu (test, 2 cores) (2 runs)" in md
    assert f"- command: `m2h ablate two --out {results}` (then" in md  # the folder it needs
    before = md
    assert main(["table", str(ablation_file), "--out", str(results)]) == 0
    assert (results / "two.md").read_text() == before  # the same records, the same file

    assert main(["plot", str(ablation_file), "--out", str(results)]) == 0
    assert (results / "two_curves.png").stat().st_size > 10_000


def test_the_table_gives_the_time_to_each_accuracy_over_the_runs_that_reached_it(
    ablation_file, tmp_path
):
    """10 s epochs: seed 0 reaches 90% at epoch 2 and 95% at epoch 3, seed 1 90% at epoch 3 and
    never 95%, the control neither."""
    ablation = load_ablation(str(ablation_file))
    test_errors = {0: [30.0, 9.0, 4.0, 4.5], 1: [30.0, 12.0, 8.0, 7.0]}
    for cell in ablation.cells():
        for seed in ablation.seeds_of(cell):
            errors = [30.0, 29.0, 31.0] if cell.control else test_errors[seed]
            variant = ablation.variant(cell, seed)
            write_record(tmp_path / "runs", make_record(variant, history(errors), MACHINE))
    assert main(["table", str(ablation_file), "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "two.csv").set_index("cell")
    assert table.loc["exact", "seconds_to_90"] == pytest.approx(25.0)
    assert table.loc["exact", "reached_90"] == 2 and table.loc["exact", "reached_95"] == 1
    md = (tmp_path / "two.md").read_text()
    assert "time to 90% (s)" in md and "time to 95% (s)" in md
    exact_line = next(line for line in md.splitlines() if line.startswith("| exact "))
    assert "| 25 (2/2) " in exact_line and "| 30 (1/2) " in exact_line
    control_line = next(line for line in md.splitlines() if line.startswith("| supervised-only"))
    assert control_line.count("never (0/1)") == 2


def test_a_table_of_the_planned_seeds_names_the_command_that_plans_them(ablation_file, tmp_path):
    """Records of seeds the file plans (exact 0 and 1, the control 0 alone): the command is the
    ablation's own, whose seeds come from the file, not a --seeds that would change the plan."""
    results = tmp_path / "results"
    write_runs(ablation_file, results)  # the file's seeds
    assert main(["table", str(ablation_file), "--out", str(results)]) == 0
    md = (results / "two.md").read_text()
    out = f"--out {results}"
    assert f"- command: `m2h ablate two {out}` (then `m2h table two {out}`)" in md
    assert "3 of the 3 runs the ablation file plans have finished" in md
    # a seed the file does not plan (the control's seed 1, made by another ablation that
    # shares the cell) stays out of this table: it holds what its command makes
    write_runs(ablation_file, results, seeds=[1])
    assert main(["table", str(ablation_file), "--out", str(results)]) == 0
    md = (results / "two.md").read_text()
    assert "3 of the 3 runs the ablation file plans have finished" in md
    control_line = next(line for line in md.splitlines() if line.startswith("| supervised-only"))
    assert control_line.split("|")[-2].strip() == "1"  # one seed


def test_a_table_at_a_budget_with_no_records_names_the_budgets_there(
    ablation_file, tmp_path, capsys
):
    write_runs(ablation_file, tmp_path)
    assert main(["table", str(ablation_file), "--out", str(tmp_path), "--epochs", "9"]) == 1
    err = capsys.readouterr().err
    assert "no run records at --epochs 9" in err and "records at --epochs 4" in err


def test_a_table_asked_of_the_wrong_folder_names_the_folder_holding_its_records(
    ablation_file, tmp_path, capsys, monkeypatch
):
    write_runs(ablation_file, tmp_path / "runs" / "mine")  # as `--out runs/mine` leaves them
    (tmp_path / "other" / "runs").mkdir(parents=True)
    (tmp_path / "other" / "runs" / "exact-broken.json").write_text("{")  # passed over
    monkeypatch.chdir(tmp_path)
    assert main(["table", str(ablation_file), "--out", "results"]) == 1
    err = capsys.readouterr().err
    assert "no run records at --epochs 4 in results/runs" in err
    assert "are in runs/mine/runs (add `--out runs/mine`)" in err and "other" not in err
    assert main(["table", str(ablation_file), "--out", "runs/mine"]) == 0


def test_m2h_load_puts_records_into_mlflow_once(ablation_file, tmp_path, capsys):
    mlflow = pytest.importorskip("mlflow")
    write_runs(ablation_file, tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["load", str(ablation_file), "--out", str(tmp_path), "--tracking-uri", store]
    assert main(args) == 0
    assert "3 run records loaded" in capsys.readouterr().out
    assert main(args) == 0
    assert "0 run records loaded" in capsys.readouterr().out
    client = mlflow.MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("two").experiment_id])
    children = [r for r in runs if r.data.tags.get("m2h.role") != "ablation"]
    assert len(children) == 3 and {r.info.status for r in children} == {"FINISHED"}
    (parent,) = [r for r in runs if r.data.tags.get("m2h.role") == "ablation"]
    # the collapsed row of the ablation in the UI says each cell's mean and sd already
    assert parent.data.metrics["exact/test_error_mean"] == pytest.approx(19.5)
    assert parent.data.metrics["exact/seeds"] == 2
    assert "cells.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    exact0 = next(
        r for r in children if r.data.tags["cell"] == "exact" and r.data.tags["seed"] == "0"
    )
    # provenance as tags, the settings alone as params (the compare view's differing params)
    assert (
        exact0.data.tags["git_commit"] == "a" * 40 == exact0.data.tags["mlflow.source.git.commit"]
    )
    assert "git_commit" not in exact0.data.params and "finished" not in exact0.data.params
    assert exact0.data.params["estimator"] == "exact"
    assert exact0.data.metrics["selected_test_error"] == 20.0
    assert [m.value for m in client.get_metric_history(exact0.info.run_id, "test_error")] == [
        30.0,
        20.0,
        21.0,
        22.0,
    ]
    # its row in the UI: a name that says what differs first, its cell's mean and interval
    assert exact0.info.run_name == "exact · seed 0"
    assert exact0.data.tags["cell_title"] == "exact"
    assert exact0.data.metrics["cell/test_error_mean"] == pytest.approx(19.5)
    assert exact0.data.metrics["cell/ci_low"] < 19.5 < exact0.data.metrics["cell/ci_high"]
    # honest durations: each run's from its record; the parent spans its runs, not the load
    spans = [record_span(read_record(p)) for p in sorted((tmp_path / "runs").glob("*.json"))]
    assert sorted((r.info.start_time, r.info.end_time) for r in children) == sorted(spans)
    assert parent.info.start_time == min(s for s, _ in spans)
    assert parent.info.end_time == max(e for _, e in spans)
    # the experiment opens on the m2h view: the key columns and the settings the cells vary
    tags = client.get_experiment_by_name("two").tags
    state = json.loads(json.loads(tags[VIEW_TAG])["state"])
    assert state["selectedColumns"][0] == "metrics.`selected_test_error`"
    assert "params.`estimator`" in state["selectedColumns"]
    assert "params.`labels`" not in state["selectedColumns"]  # both cells have 100 labels
    assert tags["mlflow.experiment.primaryMetric.name"] == "selected_test_error"


def test_a_cell_finished_in_one_ablation_is_reused_by_another(ablation_file, tmp_path, mnist):
    """The same resolved settings, seed and budget: the second ablation trains nothing and
    logs the first one's run under its own parent."""
    from harness.experiments.ablate import AblationOptions, run_ablation

    mlflow = pytest.importorskip("mlflow")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = tmp_path / "first.toml"
    first.write_text(TWO_CELLS.replace("epochs = 4", "epochs = 1"))
    second = tmp_path / "second.toml"
    second.write_text(
        TWO_CELLS.replace("epochs = 4", "epochs = 1").replace('"exact"', '"gumbel-st"')
    )
    options = AblationOptions(
        tracking_uri=store,
        site=RunSite(max_steps=2),
        results_dir=tmp_path / "results",
        checkpoint_dir=tmp_path / "ckpt",
    )
    outcomes = run_ablation(load_ablation(str(first)), options, echo=lambda *a: None)
    assert sorted(o.status for o in outcomes) == ["finished"] * 3
    outcomes = run_ablation(load_ablation(str(second)), options, echo=lambda *a: None)
    statuses = {(o.cell, o.seed): o.status for o in outcomes}
    assert statuses == {
        ("gumbel-st", 0): "finished",
        ("gumbel-st", 1): "finished",
        ("supervised-only", 0): "skipped",
    }
    records = find_records(
        tmp_path / "results" / "runs",
        load_ablation(str(second)).variant(load_ablation(str(second)).cells()[1], 0),
        2,
    )
    assert len(records) == 1
    client = mlflow.MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("second").experiment_id])
    reused = [r for r in runs if r.data.tags.get("cell") == "supervised-only"]
    assert len(reused) == 1 and reused[0].data.tags["m2h.loaded_from"] == records[0].path.name


def test_the_parent_run_carries_the_intervals_and_the_paired_comparisons(ablation_file, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    ablation_file.write_text(TWO_CELLS.replace("supervised-only = [0]", "supervised-only = [0, 1]"))
    write_runs(ablation_file, tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["load", str(ablation_file), "--out", str(tmp_path), "--tracking-uri", store]) == 0
    client = mlflow.MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("two").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("m2h.role") == "ablation"]
    metrics = parent.data.metrics
    # exact's seeds select 20 and 19, the control's 29 and 29: paired differences 9 and 10
    assert metrics["exact/ci_low"] < 19.5 < metrics["exact/ci_high"]
    assert metrics["supervised-only/vs_reference_difference"] == pytest.approx(9.5)
    assert "supervised-only/vs_reference_p_exact_holm" in metrics
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "comparisons.csv" in artifacts
    path = client.download_artifacts(parent.info.run_id, "comparisons.csv", str(tmp_path))
    text = Path(path).read_text()
    assert text.splitlines()[1].startswith("supervised-only,exact,0 1,2,9.5")
    # the plots `m2h plot` draws, Holm-corrected intervals and all, beside them in the UI
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/two_final.png", "plots/two_paired.png", "plots/two_curves.png"} <= plots


def test_a_resumed_run_records_every_commit_and_machine_it_trained_under(generated, tmp_path):
    from harness.training.trainer import Trainer

    variant = create_variant("exact", {"labels": 100, "validation": 200, "epochs": 1})
    first = {"git_commit": "a" * 40, "git_dirty": False, "device_name": "cpu", "host": "one"}
    later = {**first, "git_commit": "b" * 40, "host": "two"}
    ckpt = tmp_path / "run.pt"
    Trainer(variant, generated, "cpu", 2, False, made_by=first).fit(checkpoints=[ckpt])
    resumed = Trainer(variant.replace(epochs=3), generated, "cpu", 2, False, made_by=later)
    assert resumed.resume_from([ckpt])
    (history,) = resumed.fit(checkpoints=[ckpt])
    segments = resumed.seed_segments(0)
    assert segments == [{**first, "epochs": [1, 1]}, {**later, "epochs": [2, 3]}]
    record = make_record(variant.replace(epochs=3), history, {**later, "git_dirty": False}, 2,
                         segments)  # fmt: skip
    path = write_record(tmp_path / "runs", record)
    made = json.loads(path.read_text())["made"]
    assert made["git_dirty"] is False and made["segments"][0]["git_commit"] == "a" * 40


def test_every_committed_record_holds_its_provenance_with_real_booleans():
    for path in sorted((Path(__file__).resolve().parents[2] / "results" / "runs").glob("*.json")):
        made = json.loads(path.read_text())["made"]
        assert isinstance(made["git_dirty"], bool), path.name
        epochs = [s["epochs"] for s in made["segments"]]
        known = [s for s in made["segments"] if s["git_commit"] != "unknown"]
        assert epochs[0][0] == 1 and all(isinstance(s["git_dirty"], bool) for s in known)
        assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(epochs)), path.name
        assert epochs[-1][1] == len(json.loads(path.read_text())["epochs"]), path.name


def test_a_cell_named_otherwise_with_every_setting_alike_is_not_trained_again(tmp_path):
    """y-term's gumbel-0.1[y_term=sampled] is estimator's tutorial-gumbel under another name: its
    record is adopted (copied under the new name, saying whose it is), not trained."""
    from harness.experiments.ablate import plan

    runs = tmp_path / "runs"
    tutorial = create_variant("tutorial-gumbel", {"labels": 100, "epochs": 4})
    write_record(runs, make_record(tutorial, history([30.0, 20.0, 21.0, 22.0]), MACHINE))
    path = tmp_path / "sampled.toml"
    path.write_text(
        'variants = ["gumbel-0.1", "gumbel-0.5"]\nseeds = [0]\nepochs = 4\n'
        '[set]\nlabels = 100\ny_term = "sampled"\n'
    )
    ablation = load_ablation(str(path))
    jobs, reused = plan(ablation, None, 4, None, runs, False, tmp_path / "ckpt")
    assert [cell.name for cell, _ in reused] == ["gumbel-0.1"]
    assert [job.cell.name for job in jobs] == ["gumbel-0.5"]  # no twin: it trains
    (adopted,) = find_records(runs, ablation.variant(ablation.cells()[0], 0, 4), None)
    assert adopted.made["twin_of"].startswith("tutorial-gumbel-")
    assert adopted.history == read_record(next(runs.glob("tutorial-gumbel-*.json"))).history


def test_an_ablation_asked_for_some_cells_trains_those_and_reuses_only_theirs(tmp_path):
    """`m2h ablate NAME --cells CELL ...`: the jobs and the reused records are the named cells'
    alone (their seeds, in the file's order); a name that is no cell fails with the closest."""
    from harness.experiments.ablate import plan

    path = tmp_path / "lr.toml"
    path.write_text(
        'variants = ["exact"]\ncontrols = ["supervised-only"]\nseeds = [0, 1]\nepochs = 4\n'
        "[set]\nlabels = 100\n[axes]\nlr = [0.001, 0.0003]\n"
    )
    ablation = load_ablation(str(path))
    runs = tmp_path / "runs"
    done = ablation.variant(ablation.cells()[1], 0, 4)  # exact[lr=0.0003] seed 0
    write_record(runs, make_record(done, history([30.0, 20.0, 21.0, 22.0]), MACHINE))
    picked = ablation.pick(["supervised-only", "exact[lr=0.0003]"])
    assert [c.name for c in picked] == ["exact[lr=0.0003]", "supervised-only"]  # file order
    jobs, reused = plan(ablation, None, 4, None, runs, False, tmp_path / "ckpt", picked)
    assert [(j.cell.name, j.variants[0].seed) for j in jobs] == [
        ("exact[lr=0.0003]", 1),  # each cell's first pending seed, then its second
        ("supervised-only", 0),
        ("supervised-only", 1),
    ]
    assert [(cell.name, r.variant.seed) for cell, r in reused] == [("exact[lr=0.0003]", 0)]
    with pytest.raises(ValueError, match=r"'exact\[lr=0\.003\]' is no cell of ablation 'lr' "
                       r"\(did you mean 'exact\[lr=0\.0003\]'\?\)"):  # fmt: skip
        ablation.pick(["exact[lr=0.003]"])


def test_a_record_names_the_load_it_finished_under_and_its_table_says_so(ablation_file, tmp_path):
    """Issue 53: rows/s of runs made beside other work read as the machine's speed; a record
    now names the load average when it finished, and a table of such records says it."""
    results = tmp_path / "results"
    write_runs(ablation_file, results)
    record = read_record(next((results / "runs").glob("exact-*-s0.json")))
    assert len(record.made["load_average"].split()) == 3
    assert main(["table", str(ablation_file), "--out", str(results)]) == 0
    md = (results / "two.md").read_text()
    assert "- load: 15-minute load average " in md and "3 of 3 runs name it" in md
