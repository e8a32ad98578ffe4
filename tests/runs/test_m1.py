"""M1 as an artifact: trained once, by the first M1+M2 run that needs it, on the training images
alone; reused (not trained again) by every later run, and named by their records and MLflow runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import harness.runs.runner as runner
from harness.config.variants import create_variant
from harness.runs.records import read_record, record_path
from harness.runs.runner import RunOptions, run_variant
from harness.training.data import synthetic_splits

TINY = {
    "labels": 100,
    "validation": 200,
    "epochs": 2,
    "patience": 0,
    "hidden": 32,
    "m1_hidden": 32,
    "m1_z_dim": 8,
    "m1_batch_size": 100,
    "m1_epochs": 3,
    "m1_patience": 2,
    "m1_min_std": 0.0,
}


@pytest.fixture
def generated_data(monkeypatch):
    """The runner's data replaced by generated images (no files), with every set of images the
    M1 trainer is handed kept, to check which they were."""
    import harness.runs.m1 as m1_store

    splits = synthetic_splits(torch.device("cpu"), train=1200, test=200, validation=200)
    monkeypatch.setattr(runner, "load_splits", lambda *args, **kwargs: splits)
    given = []
    real = m1_store.M1Training

    def training(settings, train_x, val_x, *args, **kwargs):
        given.append((train_x, val_x))
        return real(settings, train_x, val_x, *args, **kwargs)

    monkeypatch.setattr(m1_store, "M1Training", training)
    return splits, given


def test_m1_is_trained_once_on_the_training_images_and_reused(generated_data, tmp_path):
    from harness.tracking.tracker import Tracker

    splits, given = generated_data
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "m1m2")
    said: list[str] = []
    options = RunOptions(
        records_dir=tmp_path / "results" / "runs",
        checkpoint_dir=tmp_path / "checkpoints",
        progress=False,
        tracker=tracker,
        announce=said.append,
    )
    variant = create_variant("m1m2", TINY)
    first = run_variant(variant, options)
    second = run_variant(variant.replace(seed=1, labels=200), options)

    # trained once, on the training split: never the validation or the test images
    assert len(given) == 1
    train_x, val_x = given[0]
    assert train_x is splits.train_x and val_x is splits.val_x
    assert any(line.startswith("M1 m1-") and "reused from" in line for line in said)
    folder = tmp_path / "results" / "m1"
    (record_file,) = folder.glob("m1-*.json")
    key = record_file.stem
    m1_record = json.loads(record_file.read_text())
    assert (folder / f"{key}.pt").exists() and not (folder / f"{key}.train.pt").exists()
    assert m1_record["settings"]["epochs"] == 3 and len(m1_record["epochs"]) <= 3
    assert m1_record["made"]["segments"][0]["epochs"][0] == 1

    # each M2 run names its M1, in its record and its MLflow run; M1 has one run of its own
    for result in (first, second):
        record = read_record(record_path(options.records_dir, result.variant, None))
        assert record.made["m1"] == key and record.made["m1_dims"] == 8
        params = tracker.client.get_run(result.run_id).data.params
        assert params["m1"] == key
    m1_runs = tracker.client.search_runs([tracker.experiment_id], f"tags.m1_key = '{key}'")
    assert len(m1_runs) == 1
    assert m1_runs[0].data.params["m1_hidden"] == "32"
    assert len(tracker.client.get_metric_history(m1_runs[0].info.run_id, "val_neg_elbo")) == len(
        m1_record["epochs"]
    )


def test_another_m1_setting_is_another_m1(generated_data, tmp_path):
    _, given = generated_data
    options = RunOptions(records_dir=tmp_path / "runs", checkpoint_dir=None, progress=False)
    run_variant(create_variant("m1m2", TINY), options)
    run_variant(create_variant("m1m2", {**TINY, "m1_z_dim": 6, "m1_min_std": 0.0}), options)
    run_variant(create_variant("m1m2", {**TINY, "m1_min_std": 0.001}), options)  # same M1
    assert len(given) == 2
    assert len(list((tmp_path / "m1").glob("m1-*.pt"))) == 2


TINY_ABLATION = """
description = "M1+M2, one tiny cell"
variants = ["m1m2"]
seeds = [0, 1]
epochs = 1

[set]
m1_epochs = 1
m1_patience = 0
m1_hidden = 100
"""


@pytest.mark.e2e
def test_m2h_run_m1m2_trains_m1_first_then_every_run_reuses_it(data_root, capsys):
    """`m2h run m1m2` on real MNIST, as from a fresh clone: M1 is trained first (on the 50,000
    training images that are not held out), kept in results/m1, and reused by the next run
    and by an ablation listing the cell; the table names M1 and its time apart."""
    from harness.cli.main import main

    Path("ablations").mkdir()
    Path("ablations/tiny-m1m2.toml").write_text(TINY_ABLATION)
    settings = ["--set", "m1_epochs=1", "--set", "m1_patience=0", "--set", "m1_hidden=100"]
    quick = ["--epochs", "1", "--max-steps", "5", "--no-track", "--threads", "2"]
    assert main(["run", "m1m2", "--labels", "100", *settings, *quick]) == 0
    out = capsys.readouterr().out
    assert "training on 50,000 training images" in out and "10,000 validation" in out
    (weights,) = Path("results/m1").glob("m1-*.pt")
    assert main(["ablate", "tiny-m1m2", "--max-steps", "5", "--no-track", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert f"M1 {weights.stem}: reused from" in out and "training on" not in out
    assert main(["table", "tiny-m1m2", "--max-steps", "5"]) == 0
    table = Path("results/tiny-m1m2.md").read_text()
    assert f"- M1: {weights.stem}, read by 2 runs, trained once: 1 epoch (" in table


def test_two_runs_wanting_one_m1_at_once_train_it_once(generated_data, tmp_path, monkeypatch):
    """The claim: two runs started together (threads here; processes alike, the lock is the
    operating system's) train M1 once; the second waits for it and reuses it. The first holds
    its training until the second has said it waits, so the two always meet."""
    import threading

    import harness.runs.m1 as m1_store

    splits, given = generated_data
    variant = create_variant("m1m2", TINY)
    said: list[str] = []
    keys: list[str] = []
    waiting = threading.Event()
    recorded = m1_store.M1Training

    def held(*args, **kwargs):
        training = recorded(*args, **kwargs)
        assert waiting.wait(timeout=60)
        return training

    monkeypatch.setattr(m1_store, "M1Training", held)

    def announce(line: str) -> None:
        said.append(line)
        if "is being trained by" in line:
            waiting.set()

    def want() -> None:
        m1 = m1_store.ensure_m1(variant, splits, torch.device("cpu"), tmp_path, {}, announce)
        keys.append(m1.key)

    threads = [threading.Thread(target=want) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(given) == 1 and len(keys) == 2 and keys[0] == keys[1]
    assert any("is being trained by" in line for line in said), said
    assert any("trained meanwhile by another process" in line for line in said), said
