from __future__ import annotations

import re

import pytest

from harness.cli.main import main
from harness.config import identity
from harness.config.ablations import AblationError, available, load_ablation
from harness.config.variants import create_variant
from harness.experiments import ablate as ablation_module
from harness.experiments.ablate import AblationOptions, run_ablation
from harness.runs.runner import RunSite

mlflow = pytest.importorskip("mlflow")

TINY = """
description = "an estimator and the control, two seeds"
variants = ["exact"]
controls = ["supervised-only"]
seeds = [0, 1]
epochs = 1

[set]
labels = 100
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def test_shipped_ablations_load_and_expand():
    assert {"estimator", "temperature", "alpha", "labels", "y-term"} <= set(available())
    labels = load_ablation("labels")
    cells = [c.name for c in labels.cells()]
    assert "exact[labels=3000]" in cells and "supervised-only[labels=600]" in cells
    assert len(cells) == 3 * 4  # two variants and the control, four label counts each
    seeds = {c.variant: labels.seeds_of(c) for c in labels.cells()}
    assert seeds == {
        "exact": [0, 1, 2, 3, 4],
        "gumbel-st": [0, 1, 2],
        "supervised-only": [0, 1, 2, 3, 4],
    }
    assert {labels.variant(c, 0).patience for c in labels.cells()} == {10}
    alpha = load_ablation("alpha")
    assert len([c for c in alpha.cells() if not c.control]) == 6  # 3 schedules x 2 scales
    assert [c.name for c in alpha.cells() if c.control] == ["supervised-only"]
    temperature = load_ablation("temperature")
    assert {c.variant for c in temperature.cells()} >= {"gumbel-0.1", "gumbel-1", "gumbel-anneal"}


@pytest.mark.parametrize("name", available())
def test_every_shipped_ablation_expands_to_valid_runs_with_one_record_each(name):
    ablation = load_ablation(name)
    runs = [
        ablation.variant(cell, seed, ablation.epochs)
        for cell in ablation.cells()
        for seed in ablation.seeds_of(cell)
    ]
    assert runs  # every variant was built, so every setting passed its checks
    names = [identity.record_name(v, None) for v in runs]
    assert len(set(names)) == len(names)  # no two runs of one ablation write one record


def test_recipe_shares_alpha_1000s_reference_runs():
    """recipe's exact cell at 1000 labels is alpha-1000's reference cell: its runs are reused,
    not trained again."""
    recipe, alpha = load_ablation("recipe"), load_ablation("alpha-1000")
    (exact,) = [c for c in recipe.cells() if c.name == "exact[labels=1000]"]
    (reference,) = [c for c in alpha.cells() if c.overrides.get("alpha") == 1.0]
    for seed in recipe.seeds_of(exact):
        assert identity.record_name(
            recipe.variant(exact, seed, recipe.epochs), None
        ) == identity.record_name(alpha.variant(reference, seed, alpha.epochs), None)


def test_a_variants_own_settings_keep_its_cells_one_with_another_ablations():
    """m1m2 gives m1m2-reimpl m1m2-m1's stop rule and budget ([set_by_variant]) and leaves the
    other cells on its own: m1m2-m1's runs are m1m2's, not trained again, and exact's and
    m1m2's cells keep the records they have. An --epochs other than the file's caps every
    cell."""
    m1m2, m1 = load_ablation("m1m2"), load_ablation("m1m2-m1")
    cells = {c.name: c for c in m1m2.cells()}
    reimpl, exact = cells["m1m2-reimpl[labels=100]"], cells["exact[labels=100]"]
    (shared,) = [c for c in m1.cells() if c.variant == "m1m2-reimpl"]
    for seed in m1.seeds_of(shared):
        assert identity.record_name(m1m2.variant(reimpl, seed), None) == identity.record_name(
            m1.variant(shared, seed), None
        )
    ran = m1m2.variant(reimpl, 0)
    assert (ran.epochs, ran.patience, ran.lr) == (1500, 50, 0.001)
    registered = create_variant("m1m2-reimpl", {"labels": 100})  # what `m2h run` trains
    assert identity.record_name(registered, None) == identity.record_name(ran, None)
    kept = m1m2.variant(exact, 0)
    assert (kept.epochs, kept.patience) == (150, 10)
    assert identity.record_name(kept, None) == "exact-fede2d270277-s0"  # labels' record
    assert m1m2.variant(reimpl, 0, epochs=3).epochs == m1m2.variant(exact, 0, epochs=3).epochs == 3


def test_ablate_without_tracking_leaves_records_alone_and_honours_no_download(
    tmp_path, capsys, tiny
):
    results = tmp_path / "results"
    args = ["ablate", str(tiny), "--no-track", "--max-steps", "2", "--seeds", "0"]
    assert main([*args, "--out", str(results), "--checkpoint-dir", str(tmp_path / "c")]) == 0
    assert len(list((results / "runs").glob("*.json"))) == 2  # a record a run
    assert not list(tmp_path.rglob("*.db"))  # and no MLflow store
    (tmp_path / "none").mkdir()  # a data root without the files, which may not be downloaded
    assert (
        main(
            [
                "ablate",
                "estimator",
                "--no-download",
                "--data-root",
                str(tmp_path / "none"),
                "--tracking-uri",
                f"sqlite:///{tmp_path / 'm.db'}",
            ]
        )
        == 1
    )
    assert "could not be downloaded" in capsys.readouterr().err
    assert not (tmp_path / "m.db").exists()  # nothing written


def test_bad_ablations_are_clear_errors(tmp_path):
    with pytest.raises(AblationError, match=r"unknown ablation 'estimater' \(did you mean"):
        load_ablation("estimater")
    bad = tmp_path / "bad.toml"
    bad.write_text('variants = ["exact"]\n[axes]\ntemprature = [0.1]\n')
    with pytest.raises(ValueError, match="unknown setting 'temprature'"):
        load_ablation(str(bad))
    bad.write_text('variants = ["exact"]\n[axes]\ntemperature = []\n')
    with pytest.raises(AblationError, match="axis 'temperature' is empty"):
        load_ablation(str(bad))
    bad.write_text('variants = ["exact"]\n[axes]\ntemperature = [0.1, -1.0]\n')
    with pytest.raises(ValueError, match="temperature must be > 0"):
        load_ablation(str(bad))


@pytest.mark.parametrize(
    ("own", "error"),
    [
        ("[set_by_variant.gumbel-st]\npatience = 5", "set_by_variant names gumbel-st, which the"),
        ("[axes]\nlr = [0.1]\n[set_by_variant.exact]\nlr = 1.0", "exact sets lr, which is swept"),
        ("[set_by_variant.exact]\npatiense = 5", "unknown setting 'patiense'"),
    ],
)
def test_a_variants_own_settings_are_checked_as_the_files_are(tmp_path, own, error):
    bad = tmp_path / "bad.toml"
    bad.write_text(f'variants = ["exact"]\n{own}\n')
    with pytest.raises(ValueError, match=error):  # AblationError is a ValueError
        load_ablation(str(bad))


def test_tiny_ablation_end_to_end_from_the_command_line(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = ["--tracking-uri", store]
    assert main(["ablate", str(tiny), "--max-steps", "2", *base]) == 0
    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("tiny").experiment_id
    runs = client.search_runs([experiment])
    (parent,) = [r for r in runs if r.data.tags.get("m2h.role") == "ablation"]
    children = [r for r in runs if r is not parent and r.info.run_id != parent.info.run_id]
    assert len(children) == 4
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    assert parent.info.status == "FINISHED"

    assert len(list((tmp_path / "results" / "runs").glob("*.json"))) == 4  # a record a run
    assert main(["table", str(tiny), "--max-steps", "2"]) == 0
    import pandas as pd

    table = pd.read_csv(tmp_path / "results" / "tiny.csv")
    assert table["cell"].tolist() == ["exact", "supervised-only"]  # the control has its row
    assert {
        r.data.tags["control"] for r in children if r.data.tags["cell"] == "supervised-only"
    } == {"true"}
    assert table["seeds"].tolist() == [2, 2]
    for row in table.itertuples():
        errors = [
            r.data.metrics["selected_test_error"]
            for r in children
            if r.data.tags["cell"] == row.cell
        ]
        assert row.test_error_mean == pytest.approx(sum(errors) / 2)
        assert row.test_error_std == pytest.approx(pd.Series(errors).std())
    md = (tmp_path / "results" / "tiny.md").read_text()
    assert "- command: `m2h ablate tiny --max-steps 2`" in md  # the file's seeds, 0 and 1
    assert "tiny" in (tmp_path / "results" / "README.md").read_text()

    assert main(["plot", str(tiny), "--max-steps", "2"]) == 0
    from PIL import Image

    with Image.open(tmp_path / "results" / "tiny_final.png") as image:
        image.verify()
        assert image.format == "PNG" and image.size[0] > 400
    assert not (tmp_path / "results" / "tiny_curves.png").exists()  # one epoch: no curve


def test_an_interrupted_ablation_resumes_without_repeating_finished_cells(
    tiny, tmp_path, monkeypatch
):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ablation = load_ablation(str(tiny))
    real = ablation_module.run_job
    calls = []

    def interrupt_third(job, where):
        calls.append((job.cell.name, job.variants[0].seed))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(job, where)

    monkeypatch.setattr(ablation_module, "run_job", interrupt_third)
    options = AblationOptions(
        tracking_uri=store,
        site=RunSite(max_steps=2),
        checkpoint_dir=tmp_path / "ckpt",
        results_dir=tmp_path / "results",
    )
    with pytest.raises(KeyboardInterrupt):
        run_ablation(ablation, options, echo=lambda *a: None)
    monkeypatch.setattr(ablation_module, "run_job", real)
    outcomes = run_ablation(ablation, options, echo=lambda *a: None)
    assert sorted(o.status for o in outcomes) == ["finished", "finished", "skipped", "skipped"]
    client = mlflow.MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    parents = [r for r in runs if r.data.tags.get("m2h.role") == "ablation"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("m2h.role") != "ablation"]
    assert len(children) == 4 and {r.info.status for r in children} == {"FINISHED"}
    assert len({(r.data.tags["cell"], r.data.tags["seed"]) for r in children}) == 4


def test_a_stacked_ablation_trains_each_cells_seeds_together(tiny, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    options = AblationOptions(
        tracking_uri=store,
        site=RunSite(max_steps=2),
        stack=True,
        checkpoint_dir=tmp_path / "ckpt",
        results_dir=tmp_path / "results",
    )
    outcomes = run_ablation(load_ablation(str(tiny)), options, echo=lambda *a: None)
    assert [o.status for o in outcomes] == ["finished"] * 4, outcomes
    client = mlflow.MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    children = [r for r in runs if r.data.tags.get("m2h.role") != "ablation"]
    assert len(children) == 4
    assert {r.data.tags["stacked_seeds"] for r in children} == {"0,1"}
    assert {(r.data.tags["cell"], r.data.tags["seed"]) for r in children} == {
        (cell, seed) for cell in ("exact", "supervised-only") for seed in ("0", "1")
    }
    again = run_ablation(load_ablation(str(tiny)), options, echo=lambda *a: None)
    assert [o.status for o in again] == ["skipped"] * 4


def test_stacks_group_the_seeds_at_the_same_checkpointed_epoch(tiny, tmp_path, mnist):
    from harness.runs.runner import RunOptions, run_variant

    ablation = load_ablation(str(tiny))
    cell = ablation.cells()[0]
    variants = [ablation.variant(cell, seed, 1) for seed in (0, 1, 2)]
    run_variant(
        variants[1], RunOptions(site=RunSite(max_steps=2), checkpoint_dir=tmp_path, progress=False)
    )
    groups = ablation_module._stacks(variants, tmp_path, max_steps=2)
    assert [[v.seed for v in group] for group in groups] == [[0, 2], [1]]


@pytest.mark.e2e
def test_parallel_jobs_log_every_run_through_a_local_server(tiny, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    outcomes = run_ablation(
        load_ablation(str(tiny)),
        AblationOptions(
            tracking_uri=store,
            site=RunSite(max_steps=2),
            jobs=2,
            checkpoint_dir=tmp_path / "ckpt",
            results_dir=tmp_path / "results",
        ),
        echo=lambda *a: None,
    )
    assert [o.status for o in outcomes] == ["finished"] * 4, outcomes
    client = mlflow.MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    children = [r for r in runs if r.data.tags.get("m2h.role") != "ablation"]
    assert len(children) == 4
    assert all(
        len(client.get_metric_history(r.info.run_id, "test_accuracy")) == 1 for r in children
    )


@pytest.mark.e2e
def test_two_ablations_writing_to_one_store_at_once_lose_nothing(tmp_path):
    import subprocess
    import sys

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    procs = []
    for name in ["first", "second"]:
        path = tmp_path / f"{name}.toml"
        path.write_text(TINY)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "harness",
                    "ablate",
                    str(path),
                    "--max-steps",
                    "2",
                    "--tracking-uri",
                    store,
                    "--checkpoint-dir",
                    str(tmp_path / name),
                    "--out",
                    str(tmp_path / name / "results"),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    client = mlflow.MlflowClient(store)
    for name in ["first", "second"]:
        runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
        children = [r for r in runs if r.data.tags.get("m2h.role") != "ablation"]
        assert len(children) == 4 and {r.info.status for r in children} == {"FINISHED"}
        for run in children:
            assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 1


def test_a_cell_with_a_nan_loss_fails_alone_and_the_ablation_goes_on(
    tiny, tmp_path, monkeypatch, capsys
):
    from dataclasses import replace

    import torch

    from harness.training import family as family_module

    m2 = family_module.get_family("m2")
    real_loss = m2.objective

    def nan_for_the_control(model, *args, estimator, **kwargs):
        terms = real_loss(model, *args, estimator=estimator, **kwargs)
        if estimator == "supervised":
            terms["classification"] = terms["classification"] * torch.tensor(float("nan"))
        return terms

    monkeypatch.setitem(family_module.REGISTERED, "m2", replace(m2, objective=nan_for_the_control))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert (
        main(
            [
                "ablate",
                str(tiny),
                "--max-steps",
                "2",
                "--tracking-uri",
                store,
                "--checkpoint-dir",
                str(tmp_path / "ckpt"),
                "--out",
                str(tmp_path / "results"),
            ]
        )
        == 1
    )
    out = capsys.readouterr().out
    assert "ablation tiny: 2 finished, 2 failed" in out
    assert "supervised-only seed 0: failed NonFiniteLossError" in out
    client = mlflow.MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    by_cell = {}
    for run in runs:
        if run.data.tags.get("m2h.role") != "ablation":
            by_cell.setdefault(run.data.tags["cell"], set()).add(run.info.status)
    assert by_cell == {"exact": {"FINISHED"}, "supervised-only": {"FAILED"}}


def test_two_ablations_sharing_a_cell_each_log_it_under_their_own_parent(tmp_path):
    """A cell of one ablation (same variant, same budget) is trained once; the second ablation
    reuses its record and logs it under its own parent run, never into the first one's."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(store)
    for name, status in [("first", "finished"), ("second", "skipped")]:
        path = tmp_path / f"{name}.toml"
        path.write_text(TINY)
        outcomes = run_ablation(
            load_ablation(str(path)),
            AblationOptions(
                tracking_uri=store,
                site=RunSite(max_steps=2),
                checkpoint_dir=tmp_path / "ckpt",
                results_dir=tmp_path / "results",
            ),
            echo=lambda *a: None,
        )
        assert [o.status for o in outcomes] == [status] * 4, outcomes
        runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
        (parent,) = [r for r in runs if r.data.tags.get("m2h.role") == "ablation"]
        children = client.search_runs(
            [client.get_experiment_by_name(name).experiment_id],
            f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        )
        assert len(children) == 4


def test_slurm_without_sbatch_is_a_clear_error(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch on it
    assert main(["ablate", str(tiny), "--launcher", "slurm", "--no-track"]) == 1
    assert "needs Slurm's sbatch here" in capsys.readouterr().err
    assert not (tmp_path / "submitit").exists()


def test_an_ablations_folder_where_m2h_runs_comes_before_the_packages(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ablations").mkdir()
    (tmp_path / "ablations" / "quickstart.toml").write_text(
        'description = "edited"\nvariants = ["exact"]\nepochs = 1\n[set]\nlabels = 100\n'
    )
    edited = load_ablation("quickstart")
    assert edited.description == "edited"
    assert edited.source == tmp_path / "ablations" / "quickstart.toml"
    assert load_ablation("labels").source.parent.parent != tmp_path  # the package's, still
    assert {"quickstart", "labels"} <= set(available())


@pytest.mark.e2e
def test_an_ablation_says_its_file_every_epoch_of_every_run_and_its_progress(tmp_path, data_root):
    import subprocess
    import sys

    tiny = tmp_path / "tiny.toml"
    tiny.write_text(TINY)
    done = subprocess.run(
        [sys.executable, "-m", "harness", "ablate", str(tiny), "--epochs", "2",
         "--max-steps", "2", "--no-track", "--out", str(tmp_path / "results")],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"ablation tiny: read {tiny}" in out
    for cell in ("exact", "supervised-only"):
        for seed in (0, 1):
            for epoch in (1, 2):
                assert f"  {cell} seed {seed}: epoch   {epoch}/2" in out, out
    assert "[4 of 4 runs done]" in out
    # a time left after the first run, whatever this machine's speed makes it
    assert re.search(r"\[1 of 4 runs done, (about \d+ min|under 1 min) left\]", out), out


def test_a_run_name_says_what_its_cell_varies_before_the_variant():
    """The UI cuts long names: labels=100 and labels=1000 must differ in the first characters."""
    ablation = load_ablation("labels")
    names = {cell.run_name(0) for cell in ablation.cells()}
    assert "100 labels · exact · seed 0" in names and "1000 labels · exact · seed 0" in names
    assert all(not name.startswith(("exact", "gumbel")) for name in names)


@pytest.mark.e2e
def test_a_run_made_with_m2h_run_leaves_a_record_no_ablation_trains_again(
    tmp_path, data_root, capsys
):
    ablation = tmp_path / "one.toml"
    ablation.write_text('variants = ["exact"]\nseeds = [0]\nepochs = 1\n[set]\nlabels = 100\n')
    results = tmp_path / "results"
    run = ["run", "exact", "--labels", "100", "--epochs", "1", "--max-steps", "3"]
    assert main([*run, "--no-track", "--out", str(results)]) == 0
    assert f"record: {results / 'runs'}" in capsys.readouterr().out
    options = AblationOptions(
        track=False,
        site=RunSite(max_steps=3),
        results_dir=results,
        checkpoint_dir=tmp_path / "ckpt",
    )
    outcomes = run_ablation(load_ablation(str(ablation)), options, echo=lambda *a: None)
    assert [o.status for o in outcomes] == ["skipped"]


def test_a_record_of_other_numerics_is_reused_only_where_the_file_allows(tmp_path, capsys):
    """A record made under numerics version 0 (before the softplus change) gives numbers this
    code does not: the ablation refuses it in one line, writing nothing, until its file lists
    the version, and then says it reused it (issue 57)."""
    from harness.runs.records import make_record, write_record
    from harness.training.numerics import NUMERICS_VERSION
    from tests.training.test_stopping import history

    spec = 'variants = ["exact"]\nseeds = [0]\nepochs = 2\n'
    path = tmp_path / "old.toml"
    path.write_text(spec)
    ablation = load_ablation(str(path))
    variant = ablation.variant(ablation.cells()[0], 0, 2)
    made = {"git_commit": "b" * 40, "git_dirty": False, "device_name": "cpu (test, 2 cores)"}
    runs = tmp_path / "results" / "runs"
    write_record(runs, make_record(variant, history([30.0, 20.0]), {**made, "numerics_version": 0}))
    args = ["ablate", str(path), "--no-track", "--out", str(tmp_path / "results")]
    args += ["--checkpoint-dir", str(tmp_path / "c")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"made under numerics version 0 (this code: version {NUMERICS_VERSION})" in err
    assert "add `numerics = [0]` to" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists() and len(list(runs.iterdir())) == 1  # nothing written
    path.write_text(spec + "numerics = [0]\n")
    assert main(args) == 0
    assert "1 of them made under numerics version 0" in capsys.readouterr().out
    path.write_text(spec + 'numerics = ["zero"]\n')
    with pytest.raises(AblationError, match="numerics lists numerics versions"):
        load_ablation(str(path))
